"""Tests of elbo_lib.em (chapter 2): EM for Gaussian mixtures as coordinate ascent on the ELBO."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from elbo_lib.em import (
    GaussianMixtureEM,
    bound_along_path,
    em_map_jacobian,
    gmm_elbo,
    gmm_log_likelihood,
    gmm_responsibilities,
    interpolate_parameters,
    match_components,
    random_start,
)


def _synthetic(n=600, seed=0):
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0.0, 0.0], [4.0, 1.0, -2.0], [-3.0, 3.0, 2.0]])
    a = rng.normal(size=(3, 3, 3))
    covs = a @ a.transpose(0, 2, 1) / 3 + 0.3 * np.eye(3)
    z = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    eps = rng.standard_normal((n, 3))
    return means[z] + np.einsum("nij,nj->ni", np.linalg.cholesky(covs)[z], eps), z


@pytest.fixture(scope="module")
def iris():
    return load_iris().data


def _sklearn_fit(X, w, m, c, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        return GaussianMixture(len(w), covariance_type="full", weights_init=w, means_init=m,
                               precisions_init=np.linalg.inv(c), random_state=0, **kw).fit(X)


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


# -- agreement with scikit-learn -------------------------------------------------------
@pytest.mark.parametrize("seed,tol", [(0, 1e-3), (1, 1e-3), (2, 1e-8)])
def test_matches_sklearn_iris(iris, seed, tol):
    w, m, c = random_start(iris, 3, seed)
    ours = GaussianMixtureEM(3, weights_init=w, means_init=m, covariances_init=c, tol=tol,
                             max_iter=1000).fit(iris)
    sk = _sklearn_fit(iris, w, m, c, tol=tol, max_iter=1000)
    assert ours.converged_ and sk.converged_
    assert abs(ours.n_iter_ - sk.n_iter_) <= 1
    assert abs(ours.score(iris) - sk.score(iris)) <= 1e-6 * abs(sk.score(iris))
    assert abs(ours.lower_bound_ - sk.lower_bound_) <= 1e-6 * abs(sk.lower_bound_)
    perm = match_components(sk.means_, ours.means_)
    assert _rel(ours.weights_[perm], sk.weights_) < 1e-6
    assert _rel(ours.means_[perm], sk.means_) < 1e-6
    assert _rel(ours.covariances_[perm], sk.covariances_) < 1e-6
    # sklearn's per-iteration bounds are our log-likelihood trace divided by n
    np.testing.assert_allclose(np.asarray(sk.lower_bounds_) * len(iris),
                               ours.log_likelihood_[:-1], rtol=1e-9)


def test_matches_sklearn_precisions_init_and_max_iter():
    X, _ = _synthetic()
    w, m, c = random_start(X, 3, 5)
    ours = GaussianMixtureEM(3, weights_init=w, means_init=m,
                             precisions_init=np.linalg.inv(c), max_iter=7, tol=0.0).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = GaussianMixture(3, weights_init=w, means_init=m, precisions_init=np.linalg.inv(c),
                             max_iter=7, tol=0.0, random_state=0).fit(X)
    assert ours.n_iter_ == sk.n_iter_ == 7 and not ours.converged_
    assert _rel(ours.means_, sk.means_) < 1e-9
    assert _rel(ours.covariances_, sk.covariances_) < 1e-9
    assert _rel(ours.precisions_cholesky_ @ ours.precisions_cholesky_.transpose(0, 2, 1),
                sk.precisions_) < 1e-8


# -- the ELBO story: monotone, tight after the E-step, ladder ----------------------------
@pytest.mark.parametrize("seed", range(4))
def test_monotone_and_tight(iris, seed):
    w, m, c = random_start(iris, 4, seed)
    fit = GaussianMixtureEM(4, weights_init=w, means_init=m, covariances_init=c, tol=1e-6,
                            max_iter=300).fit(iris)
    ll, e, mm = fit.log_likelihood_, fit.elbo_after_e_step_, fit.elbo_after_m_step_
    assert ll.shape == (fit.n_iter_ + 1,) and e.shape == mm.shape == (fit.n_iter_,)
    assert np.all(np.diff(ll) >= -1e-9)
    assert np.max(np.abs(e - ll[:-1])) < 1e-10
    # ladder: L(q_t, th_{t-1}) <= L(q_t, th_t) <= log p(x | th_t)
    assert np.all(mm >= e - 1e-9)
    assert np.all(mm <= ll[1:] + 1e-9)


def test_first_iterations_increase_strictly(iris):
    w, m, c = random_start(iris, 3, 0)
    fit = GaussianMixtureEM(3, weights_init=w, means_init=m, covariances_init=c).fit(iris)
    assert fit.log_likelihood_[1] > fit.log_likelihood_[0] + 1.0


def test_traces_agree_with_public_functions(iris):
    w, m, c = random_start(iris, 3, 3)
    fit = GaussianMixtureEM(3, weights_init=w, means_init=m, covariances_init=c,
                            keep_history=True, max_iter=5, tol=0.0).fit(iris)
    assert len(fit.history_) == fit.n_iter_ + 1 == 6
    for t, theta in enumerate(fit.history_):
        assert abs(gmm_log_likelihood(iris, *theta) - fit.log_likelihood_[t]) < 1e-9
    q1 = gmm_responsibilities(iris, *fit.history_[0])
    assert abs(gmm_elbo(iris, q1, *fit.history_[1]) - fit.elbo_after_m_step_[0]) < 1e-9


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_elbo_below_loglik_for_any_q(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, 2))
    w, m, c = random_start(X, 3, seed)
    resp = rng.dirichlet(np.ones(3), size=40)
    ll = gmm_log_likelihood(X, w, m, c)
    exact = gmm_responsibilities(X, w, m, c)
    # the gap is KL(q || p(z | x)), summed over points: a value, not only a sign
    kl = float((resp * (np.log(resp) - np.log(exact))).sum())
    assert kl > 0
    assert gmm_elbo(X, resp, w, m, c) == pytest.approx(ll - kl, rel=1e-10, abs=1e-10)
    assert abs(gmm_elbo(X, exact, w, m, c) - ll) < 1e-10


def test_recovers_synthetic_truth():
    X, z = _synthetic(n=3000, seed=1)
    fit = GaussianMixtureEM(3, rng=0, tol=1e-8, max_iter=500).fit(X)
    true_means = np.array([[0.0, 0.0, 0.0], [4.0, 1.0, -2.0], [-3.0, 3.0, 2.0]])
    perm = match_components(true_means, fit.means_)
    assert np.max(np.abs(fit.means_[perm] - true_means)) < 0.2
    assert np.max(np.abs(fit.weights_[perm] - [0.5, 0.3, 0.2])) < 0.03
    assert np.mean(np.argsort(perm)[fit.predict(X)] == z) > 0.95


# -- pieces ---------------------------------------------------------------------------


def test_covariance_floor_prevents_collapse():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(50, 2)), np.tile([[5.0, 5.0]], (6, 1))])
    m = np.array([[0.0, 0.0], [5.0, 5.0]])
    c = np.stack([np.eye(2), 0.01 * np.eye(2)])
    w = np.array([0.9, 0.1])
    fit = GaussianMixtureEM(2, weights_init=w, means_init=m, covariances_init=c,
                            reg_covar=1e-4).fit(X)
    eig = np.linalg.eigvalsh(fit.covariances_)
    assert eig.min() >= 1e-4 * (1 - 1e-9)
    assert np.isfinite(fit.log_likelihood_).all()
    with pytest.raises(ValueError, match="reg_covar"):
        GaussianMixtureEM(2, weights_init=w, means_init=m, covariances_init=c,
                          reg_covar=0.0).fit(X)


def test_interpolation_endpoints_and_path(iris):
    w, m, c = random_start(iris[:, 2:], 3, 0)
    fit = GaussianMixtureEM(3, weights_init=w, means_init=m, covariances_init=c,
                            keep_history=True, max_iter=3, tol=0.0).fit(iris[:, 2:])
    th0, th1 = fit.history_[1], fit.history_[2]
    for t, th in ((0.0, th0), (1.0, th1)):
        got = interpolate_parameters(th0, th1, t)
        for a, b in zip(got, th, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    ts = np.linspace(-0.5, 1.5, 21)
    path = bound_along_path(iris[:, 2:], th0, th1, ts)
    assert np.all(path["elbo_q_old"] <= path["log_likelihood"] + 1e-9)
    assert np.all(path["elbo_q_new"] <= path["log_likelihood"] + 1e-9)
    assert abs(path["elbo_q_old"][5] - path["log_likelihood"][5]) < 1e-9   # t = 0
    assert abs(path["elbo_q_new"][15] - path["log_likelihood"][15]) < 1e-9  # t = 1
    assert int(np.argmax(path["elbo_q_old"])) == 15  # the M-step maximised the old bound


def test_predict_and_score(iris):
    fit = GaussianMixtureEM(3, rng=0).fit(iris)
    proba = fit.predict_proba(iris)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert set(np.unique(fit.predict(iris))) <= {0, 1, 2}
    assert abs(fit.score(iris) * len(iris) - fit.log_likelihood_[-1]) < 1e-9


def test_match_components():
    ref = np.array([[0.0], [5.0], [10.0]])
    assert list(match_components(ref, ref[[2, 0, 1]])) == [1, 2, 0]


# -- bad input ------------------------------------------------------------------------
_EYE2 = np.stack([np.eye(4)] * 2)


@pytest.mark.parametrize(("kwargs", "data", "error", "match"), [
    ({"n_components": 3}, lambda X: X[:2], ValueError, "larger than the number of points"),
    ({}, lambda X: np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X), ValueError,
     "finite"),
    ({}, lambda X: X[:, 0], ValueError, "dimension"),
    ({}, lambda X: X[None], ValueError, "dimension"),
    ({"n_components": 2.5}, None, TypeError, "integer"),
    ({"n_components": 0}, None, ValueError, ">= 1"),
    ({"means_init": np.zeros((3, 4))}, None, ValueError, "means_init must have shape"),
    ({"weights_init": [0.5, 0.6]}, None, ValueError, "summing to 1"),
    ({"covariances_init": _EYE2, "precisions_init": _EYE2}, None, ValueError, "not both"),
    ({"covariances_init": np.stack([np.triu(np.ones((4, 4)))] * 2)}, None, ValueError,
     "symmetric"),
    ({"covariances_init": -_EYE2}, None, ValueError, "positive definite"),
    ({"tol": -1.0}, None, ValueError, ">= 0"),
    ({"reg_covar": -1.0}, None, ValueError, ">= 0"),
    ({"covariance_floor": "median"}, None, ValueError, "covariance_floor"),
    ({"rng": "seed"}, None, TypeError, "rng"),
    ({"rng": None}, None, TypeError, "rng"),
])
def test_fit_rejects_bad_input(iris, kwargs, data, error, match):
    params = {"n_components": 2, "rng": 0, **kwargs}
    model = GaussianMixtureEM(**params)      # validation happens in fit, not __init__
    with pytest.raises(error, match=match):
        model.fit(iris if data is None else data(iris))


def test_bad_inputs_after_fit(iris):
    with pytest.raises(ValueError, match="not fitted"):
        GaussianMixtureEM(2).predict(iris)
    with pytest.raises(ValueError, match="features"):
        GaussianMixtureEM(2, rng=0).fit(iris).score(iris[:, :2])
    w, m, c = random_start(iris, 2, 0)
    with pytest.raises(ValueError, match="rows summing to 1"):
        gmm_elbo(iris, np.full((150, 2), 0.7), w, m, c)


# -- the two covariance floors ----------------------------------------------------------
def test_additive_floor_dips_within_shortfall_and_clip_is_monotone(iris):
    # seed 27: a component squeezes onto nearly collinear points (iris is rounded to 1 mm)
    add = GaussianMixtureEM(3, rng=27, tol=1e-6, max_iter=1000).fit(iris)
    clip = GaussianMixtureEM(3, rng=27, tol=1e-6, max_iter=1000,
                             covariance_floor="clip").fit(iris)
    d_add, d_clip = np.diff(add.log_likelihood_), np.diff(clip.log_likelihood_)
    assert d_add.min() < 0  # scikit-learn's rule is not exactly monotone here ...
    assert np.all(d_add >= -add.floor_shortfall_ - 1e-9)  # ... but within the bound
    assert np.all(d_clip >= -1e-9) and np.all(clip.floor_shortfall_ == 0)
    assert np.all(clip.elbo_after_m_step_ >= clip.elbo_after_e_step_ - 1e-9)


def test_floor_shortfall_is_the_additive_floors_loss_in_q(iris):
    """floor_shortfall_[t] against Q(S_k) - Q(S_k + eps I) from determinants.

    The trace above uses the shortfall only as one-sided slack, so a wrong sign in its
    eigenvalue formula (40,000 times too large on iris) passed; this pins its value.
    """
    eps = 1e-2
    fit = GaussianMixtureEM(3, rng=27, reg_covar=eps, max_iter=6, tol=0.0,
                            keep_history=True).fit(iris)
    want = [_shortfall_by_determinants(iris, gmm_responsibilities(iris, *fit.history_[t]),
                                       eps) for t in range(fit.n_iter_)]
    assert min(want) > 1e-3
    np.testing.assert_allclose(fit.floor_shortfall_, want, rtol=1e-8)


def test_clip_floor_is_exact_constrained_maximiser():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=60), np.zeros(60)])  # degenerate 2nd direction
    X[:, 1] += 1e-4 * rng.normal(size=60)
    w, m, c = np.array([1.0]), X.mean(axis=0, keepdims=True), np.cov(X.T, bias=True)[None]
    eps = 1e-3
    fit = GaussianMixtureEM(1, weights_init=w, means_init=m,
                            covariances_init=c + eps * np.eye(2), reg_covar=eps,
                            covariance_floor="clip", max_iter=2, tol=0.0).fit(X)
    eig_s, vec_s = np.linalg.eigh(np.cov(X.T, bias=True))
    want = vec_s @ np.diag(np.maximum(eig_s, eps)) @ vec_s.T
    np.testing.assert_allclose(fit.covariances_[0], want, rtol=1e-10, atol=1e-14)
    assert np.linalg.eigvalsh(fit.covariances_[0]).min() >= eps * (1 - 1e-12)


# -- incremental EM and MAP-EM (chapter 2) ----------------------------------------------
def _blobs(seed=0, n=300):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [5.0, 1.0], [1.0, 5.0]])
    return centres[rng.integers(3, size=n)] + rng.standard_normal((n, 2))


def test_incremental_em_elbo_is_monotone_and_reaches_the_em_fixed_point():
    from elbo_lib.em import incremental_em

    X = _blobs()
    m0 = X[[0, 1, 2]]
    inc = incremental_em(X, 3, num_blocks=6, num_sweeps=40, means_init=m0)
    assert np.all(np.diff(inc.elbo_) >= -1e-9)
    assert np.all(inc.elbo_ <= inc.log_likelihood_ + 1e-9)
    ref = GaussianMixtureEM(3, means_init=m0, tol=1e-12, max_iter=2000,
                            covariance_floor="clip").fit(X)
    assert inc.log_likelihood_[-1] == pytest.approx(ref.log_likelihood_[-1], rel=1e-8)


def test_incremental_em_with_one_block_is_em():
    from elbo_lib.em import incremental_em

    X = _blobs(1)
    m0 = X[[3, 4, 5]]
    inc = incremental_em(X, 3, num_blocks=1, num_sweeps=5, means_init=m0)
    ref = GaussianMixtureEM(3, means_init=m0, tol=0.0, max_iter=6,
                            covariance_floor="clip").fit(X)
    np.testing.assert_allclose(inc.log_likelihood_, ref.log_likelihood_[1:], rtol=1e-10)


def test_incremental_em_validates():
    from elbo_lib.em import incremental_em

    X = _blobs(n=20)
    with pytest.raises(ValueError, match="num_blocks"):
        incremental_em(X, 2, num_blocks=21)
    with pytest.raises(TypeError):
        incremental_em(X, 2, num_blocks=2.5)


def test_gmm_log_prior_matches_scipy():
    from scipy.stats import dirichlet, invwishart

    from elbo_lib.em import gmm_log_prior

    w = np.array([0.2, 0.3, 0.5])
    cov = np.array([np.eye(2) * s for s in (0.5, 1.0, 2.0)])
    cov[1, 0, 1] = cov[1, 1, 0] = 0.3
    psi = np.array([[0.4, 0.1], [0.1, 0.3]])
    for alpha in (1.0, 2.5):
        expected = dirichlet(np.full(3, alpha)).logpdf(w) + sum(
            invwishart(5.0, psi).logpdf(c) for c in cov)
        got = gmm_log_prior(w, cov, weight_concentration=alpha, cov_prior_dof=5.0,
                            cov_prior_scale=psi)
        assert got == pytest.approx(expected, rel=1e-10)


def test_map_em_is_monotone_and_its_fixed_point_is_stationary():
    from scipy.optimize import approx_fprime

    from elbo_lib.em import gmm_log_likelihood, gmm_log_prior, map_em

    X = _blobs(2, n=200)
    prior = dict(weight_concentration=2.0, cov_prior_dof=4.0,
                 cov_prior_scale=0.5 * np.eye(2))
    fit = map_em(X, 3, means_init=X[[0, 1, 2]], tol=1e-12, max_iter=3000, **prior)
    obj = fit.log_likelihood_ + fit.log_prior_
    assert np.all(np.diff(obj) >= -1e-9)

    def objective(mu_flat):  # the means are unconstrained: gradient must vanish
        mu = mu_flat.reshape(3, 2)
        return (gmm_log_likelihood(X, fit.weights_, mu, fit.covariances_)
                + gmm_log_prior(fit.weights_, fit.covariances_, **prior))

    grad = approx_fprime(fit.means_.ravel(), objective, 1e-6)
    assert np.max(np.abs(grad)) < 1e-3


def test_map_em_keeps_covariances_away_from_zero_on_duplicated_points():
    from elbo_lib.em import map_em

    X = np.vstack([np.repeat([[1.0, 1.0]], 10, axis=0), _blobs(3, n=60)])
    fit = map_em(X, 4, means_init=X[[0, 10, 20, 30]], cov_prior_scale=0.01 * np.eye(2))
    floor = 0.01 / (len(X) + 4 + 2 + 1)
    assert np.linalg.eigvalsh(fit.covariances_)[:, 0].min() >= floor
    with pytest.raises(ValueError, match="cov_prior_dof"):
        map_em(X, 2, cov_prior_dof=0.5)
# -- chunked E-step (bounded memory) ----------------------------------------------------
def _mixture(n, d, k, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(k, d))
    X = centres[rng.integers(k, size=n)] + rng.normal(size=(n, d))
    return X, X[rng.choice(n, size=k, replace=False)]


@pytest.mark.parametrize("floor", ["add", "clip"])
def test_chunked_e_step_gives_the_same_fit(floor):
    X, means = _mixture(3000, 3, 4, 1)
    kw = {"means_init": means, "tol": 1e-5, "max_iter": 40, "covariance_floor": floor}
    full = GaussianMixtureEM(4, **kw).fit(X)
    scale = np.abs(full.log_likelihood_).max()
    for chunk in (37, 512, 3000, 10_000):  # uneven last chunk, one chunk, larger than n
        fit = GaussianMixtureEM(4, chunk_size=chunk, **kw).fit(X)
        assert fit.n_iter_ == full.n_iter_ and fit.converged_ == full.converged_
        for name in ("log_likelihood_", "elbo_after_e_step_", "elbo_after_m_step_"):
            np.testing.assert_allclose(getattr(fit, name), getattr(full, name),
                                       rtol=0, atol=1e-12 * scale, err_msg=name)
        np.testing.assert_allclose(fit.floor_shortfall_, full.floor_shortfall_,
                                   rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(fit.means_, full.means_, atol=1e-10)
        np.testing.assert_allclose(fit.covariances_, full.covariances_, atol=1e-10)
        assert fit.score(X) == pytest.approx(full.score(X), rel=1e-12)


def test_chunked_e_step_memory_does_not_grow_with_n():
    import tracemalloc

    peaks = {}
    for n in (20_000, 80_000):
        X, means = _mixture(n, 4, 5, 2)
        cov = np.repeat(np.eye(4)[None], 5, axis=0)  # the default start copies X (np.cov)
        for chunk in (None, 1024):
            tracemalloc.start()
            GaussianMixtureEM(5, means_init=means, covariances_init=cov, max_iter=3, tol=0.0,
                              chunk_size=chunk).fit(X)
            peaks[n, chunk] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    # the default holds several (n, K) arrays: its peak grows with n (x2.8 for 4x the points
    # since the one loop stopped keeping the previous q beside the new one; x3.1 before);
    # chunked does not
    assert peaks[80_000, None] > 2.5 * peaks[20_000, None]
    assert peaks[80_000, 1024] < 1.2 * peaks[20_000, 1024]
    assert peaks[80_000, 1024] < 0.1 * peaks[80_000, None]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"chunk_size": 0}, "chunk_size"),
    ({"chunk_size": 100, "keep_history": True}, "keep_history"),
])
def test_chunk_size_is_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixtureEM(2, rng=0, **kwargs).fit(np.eye(3))


# ---------------------------------------------------------------------------------------
# Contract cases (issue 16): every public name of elbo_lib.em has bad-input cases.
# ---------------------------------------------------------------------------------------
from elbo_lib.em import (  # noqa: E402
    gmm_log_prior,
    incremental_em,
    map_em,
    weighted_gaussian_m_step,
)

_X = _synthetic(60, seed=3)[0]
_W, _M, _C = np.full(3, 1 / 3), _X[:3].copy(), np.stack([np.eye(3)] * 3)
_THETA = (_W, _M, _C)
_THETA_ZERO_W = (np.array([0.0, 0.5, 0.5]), _M, _C)   # a component with weight 0
_X_NAN = np.where(np.arange(_X.size).reshape(_X.shape) == 5, np.nan, _X)
_RESP = np.full((60, 3), 1 / 3)


def _fit(**kwargs):
    params = {"n_components": 2, "rng": 0, **kwargs}
    return GaussianMixtureEM(**params).fit(_X)


def _fitted():
    return GaussianMixtureEM(2, rng=0, max_iter=5).fit(_X)


def _shortfall_by_determinants(X, resp, eps):
    """delta = sum_k Q_k(S_k) - Q_k(S_k + eps I), Q_k(Sigma) = -N_k/2 (log|Sigma| +
    tr(Sigma^-1 S_k)): the additive floor's shortfall from determinants, not eigenvalues."""
    counts = resp.sum(axis=0)
    out = 0.0
    for k in range(resp.shape[1]):
        mean = resp[:, k] @ X / counts[k]
        s = (resp[:, k, None] * (X - mean)).T @ (X - mean) / counts[k]
        floored = s + eps * np.eye(X.shape[1])
        q_exact = -0.5 * counts[k] * (np.linalg.slogdet(s)[1] + X.shape[1])
        q_floor = -0.5 * counts[k] * (np.linalg.slogdet(floored)[1]
                                      + np.trace(np.linalg.solve(floored, s)))
        out += q_exact - q_floor
    return out


