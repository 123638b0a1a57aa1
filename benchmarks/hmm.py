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

Many sequences. hmmlearn's ``lengths``: 300 (K = 4) or 100 (K = 16) sequences of about 100
steps each (lengths uniform in [50, 150]) stacked row-wise, forward-backward
(``score_samples(X, lengths)``) and Baum-Welch (``fit(X, lengths)``) as above.

Designs (issue 32). The K-sweep also times, interleaved with the two above, the two other
ways to run the recursions that were considered: the NumPy loop over t that the library
used before (:func:`numpy_loop_forward_backward`, K-sized NumPy work per step) and the
associative, parallel-prefix form (Sarkka and Garcia-Fernandez 2021) written in NumPy
(:func:`prefix_scan_forward_backward`: O(log T) vectorised passes of K x K products, so
O(T K^3) work instead of O(T K^2)). Their rows are marked "design:"; the library's rows
are the others.
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


def ours_forward_backward(X, params, lengths=None):
    """Emission log-densities from X, then the forward-backward recursions."""
    start, trans, means, cov = params
    log_b = gaussian_log_density(X, means, precision_cholesky(cov))
    with np.errstate(divide="ignore"):
        return forward_backward(np.log(start), np.log(trans), log_b, lengths=lengths)


def make_sequences(num_sequences: int, mean_length: int, K: int, rng: np.random.Generator):
    """Many independent sequences of one HMM, lengths uniform in [mean/2, 3 mean/2]."""
    lengths = rng.integers(mean_length // 2, 3 * mean_length // 2 + 1, size=num_sequences)
    _, params = make_problem(1, K, rng)
    start, trans, means, cov = params
    X = np.concatenate([sample_gaussian_hmm(start, trans, means, cov, int(n), rng)[0]
                        for n in lengths])
    return X, [int(n) for n in lengths], params


def _many_sequences_rows(num_sequences: int, mean_length: int, K: int, config: Config,
                         hmmlearn) -> list[dict]:
    """Forward-backward and Baum-Welch over many sequences (hmmlearn's ``lengths``)."""
    rng = np.random.default_rng([config.seed, 4, num_sequences, mean_length, K])
    X, lengths, params = make_sequences(num_sequences, mean_length, K, rng)
    size = {"sequences": num_sequences, "T": len(X), "K": K}
    functions = {"ours": lambda: ours_forward_backward(X, params, lengths)}
    if hmmlearn is not None:
        model = _hmmlearn_model(hmmlearn, K, params)
        functions["peer"] = lambda: model.score_samples(X, lengths)
    t = measure(functions, config)
    ll, gamma, _ = t["ours"].result
    _, trans, means, _ = params
    init = (np.full(K, 1.0 / K), 0.5 * trans + 0.5 / K,
            means + rng.normal(scale=0.5, size=means.shape),
            np.repeat(2.0 * np.eye(D)[None], K, axis=0))
    iters = 3 if config.smoke else BW_ITERS

    def ours_fit():
        return GaussianHMM(K, tol=0.0, max_iter=iters, reg_covar=1e-6,
                           startprob_init=init[0], transmat_init=init[1],
                           means_init=init[2], covariances_init=init[3]).fit(X, lengths)

    fits = {"ours": ours_fit}
    if hmmlearn is not None:
        fits["peer"] = lambda: _hmmlearn_model(hmmlearn, K, init, iters).fit(X, lengths)
    f = measure(fits, config)
    a = f["ours"].result
    if hmmlearn is None:
        return [row("hmm", "forward-backward, many sequences", size, ours=t["ours"],
                    notes="hmmlearn not installed"),
                row("hmm", "Baum-Welch fit, many sequences", size, ours=f["ours"],
                    ours_iters=a.n_iter_, notes="hmmlearn not installed")]
    ll_ref, gamma_ref = t["peer"].result
    b = f["peer"].result
    return [row("hmm", "forward-backward, many sequences", size, ours=t["ours"],
                reference_name=REFERENCE, reference=t["peer"],
                agreement="|log p(x) diff| (nats)", agreement_value=abs(ll - ll_ref),
                notes=f"max |gamma diff| {np.abs(gamma - gamma_ref).max():.1e}"),
            row("hmm", "Baum-Welch fit, many sequences", size, ours=f["ours"],
                reference_name=REFERENCE, reference=f["peer"], ours_iters=a.n_iter_,
                ref_iters=b.monitor_.iter, agreement="|log p(x) diff| (nats)",
                agreement_value=float(abs(a.log_likelihood_[-1] - b.score(X, lengths))),
                notes=f"{iters} iterations on both sides")]


def numpy_loop_forward_backward(log_pi, log_A, log_B):
    """Design: the library's recursions before issue 32, a NumPy loop over t.

    Rabiner's scaled recursions with K-sized NumPy work per step (the sum of the pairwise
    marginals as one matrix product); returns (log p(x), gamma, sum_t xi_t).
    """
    T, K = log_B.shape
    A = np.exp(log_A)
    shift = log_B.max(axis=1)
    B = np.exp(log_B - shift[:, None])
    alpha, c = np.empty((T, K)), np.empty(T)
    v = np.exp(log_pi) * B[0]
    for t in range(T):
        if t > 0:
            v = (alpha[t - 1] @ A) * B[t]
        c[t] = v.sum()
        alpha[t] = v / c[t]
    beta = np.ones((T, K))
    for t in range(T - 2, -1, -1):
        beta[t] = (A @ (B[t + 1] * beta[t + 1])) / c[t + 1]
    right = (B[1:] * beta[1:]) / c[1:, None]
    return float(np.log(c).sum() + shift.sum()), alpha * beta, A * (alpha[:-1].T @ right)


def prefix_scan_forward_backward(log_pi, log_A, log_B):
    """Design: the associative (parallel-prefix) form of the recursions, in NumPy.

    The forward message is alpha_t ~ a_0 M_1 ... M_t and the backward one
    beta_t ~ M_{t+1} ... M_{T-1} 1, with a_0 = pi B_0 and M_t = A diag(B_t). An up-sweep
    forms the products of 2, 4, 8, ... consecutive M_t (each scaled to largest entry 1,
    its logarithmic scale kept aside), and two down-sweeps hand every node the
    normalised prefix (forward) or suffix (backward) vector: 2 log2(T) vectorised passes
    in all, each a batched matrix product, but O(T K^3) arithmetic (Sarkka and
    Garcia-Fernandez 2021, in scaled probability space). Returns (log p(x), gamma).
    """
    T, K = log_B.shape
    shift = log_B.max(axis=1)
    B = np.exp(log_B - shift[:, None])
    a0 = np.exp(log_pi) * B[0]
    levels = [(np.exp(log_A)[None] * B[1:, None, :], np.zeros(T - 1))]
    while len(levels[-1][0]) > 1:  # up-sweep: pairwise products, scaled
        m, s = levels[-1]
        if len(m) % 2:
            m, s = np.concatenate([m, np.eye(K)[None]]), np.append(s, 0.0)
        prod = m[0::2] @ m[1::2]
        top = prod.max(axis=(1, 2))
        levels.append((prod / top[:, None, None], s[0::2] + s[1::2] + np.log(top)))
    a0_sum = a0.sum()
    alpha, beta = np.empty((T, K)), np.ones((T, K))
    alpha[0] = a0 / a0_sum
    log_lik = np.log(a0_sum) + shift.sum()
    if T > 1:
        e, f = alpha[:1], np.full((1, K), 1.0 / K)
        for m, _ in reversed(levels[:-1]):  # down-sweeps, forward (e) and backward (f)
            left, right = m[0::2], m[1::2]
            e_child, f_child = np.empty((2 * len(e), K)), np.empty((2 * len(f), K))
            e_child[0::2], f_child[1::2] = e, f
            v = np.einsum("ni,nij->nj", e[:len(left)], left)
            e_child[1::2][:len(left)] = v / v.sum(axis=1, keepdims=True)
            w = np.einsum("nij,nj->ni", right, f[:len(right)])
            f_child[0::2][:len(right)] = w / w.sum(axis=1, keepdims=True)
            f_child[0::2][len(right):] = f[len(right):]
            e, f = e_child[:len(m)], f_child[:len(m)]
        root, log_scale = levels[-1]
        log_lik += log_scale[0] + np.log((alpha[0] @ root[0]).sum())
        v = np.einsum("ni,nij->nj", e, levels[0][0])
        alpha[1:] = v / v.sum(axis=1, keepdims=True)
        beta[1:], beta[0] = f, levels[0][0][0] @ f[0]
    gamma = alpha * beta
    return float(log_lik), gamma / gamma.sum(axis=1, keepdims=True)


def _forward_backward_rows(T: int, K: int, config: Config, sweep: str,
                           hmmlearn) -> list[dict]:
    X, params = make_problem(T, K, np.random.default_rng([config.seed, 2, T, K]))
    functions = {"ours": lambda: ours_forward_backward(X, params)}
    designs = {}
    if sweep == "K":
        start, trans, means, cov = params

        def design(fn):
            def run():
                log_b = gaussian_log_density(X, means, precision_cholesky(cov))
                with np.errstate(divide="ignore"):
                    return fn(np.log(start), np.log(trans), log_b)
            return run
        designs = {"design: NumPy loop over t (before)": design(numpy_loop_forward_backward),
                   "design: parallel prefix in NumPy": design(prefix_scan_forward_backward)}
        functions.update(designs)
    if hmmlearn is not None:
        model = _hmmlearn_model(hmmlearn, K, params)
        functions["peer"] = lambda: model.score_samples(X)
    t = measure(functions, config)
    ll, gamma, _ = t["ours"].result
    size = {"T": T, "K": K}
    if hmmlearn is None:
        rows = [row("hmm", f"forward-backward, {sweep}-sweep", size, ours=t["ours"],
                    agreement="", notes="hmmlearn not installed")]
        ll_ref = None
    else:
        ll_ref, gamma_ref = t["peer"].result
        rows = [row("hmm", f"forward-backward, {sweep}-sweep", size, ours=t["ours"],
                    reference_name=REFERENCE, reference=t["peer"],
                    agreement="|log p(x) diff| (nats)", agreement_value=abs(ll - ll_ref),
                    notes=f"max |gamma diff| {np.abs(gamma - gamma_ref).max():.1e}")]
    for case in designs:
        ll_d, gamma_d = t[case].result[:2]
        rows.append(row("hmm", case, size, ours=t[case],
                        reference_name="" if ll_ref is None else REFERENCE,
                        reference=t.get("peer"),
                        agreement="|log p(x) diff| (nats)" if ll_ref is not None else "",
                        agreement_value=None if ll_ref is None else abs(ll_d - ll_ref),
                        notes=f"vs the library: |log p(x) diff| {abs(ll_d - ll):.1e}, "
                              f"max |gamma diff| {np.abs(gamma_d - gamma).max():.1e}"))
    return rows


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
        many = [(20, 30, 3)]
    else:
        lengths = (1_000, 3_000, 10_000, 30_000, 100_000)
        states, fixed_k, fixed_t = (2, 4, 8, 16, 32, 64), 4, 10_000
        bw_cases = [(10_000, 4), (30_000, 4), (10_000, 16)]
        many = [(300, 100, 4), (100, 100, 16)]
    rows = [r for T in lengths for r in _forward_backward_rows(T, fixed_k, config, "T",
                                                               hmmlearn)]
    rows += [r for K in states for r in _forward_backward_rows(fixed_t, K, config, "K",
                                                               hmmlearn)]
    rows += [_baum_welch_row(T, K, config, hmmlearn) for T, K in bw_cases]
    rows += [r for n, m, K in many for r in _many_sequences_rows(n, m, K, config, hmmlearn)]
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
