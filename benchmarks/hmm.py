"""Hidden Markov models (chapter 2) vs hmmlearn: forward-backward and Baum-Welch.

The library a reader would use for a Gaussian HMM is ``hmmlearn`` (a scikit-learn-like
API; its recursions are compiled C++). It is not a dependency of the book: it is pinned in
``benchmarks/requirements.txt``, and without it only our side is timed (the rows say so).

Forward-backward. Both sides get the same observations X (a sampled 2-D Gaussian HMM)
and the same parameters (pi, A, means, full covariances) and compute the emission
log-densities from X, log p(x) and the posterior marginals gamma:
``hmmlearn.hmm.GaussianHMM(covariance_type="full", implementation="scaling")
.score_samples(X)`` (its faster implementation) against
``elbo_lib.gaussians.gaussian_log_density`` + ``elbo_lib.hmm.forward_backward`` (which also
returns sum_t xi_t). Swept over T at K = 4 and over K at T = 1e4.

Baum-Welch. ``elbo_lib.hmm.GaussianHMM.fit`` against ``hmmlearn`` ``fit`` from the same
start, for a fixed number of iterations (tolerances disabled on both sides), with
hmmlearn's priors switched off (``covars_prior=0, covars_weight=1``; the mean, start and
transition priors are flat by default) so that both run maximum-likelihood EM. Our fit
also records the ELBO after every E- and M-step (chapter 2's figures), which needs the
per-step pairwise marginals. Agreement: |log p(x) ours - hmmlearn| in nats, at the same
parameters (forward-backward) or after the same iterations (Baum-Welch).
"""

from __future__ import annotations

import numpy as np

from benchmarks._common import Config, loglog_slope, measure, peer, row
from elbo_lib.gaussians import gaussian_log_density, precision_cholesky
from elbo_lib.hmm import GaussianHMM, forward_backward, sample_gaussian_hmm

TITLE = "Hidden Markov models vs hmmlearn: forward-backward and Baum-Welch"
EQUALITY = (
    "The same observations (a sampled 2-D Gaussian HMM) and parameters; both compute the "
    r"full-covariance emission log-densities from $X$, $\log p(x)$ and the marginals "
    r"$\gamma$ (hmmlearn: `GaussianHMM.score_samples`, `implementation='scaling'`; ours "
    r"also returns $\sum_t \xi_t$). Baum-Welch: the same start, the same fixed number of "
    "iterations (tolerances off), hmmlearn's priors off (`covars_prior=0, "
    "covars_weight=1`) so that both run maximum-likelihood EM; ours also records the ELBO "
    r"after every step. Agreement: $|\Delta \log p(x)|$ in nats.")
D = 2
BW_ITERS = 10
REFERENCE = "hmmlearn GaussianHMM (scaling)"


def make_problem(T: int, K: int, rng: np.random.Generator):
    """Parameters of a sticky 2-D Gaussian HMM and a sequence of length T from it."""
    trans = rng.dirichlet(np.full(K, 0.3), size=K) * 0.5 + 0.5 * np.eye(K)
    start = np.full(K, 1.0 / K)
    means = rng.normal(scale=3.0, size=(K, D))
    cov = np.repeat(np.eye(D)[None], K, axis=0)
    X, _ = sample_gaussian_hmm(start, trans, means, cov, T, rng)
    return X, (start, trans, means, cov)


def _hmmlearn_model(hmmlearn, K: int, params, n_iter: int = 1):
    start, trans, means, cov = params
    model = hmmlearn.hmm.GaussianHMM(K, covariance_type="full", implementation="scaling",
                                     init_params="", params="stmc", covars_prior=0.0,
                                     covars_weight=1.0, n_iter=n_iter, tol=-np.inf)
    model.startprob_, model.transmat_ = start.copy(), trans.copy()
    model.means_, model.covars_ = means.copy(), cov.copy()
    return model


def ours_forward_backward(X, params):
    """Emission log-densities from X, then the forward-backward recursions."""
    start, trans, means, cov = params
    log_b = gaussian_log_density(X, means, precision_cholesky(cov))
    with np.errstate(divide="ignore"):
        return forward_backward(np.log(start), np.log(trans), log_b)