def _m_step_shortfall():
    resp = gmm_responsibilities(_X, *_THETA)
    return (weighted_gaussian_m_step(_X, resp, 0.5, "add")[3],
            _shortfall_by_determinants(_X, resp, 0.5))


def _assert_shortfall(out):
    got, want = out
    assert want > 1e-3, "the test needs a visible shortfall"
    np.testing.assert_allclose(got, want, rtol=1e-9)


def _scaled_fit(scale):
    """EM is equivariant: fitting X s from a start scaled by s gives the means times s."""
    w, m, c = random_start(_X, 3, 1)
    fits = [GaussianMixtureEM(3, weights_init=w, means_init=m * s, covariances_init=c * s**2,
                              reg_covar=0.0, max_iter=20, tol=0.0).fit(_X * s)
            for s in (1.0, scale)]
    return fits[0].means_ * scale, fits[1].means_


def _assert_path_finite_and_tight(path):
    assert np.all(np.isfinite(path["log_likelihood"])), path
    ref = [gmm_log_likelihood(_X, *th) for th in (_THETA_ZERO_W, _THETA)]
    np.testing.assert_allclose(path["log_likelihood"][[0, -1]], ref, rtol=1e-12)


BAD_INPUTS = {
    "GaussianMixtureEM": [
        (lambda: _fit(n_components=0), ValueError, r"n_components must be >= 1"),
        (lambda: _fit(n_components=2.5), TypeError, r"n_components must be an integer"),
        (lambda: _fit(tol=np.nan), ValueError, r"tol must be a finite number >= 0"),
        (lambda: _fit(reg_covar=-1.0), ValueError, r"reg_covar must be a finite number >= 0"),
        (lambda: _fit(max_iter=0), ValueError, r"max_iter must be >= 1"),
        (lambda: _fit(covariance_floor="median"), ValueError, r"covariance_floor must be"),
        (lambda: _fit(chunk_size=0), ValueError, r"chunk_size must be >= 1"),
        (lambda: _fit(rng=None), TypeError, r"rng must be a numpy.random.Generator"),
        (lambda: _fit(means_init=np.zeros((3, 3))), ValueError,
         r"means_init must have shape \(2, 3\)"),
        (lambda: _fit(weights_init=[0.5, 0.6]), ValueError, r"weights_init must be >= 0"),
        (lambda: _fit(covariances_init=-np.stack([np.eye(3)] * 2)), ValueError,
         r"covariances_init\[0\] must be positive definite"),
        (lambda: _fit(precisions_init=-np.stack([np.eye(3)] * 2)), ValueError,
         r"precisions_init must be positive definite"),
    ],
    "GaussianMixtureEM.fit": [
        (lambda: GaussianMixtureEM(2, rng=0).fit(_X_NAN), ValueError,
         r"X must contain only finite"),
        (lambda: GaussianMixtureEM(2, rng=0).fit(_X[:, 0]), ValueError,
         r"X must have 2 dimension"),
        (lambda: GaussianMixtureEM(5, rng=0).fit(_X[:3]), ValueError,
         r"n_components=5 is larger than the number of points n=3"),
        (lambda: GaussianMixtureEM(2, rng=0).fit("X"), TypeError, r"X must be numeric"),
    ],
    "GaussianMixtureEM.score_samples": [
        (lambda: GaussianMixtureEM(2).score_samples(_X), ValueError, r"call fit\(X\) first"),
        (lambda: _fitted().score_samples(_X[:, :2]), ValueError,
         r"X has 2 features, the model was fitted with 3"),
        (lambda: _fitted().score_samples(_X_NAN), ValueError, r"X must contain only finite"),
    ],
    "GaussianMixtureEM.score": [
        (lambda: GaussianMixtureEM(2).score(_X), ValueError, r"call fit\(X\) first"),
        (lambda: _fitted().score(_X[:0]), ValueError, r"X must not be empty"),
    ],
    "GaussianMixtureEM.predict_proba": [
        (lambda: _fitted().predict_proba(_X[:, :2]), ValueError, r"X has 2 features"),
    ],
    "GaussianMixtureEM.predict": [
        (lambda: GaussianMixtureEM(2).predict(_X), ValueError, r"call fit\(X\) first"),
        (lambda: _fitted().predict(_X_NAN), ValueError, r"X must contain only finite"),
    ],
    "gmm_log_likelihood": [
        (lambda: gmm_log_likelihood(_X_NAN, *_THETA), ValueError, r"X must contain only"),
        (lambda: gmm_log_likelihood(_X, [0.5, 0.6, 0.1], _M, _C), ValueError,
         r"weights must be >= 0 with rows summing to 1"),
        (lambda: gmm_log_likelihood(_X, _W, _M[:, :2], _C), ValueError,
         r"means must have shape \(3, 3\)"),
        (lambda: gmm_log_likelihood(_X, _W, _M, -_C), ValueError,
         r"covariances\[0\] must be positive definite"),
        (lambda: gmm_log_likelihood(_X, _W, _M, _C + np.triu(np.ones(3), 1)), ValueError,
         r"covariances must be symmetric"),
    ],
    "gmm_responsibilities": [
        (lambda: gmm_responsibilities(_X, _W, _M, _C[:2]), ValueError,
         r"covariances must have shape \(3, 3, 3\)"),
        (lambda: gmm_responsibilities(_X, [1.0, 0.0, -0.0001], _M, _C), ValueError,
         r"weights must be >= 0"),
    ],
    "gmm_elbo": [
        (lambda: gmm_elbo(_X, np.full((60, 3), 0.5), *_THETA), ValueError,
         r"resp must be >= 0 with rows summing to 1"),
        (lambda: gmm_elbo(_X, _RESP[:5], *_THETA), ValueError, r"resp must have shape"),
        (lambda: gmm_elbo(_X, np.where(_RESP > 0, np.nan, 0), *_THETA), ValueError,
         r"resp must contain only finite"),
    ],
    "interpolate_parameters": [
        (lambda: interpolate_parameters(_THETA, _THETA, np.nan), ValueError,
         r"t must be finite"),
        (lambda: interpolate_parameters(_THETA, _THETA, "0.5"), TypeError,
         r"t must be a real number"),
        (lambda: interpolate_parameters((_W, _M, -_C), _THETA, 0.5), ValueError,
         r"theta_0 covariances\[0\] must be positive definite"),
        (lambda: interpolate_parameters(_THETA, (_W[:2], _M[:2], _C[:2]), 0.5), ValueError,
         r"theta_1 .*must have shape"),
        (lambda: interpolate_parameters(_THETA, (_W, _M), 0.5), ValueError,
         r"theta_1 must be a tuple \(weights, means, covariances\)"),
        (lambda: interpolate_parameters(([0.5, 0.6, 0.1], _M, _C), _THETA, 0.5),
         ValueError, r"theta_0 weights must be >= 0"),
    ],
    "bound_along_path": [
        (lambda: bound_along_path(_X, _THETA, _THETA, [0.0, np.nan]), ValueError,
         r"ts must contain only finite"),
        (lambda: bound_along_path(_X[:, :2], _THETA, _THETA, [0.0]), ValueError,
         r"theta_old means must have shape \(3, 2\)"),
        (lambda: bound_along_path(_X_NAN, _THETA, _THETA, [0.0]), ValueError,
         r"X must contain only finite"),
    ],
    "match_components": [
        (lambda: match_components(np.zeros((3, 2)), np.zeros((2, 2))), ValueError,
         r"reference and estimate must have the same shape"),
        (lambda: match_components(np.zeros(3), np.array([0.0, np.nan, 1.0])), ValueError,
         r"estimate must contain only finite"),
        (lambda: match_components(np.zeros((2, 2, 2)), np.zeros((2, 2, 2))), ValueError,
         r"reference must have 1 or 2 dimension"),
    ],
    "random_start": [
        (lambda: random_start(_X[:2], 3, 0), ValueError,
         r"n_components=3 is larger than the number of points n=2"),
        (lambda: random_start(_X, 2, None), TypeError, r"rng must be"),
        (lambda: random_start(_X_NAN, 2, 0), ValueError, r"X must contain only finite"),
        (lambda: random_start(_X, 0, 0), ValueError, r"n_components must be >= 1"),
    ],
    "incremental_em": [
        (lambda: incremental_em(_X, 2, num_blocks=61, rng=0), ValueError,
         r"num_blocks=61 is larger than the number of points n=60"),
        (lambda: incremental_em(_X, 2, num_sweeps=0, rng=0), ValueError,
         r"num_sweeps must be >= 1"),
        (lambda: incremental_em(_X, 2, num_blocks=2.5, rng=0), TypeError,
         r"num_blocks must be an integer"),
        (lambda: incremental_em(_X_NAN, 2, rng=0), ValueError, r"X must contain only"),
        (lambda: incremental_em(_X, 2, reg_covar=-1.0, rng=0), ValueError,
         r"reg_covar must be a finite number >= 0"),
        (lambda: incremental_em(_X[:2], 3, rng=0), ValueError,
         r"n_components=3 is larger than the number of points n=2"),
    ],
    "gmm_log_prior": [
        (lambda: gmm_log_prior(_W, _C, weight_concentration=0.5, cov_prior_dof=5.0,
                               cov_prior_scale=np.eye(3)), ValueError,
         r"weight_concentration >= 1"),
        (lambda: gmm_log_prior(_W, _C, weight_concentration=1.0, cov_prior_dof=5.0,
                               cov_prior_scale=-np.eye(3)), ValueError,
         r"cov_prior_scale must be positive definite"),
        (lambda: gmm_log_prior(_W, -_C, weight_concentration=1.0, cov_prior_dof=5.0,
                               cov_prior_scale=np.eye(3)), ValueError,
         r"covariances\[0\] must be positive definite"),
        (lambda: gmm_log_prior([0.5, 0.6], _C[:2], weight_concentration=1.0,
                               cov_prior_dof=5.0, cov_prior_scale=np.eye(3)), ValueError,
         r"weights must be >= 0 with rows summing to 1"),
        (lambda: gmm_log_prior(_W, _C, weight_concentration=1.0, cov_prior_dof=np.nan,
                               cov_prior_scale=np.eye(3)), ValueError, r"cov_prior_dof"),
    ],
    "map_em": [
        (lambda: map_em(_X, 2, cov_prior_scale=-np.eye(3), rng=0), ValueError,
         r"cov_prior_scale must be positive definite"),
        (lambda: map_em(_X, 2, weight_concentration=0.5, rng=0), ValueError,
         r"weight_concentration >= 1"),
        (lambda: map_em(_X, 2, max_iter=0, rng=0), ValueError, r"max_iter must be >= 1"),
        (lambda: map_em(_X_NAN, 2, rng=0), ValueError, r"X must contain only finite"),
        (lambda: map_em(_X, 2, cov_prior_dof=1.0, rng=0), ValueError,
         r"cov_prior_dof > d - 1 = 2"),
        (lambda: map_em(_X, 2), TypeError, r"rng must be"),
    ],
    "weighted_gaussian_m_step": [
        (lambda: weighted_gaussian_m_step(_X, -_RESP, 1e-6), ValueError,
         r"resp must be >= 0"),
        (lambda: weighted_gaussian_m_step(_X, _RESP[:5], 1e-6), ValueError,
         r"resp must have 60 rows"),
        (lambda: weighted_gaussian_m_step(_X, _RESP, 1e-6, "median"), ValueError,
         r"floor must be one of"),
        (lambda: weighted_gaussian_m_step(_X, _RESP, -1.0), ValueError,
         r"reg_covar must be a finite number >= 0"),
        (lambda: weighted_gaussian_m_step(_X, np.where(_RESP > 0, np.nan, 0), 1e-6),
         ValueError, r"resp must contain only finite"),
    ],
}

