"""CAVI for the Bayesian mixture (chapter 4) vs scikit-learn's ``BayesianGaussianMixture``.

The models differ, so this is not equal work: ours is the mixture of Blei, Kucukelbir and
McAuliffe (2017, section 3): unit-variance components, uniform fixed weights, a
N(0, sigma^2 I) prior on each mean, and q(mu_k) q(c_i) (one update of phi, m, s^2 per
iteration). ``BayesianGaussianMixture(covariance_type="spherical")`` also learns a
variance per component (Gamma/Wishart prior), the weights (Dirichlet prior), and a
mean prior scaled by each component's precision (Normal-Wishart), so each of its
iterations computes more (digammas, per-component variances, the degrees of freedom).

What is made equal: the data (well-separated clusters of Blei et al.'s kind), K, the
prior variance of the means (``mean_precision_prior = 1 / sigma^2``), the start (the
same K data points: scikit-learn's ``init_params="random_from_data"`` draw, which our
CAVI receives as ``init_means``; see :func:`common_start`) and the stopping rule: both
stop when an iteration changes the ELBO by less than 1e-6 nats per data point
(scikit-learn's ``tol`` is on its total lower bound, so ``tol = 1e-6 n``; ours is
relative, so ``tol = 1e-6 n / |ELBO|``, with |ELBO| from an untimed run). Agreement: the
adjusted Rand index of the two hard clusterings (1 = identical partitions).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import BayesianGaussianMixture

from benchmarks._common import Config, measure, row
from elbo_lib.mean_field import cavi_gaussian_mixture

TITLE = "CAVI (Bayesian mixture, Blei et al.) vs scikit-learn BayesianGaussianMixture"
EQUALITY = (
    "Different models (ours: unit variances and fixed uniform weights; scikit-learn: "
    "learned spherical variances, Dirichlet weights, Normal-Wishart mean prior), so each "
    "of its iterations does more work. Equal: the data, $K$, the prior variance of the "
    r"means (`mean_precision_prior` $= 1/\sigma^2$), the start (the same $K$ data points, one "
    "per true cluster: scikit-learn's `random_from_data` draw, passed to ours as "
    r"`init_means`) and the stopping rule (an ELBO change below $10^{-6}$ nats per point). "
    "Agreement: the adjusted Rand index of the two clusterings. Time per iteration = time "
    "to convergence / iterations (set-up included).")
PRIOR_VAR = 10.0
PER_POINT_TOL = 1e-6


#: The well-separated true means of chapter 4's experiment (distances > 5 sd).
TRUE_MEANS = np.array([[-3.0, 0.5], [2.5, 2.0], [1.0, -3.0]])


def make_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Unit-variance clusters around chapter 4's three means (Blei et al.'s model)."""
    labels = rng.integers(len(TRUE_MEANS), size=n)
    return TRUE_MEANS[labels] + rng.normal(size=(n, 2)), labels


def common_start(labels: np.ndarray, k: int) -> tuple[int, np.ndarray]:
    """A scikit-learn ``random_state`` and the K data points its start will pick.

    ``init_params="random_from_data"`` starts from K distinct data points drawn with
    ``RandomState(random_state).choice(n, K, replace=False)``; our CAVI starts from the
    same points (``init_means``). The first seed whose points lie in K different true
    clusters is used, so that neither method is timed on a start that leads it into a
    local optimum (both then find the same partition).
    """
    n = len(labels)
    for seed in range(1000):
        idx = np.random.RandomState(seed).choice(n, size=k, replace=False)
        if len(set(labels[idx].tolist())) == k:
            return seed, idx
    raise RuntimeError("no seed puts the starting points in different clusters")


def run(config: Config) -> dict:
    sizes = (300, 1_000) if config.smoke else (1_000, 10_000, 100_000)
    d, k = 2, 3
    rows = []
    for n in sizes:
        rng = np.random.default_rng([config.seed, 4, n])
        X, labels = make_data(n, rng)
        seed, idx = common_start(labels, k)
        init = X[idx]
        probe = cavi_gaussian_mixture(X, k, PRIOR_VAR, init_means=init, tol=1e-12,
                                      max_iter=1000)
        rel_tol = PER_POINT_TOL * n / abs(probe.elbo[-1])

        def ours(X=X, init=init, rel_tol=rel_tol):
            return cavi_gaussian_mixture(X, k, PRIOR_VAR, init_means=init, tol=rel_tol,
                                         max_iter=1000)

        def sklearn(X=X, n=n, seed=seed):
            return BayesianGaussianMixture(
                n_components=k, covariance_type="spherical",
                weight_concentration_prior_type="dirichlet_distribution",
                mean_prior=np.zeros(d), mean_precision_prior=1.0 / PRIOR_VAR,
                init_params="random_from_data", tol=PER_POINT_TOL * n, max_iter=1000,
                random_state=seed).fit(X)

        t = measure({"ours": ours, "sklearn": sklearn}, config)
        a, b = t["ours"].result, t["sklearn"].result
        ari = adjusted_rand_score(a.labels, b.predict(X))
        rows.append(row(
            "cavi", "time to convergence", {"n": n, "d": d, "K": k},
            ours=t["ours"], reference_name="sklearn BayesianGaussianMixture (spherical)",
            reference=t["sklearn"], ours_iters=a.num_iter, ref_iters=b.n_iter_,
            agreement="adjusted Rand index", agreement_value=float(ari),
            notes=f"converged {a.converged}/{b.converged_}; different models"))
    return {"name": "cavi", "title": TITLE, "equality": EQUALITY, "rows": rows}