def _forward_backward_row(T: int, K: int, config: Config, sweep: str, hmmlearn) -> dict:
    X, params = make_problem(T, K, np.random.default_rng([config.seed, 2, T, K]))
    functions = {"ours": lambda: ours_forward_backward(X, params)}
    if hmmlearn is not None:
        model = _hmmlearn_model(hmmlearn, K, params)
        functions["peer"] = lambda: model.score_samples(X)
    t = measure(functions, config)
    ll, gamma, _ = t["ours"].result
    if hmmlearn is None:
        return row("hmm", f"forward-backward, {sweep}-sweep", {"T": T, "K": K},
                   ours=t["ours"], agreement="", notes="hmmlearn not installed")
    ll_ref, gamma_ref = t["peer"].result
    return row("hmm", f"forward-backward, {sweep}-sweep", {"T": T, "K": K},
               ours=t["ours"], reference_name=REFERENCE, reference=t["peer"],
               agreement="|log p(x) diff| (nats)", agreement_value=abs(ll - ll_ref),
               notes=f"max |gamma diff| {np.abs(gamma - gamma_ref).max():.1e}")


def _baum_welch_row(T: int, K: int, config: Config, hmmlearn) -> dict:
    rng = np.random.default_rng([config.seed, 3, T, K])
    X, (_, _, means, _) = make_problem(T, K, rng)
    start = np.full(K, 1.0 / K)
    trans = np.full((K, K), 0.5 / (K - 1))
    np.fill_diagonal(trans, 0.5)
    init = (start, trans, means + rng.normal(scale=0.5, size=means.shape),
            np.repeat(2.0 * np.eye(D)[None], K, axis=0))
    iters = 3 if config.smoke else BW_ITERS

    def ours():
        return GaussianHMM(K, tol=0.0, max_iter=iters, reg_covar=1e-6,
                           startprob_init=init[0], transmat_init=init[1],
                           means_init=init[2], covariances_init=init[3]).fit(X)

    functions = {"ours": ours}
    if hmmlearn is not None:
        functions["peer"] = lambda: _hmmlearn_model(hmmlearn, K, init, iters).fit(X)
    t = measure(functions, config)
    a = t["ours"].result
    if hmmlearn is None:
        return row("hmm", "Baum-Welch fit", {"T": T, "K": K}, ours=t["ours"],
                   ours_iters=a.n_iter_, notes="hmmlearn not installed")
    b = t["peer"].result
    diff = abs(a.log_likelihood_[-1] - b.score(X))
    return row("hmm", "Baum-Welch fit", {"T": T, "K": K}, ours=t["ours"],
               reference_name=REFERENCE, reference=t["peer"], ours_iters=a.n_iter_,
               ref_iters=b.monitor_.iter, agreement="|log p(x) diff| (nats)",
               agreement_value=float(diff),
               notes=f"{iters} iterations on both sides")


def run(config: Config) -> dict:
    hmmlearn = peer("hmmlearn", "hmmlearn.hmm")
    if config.smoke:
        lengths, states, fixed_k, fixed_t = (200, 400, 800), (2, 4), 3, 300
        bw_cases = [(300, 3)]
    else:
        lengths = (1_000, 3_000, 10_000, 30_000, 100_000)
        states, fixed_k, fixed_t = (2, 4, 8, 16, 32, 64), 4, 10_000
        bw_cases = [(10_000, 4), (30_000, 4), (10_000, 16)]
    rows = [_forward_backward_row(T, fixed_k, config, "T", hmmlearn) for T in lengths]
    rows += [_forward_backward_row(fixed_t, K, config, "K", hmmlearn) for K in states]
    rows += [_baum_welch_row(T, K, config, hmmlearn) for T, K in bw_cases]
    t_rows = [r for r in rows if r["case"].endswith("T-sweep")]
    slope_t = loglog_slope(lengths, [r["ours_s"] for r in t_rows])
    slope_t_ref = (loglog_slope(lengths, [r["ref_s"] for r in t_rows])
                   if hmmlearn is not None else None)
    linear = bool(0.85 <= slope_t <= 1.15)
    for r in t_rows:
        r["target"] = "log-log slope in T ~ 1"
        r["met"] = linear
    extra = {"slope_T_ours": slope_t, "slope_T_reference": slope_t_ref,
             "fixed_K": fixed_k, "fixed_T": fixed_t,
             "baum_welch_iterations": 3 if config.smoke else BW_ITERS}
    if hmmlearn is None:
        extra["skipped"] = ("hmmlearn is not installed (pip install -r "
                            "benchmarks/requirements.txt): only our side was timed")
    else:
        extra["hmmlearn"] = hmmlearn.__version__
    return {"name": "hmm", "title": TITLE, "equality": EQUALITY, "rows": rows,
            "extra": extra}