NO_INPUTS = {"EMTrace": "result object of incremental_em and map_em; readers never build one"}

EXTREME_INPUTS = {
    "weighted_gaussian_m_step": [(_m_step_shortfall, _assert_shortfall)],
    "interpolate_parameters": [
        # a zero weight: t = 1 gives theta_1 and t = 0 theta_0 exactly, no NaN in between
        (lambda: interpolate_parameters(_THETA_ZERO_W, _THETA, 1.0),
         lambda out: np.testing.assert_allclose(out[0], _W, rtol=1e-14)),
        (lambda: interpolate_parameters(_THETA, _THETA_ZERO_W, 1.0),
         lambda out: np.testing.assert_allclose(out[0], _THETA_ZERO_W[0], atol=0)),
        (lambda: interpolate_parameters(_THETA_ZERO_W, _THETA, 0.5),
         lambda out: np.testing.assert_allclose(out[0], [0.0, 0.5, 0.5], atol=0)),
    ],
    "bound_along_path": [
        (lambda: bound_along_path(_X, _THETA_ZERO_W, _THETA, [0.0, 0.5, 1.0]),
         _assert_path_finite_and_tight),
    ],
    "GaussianMixtureEM.fit": [
        (lambda s=scale: _scaled_fit(s),
         lambda out: np.testing.assert_allclose(out[1], out[0], rtol=1e-9))
        for scale in (1e100, 1e-100)
    ],
    "gmm_log_likelihood": [
        # one point, one dimension: log N(0 | 0, 1)
        (lambda: gmm_log_likelihood([[0.0]], [1.0], [[0.0]], [[[1.0]]]),
         lambda out: np.testing.assert_allclose(out, -0.5 * np.log(2 * np.pi), rtol=1e-15)),
    ],
}


