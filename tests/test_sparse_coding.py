"""Tests of elbo_lib.sparse_coding (chapter 3)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import sparse_encode
from sklearn.linear_model import Lasso

from elbo_lib.sparse_coding import (
    best_m_term_reconstruction,
    debias_codes,
    denoise_image,
    fista,
    fit_sparse_coding_gaussian_q,
    ista,
    lasso_duality_gap,
    lasso_objective,
    learn_dictionary,
    lipschitz_constant,
    normalize_columns,
    omp_codes,
    orientation_concentration,
    sklearn_lasso_alpha,
    soft_threshold,
    sparse_coding_gaussian_elbo,
    sparse_coding_log_evidence_2d,
    sparse_coding_log_joint,
    update_dictionary,
)


def _problem(seed=0, n=40, d=20, k=30, density=0.1, noise=0.05):
    rng = np.random.default_rng(seed)
    W = normalize_columns(rng.standard_normal((d, k)))
    H = rng.standard_normal((n, k)) * (rng.random((n, k)) < density)
    X = H @ W.T + noise * rng.standard_normal((n, d))
    return X, W


# ------------------------------------------------------------------ proximal step
def test_soft_threshold_values():
    out = soft_threshold([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5], 1.0)
    np.testing.assert_array_equal(out, [-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5])


@settings(max_examples=50, deadline=None)
@given(v=st.floats(-10, 10), tau=st.floats(0, 5))
def test_soft_threshold_is_the_prox_of_l1(v, tau):
    # brute-force minimisation of 0.5 (u - v)^2 + tau |u| on a fine grid around v
    grid = np.linspace(v - tau - 1, v + tau + 1, 20001)
    grid = np.append(grid, 0.0)
    u_best = grid[np.argmin(0.5 * (grid - v) ** 2 + tau * np.abs(grid))]
    assert abs(float(soft_threshold(v, tau)) - u_best) <= 2 * (2 * tau + 2) / 20000 + 1e-12


def test_soft_threshold_rejects_negative_threshold():
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        soft_threshold([1.0], -0.1)


# --------------------------------------------------------------- Lipschitz constant
def test_lipschitz_exact_and_power_agree_with_svd():
    rng = np.random.default_rng(1)
    for shape in [(20, 30), (30, 20), (5, 5)]:
        W = rng.standard_normal(shape)
        expected = np.linalg.norm(W, 2) ** 2
        assert lipschitz_constant(W) == pytest.approx(expected, rel=1e-12)
        assert lipschitz_constant(W, "power", tol=1e-13, max_iter=100000, rng=0) == pytest.approx(
            expected, rel=1e-6)


def test_lipschitz_errors():
    with pytest.raises(ValueError, match="all zeros"):
        lipschitz_constant(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="method must be"):
        lipschitz_constant(np.eye(2), "svd")
    with pytest.raises(ValueError, match="did not converge"):
        lipschitz_constant(np.diag([1.0, 0.999999]), "power", max_iter=2, tol=1e-15, rng=0)
    with pytest.raises(TypeError, match="rng"):          # no hidden seed
        lipschitz_constant(np.eye(2), "power")


def test_step_above_two_over_l_diverges_and_one_over_l_does_not():
    # the step 1/L is what makes ISTA a descent method; 2.5/L overshoots
    X, W = _problem(seed=2)
    L = lipschitz_constant(W)
    good = ista(X, W, 0.1, lipschitz=L, max_iter=200, tol=0, track_objective=True)
    bad = ista(X, W, 0.1, lipschitz=L / 2.5, max_iter=200, tol=0, track_objective=True)
    assert np.all(np.diff(good.objectives) <= 1e-12 * np.abs(good.objectives[:-1]))
    assert bad.objectives[-1] > 1e3 * good.objectives[-1]


# ------------------------------------------------------------ against scikit-learn
@pytest.mark.parametrize("lam", [0.02, 0.1, 0.5])
@pytest.mark.parametrize("algorithm", ["lasso_lars", "lasso_cd"])
def test_fista_matches_sparse_encode(lam, algorithm):
    X, W = _problem(seed=3)
    ours = fista(X, W, lam, max_iter=20000, tol=1e-12)
    assert ours.converged
    theirs = sparse_encode(X, W.T, algorithm=algorithm, alpha=lam, max_iter=10000)
    f_ours = lasso_objective(X, W, ours.codes, lam)
    f_theirs = lasso_objective(X, W, theirs, lam)
    # ours is at least as good (to rounding), and the two agree to 1e-6 relative
    assert np.all(f_ours <= f_theirs * (1 + 1e-9))
    np.testing.assert_allclose(f_ours, f_theirs, rtol=1e-6)
    np.testing.assert_allclose(ours.codes, theirs, atol=1e-4)


@pytest.mark.parametrize("method", [ista, fista])
def test_ista_and_fista_match_sklearn_lasso_with_converted_penalty(method):
    X, W = _problem(seed=4, n=5)
    lam = 0.05
    ours = method(X, W, lam, max_iter=50000, tol=1e-12)
    alpha = sklearn_lasso_alpha(lam, W.shape[0])
    assert alpha == pytest.approx(lam / W.shape[0])
    for i in range(X.shape[0]):  # scikit-learn's Lasso codes one signal per fit
        model = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100000).fit(W, X[i])
        f_ours = lasso_objective(X[i], W, ours.codes[i], lam)[0]
        f_sk = lasso_objective(X[i], W, model.coef_, lam)[0]
        assert f_ours == pytest.approx(f_sk, rel=1e-6)
        # and Lasso's own objective is ours divided by d
        resid = X[i] - W @ model.coef_
        sk_obj = resid @ resid / (2 * W.shape[0]) + alpha * np.abs(model.coef_).sum()
        assert sk_obj == pytest.approx(f_sk / W.shape[0], rel=1e-12)


def test_wrong_penalty_conversion_is_detected():
    # passing lam (not lam / d) to Lasso solves a different problem: the check must see it
    X, W = _problem(seed=5, n=1)
    lam = 0.05
    ours = fista(X, W, lam, max_iter=20000, tol=1e-12)
    wrong = Lasso(alpha=lam, fit_intercept=False, tol=1e-12, max_iter=100000).fit(W, X[0])
    f_wrong = lasso_objective(X, W, wrong.coef_, lam)[0]
    assert f_wrong > lasso_objective(X, W, ours.codes, lam)[0] * (1 + 1e-3)


def test_duality_gap_certifies_the_optimum():
    X, W = _problem(seed=6)
    lam = 0.1
    exact = fista(X, W, lam, max_iter=20000, tol=1e-13).codes
    rough = ista(X, W, lam, max_iter=5, tol=0).codes
    gap_exact = lasso_duality_gap(X, W, exact, lam)
    gap_rough = lasso_duality_gap(X, W, rough, lam)
    assert np.all(gap_exact >= -1e-10) and np.all(gap_exact < 1e-8)
    excess = lasso_objective(X, W, rough, lam) - lasso_objective(X, W, exact, lam)
    assert np.all(gap_rough >= excess - 1e-10)  # the gap bounds the excess objective
    assert gap_rough.max() > 1e-2  # and it does notice that 5 ISTA steps are not enough


# ------------------------------------------------------------------ ISTA vs FISTA
def test_fista_needs_fewer_iterations_than_ista():
    X, W = _problem(seed=7, d=30, k=60, density=0.05)
    lam = 0.05
    f_star = lasso_objective(X, W, fista(X, W, lam, max_iter=50000, tol=1e-13).codes, lam).sum()
    target = f_star * (1 + 1e-6)

    def iterations(result):
        hits = np.flatnonzero(result.objectives <= target)
        return hits[0] + 1 if hits.size else np.inf

    kw = dict(max_iter=5000, tol=0, track_objective=True)
    n_ista = iterations(ista(X, W, lam, **kw))
    n_fista = iterations(fista(X, W, lam, restart=False, **kw))
    n_restart = iterations(fista(X, W, lam, **kw))
    assert n_fista < n_ista and n_restart < n_ista
    assert np.isfinite(n_fista)


def test_batch_equals_one_signal_at_a_time():
    X, W = _problem(seed=8, n=6)
    batch = fista(X, W, 0.1, max_iter=5000, tol=1e-12).codes
    single = np.vstack([fista(x, W, 0.1, max_iter=5000, tol=1e-12).codes for x in X])
    np.testing.assert_allclose(batch, single, atol=1e-8)


def test_warm_start_and_single_signal_shapes():
    X, W = _problem(seed=9, n=3)
    res = fista(X[0], W, 0.1, max_iter=2000, tol=1e-10)
    assert res.codes.shape == (1, W.shape[1])
    warm = fista(X[:1], W, 0.1, codes_init=res.codes, max_iter=2000, tol=1e-10)
    assert warm.num_iter <= 20


@pytest.mark.parametrize("method", [ista, fista])
def test_bad_inputs_raise(method):
    X, W = _problem(seed=10, n=3)
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        method(X, W, 0.0)
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        method(X, W, -1.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        method(X[:, :-1], W, 0.1)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        method(bad, W, 0.1)
    W_inf = W.copy()
    W_inf[0, 0] = np.inf
    with pytest.raises(ValueError, match="finite"):
        method(X, W_inf, 0.1)
    with pytest.raises(ValueError, match="codes_init must have shape"):
        method(X, W, 0.1, codes_init=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="tol must be"):
        method(X, W, 0.1, tol=-1.0)
    with pytest.raises(TypeError, match="lam must be a positive number"):
        method(X, W, "0.1")
    with pytest.raises(ValueError, match="lipschitz"):
        method(X, W, 0.1, lipschitz=0.0)


# ---------------------------------------------------------------- dictionary learning
def test_normalize_columns():
    W = np.array([[3.0, 0.1], [4.0, 0.0]])
    np.testing.assert_allclose(np.linalg.norm(normalize_columns(W), axis=0), 1.0)
    proj = normalize_columns(W, project=True)
    np.testing.assert_allclose(proj[:, 0], [0.6, 0.8])
    np.testing.assert_allclose(proj[:, 1], [0.1, 0.0])  # already inside the ball
    with pytest.raises(ValueError, match="zero columns"):
        normalize_columns(np.array([[1.0, 0.0], [0.0, 0.0]]))


def test_update_dictionary_is_exact_block_minimisation():
    X, W = _problem(seed=11, n=200)
    H = fista(X, W, 0.1, max_iter=500).codes
    rng = np.random.default_rng(0)
    W0 = normalize_columns(rng.standard_normal(W.shape))
    W1 = update_dictionary(X, H, W0, num_sweeps=50)
    assert np.all(np.linalg.norm(W1, axis=0) <= 1 + 1e-12)
    fit0 = np.sum((X - H @ W0.T) ** 2)
    fit1 = np.sum((X - H @ W1.T) ** 2)
    assert fit1 < fit0
    # every column is optimal given the others: a perturbation within the ball is no better
    for j in range(3):
        others = X - H @ W1.T + np.outer(H[:, j], W1[:, j])
        w = W1[:, j] + 1e-3 * rng.standard_normal(W.shape[0])
        w /= max(np.linalg.norm(w), 1.0)
        assert (np.sum((others - np.outer(H[:, j], w)) ** 2)
                >= np.sum((others - np.outer(H[:, j], W1[:, j])) ** 2) - 1e-9)


def test_learn_dictionary_objective_decreases_and_recovers_atoms():
    rng = np.random.default_rng(12)
    d, k, n = 16, 12, 600
    W_true = normalize_columns(rng.standard_normal((d, k)))
    H = rng.laplace(size=(n, k)) * (rng.random((n, k)) < 0.15)
    X = H @ W_true.T + 0.01 * rng.standard_normal((n, d))
    res = learn_dictionary(X, k, 0.05, num_iter=60, code_iter=30, rng=rng)
    assert np.all(np.diff(res.objectives) <= 1e-12 * res.objectives[:-1])
    assert res.objectives[-1] < 0.5 * res.objectives[1]
    assert np.all(np.linalg.norm(res.dictionary, axis=0) <= 1 + 1e-12)
    # most true atoms are found (up to sign) by some learned atom
    match = np.abs(W_true.T @ res.dictionary).max(axis=1)
    assert np.mean(match > 0.95) >= 0.75


def test_learn_dictionary_errors():
    X, _ = _problem(seed=13, n=10)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="num_atoms must be <="):
        learn_dictionary(X, 11, 0.1, rng=rng)
    with pytest.raises(TypeError, match="rng must be"):
        learn_dictionary(X, 3, 0.1, rng=None)
    with pytest.raises(ValueError, match="W_init must have shape"):
        learn_dictionary(X, 3, 0.1, rng=rng, W_init=np.ones((5, 3)))


def test_debias_codes_is_least_squares_on_the_support():
    X, W = _problem(seed=14, n=30)
    H = fista(X, W, 0.2, max_iter=2000).codes
    D = debias_codes(X, W, H, chunk_size=7)
    assert np.array_equal(D != 0, H != 0)
    for i in range(0, 30, 7):
        S = np.flatnonzero(H[i])
        expected, *_ = np.linalg.lstsq(W[:, S], X[i], rcond=None)
        np.testing.assert_allclose(D[i, S], expected, atol=1e-10)


def test_best_m_term_reconstruction():
    rng = np.random.default_rng(15)
    U, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    X = rng.standard_normal((5, 8))
    np.testing.assert_allclose(best_m_term_reconstruction(X, U, 8), X, atol=1e-12)
    np.testing.assert_allclose(best_m_term_reconstruction(X, U, 0), 0.0)
    m = np.array([1, 2, 3, 4, 5])
    rec = best_m_term_reconstruction(X, U, m)
    for i in range(5):  # brute force: keep the m largest |coefficients|
        c = U.T @ X[i]
        keep = np.argsort(-np.abs(c))[: m[i]]
        np.testing.assert_allclose(rec[i], U[:, keep] @ c[keep], atol=1e-12)
    with pytest.raises(ValueError, match="orthonormal"):
        best_m_term_reconstruction(X, 2 * U, 2)
    with pytest.raises(ValueError, match="num_terms"):
        best_m_term_reconstruction(X, U, 9)


# -------------------------------------------------------------------------- patches


def test_denoise_image_with_identity_dictionary_and_small_penalty_is_identity():
    rng = np.random.default_rng(2)
    img = rng.random((12, 14))
    out = denoise_image(img, np.eye(16), 1e-9, max_iter=50)
    np.testing.assert_allclose(out, img, atol=1e-6)
    with pytest.raises(ValueError, match="p\\*p rows"):
        denoise_image(img, np.eye(15), 0.1)




def test_easy_signals_leave_the_working_set_without_changing_the_answer():
    X, W = _problem(seed=16, n=8)
    X[::2] = 1e-3 * X[::2]              # these codes are exactly zero at the optimum
    lam = 0.1
    res = fista(X, W, lam, max_iter=5000, tol=1e-12, check_every=1)
    assert res.converged
    assert np.all(res.codes[::2] == 0)
    hard_only = fista(X[1::2], W, lam, max_iter=5000, tol=1e-12, check_every=1)
    np.testing.assert_allclose(res.codes[1::2], hard_only.codes, atol=1e-12)
    assert res.num_iter == hard_only.num_iter
    # tracking the objective sees the frozen rows too: it equals the final objective at the end
    tracked = fista(X, W, lam, max_iter=5000, tol=1e-12, track_objective=True)
    assert tracked.objectives[-1] == pytest.approx(lasso_objective(X, W, tracked.codes, lam).sum())
    # a signal that does not converge within max_iter is reported as such
    assert not ista(X, W, lam, max_iter=3, tol=1e-12).converged


@pytest.mark.parametrize("method", [ista, fista, lambda *a, **kw: fista(*a, restart=False, **kw)])
def test_blocks_of_signals_give_the_one_pass_answer(monkeypatch, method):
    # a 2-row block: every signal iterated apart from the others, in 21 blocks (the last
    # one row); the codes, iteration count and convergence are those of one pass
    X, W = _problem(seed=17, n=41)
    one_pass = method(X, W, 0.1, max_iter=300, tol=1e-6)
    monkeypatch.setattr("elbo_lib.sparse_coding.proximal_gradient.BLOCK_BYTES", 2 * 8 * W.shape[1])
    blocked = method(X, W, 0.1, max_iter=300, tol=1e-6)
    np.testing.assert_allclose(blocked.codes, one_pass.codes, rtol=0, atol=1e-12)
    assert (blocked.num_iter, blocked.converged) == (one_pass.num_iter, one_pass.converged)
    assert not method(X, W, 0.1, max_iter=3, tol=1e-6).converged


# ------------------------------------------ the 2-D posterior, OMP, orientation (ch. 3)
def test_sparse_coding_log_joint_matches_scipy_densities():
    from scipy import stats

    rng = np.random.default_rng(3)
    W, H, x = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)), rng.standard_normal(5)
    expected = (stats.norm.logpdf(x[None, :], H @ W.T, 0.7).sum(axis=1)
                + stats.laplace.logpdf(H, scale=1.3).sum(axis=1))
    np.testing.assert_allclose(sparse_coding_log_joint(x, W, H, 0.7, 1.3), expected,
                               rtol=1e-12)
    with pytest.raises(ValueError, match="sigma"):
        sparse_coding_log_joint(x, W, H, 0.0, 1.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        sparse_coding_log_joint(x[:4], W, H, 1.0, 1.0)


@pytest.mark.parametrize("x", [[1.4, 0.05], [1.8, 0.6], [-0.3, 0.2], [0.0, 0.0]])
def test_log_evidence_2d_matches_grid_quadrature(x):
    from scipy.special import logsumexp

    rho = 0.8
    W = np.array([[1.0, rho], [0.0, np.sqrt(1 - rho**2)]])
    step = 0.01
    g = np.arange(-5 + step / 2, 6, step)
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    log_joint = sparse_coding_log_joint(np.asarray(x), W, grid, 0.5, 1.0)
    log_px, orthants = sparse_coding_log_evidence_2d(x, W, 0.5, 1.0)
    assert abs(logsumexp(log_joint) + 2 * np.log(step) - log_px) < 1e-4
    weights = np.exp(log_joint - log_px) * step**2
    assert abs(weights[grid[:, 0] > 0].sum() - orthants[1].sum()) < 1e-3
    assert abs(orthants.sum() - 1) < 1e-9


def test_log_evidence_2d_errors():
    with pytest.raises(ValueError, match="shape"):
        sparse_coding_log_evidence_2d([1.0, 2.0], np.eye(3), 1.0, 1.0)
    with pytest.raises(ValueError, match="independent"):
        sparse_coding_log_evidence_2d([1.0, 2.0], np.ones((2, 2)), 1.0, 1.0)


def test_omp_codes_counts_and_agree_with_sklearn_per_signal():
    from sklearn.linear_model import orthogonal_mp

    X, W = _problem(seed=4)
    counts = np.arange(X.shape[0]) % 4
    codes = omp_codes(X, W, counts)
    np.testing.assert_array_equal((codes != 0).sum(axis=1), counts)
    for i in np.flatnonzero(counts):
        ref = orthogonal_mp(W, X[i], n_nonzero_coefs=int(counts[i]))
        np.testing.assert_allclose(codes[i], ref, atol=1e-10)
    # a signal in the span of two atoms, asked for five: stops after two, as scikit-learn
    x = 2 * W[:, 3] - W[:, 7]
    with pytest.warns(RuntimeWarning):
        ref = orthogonal_mp(W, x, n_nonzero_coefs=5)
    np.testing.assert_allclose(omp_codes(x[None], W, [5])[0], ref, atol=1e-12)
    assert np.flatnonzero(ref).tolist() == [3, 7]
    with pytest.raises(ValueError, match="unit-norm"):
        omp_codes(X, 2 * W, 1)
    with pytest.raises(TypeError, match="num_nonzero"):
        omp_codes(X, W, 1.5)


def test_orientation_concentration_of_gratings_and_noise():
    yy, xx = np.mgrid[:8, :8]
    gratings = np.array([np.cos(2 * np.pi * 0.25 * (np.cos(a) * xx + np.sin(a) * yy)).ravel()
                         for a in np.linspace(0, np.pi, 6, endpoint=False)])
    assert np.all(orientation_concentration(gratings) > 0.7)   # window leakage: < 1
    # an axis-aligned grating on an FFT bin puts all its power at one orientation: exactly 1
    vertical = np.cos(2 * np.pi * 0.25 * xx).ravel()[None]
    assert orientation_concentration(vertical, fft_size=8)[0] == pytest.approx(1.0, abs=1e-12)
    # white noise spreads its power: about 2 * 15 / 180 = 1/6 per wedge, the best of 180
    # wedges a little more
    noise = np.random.default_rng(0).standard_normal((500, 64))
    assert 1 / 6 < np.median(orientation_concentration(noise)) < 0.35
    with pytest.raises(ValueError, match="half_width_deg"):
        orientation_concentration(gratings, half_width_deg=90)


# ------------------------------------------------------------------ contract (issue 16)
_RNG = np.random.default_rng(2026)
_W = normalize_columns(_RNG.standard_normal((6, 8)))
_H = _RNG.standard_normal((4, 8)) * (_RNG.random((4, 8)) < 0.4)
_X = _H @ _W.T + 0.05 * _RNG.standard_normal((4, 6))
_NAN_X = np.where(np.eye(4, 6) > 0, np.nan, _X)
_INF_W = np.where(np.eye(6, 8) > 0, np.inf, _W)
_U = np.linalg.qr(_RNG.standard_normal((6, 6)))[0]
_W2 = np.array([[1.0, 0.8], [0.0, 0.6]])
_IMG = _RNG.random((10, 11))
_PATCHES = _RNG.standard_normal((5, 16))


def _codes(X=_X, W=_W, lam=0.1, method=None):
    return (method or fista)(X, W, lam, max_iter=20000, tol=1e-13).codes


def _close(expected, rtol=1e-9, atol=0.0):
    return lambda out: np.testing.assert_allclose(out, expected, rtol=rtol, atol=atol)


def _finite_equal(expected, rtol=1e-9):
    def check(out):
        assert np.all(np.isfinite(out)), "result is not finite"
        np.testing.assert_allclose(out, expected, rtol=rtol)
    return check


# Contract cases (issue 16): every public name of elbo_lib.sparse_coding has bad-input cases.
BAD_INPUTS = {
    "soft_threshold": [
        (lambda: soft_threshold([1.0, np.nan], 0.5), ValueError, r"v must contain only finite"),
        (lambda: soft_threshold([1.0, 2.0], np.inf), ValueError, r"threshold must contain only"),
        (lambda: soft_threshold([1.0, 2.0], -0.5), ValueError, r"threshold must be >= 0"),
        (lambda: soft_threshold("abc", 0.5), TypeError, r"v must be numeric"),
        (lambda: soft_threshold([1.0, 2.0, 3.0], [0.1, 0.2]), ValueError,
         r"threshold must be broadcastable to the shape of v \(3,\), got shape \(2,\)"),
    ],
    "lipschitz_constant": [
        (lambda: lipschitz_constant(_INF_W), ValueError, r"W must contain only finite"),
        (lambda: lipschitz_constant(np.ones(3)), ValueError, r"W must have 2 dimension"),
        (lambda: lipschitz_constant(np.zeros((3, 2))), ValueError, r"W must not be all zeros"),
        (lambda: lipschitz_constant(_W, "svd"), ValueError, r"method must be 'exact' or"),
        (lambda: lipschitz_constant(_W, "power", rng=None), TypeError, r"rng must be"),
        (lambda: lipschitz_constant(_W, "power", tol=np.nan, rng=0), ValueError, r"tol must be"),
        (lambda: lipschitz_constant(_W, "power", max_iter=0, rng=0), ValueError,
         r"max_iter must be >= 1"),
        (lambda: lipschitz_constant(np.full((2, 2), 1e200)), ValueError,
         r"W .*overflows float64"),
    ],
    "sklearn_lasso_alpha": [
        (lambda: sklearn_lasso_alpha(np.nan, 4), ValueError, r"lam must be a finite number"),
        (lambda: sklearn_lasso_alpha(0.1, 0), ValueError, r"signal_dim must be >= 1"),
        (lambda: sklearn_lasso_alpha(0.1, 2.5), TypeError, r"signal_dim must be an integer"),
        (lambda: sklearn_lasso_alpha("0.1", 4), TypeError, r"lam must be a positive number"),
    ],
    "lasso_objective": [
        (lambda: lasso_objective(_NAN_X, _W, _H, 0.1), ValueError, r"X must contain only finite"),
        (lambda: lasso_objective(_X, _W, _H[:, :-1], 0.1), ValueError,
         r"H must have shape \(num_signals, num_atoms\) = \(4, 8\), got \(4, 7\)"),
        (lambda: lasso_objective(_X, _W, np.full_like(_H, np.nan), 0.1), ValueError,
         r"H must contain only finite"),
        (lambda: lasso_objective(_X[:, :-1], _W, _H, 0.1), ValueError, r"X has signals of length"),
        (lambda: lasso_objective(_X, _W, _H, -1.0), ValueError, r"lam must be a finite number > 0"),
        (lambda: lasso_objective(_X[:0], _W, _H[:0], 0.1), ValueError, r"X must not be empty"),
        (lambda: lasso_objective(_X * 1e160, _W, _H * 1e160, 0.1), ValueError,
         r"overflows float64.*X"),
    ],
    "lasso_duality_gap": [
        (lambda: lasso_duality_gap(_X, _INF_W, _H, 0.1), ValueError, r"W must contain only finite"),
        (lambda: lasso_duality_gap(_X, _W, _H.T, 0.1), ValueError, r"H must have shape"),
        (lambda: lasso_duality_gap(_X, _W, _H, np.nan), ValueError, r"lam must be a finite"),
        (lambda: lasso_duality_gap(_X * 1e160, _W, _H * 1e160, 0.1), ValueError,
         r"overflows float64.*X"),
    ],
    "ista": [
        (lambda: ista(_NAN_X, _W, 0.1), ValueError, r"X must contain only finite"),
        (lambda: ista(_X, _W, 0.1, tol=np.nan), ValueError, r"tol must be a finite number >= 0"),
        (lambda: ista(_X, _W, 0.1, tol="1e-8"), TypeError, r"tol must be a real number"),
        (lambda: ista(_X, _W, 0.1, max_iter=0), ValueError, r"max_iter must be >= 1"),
        (lambda: ista(_X, _W, 0.1, check_every=0), ValueError, r"check_every must be >= 1"),
        (lambda: ista(_X, _W, 0.1, codes_init=np.zeros((4, 3))), ValueError,
         r"codes_init must have shape"),
        (lambda: ista(_X, _W, 0.1, lipschitz=np.nan), ValueError, r"lipschitz must be a finite"),
        (lambda: ista(_X, np.zeros((6, 8)), 0.1), ValueError, r"W must not be all zeros"),
        # a step 1/lipschitz far above 2/L: the codes overflow; say when and why
        (lambda: ista(_X, _W, 0.1, lipschitz=1e-3, max_iter=5000), ValueError,
         r"codes diverged at iteration \d+.*lipschitz"),
    ],
    "fista": [
        (lambda: fista(_X, _INF_W, 0.1), ValueError, r"W must contain only finite"),
        (lambda: fista(_X, _W, 0.0), ValueError, r"lam must be a finite number > 0"),
        (lambda: fista(_X, _W, 0.1, tol=np.nan), ValueError, r"tol must be a finite number >= 0"),
        (lambda: fista(np.ones((2, 2, 6)), _W, 0.1), ValueError, r"X must have 1 or 2 dim"),
        (lambda: fista(_X, _W, 0.1, codes_init=np.full((4, 8), np.inf)), ValueError,
         r"codes_init must contain only finite"),
        (lambda: fista(_X, _W, 0.1, lipschitz=1e-3, max_iter=5000), ValueError,
         r"codes diverged at iteration \d+.*lipschitz"),
    ],
    "normalize_columns": [
        (lambda: normalize_columns(np.array([[1.0, 0.0], [2.0, 0.0]])), ValueError,
         r"W has zero columns \[1\]"),
        (lambda: normalize_columns(np.ones(3)), ValueError, r"W must have 2 dimension"),
        (lambda: normalize_columns([[1.0, np.nan]]), ValueError, r"W must contain only finite"),
        (lambda: normalize_columns("W"), TypeError, r"W must be numeric"),
    ],
    "update_dictionary": [
        (lambda: update_dictionary(_NAN_X, _H, _W), ValueError, r"X must contain only finite"),
        (lambda: update_dictionary(_X, _H[:3], _W), ValueError, r"H must have shape"),
        (lambda: update_dictionary(_X, _H, _W[:5]), ValueError, r"X has shape .* W has shape"),
        (lambda: update_dictionary(_X, _H, _W, num_sweeps=0), ValueError,
         r"num_sweeps must be >= 1"),
    ],
    "learn_dictionary": [
        (lambda: learn_dictionary(_X, 5, 0.1, rng=0), ValueError,
         r"num_atoms must be <= the number of signals 4, got 5"),
        (lambda: learn_dictionary(_X, 0, 0.1, rng=0), ValueError, r"num_atoms must be >= 1"),
        (lambda: learn_dictionary(_X, 2, 0.1, num_iter=0, rng=0), ValueError,
         r"num_iter must be >= 1"),
        (lambda: learn_dictionary(_X, 2, 0.1, code_iter=1.5, rng=0), TypeError,
         r"code_iter must be an integer"),
        (lambda: learn_dictionary(_X, 2, 0.1, rng=None), TypeError, r"rng must be"),
        (lambda: learn_dictionary(_NAN_X, 2, 0.1, rng=0), ValueError, r"X must contain only"),
        (lambda: learn_dictionary(_X, 2, 0.1, rng=0, W_init=np.zeros((6, 2))), ValueError,
         r"W_init has zero columns"),
        (lambda: learn_dictionary(_X, 2, 0.1, rng=0, W_init=np.full((6, 2), np.nan)), ValueError,
         r"W_init must contain only finite"),
        (lambda: learn_dictionary(np.vstack([_X[:1], np.zeros((3, 6))]), 2, 0.1, rng=0),
         ValueError, r"X must have at least num_atoms = 2 non-zero rows, got 1"),
    ],
    "best_m_term_reconstruction": [
        (lambda: best_m_term_reconstruction(_X, 2 * _U, 2), ValueError,
         r"basis must have orthonormal columns"),
        (lambda: best_m_term_reconstruction(_X, _U, 7), ValueError,
         r"num_terms must be integers in \[0, 6\]"),
        (lambda: best_m_term_reconstruction(_X, _U, [1, 2]), ValueError,
         r"num_terms must be an int or have shape \(4,\), got shape \(2,\)"),
        (lambda: best_m_term_reconstruction(_X, _U, 1.5), TypeError,
         r"num_terms must be integers"),
        (lambda: best_m_term_reconstruction(_NAN_X, _U, 2), ValueError, r"X must contain only"),
    ],
    "debias_codes": [
        (lambda: debias_codes(_X, _W, _H[:, :3]), ValueError, r"H must have shape"),
        (lambda: debias_codes(_X, _W, _H, chunk_size=0), ValueError, r"chunk_size must be >= 1"),
        (lambda: debias_codes(_X, np.ones((6, 8)), np.ones((4, 8))), ValueError,
         r"H .*linearly dependent atoms"),
        (lambda: debias_codes(_X, _INF_W, _H), ValueError, r"W must contain only finite"),
    ],
    "sparse_coding_log_joint": [
        (lambda: sparse_coding_log_joint(_X, _W, _H, 0.0, 1.0), ValueError, r"sigma must be"),
        (lambda: sparse_coding_log_joint(_X, _W, _H, 1.0, np.nan), ValueError, r"b must be"),
        (lambda: sparse_coding_log_joint(_X[:, :5], _W, _H, 1.0, 1.0), ValueError,
         r"X .*W .*H .*expected"),
        (lambda: sparse_coding_log_joint(_X[:3], _W, _H, 1.0, 1.0), ValueError,
         r"X has 3 rows and H 4"),
        (lambda: sparse_coding_log_joint(_NAN_X, _W, _H, 1.0, 1.0), ValueError, r"X must contain"),
    ],
    "sparse_coding_log_evidence_2d": [
        (lambda: sparse_coding_log_evidence_2d([1.0, 2.0], np.eye(3), 1.0, 1.0), ValueError,
         r"W must have shape \(d, 2\)"),
        (lambda: sparse_coding_log_evidence_2d([1.0, 2.0], np.ones((2, 2)), 1.0, 1.0),
         ValueError, r"atoms of W must be linearly independent"),
        (lambda: sparse_coding_log_evidence_2d([1.0, np.nan], _W2, 1.0, 1.0), ValueError,
         r"x must contain only finite"),
        (lambda: sparse_coding_log_evidence_2d([1.0, 2.0], _W2, -1.0, 1.0), ValueError,
         r"sigma must be"),
        (lambda: sparse_coding_log_evidence_2d([1e200, 0.0], _W2, 1.0, 1.0), ValueError,
         r"float64: x / sigma has norm 1e\+200"),
    ],
    "omp_codes": [
        (lambda: omp_codes(_X, 2 * _W, 1), ValueError, r"W must have unit-norm columns"),
        (lambda: omp_codes(_X, _W, 7), ValueError, r"num_nonzero must be integers in \[0, 6\]"),
        (lambda: omp_codes(_X, _W, [1, 2, 3]), ValueError,
         r"num_nonzero must be an int or have shape \(4,\), got shape \(3,\)"),
        (lambda: omp_codes(_X, _W, "2"), TypeError, r"num_nonzero must be integers"),
        (lambda: omp_codes(_X[:, :5], _W, 1), ValueError, r"X has shape .* W has shape"),
    ],
    "denoise_image": [
        (lambda: denoise_image(_IMG, np.eye(15), 0.1), ValueError, r"atoms must have p\*p rows"),
        (lambda: denoise_image(_IMG[:3], np.eye(16), 0.1), ValueError,
         r"noisy of shape \(3, 11\) is smaller than the patch size 4"),
        (lambda: denoise_image(np.full((6, 6), np.nan), np.eye(16), 0.1), ValueError,
         r"noisy must contain only finite"),
        (lambda: denoise_image(_IMG, np.eye(16), 0.1, offset=np.zeros(9)), ValueError,
         r"offset must have shape \(16,\)"),
        (lambda: denoise_image(_IMG, np.eye(16), 0.0), ValueError, r"lam must be"),
        (lambda: denoise_image(_IMG, np.eye(16), 0.1, max_iter=0), ValueError, r"max_iter must"),
    ],
    "orientation_concentration": [
        (lambda: orientation_concentration(np.ones((3, 15))), ValueError,
         r"patches must have p\*p columns"),
        (lambda: orientation_concentration(_PATCHES, fft_size=3), ValueError,
         r"fft_size must be >= 4"),
        (lambda: orientation_concentration(_PATCHES, half_width_deg=90), ValueError,
         r"half_width_deg must be < 90"),
        (lambda: orientation_concentration(_PATCHES, half_width_deg=np.nan), ValueError,
         r"half_width_deg must be a finite"),
        (lambda: orientation_concentration(np.full((2, 16), np.inf)), ValueError,
         r"patches must contain only finite"),
    ],
}

NO_INPUTS = {
    "ProximalGradientResult": "a result object returned by ista and fista",
    "DictionaryLearningResult": "a result object returned by learn_dictionary",
}

_LAM = 0.1
EXTREME_INPUTS = {
    # the lasso is homogeneous: (c X, W, c lam) has the codes c H and the objective c^2 f
    "soft_threshold": [
        (lambda: soft_threshold([1.5e308, -1.5e308, 1e-310], 1e308),
         _close([0.5e308, -0.5e308, 0.0])),
    ],
    "lipschitz_constant": [
        (lambda: lipschitz_constant(_W * 1e-150), _finite_equal(lipschitz_constant(_W) * 1e-300)),
        (lambda: lipschitz_constant(_W * 1e150), _finite_equal(lipschitz_constant(_W) * 1e300)),
        (lambda: lipschitz_constant(_W * 1e-150, "power", tol=1e-14, max_iter=100_000, rng=0),
         _finite_equal(lipschitz_constant(_W) * 1e-300, rtol=1e-6)),
    ],
    "lasso_objective": [
        (lambda: lasso_objective(_X * 1e150, _W, _H * 1e150, _LAM * 1e150),
         _finite_equal(lasso_objective(_X, _W, _H, _LAM) * 1e300)),
        (lambda: lasso_objective(_X * 1e-150, _W, _H * 1e-150, _LAM * 1e-150),
         _finite_equal(lasso_objective(_X, _W, _H, _LAM) * 1e-300)),
    ],
    "lasso_duality_gap": [
        (lambda: lasso_duality_gap(_X * 1e-150, _W, _H * 1e-150, _LAM * 1e-150),
         _finite_equal(lasso_duality_gap(_X, _W, _H, _LAM) * 1e-300, rtol=1e-7)),
    ],
    "fista": [
        (lambda: _codes(_X * 1e200, _W, _LAM * 1e200), _close(_codes() * 1e200, 1e-7)),
        (lambda: _codes(_X * 1e-200, _W, _LAM * 1e-200), _close(_codes() * 1e-200, 1e-7)),
        (lambda: _codes(_X[:1], _W[:, :1], _LAM), _close(_codes(_X[:1], _W[:, :1], _LAM)[:1])),
        (lambda: _codes(_X.astype(np.float32), _W, _LAM), _close(_codes(), 1e-5, 1e-6)),
    ],
    "ista": [
        (lambda: _codes(_X * 1e200, _W, _LAM * 1e200, ista),
         _close(_codes(method=ista) * 1e200, 1e-7)),
        (lambda: _codes(_X * 1e-200, _W, _LAM * 1e-200, ista),
         _close(_codes(method=ista) * 1e-200, 1e-7)),
    ],
    "normalize_columns": [
        (lambda: normalize_columns(np.array([[3e200, 1e-200], [4e200, 0.0]])),
         _close([[0.6, 1.0], [0.8, 0.0]])),
        (lambda: normalize_columns(np.array([[3e200, 1e-200], [4e200, 0.0]]), project=True),
         _close([[0.6, 1e-200], [0.8, 0.0]])),
    ],
    "update_dictionary": [
        (lambda: update_dictionary(_X * 1e200, _H * 1e200, _W),
         _close(update_dictionary(_X, _H, _W), 1e-9, 1e-12)),
        (lambda: update_dictionary(_X * 1e-200, _H * 1e-200, _W),
         _close(update_dictionary(_X, _H, _W), 1e-9, 1e-12)),
    ],
    "learn_dictionary": [
        (lambda: learn_dictionary(_X * 1e-200, 3, _LAM * 1e-200, num_iter=5, rng=0).dictionary,
         _close(learn_dictionary(_X, 3, _LAM, num_iter=5, rng=0).dictionary, 1e-7, 1e-9)),
        (lambda: learn_dictionary(_X * 1e100, 3, _LAM * 1e100, num_iter=5, rng=0).objectives,
         _finite_equal(learn_dictionary(_X, 3, _LAM, num_iter=5, rng=0).objectives * 1e200,
                       1e-7)),
    ],
    "sparse_coding_log_joint": [
        # sigma = 1e-200: log(2 pi sigma^2) must not become log(0); exact fit, zero codes
        (lambda: sparse_coding_log_joint(np.zeros(6), _W, np.zeros(8), 1e-200, 1e300),
         _finite_equal([-6 * (0.5 * np.log(2 * np.pi) + np.log(1e-200))
                        - 8 * (np.log(2.0) + np.log(1e300))])),
    ],
    "sparse_coding_log_evidence_2d": [
        # scaling x, W's rows and sigma together by c shifts log p(x) by -d log c
        (lambda: sparse_coding_log_evidence_2d([1e-150, 5e-151], _W2 * 1e-150, 1e-150, 1.0)[0],
         _finite_equal(sparse_coding_log_evidence_2d([1.0, 0.5], _W2, 1.0, 1.0)[0]
                       - 2 * np.log(1e-150), 1e-7)),
    ],
    "omp_codes": [
        (lambda: omp_codes(_X * 1e200, _W, 2), _close(omp_codes(_X, _W, 2) * 1e200, 1e-9)),
        (lambda: omp_codes(_X * 1e-200, _W, 2), _close(omp_codes(_X, _W, 2) * 1e-200, 1e-9)),
    ],
    "denoise_image": [
        (lambda: denoise_image(_IMG * 1e200, np.eye(16)[:, :8], _LAM * 1e200),
         _close(denoise_image(_IMG, np.eye(16)[:, :8], _LAM) * 1e200, 1e-7)),
    ],
    "orientation_concentration": [
        (lambda: orientation_concentration(_PATCHES * 1e200),
         _close(orientation_concentration(_PATCHES), 1e-9)),
        (lambda: orientation_concentration(_PATCHES * 1e-200),
         _close(orientation_concentration(_PATCHES), 1e-9)),
    ],
}


def _gaussian_elbo_by_quadrature(x, W, mean, cov, sigma, b, step):
    g = np.arange(-5 + step / 2, 6, step)
    G1, G2 = np.meshgrid(g, g, indexing="ij")
    grid = np.column_stack([G1.ravel(), G2.ravel()])
    diff = grid - mean
    prec = np.linalg.inv(cov)
    log_q = (-0.5 * np.einsum("ij,jk,ik->i", diff, prec, diff) - np.log(2 * np.pi)
             - 0.5 * np.linalg.slogdet(cov)[1])
    q = np.exp(log_q) * step**2
    return q @ (sparse_coding_log_joint(x, W, grid, sigma, b) - log_q)


@pytest.mark.parametrize("mean, cov", [
    ([0.3, -0.2], [[0.25, 0.1], [0.1, 0.2]]),
    ([1.0, 0.0], [[0.1, -0.05], [-0.05, 0.3]]),
    ([-0.5, 0.8], [[0.4, 0.0], [0.0, 0.05]]),
])
def test_gaussian_elbo_matches_grid_quadrature(mean, cov):
    W = np.array([[1.0, 0.8], [0.0, 0.6]])
    x = np.array([1.4, 0.05])
    closed = sparse_coding_gaussian_elbo(x, W, mean, cov, 0.5, 1.0)
    # The midpoint rule's error falls as step**2 (the kinks of |z| lie on cell edges), so
    # Richardson's extrapolation from steps 0.02 and 0.01 leaves about 1e-9 (measured),
    # 1e4 times closer than step 0.005 alone and a quarter of its grid points.
    coarse, fine = (_gaussian_elbo_by_quadrature(x, W, np.asarray(mean), np.asarray(cov),
                                                 0.5, 1.0, step=h) for h in (0.02, 0.01))
    assert abs(closed - (4 * fine - coarse) / 3) < 1e-7


def test_gaussian_elbo_bad_inputs():
    W, x = np.eye(2), np.ones(2)
    with pytest.raises(ValueError, match="positive definite"):
        sparse_coding_gaussian_elbo(x, W, [0, 0], [[1.0, 2.0], [2.0, 1.0]], 1.0, 1.0)
    with pytest.raises(ValueError, match="symmetric"):
        sparse_coding_gaussian_elbo(x, W, [0, 0], [[1.0, 0.1], [0.0, 1.0]], 1.0, 1.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        sparse_coding_gaussian_elbo(x, W, [0, 0, 0], np.eye(2), 1.0, 1.0)
    with pytest.raises(ValueError):
        sparse_coding_gaussian_elbo(x, W, [0, 0], np.eye(2), 0.0, 1.0)


@pytest.mark.parametrize("x", [[1.4, 0.05], [1.8, 0.6], [-0.3, 0.9]])
def test_fitted_gaussian_q_is_the_optimum_below_the_evidence(x):
    """Same optimum from two starts (the ELBO is concave), above every perturbation, and
    below the exact log p(x) of the orthant formula."""
    W = np.array([[1.0, 0.8], [0.0, 0.6]])
    x = np.asarray(x)
    mean, cov, elbo = fit_sparse_coding_gaussian_q(x, W, 0.5, 1.0)
    mean2, cov2, elbo2 = fit_sparse_coding_gaussian_q(
        x, W, 0.5, 1.0, mean_init=[2.0, -1.0], cov_init=0.01 * np.eye(2))
    assert abs(elbo - elbo2) < 1e-9
    np.testing.assert_allclose(mean, mean2, atol=1e-5)
    np.testing.assert_allclose(cov, cov2, atol=1e-5)
    assert abs(sparse_coding_gaussian_elbo(x, W, mean, cov, 0.5, 1.0) - elbo) < 1e-12
    rng = np.random.default_rng(0)
    for _ in range(20):
        dm = 1e-3 * rng.standard_normal(2)
        A = 1e-3 * rng.standard_normal((2, 2))
        cov_p = cov + A @ A.T + 1e-3 * (A + A.T) * 0.1
        assert sparse_coding_gaussian_elbo(x, W, mean + dm, cov_p, 0.5, 1.0) <= elbo + 1e-12
    log_px = sparse_coding_log_evidence_2d(x, W, 0.5, 1.0)[0]
    assert elbo < log_px


def test_fit_gaussian_q_bad_inputs():
    W = np.eye(2)
    with pytest.raises(ValueError):
        fit_sparse_coding_gaussian_q(np.ones(3), W, 1.0, 1.0)
    with pytest.raises(ValueError, match="positive definite"):
        fit_sparse_coding_gaussian_q(np.ones(2), W, 1.0, 1.0, cov_init=-np.eye(2))


_W_EYE, _X_ONES = np.eye(2), np.ones(2)
BAD_INPUTS["sparse_coding_gaussian_elbo"] = [
    (lambda: sparse_coding_gaussian_elbo(_X_ONES, _W_EYE, [0, 0], [[1.0, 2.0], [2.0, 1.0]],
                                         1.0, 1.0),
     ValueError, r"cov_q must be positive definite"),
    (lambda: sparse_coding_gaussian_elbo(_X_ONES, _W_EYE, [0, 0], [[1.0, 0.1], [0.0, 1.0]],
                                         1.0, 1.0),
     ValueError, r"cov_q must be symmetric"),
    (lambda: sparse_coding_gaussian_elbo(_X_ONES, _W_EYE, [0, 0, 0], np.eye(2), 1.0, 1.0),
     ValueError, r"shape mismatch: x \(2,\), W \(2, 2\), mean_q \(3,\)"),
    (lambda: sparse_coding_gaussian_elbo(_X_ONES, _W_EYE, [0, 0], np.eye(2), 0.0, 1.0),
     ValueError, r"sigma must be a finite number > 0, got 0.0"),
    (lambda: sparse_coding_gaussian_elbo(_X_ONES, _W_EYE, [0, 0], np.eye(2), 1.0, "1"),
     TypeError, r"b must be a positive number, got str"),
    (lambda: sparse_coding_gaussian_elbo([np.nan, 1], _W_EYE, [0, 0], np.eye(2), 1.0, 1.0),
     ValueError, r"x must contain only finite"),
]
BAD_INPUTS["fit_sparse_coding_gaussian_q"] = [
    (lambda: fit_sparse_coding_gaussian_q(np.ones(3), _W_EYE, 1.0, 1.0), ValueError,
     r"x must have shape \(2,\), got \(3,\)"),
    (lambda: fit_sparse_coding_gaussian_q(_X_ONES, _W_EYE, 1.0, 1.0, cov_init=-np.eye(2)),
     ValueError, r"cov_init must be positive definite"),
    (lambda: fit_sparse_coding_gaussian_q(_X_ONES, _W_EYE, 1.0, 1.0, gtol=0.0), ValueError,
     r"gtol must be a finite number > 0, got 0.0"),
    (lambda: fit_sparse_coding_gaussian_q(_X_ONES + 1j, _W_EYE, 1.0, 1.0), TypeError,
     r"x must be real"),
    (lambda: fit_sparse_coding_gaussian_q(_X_ONES, _W_EYE, 1.0, -1.0), ValueError,
     r"b must be a finite number > 0, got -1.0"),
]


def test_small_products_run_on_one_blas_thread_and_nesting_restores_the_count():
    """The package's thread policy: one BLAS thread inside (also nested), restored after."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from elbo_lib.sparse_coding.lasso import SINGLE_THREAD_FLOPS, _blas_threads

    def blas_threads():
        return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info()
                if lib["user_api"] == "blas" and "numpy" in lib["filepath"]}

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        assert before and set(before.values()) == {2}   # NumPy's BLAS, not limited yet
        with _blas_threads(10):
            assert set(blas_threads().values()) == {1}
            with _blas_threads(10), _blas_threads(SINGLE_THREAD_FLOPS):
                assert set(blas_threads().values()) == {1}
            assert set(blas_threads().values()) == {1}
        assert blas_threads() == before
        with _blas_threads(SINGLE_THREAD_FLOPS):
            assert blas_threads() == before
