"""Forward-backward (chapter 2): time vs sequence length T and vs number of states K.

The claim to check is that ``elbo_lib.hmm.forward_backward`` is linear in T (its log-log
slope is ~1) and O(K^2) per step once K is large enough for the K x K products to
dominate. There is no HMM library in the book's environment (hmmlearn is not a
dependency), so the reference is what a reader would write from Rabiner (1989): the
scaled recursions in probability space (one normalising constant per step), vectorised
over states, with the summed pairwise marginals sum_t xi_t from one matrix product.
``elbo_lib.hmm.forward_backward`` runs the same scaled recursions (with a log-space
fallback for underflow) but always builds the (T-1, K, K) tensor of pairwise marginals
before summing it. Equal work: the same log pi, log A and emission log-densities (from a
sampled Gaussian HMM), the same outputs (log p(x), the marginals gamma and the summed
pairwise marginals); agreement is |log p(x) ours - reference| in nats.
"""

from __future__ import annotations

import numpy as np

from benchmarks._common import Config, loglog_slope, measure, row
from elbo_lib.em import gaussian_log_density
from elbo_lib.hmm import forward_backward, sample_gaussian_hmm

TITLE = "Forward-backward: time vs sequence length and number of states"
EQUALITY = (
    "Reference: the scaled forward-backward recursions of Rabiner (1989) written plainly in "
    "NumPy, vectorised over states, sum_t xi_t by one matrix product (no HMM library is a "
    "dependency of the book); ours runs the same recursions but materialises the "
    "(T-1, K, K) pairwise tensor. Same parameters and emission log-densities, same outputs "
    "(log p(x), gamma, summed xi). agreement = |log p(x) difference| in nats. The target is "
    "a log-log slope of ~1 in T.")


def scaled_forward_backward(log_pi, log_A, log_B):
    """Rabiner's scaled recursions in probability space: (log p(x), gamma, xi_sum).

    Emissions are shifted by their per-step maximum before exponentiation (the shift is
    added back to log p(x)) so that long sequences do not underflow.
    """
    T, K = log_B.shape
    shift = log_B.max(axis=1)
    B = np.exp(log_B - shift[:, None])
    A = np.exp(log_A)
    alpha = np.empty((T, K))
    c = np.empty(T)
    a = np.exp(log_pi) * B[0]
    for t in range(T):  # sequential in t, vectorised over states
        if t > 0:
            a = (alpha[t - 1] @ A) * B[t]
        c[t] = a.sum()
        alpha[t] = a / c[t]
    beta = np.empty((T, K))
    beta[-1] = 1.0
    for t in range(T - 2, -1, -1):
        beta[t] = (A @ (B[t + 1] * beta[t + 1])) / c[t + 1]
    gamma = alpha * beta
    xi_sum = A * (alpha[:-1].T @ (B[1:] * beta[1:] / c[1:, None]))
    return float(np.log(c).sum() + shift.sum()), gamma, xi_sum


def make_problem(T: int, K: int, rng: np.random.Generator):
    """Log parameters and emission log-densities of a sampled 2-D Gaussian HMM."""
    d = 2
    trans = rng.dirichlet(np.full(K, 0.3), size=K) * 0.5 + 0.5 * np.eye(K)
    start = np.full(K, 1.0 / K)
    means = rng.normal(scale=3.0, size=(K, d))
    cov = np.repeat(np.eye(d)[None], K, axis=0)
    X, _ = sample_gaussian_hmm(start, trans, means, cov, T, rng)
    prec_chol = np.repeat(np.eye(d)[None], K, axis=0)
    return np.log(start), np.log(trans), gaussian_log_density(X, means, prec_chol)


def _measure(T: int, K: int, config: Config, sweep: str) -> dict:
    log_pi, log_A, log_B = make_problem(T, K, np.random.default_rng([config.seed, 2, T, K]))
    t = measure({"ours": lambda: forward_backward(log_pi, log_A, log_B),
                 "scaled": lambda: scaled_forward_backward(log_pi, log_A, log_B)}, config)
    ll_a, gamma_a, _ = t["ours"].result
    ll_b, gamma_b, _ = t["scaled"].result
    return row("hmm", f"{sweep}-sweep", {"T": T, "K": K}, ours=t["ours"],
               reference_name="scaled recursions (Rabiner), NumPy", reference=t["scaled"],
               agreement="|log p(x) diff| (nats)", agreement_value=abs(ll_a - ll_b),
               notes=f"max |gamma diff| {np.abs(gamma_a - gamma_b).max():.1e}")


def run(config: Config) -> dict:
    if config.smoke:
        lengths, states, fixed_k, fixed_t = (200, 400, 800), (2, 4), 3, 300
    else:
        lengths = (1_000, 3_000, 10_000, 30_000, 100_000)
        states, fixed_k, fixed_t = (2, 4, 8, 16, 32, 64), 4, 10_000
    rows = [_measure(T, fixed_k, config, "T") for T in lengths]
    rows += [_measure(fixed_t, K, config, "K") for K in states]
    t_rows = [r for r in rows if r["case"] == "T-sweep"]
    k_rows = [r for r in rows if r["case"] == "K-sweep"]
    slope_t = loglog_slope(lengths, [r["ours_s"] for r in t_rows])
    slope_t_ref = loglog_slope(lengths, [r["ref_s"] for r in t_rows])
    slope_k = loglog_slope(states, [r["ours_s"] for r in k_rows])
    linear = bool(0.85 <= slope_t <= 1.15)
    for r in t_rows:
        r["target"] = "log-log slope in T ~ 1"
        r["met"] = linear
    for r in t_rows:
        r["notes"] += f"; slope in T {slope_t:.2f} (reference {slope_t_ref:.2f})"
    return {"name": "hmm", "title": TITLE, "equality": EQUALITY, "rows": rows,
            "extra": {"slope_T_ours": slope_t, "slope_T_reference": slope_t_ref,
                      "slope_K_ours": slope_k, "fixed_K": fixed_k, "fixed_T": fixed_t}}