# ---------------------------------------------------------------------------------------
# issue 34: the second round of bad input; far outliers, collapsed components, MAP-EM
# without a floor on degenerate data
# ---------------------------------------------------------------------------------------
def _collapsed_m_step():
    """Component 0 holds only point 0: S_0 = 0 is singular, the shortfall is infinite."""
    resp = np.zeros((60, 2))
    resp[0, 0], resp[1:, 1] = 1.0, 1.0
    return (weighted_gaussian_m_step(_X, resp, 1e-6, "add")[3],
            _shortfall_by_determinants(_X, resp, 1e-6))


def _far_points(scale):
    return np.array([[scale, 0.0, 0.0], [-scale, scale, 0.0], [0.0, 0.0, -scale]])


def _scipy_log_joint(X, weights, means, covs):
    from scipy.stats import multivariate_normal
    return np.stack([np.log(w) + multivariate_normal(m, c).logpdf(X)
                     for w, m, c in zip(weights, means, covs, strict=True)], axis=1)


def _scipy_responsibilities(X, weights, means, covs):
    from scipy.special import softmax
    return softmax(_scipy_log_joint(X, weights, means, covs), axis=1)


def _far_scoring():
    """At norm 1e155 every log density overflows: scipy gives -inf for log p(x) (the
    correctly rounded value) and the responsibilities are the limit of those at 1e150."""
    fit = _fitted()
    theta = (fit.weights_, fit.means_, fit.covariances_)
    return (fit.score_samples(_far_points(1e155)), fit.predict_proba(_far_points(1e155)),
            gmm_log_likelihood(_far_points(1e200), *theta, per_sample=True),
            gmm_responsibilities(_far_points(1e300), *theta),
            _scipy_log_joint(_far_points(1e155), *theta),
            _scipy_responsibilities(_far_points(1e150), *theta))


