"""EM for Gaussian mixtures (chapter 2) vs scikit-learn's ``GaussianMixture``.

Equal work: both fit the same data from the same initial parameters (weights, means and
precision matrices passed explicitly to both), with the same ``tol`` (on the change of
the per-sample mean log-likelihood), the same covariance floor ``reg_covar`` and the same
``max_iter``; ``n_init=1``. scikit-learn always runs its ``init_params`` step before it
overrides the result with the given parameters; we set ``init_params="random_from_data"``,
its cheapest option (its default, k-means, would add a whole k-means fit to its time).

Equal accuracy: the two implementations perform the same iterations, so we check that
they stop after the same number of iterations and that their final per-sample mean
log-likelihoods (``score(X)``) agree; the column ``agreement`` is the absolute difference
in nats per point.
"""

from __future__ import annotations

import numpy as np
from sklearn.mixture import GaussianMixture

from benchmarks._common import Config, measure, row
from elbo_lib.em import GaussianMixtureEM

TITLE = "EM for Gaussian mixtures vs scikit-learn GaussianMixture (full covariances)"
EQUALITY = (
    "Same data, same initial weights, means and precision matrices passed to both, same "
    "tol (1e-3 on the per-sample mean log-likelihood), reg_covar (1e-6) and max_iter (300), "
    "n_init=1; scikit-learn's unavoidable initialisation pass uses init_params="
    "'random_from_data' (its cheapest). Equal accuracy: same number of iterations and "
    "final mean log-likelihoods equal (agreement: their difference in nats per point).")
TOL, REG_COVAR, MAX_ITER = 1e-3, 1e-6, 300
LARGE_CHUNK, LARGE_ITERS = 65_536, 10


def make_problem(n: int, d: int, k: int, rng: np.random.Generator):
    """A mixture with overlapping random full-covariance components, and EM's start.

    Returns the data (n, d) and the initial parameters: uniform weights, means at k
    distinct random data points, every precision the inverse of the data covariance.
    """
    centres = rng.normal(scale=2.0, size=(k, d))
    factors = rng.normal(scale=0.6, size=(k, d, d)) + np.eye(d)
    labels = rng.integers(k, size=n)
    X = rng.normal(size=(n, d))
    for j in range(k):  # one component at a time: no (n, d, d) temporary at n = 1e6
        idx = labels == j
        X[idx] = centres[j] + X[idx] @ factors[j].T
    weights = np.full(k, 1.0 / k)
    means = X[rng.choice(n, size=k, replace=False)].copy()
    cov = np.atleast_2d(np.cov(X, rowvar=False, bias=True)) + REG_COVAR * np.eye(d)
    precisions = np.repeat(np.linalg.inv(cov)[None], k, axis=0)
    return X, weights, means, precisions


def cases(config: Config) -> list[tuple[str, int, int, int]]:
    """(sweep, n, d, K): an n-sweep at fixed d, K, then d- and K-sweeps at fixed n."""
    if config.smoke:
        return [("n", 300, 2, 3), ("n", 1000, 2, 3), ("d", 1000, 4, 3), ("K", 1000, 2, 4)]
    out = [("n", n, 8, 5) for n in (1_000, 3_000, 10_000, 30_000, 100_000)]
    out += [("d", 30_000, d, 5) for d in (2, 4, 16)]
    out += [("K", 30_000, 8, k) for k in (3, 10)]
    out += [("largest", 100_000, 16, 10)]
    return out


def run(config: Config) -> dict:
    rows = []
    for sweep, n, d, k in cases(config):
        rng = np.random.default_rng([config.seed, n, d, k])
        X, weights, means, precisions = make_problem(n, d, k, rng)

        def ours(X=X, weights=weights, means=means, precisions=precisions, k=k):
            return GaussianMixtureEM(k, tol=TOL, reg_covar=REG_COVAR, max_iter=MAX_ITER,
                                     weights_init=weights, means_init=means,
                                     precisions_init=precisions).fit(X)

        def sklearn(X=X, weights=weights, means=means, precisions=precisions, k=k):
            return GaussianMixture(k, covariance_type="full", tol=TOL, reg_covar=REG_COVAR,
                                   max_iter=MAX_ITER, n_init=1, init_params="random_from_data",
                                   weights_init=weights, means_init=means,
                                   precisions_init=precisions, random_state=0).fit(X)

        t = measure({"ours": ours, "sklearn": sklearn}, config)
        a, b = t["ours"].result, t["sklearn"].result
        diff = abs(a.score(X) - b.score(X))
        same_iter = a.n_iter_ == b.n_iter_
        large = n >= 30_000
        rows.append(row(
            "gmm", sweep if sweep == "largest" else f"{sweep}-sweep", {"n": n, "d": d, "K": k},
            ours=t["ours"], reference_name="sklearn GaussianMixture", reference=t["sklearn"],
            ours_iters=a.n_iter_, ref_iters=b.n_iter_,
            agreement="|mean log-lik diff| (nats/pt)", agreement_value=float(diff),
            target="ratio <= 1 (n >= 3e4)" if large else "",
            met=(t["ours"].median <= t["sklearn"].median) if large else None,
            notes="" if same_iter and diff < 1e-6 else
            f"iterations {a.n_iter_} vs {b.n_iter_}; converged {a.converged_}/{b.converged_}"))
    large, default_s = _large_row(config)
    rows.append(large)
    return {"name": "gmm", "title": TITLE, "equality": EQUALITY, "rows": rows,
            "extra": {"large_chunk_size": LARGE_CHUNK, "large_iterations": LARGE_ITERS,
                      "large_default_e_step_s": default_s}}


def _large_row(config: Config) -> tuple[dict, float]:
    """n = 1e6 points (d = 16, K = 10): our chunked E-step vs scikit-learn, 10 iterations.

    Both run exactly ``LARGE_ITERS`` iterations (tol = 0 never stops them early), so the
    time per iteration compares equal work; median of 3 runs, no warm-up (the same code
    ran warm on the smaller cases). Our default E-step is timed beside them.
    """
    n, d, k = (5_000, 4, 3) if config.smoke else (1_000_000, 16, 10)
    X, weights, means, precisions = make_problem(n, d, k,
                                                 np.random.default_rng([config.seed, n, d, k]))
    kw = {"tol": 0.0, "reg_covar": REG_COVAR, "max_iter": LARGE_ITERS,
          "weights_init": weights, "means_init": means, "precisions_init": precisions}
    functions = {
        "chunked": lambda: GaussianMixtureEM(k, chunk_size=LARGE_CHUNK, **kw).fit(X),
        "default": lambda: GaussianMixtureEM(k, **kw).fit(X),
        "sklearn": lambda: GaussianMixture(k, covariance_type="full", n_init=1,
                                           init_params="random_from_data", random_state=0,
                                           **kw).fit(X)}
    t = measure(functions, Config(repeats=config.repeats if config.smoke else 3),
                warmup=0)
    a, b = t["chunked"].result, t["sklearn"].result
    diff = abs(a.score(X) - b.score(X))
    return row("gmm", "chunked E-step", {"n": n, "d": d, "K": k},
               ours=t["chunked"], reference_name="sklearn GaussianMixture",
               reference=t["sklearn"], ours_iters=a.n_iter_, ref_iters=b.n_iter_,
               agreement="|mean log-lik diff| (nats/pt)", agreement_value=float(diff),
               notes=f"chunk_size={LARGE_CHUNK}; default E-step "
                     f"{t['default'].median:.3g} s"), t["default"].median