def _assert_far_scoring(out):
    score, proba, log_lik, resp, scipy_log_joint, scipy_resp = out
    from scipy.special import logsumexp
    np.testing.assert_array_equal(score, logsumexp(scipy_log_joint, axis=1))  # -inf
    np.testing.assert_array_equal(log_lik, [-np.inf] * 3)
    for got in (proba, resp):
        np.testing.assert_allclose(got, scipy_resp, atol=1e-12)


def _assert_map_em_degenerate(out):
    fit, X = out
    assert np.all(np.isfinite(fit.log_likelihood_)) and np.all(np.isfinite(fit.log_prior_))
    assert np.all(np.diff(fit.log_likelihood_ + fit.log_prior_) >= -1e-9 * np.abs(
        fit.log_likelihood_[1:]))  # the MAP objective never decreases
    assert np.all(np.linalg.eigvalsh(fit.covariances_) > 0)
    # the means are weighted averages of the data: in its affine hull (constant: the point)
    if np.ptp(X, axis=0).max() == 0:
        np.testing.assert_allclose(fit.means_, np.broadcast_to(X[0], fit.means_.shape),
                                   rtol=1e-12)


_CONSTANT = np.full((10, 3), 2.5)
_COLLINEAR = np.outer(np.linspace(-1, 1, 12), [1.0, 2.0, -1.0])
_WIDE = _X[:4]  # d = 3 > n - 1: a singular data covariance

BAD_INPUTS["map_em"] += [
    (lambda: map_em(_X, 2, max_iter=2**63, rng=0), ValueError,
     r"max_iter must be <= 2\*\*32 - 1"),
    (lambda: map_em(_X, 2, rng=-1), ValueError, r"rng must be .*>= 0"),
    (lambda: map_em(_X + 1j, 2, rng=0), TypeError, r"X must be real"),
    (lambda: map_em(_X, 2, tol=10**400, rng=0), ValueError, r"tol must be .*float range"),
]
BAD_INPUTS["GaussianMixtureEM.fit"] += [
    (lambda: GaussianMixtureEM(2, rng=0, max_iter=2**63).fit(_X), ValueError,
     r"max_iter must be <= 2\*\*32 - 1"),
    (lambda: GaussianMixtureEM(2, rng=0, reg_covar="1e-6").fit(_X), TypeError,
     r"reg_covar must be a real number >= 0, got str"),
    (lambda: GaussianMixtureEM(2, rng=0).fit(_X.astype(complex)), TypeError,
     r"X must be real"),
]
BAD_INPUTS["gmm_log_likelihood"] += [
    (lambda: gmm_log_likelihood(_X, _W, _M, _C + 0j), TypeError, r"covariances must be real"),
    (lambda: gmm_log_likelihood(_X, _W, _M.astype(str), _C), TypeError,
     r"means must be numeric array-like"),
]
BAD_INPUTS["incremental_em"] += [
    (lambda: incremental_em(_X, 2, num_sweeps=2**63, rng=0), ValueError,
     r"num_sweeps must be <= 2\*\*32 - 1"),
]
BAD_INPUTS["random_start"] += [
    (lambda: random_start(_X, 2, -1), ValueError, r"rng must be .*>= 0, got -1"),
    (lambda: random_start(_X, np.int64(2), np.int64(-5)), ValueError, r"rng must be"),
]
_W0, _MU0, _COV0 = random_start(_X, 2, 0)
BAD_INPUTS["em_map_jacobian"] = [
    (lambda: em_map_jacobian(_X, _W0, _MU0, _COV0, step=0.0), ValueError,
     r"step must be > 0, got 0.0"),
    (lambda: em_map_jacobian(_X, _W0, _MU0, _COV0, step="1e-6"), TypeError,
     r"step must be a real number, got str"),
    (lambda: em_map_jacobian(_X_NAN, _W0, _MU0, _COV0), ValueError,
     r"X must contain only finite"),
    (lambda: em_map_jacobian(_X + 1j, _W0, _MU0, _COV0), TypeError, r"X must be real"),
    (lambda: em_map_jacobian(_X, _W0, _MU0[:, :2], _COV0), ValueError,
     r"means must have shape \(2, 3\), got \(2, 2\)"),
    (lambda: em_map_jacobian(_X, _W0, _MU0, _COV0, covariance_floor="median"), ValueError,
     r"covariance_floor must be one of"),
]
EXTREME_INPUTS["weighted_gaussian_m_step"] += [
    (_collapsed_m_step,
     lambda out: np.testing.assert_array_equal(out, [np.inf, np.inf])),
]
EXTREME_INPUTS["GaussianMixtureEM.score_samples"] = [(_far_scoring, _assert_far_scoring)]
EXTREME_INPUTS["map_em"] = [
    # no covariance floor is needed (the docstring): constant, collinear and d > n data
    (lambda X=X: (map_em(X, 2, rng=0, max_iter=50), X), _assert_map_em_degenerate)
    for X in (_CONSTANT, _COLLINEAR, _WIDE)
]
EXTREME_INPUTS["GaussianMixtureEM.fit"] += [
    # numpy integers where ints are, a requires-grad tensor as data: the same fit
    (lambda: (GaussianMixtureEM(np.int64(2), rng=np.int64(0), max_iter=np.int32(5))
              .fit(__import__("torch").tensor(_X, requires_grad=True)).means_,
              _fitted().means_),
     lambda out: np.testing.assert_array_equal(out[0], out[1])),
]


def _hessian(f, v, h=1e-4):
    n = len(v)
    e = np.eye(n) * h
    hess = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            hess[i, j] = hess[j, i] = (f(v + e[i] + e[j]) - f(v + e[i] - e[j])
                                       - f(v - e[i] + e[j]) + f(v - e[i] - e[j])) / (4 * h * h)
    return hess


def test_em_map_jacobian_is_the_fraction_of_missing_information():
    """Dempster, Laird and Rubin (1977): J = I - (d2 Q)^{-1} d2 log p, both Hessians from
    SciPy's normal density by finite differences (1-D, two overlapping components)."""
    from scipy.special import logsumexp
    from scipy.stats import norm

    from elbo_lib.em import em_map_jacobian

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0.0, 1.0, 300), rng.normal(1.8, 0.7, 200)])[:, None]
    fit = GaussianMixtureEM(2, means_init=[[-0.5], [2.5]], tol=1e-12, max_iter=5000,
                            covariance_floor="clip").fit(x)
    assert fit.converged_

    def unpack(v):  # (pi_1, mu_1, mu_2, var_1, var_2)
        return np.array([v[0], 1 - v[0]]), v[1:3], v[3:5]

    def comp(v):
        w, mu, var = unpack(v)
        return np.log(w) + norm.logpdf(x, mu, np.sqrt(var))

    v0 = np.concatenate([fit.weights_[:1], fit.means_[:, 0], fit.covariances_[:, 0, 0]])
    log_r = comp(v0) - logsumexp(comp(v0), axis=1, keepdims=True)
    h_obs = _hessian(lambda v: logsumexp(comp(v), axis=1).sum(), v0)
    h_q = _hessian(lambda v: np.sum(np.exp(log_r) * comp(v)), v0)
    expected = np.sort(np.linalg.eigvals(np.eye(5) - np.linalg.solve(h_q, h_obs)).real)
    jac = em_map_jacobian(x, fit.weights_, fit.means_, fit.covariances_)
    got = np.sort(np.linalg.eigvals(jac).real)
    assert 0.5 < got[-1] < 1  # overlapping components: a slow, convergent rate
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("step", [0.0, -1e-6, np.nan])
def test_em_map_jacobian_rejects_bad_steps(iris, step):
    from elbo_lib.em import em_map_jacobian

    w, mu, cov = random_start(iris, 2, 0)
    with pytest.raises(ValueError, match="step"):
        em_map_jacobian(iris, w, mu, cov, step=step)
