"""Tests of elbo_lib.gaussians: closed forms of Gaussians (chapters 1, 2, 4, 5, 6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from elbo_lib.gaussians import (
    diagonal_gaussian_log_density,
    gaussian_chi2_divergence,
    gaussian_entropy,
    gaussian_kl,
    gaussian_kl_full,
    gaussian_log_density,
    gaussian_renyi_divergence,
    precision_cholesky,
)


@settings(max_examples=200, deadline=None)
@given(mq=st.floats(-20, 20), vq=st.floats(1e-4, 1e3), mp=st.floats(-20, 20),
       vp=st.floats(1e-4, 1e3))
def test_gaussian_kl_matches_torch_and_is_nonnegative(mq, vq, mp, vp):
    ours = gaussian_kl(mq, vq, mp, vp)
    ref = kl_divergence(Normal(torch.tensor(mq, dtype=torch.float64),
                               torch.tensor(vq, dtype=torch.float64).sqrt()),
                        Normal(torch.tensor(mp, dtype=torch.float64),
                               torch.tensor(vp, dtype=torch.float64).sqrt())).item()
    assert ours >= -1e-12
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-9)


def test_gaussian_kl_zero_iff_equal_and_torch_input_differentiable():
    assert gaussian_kl(1.0, 2.0, 1.0, 2.0) == pytest.approx(0.0, abs=1e-15)
    m = torch.tensor([0.5, -1.0], requires_grad=True)
    gaussian_kl(m, torch.ones(2), torch.zeros(2), torch.ones(2)).sum().backward()
    np.testing.assert_allclose(m.grad.numpy(), [0.5, -1.0])


def test_gaussian_entropy_matches_torch():
    v = np.array([0.01, 1.0, 30.0])
    ref = Normal(torch.zeros(3, dtype=torch.float64), torch.tensor(v).sqrt()).entropy().numpy()
    np.testing.assert_allclose(gaussian_entropy(v), ref, rtol=1e-12)


@pytest.mark.parametrize("fn, args", [(gaussian_kl, (0.0, 0.0, 0.0, 1.0)),
                                      (gaussian_kl, (0.0, 1.0, 0.0, -1.0)),
                                      (gaussian_entropy, (np.array([1.0, 0.0]),)),
                                      (gaussian_kl, (0.0, torch.tensor(-1.0), 0.0, 1.0))])
def test_gaussian_pieces_reject_nonpositive_variance(fn, args):
    with pytest.raises(ValueError, match="var"):
        fn(*args)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-3, 3), st.floats(0.05, 5), st.floats(-3, 3),
                          st.floats(0.05, 5)), min_size=1, max_size=6))
def test_gaussian_kl_matches_torch_kl_divergence(params):
    mq, vq, mp, vp = (torch.tensor(c, dtype=torch.float64) for c in zip(*params, strict=True))
    ours = gaussian_kl(mq, vq, mp, vp).sum()
    ref = kl_divergence(Independent(Normal(mq, vq.sqrt()), 1),
                        Independent(Normal(mp, vp.sqrt()), 1))
    assert ours.item() == pytest.approx(ref.item(), rel=1e-9, abs=1e-12)


def test_gaussian_kl_matches_monte_carlo(rng):
    mq, vq = torch.tensor(rng.normal(size=4)), torch.tensor(rng.uniform(0.3, 2.0, size=4))
    q, p = Independent(Normal(mq, vq.sqrt()), 1), Independent(
        Normal(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)), 1)
    z = q.sample((100_000,))
    ratio = q.log_prob(z) - p.log_prob(z)
    exact = gaussian_kl(mq, vq, 0.0, 1.0).sum()
    assert abs(ratio.mean() - exact) < 4 * ratio.std() / math.sqrt(len(ratio))


def test_vae_kl_formula_and_its_gradient():
    """KL(N(mu, s^2) || N(0, 1)) = (mu^2 + s^2 - 1 - log s^2) / 2, gradient mu and (s^2 - 1) / 2."""
    mu = torch.tensor([0.3, -1.2], requires_grad=True)
    logvar = torch.tensor([0.5, -0.4], requires_grad=True)
    kl = gaussian_kl(mu, logvar.exp(), 0.0, 1.0)
    expected = 0.5 * (mu**2 + logvar.exp() - 1 - logvar)
    torch.testing.assert_close(kl, expected)
    kl.sum().backward()
    torch.testing.assert_close(mu.grad, mu.detach())
    torch.testing.assert_close(logvar.grad, 0.5 * (logvar.detach().exp() - 1))
    assert gaussian_kl(torch.zeros(3), torch.ones(3), 0.0, 1.0).abs().max() == 0


def test_diagonal_gaussian_log_density_matches_torch():
    z, mean, logvar = torch.randn(4, 3), torch.randn(3), torch.randn(3)
    ref = Independent(Normal(mean, torch.exp(0.5 * logvar)), 1).log_prob(z)
    torch.testing.assert_close(diagonal_gaussian_log_density(z, mean, logvar), ref)


def test_log_density_matches_scipy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 4))  # more rows than one block
    means = rng.normal(size=(3, 4))
    a = rng.normal(size=(3, 4, 4))
    cov = a @ a.transpose(0, 2, 1) + 0.5 * np.eye(4)
    got = gaussian_log_density(X, means, precision_cholesky(cov))
    want = np.stack([multivariate_normal(means[k], cov[k]).logpdf(X) for k in range(3)], 1)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_gaussian_kl_full_matches_torch():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    cq, cp = a @ a.T + np.eye(3), b @ b.T + np.eye(3)
    mq, mp = rng.normal(size=3), rng.normal(size=3)
    ref = kl_divergence(MultivariateNormal(torch.as_tensor(mq), torch.as_tensor(cq)),
                        MultivariateNormal(torch.as_tensor(mp), torch.as_tensor(cp)))
    assert gaussian_kl_full(mq, cq, mp, cp) == pytest.approx(float(ref), rel=1e-10)


@pytest.mark.parametrize(("args", "match"), [
    ((np.zeros(2), -np.eye(2), np.zeros(2), np.eye(2)), "cov_q must be positive definite"),
    ((np.zeros(2), np.eye(2), np.zeros(2), [[1.0, 0.5], [0.0, 1.0]]), "cov_p must be symmetric"),
    ((np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)), "cov_q must have shape"),
    ((np.zeros(2), np.eye(2), np.zeros(3), np.eye(3)), "same shape"),
])
def test_gaussian_kl_full_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        gaussian_kl_full(*args)


@pytest.mark.parametrize(("args", "match"), [
    ((np.zeros((3, 2)), np.zeros((2, 3)), np.ones((2, 2, 2))), "means must have shape"),
    ((np.zeros((3, 2)), np.zeros((2, 2)), np.ones((2, 3, 3))), "prec_chol must have shape"),
    ((np.full((3, 2), np.nan), np.zeros((2, 2)), np.ones((2, 2, 2))), "finite"),
])
def test_gaussian_log_density_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        gaussian_log_density(*args)


@pytest.mark.parametrize("cov", [-np.eye(2)[None], np.zeros((1, 2, 3))])
def test_precision_cholesky_rejects_bad_input(cov):
    with pytest.raises(ValueError, match="positive definite|shape"):
        precision_cholesky(cov)


# ---------------------------------------------------------------------------------------
# Contract cases (issue 16): every public name of elbo_lib.gaussians has bad-input cases.
# ---------------------------------------------------------------------------------------
from elbo_lib.gaussians import (  # noqa: E402
    diagonal_gaussian,
    gaussian_quadratic_expectation,
    gaussian_quadratic_gradient,
)

_NAN2 = np.array([0.0, np.nan])
_ASYM = np.array([[[2.0, 0.5], [0.0, 2.0]]])
_EYE2 = np.eye(2)
_ONES2 = np.ones(2)


def _scaled_log_density(scale):
    """log N(x s | mu s, Sigma s^2) = log N(x | mu, Sigma) - d log s, against scipy."""
    x = np.array([[0.3, -1.0], [2.0, 0.5]])
    mu = np.array([[0.0, 0.0], [1.0, -1.0]])
    cov = np.array([[[1.0, 0.3], [0.3, 2.0]], [[0.5, 0.0], [0.0, 0.25]]])
    out = gaussian_log_density(x * scale, mu * scale, precision_cholesky(cov * scale**2))
    ref = np.stack([multivariate_normal(mu[k], cov[k]).logpdf(x) for k in range(2)], axis=1)
    return out, ref - 2 * np.log(scale)


BAD_INPUTS = {
    "gaussian_kl": [
        (lambda: gaussian_kl(0.0, 0.0, 0.0, 1.0), ValueError, r"var_q must be > 0"),
        (lambda: gaussian_kl(_NAN2, _ONES2, 0.0, 1.0), ValueError, r"mean_q must .*finite"),
        (lambda: gaussian_kl(0.0, 1.0, 0.0, np.nan), ValueError, r"var_p must .*finite"),
        (lambda: gaussian_kl("a", 1.0, 0.0, 1.0), TypeError, r"mean_q must be numeric"),
        (lambda: gaussian_kl(np.zeros(3), np.ones(2), 0.0, 1.0), ValueError,
         r"mean_q .*var_q .*broadcast"),
        (lambda: gaussian_kl(torch.tensor([0.0, float("nan")]), torch.ones(2), 0.0, 1.0),
         ValueError, r"mean_q must .*finite"),
    ],
    "gaussian_entropy": [
        (lambda: gaussian_entropy(np.array([1.0, 0.0])), ValueError, r"var must be > 0"),
        (lambda: gaussian_entropy(np.array([1.0, np.nan])), ValueError, r"var must .*finite"),
        (lambda: gaussian_entropy(torch.tensor([float("nan")])), ValueError,
         r"var must .*finite"),
        (lambda: gaussian_entropy("a"), TypeError, r"var must be numeric"),
    ],
    "gaussian_kl_full": [
        (lambda: gaussian_kl_full(np.zeros(2), _ASYM[0], np.zeros(2), _EYE2), ValueError,
         r"cov_q must be symmetric"),
        (lambda: gaussian_kl_full(np.zeros(2), _EYE2, np.zeros(2), -_EYE2), ValueError,
         r"cov_p must be positive definite"),
        (lambda: gaussian_kl_full(np.zeros(2), _EYE2, np.zeros(3), np.eye(3)), ValueError,
         r"mean_q and mean_p must have the same shape"),
        (lambda: gaussian_kl_full(_NAN2, _EYE2, np.zeros(2), _EYE2), ValueError,
         r"mean_q must contain only finite"),
        (lambda: gaussian_kl_full(np.zeros(2), np.eye(3), np.zeros(2), _EYE2), ValueError,
         r"cov_q must have shape \(2, 2\)"),
    ],
    "precision_cholesky": [
        (lambda: precision_cholesky(_ASYM), ValueError, r"covariances must be symmetric"),
        (lambda: precision_cholesky(-_EYE2[None]), ValueError,
         r"covariances\[0\] must be positive definite"),
        (lambda: precision_cholesky(_EYE2), ValueError, r"covariances must have 3 dim"),
        (lambda: precision_cholesky(np.zeros((1, 2, 3))), ValueError,
         r"covariances must be square"),
        (lambda: precision_cholesky(np.full((1, 1, 1), np.nan)), ValueError,
         r"covariances must contain only finite"),
    ],
    "gaussian_log_density": [
        (lambda: gaussian_log_density(np.zeros((5, 2)), np.zeros((1, 3)),
                                      precision_cholesky(_EYE2[None])), ValueError,
         r"means must have shape \(1, 2\)"),
        (lambda: gaussian_log_density(np.full((2, 2), np.nan), np.zeros((1, 2)),
                                      precision_cholesky(_EYE2[None])), ValueError,
         r"X must contain only finite"),
        (lambda: gaussian_log_density(np.zeros((2, 2)), np.zeros((1, 2)), -_EYE2[None]),
         ValueError, r"prec_chol must be upper triangular with a positive diagonal"),
        (lambda: gaussian_log_density(np.zeros((2, 2)), np.zeros((1, 2)),
                                      np.ones((1, 2, 2))), ValueError,
         r"prec_chol must be upper triangular"),
        (lambda: gaussian_log_density("x", np.zeros((1, 2)), _EYE2[None]), TypeError,
         r"X must be numeric"),
    ],
    "diagonal_gaussian_log_density": [
        (lambda: diagonal_gaussian_log_density(torch.tensor([[float("nan"), 0.0]]),
                                               torch.zeros(2), torch.zeros(2)),
         ValueError, r"z must contain only finite"),
        (lambda: diagonal_gaussian_log_density(torch.zeros(1, 2), torch.zeros(2),
                                               torch.tensor([0.0, float("nan")])),
         ValueError, r"logvar must contain only finite"),
        (lambda: diagonal_gaussian_log_density(torch.zeros(1, 2), torch.zeros(3),
                                               torch.zeros(2)),
         ValueError, r"z \(1, 2\), mean \(3,\) and logvar \(2,\) must broadcast"),
        (lambda: diagonal_gaussian_log_density("z", torch.zeros(2), torch.zeros(2)),
         TypeError, r"z must be a torch.Tensor or numeric array"),
    ],
    "diagonal_gaussian": [
        (lambda: diagonal_gaussian(torch.zeros(2), torch.tensor([1.0, 0.0])), ValueError,
         r"sigma must be > 0"),
        (lambda: diagonal_gaussian(torch.zeros(2), torch.tensor([1.0, float("nan")])),
         ValueError, r"sigma must .*finite"),
        (lambda: diagonal_gaussian(torch.tensor([float("nan"), 0.0]), torch.ones(2)),
         ValueError, r"mu must contain only finite"),
        (lambda: diagonal_gaussian(torch.zeros(3), torch.ones(2)), ValueError,
         r"mu .*sigma .*broadcast"),
        (lambda: diagonal_gaussian("mu", torch.ones(2)), TypeError,
         r"mu must be a torch.Tensor or numeric array"),
    ],
    "gaussian_quadratic_expectation": [
        (lambda: gaussian_quadratic_expectation(np.eye(3), _ONES2, _ONES2, _ONES2),
         ValueError, r"a must have shape \(2, 2\)"),
        (lambda: gaussian_quadratic_expectation(_EYE2, np.ones(3), _ONES2, _ONES2),
         ValueError, r"b must have shape \(2,\)"),
        (lambda: gaussian_quadratic_expectation(_EYE2, _ONES2, _ONES2, [1.0, -1.0]),
         ValueError, r"sigma must be > 0"),
        (lambda: gaussian_quadratic_expectation(_EYE2, _ONES2, _NAN2, _ONES2),
         ValueError, r"mu must contain only finite"),
    ],
    "gaussian_quadratic_gradient": [
        (lambda: gaussian_quadratic_gradient(_EYE2, _ONES2, _ONES2, np.ones(3)),
         ValueError, r"sigma must have shape \(2,\)"),
        (lambda: gaussian_quadratic_gradient(_EYE2, "b", _ONES2, _ONES2), TypeError,
         r"b must be numeric"),
    ],
}

EXTREME_INPUTS = {
    "gaussian_log_density": [
        (lambda s=scale: _scaled_log_density(s),
         lambda out: np.testing.assert_allclose(out[0], out[1], rtol=1e-12))
        for scale in (1e150, 1e-150)
    ],
    "precision_cholesky": [
        (lambda: precision_cholesky(np.array([[[1e-200, 0.0], [0.0, 4e200]]])),
         lambda out: np.testing.assert_allclose(out[0], np.diag([1e100, 0.5e-100]),
                                                rtol=1e-14)),
    ],
    "gaussian_kl": [
        # KL(N(0, 1e-150) || N(0, 1e150)) = (log 1e300 + 1e-300 - 1) / 2
        (lambda: gaussian_kl(0.0, 1e-150, 0.0, 1e150),
         lambda out: np.testing.assert_allclose(out, 0.5 * (300 * np.log(10) - 1),
                                                rtol=1e-14)),
    ],
    "gaussian_entropy": [
        (lambda: gaussian_entropy(np.array([1e-300, 1e300])),
         lambda out: np.testing.assert_allclose(
             out, 0.5 * (np.log(2 * np.pi) + 1 + np.array([-300, 300]) * np.log(10)),
             rtol=1e-12)),
    ],
}


# ---------------------------------------------------------------------------------------
# issue 34: the second round of bad input; log densities at logvar -800
# ---------------------------------------------------------------------------------------
def _tiny_variance_log_density(dtype, logvar):
    """diagonal_gaussian_log_density where exp(-logvar) overflows, against scipy (float64
    sd exp(logvar / 2) is representable); offsets 0, 1e-300, 1e-170 and 1 from the mean."""
    from scipy.stats import norm

    offsets = [0.0, 1e-300, 1e-170, 1.0] if dtype == torch.float64 else [0.0, 1e-30, 1.0]
    z = torch.tensor([[d, 0.5] for d in offsets], dtype=dtype)
    lv = torch.tensor([logvar, 0.0], dtype=dtype, requires_grad=True)
    got = diagonal_gaussian_log_density(z, torch.zeros(2, dtype=dtype), lv)
    got.sum().backward()
    want = [norm.logpdf(float(d), 0.0, math.exp(logvar / 2)) + norm.logpdf(0.5)
            for d in z[:, 0].tolist()]
    # in float32 the answer rounded to float32 (-1.3e43 is -inf there)
    want = np.array(want).astype(np.float32 if dtype == torch.float32 else np.float64)
    return got.detach().numpy(), want, lv.grad


def _assert_tiny_variance(out):
    got, want, grad = out
    np.testing.assert_allclose(got, want, rtol=1e-6 if got.dtype == np.float32 else 1e-12)
    assert got.dtype == want.dtype and not bool(torch.isnan(grad).any()), grad


BAD_INPUTS["diagonal_gaussian_log_density"] += [
    (lambda: diagonal_gaussian_log_density(torch.zeros(2, dtype=torch.complex128), 0.0, 0.0),
     TypeError, r"z must be real, got a complex tensor"),
    (lambda: diagonal_gaussian_log_density(torch.zeros(2), np.array([1j, 0]), 0.0),
     TypeError, r"mean must be real"),
    (lambda: diagonal_gaussian_log_density(torch.zeros(2), 0.0, [10**400, 0]), ValueError,
     r"logvar holds an integer beyond"),
]
BAD_INPUTS["gaussian_kl"] += [
    (lambda: gaussian_kl(0.0, True, 0.0, 1.0), TypeError, r"var_q"),
    (lambda: gaussian_kl(0.0, 1.0, 1j, 1.0), TypeError, r"mean_p must be real"),
]
BAD_INPUTS["precision_cholesky"] += [
    (lambda: precision_cholesky(np.stack([np.eye(2)]).astype(str)), TypeError,
     r"covariances must be numeric array-like"),
]
EXTREME_INPUTS["diagonal_gaussian_log_density"] = [
    (lambda: _tiny_variance_log_density(torch.float64, -800.0), _assert_tiny_variance),
    (lambda: _tiny_variance_log_density(torch.float64, -700.0), _assert_tiny_variance),
    (lambda: _tiny_variance_log_density(torch.float32, -100.0), _assert_tiny_variance),
    # a requires-grad mean keeps its graph (torch side), the values are scipy's
    (lambda: diagonal_gaussian_log_density(torch.zeros(1, 1, dtype=torch.float64),
                                           torch.zeros(1, dtype=torch.float64,
                                                       requires_grad=True), [800.0]),
     lambda out: (np.testing.assert_allclose(float(out), -400 - 0.5 * math.log(2 * math.pi),
                                             rtol=1e-15), out.requires_grad or _fail())),
]


def _fail():
    raise AssertionError("the graph was lost")


def _scaled_kl_full(c):
    """KL between two Gaussians whose covariances are scaled by c and means by sqrt(c)
    (the KL is invariant), against torch's closed form at scale 1."""
    mq, mp = np.array([0.3, -0.2]), np.array([1.0, 0.5])
    sq, sp = np.array([[1.0, 0.3], [0.3, 0.5]]), np.array([[2.0, -0.4], [-0.4, 1.0]])
    want = kl_divergence(MultivariateNormal(torch.tensor(mq), torch.tensor(sq)),
                         MultivariateNormal(torch.tensor(mp), torch.tensor(sp)))
    r = math.sqrt(c)
    return gaussian_kl_full(mq * r, sq * c, mp * r, sp * c), float(want)


EXTREME_INPUTS["gaussian_kl_full"] = [
    (lambda c=c: _scaled_kl_full(c),
     lambda out: np.testing.assert_allclose(out[0], out[1], rtol=1e-12))
    for c in (1e-300, 1e300)
]


# --------------------------------------------------------------------------------------
# Renyi's alpha-divergence and chi^2 between Gaussians (chapter 8)
# --------------------------------------------------------------------------------------
_MQ, _MP = np.array([0.3, -0.2]), np.array([0.0, 0.4])
_SQ = np.array([[1.1, -0.1], [-0.1, 0.9]])
_SP = np.array([[1.0, -0.3], [-0.3, 0.7]])


def _grid_renyi(alpha, mq, sq, mp, sp, limit=14.0, num=701):
    """D_alpha(q || p) by the Riemann sum on a square grid (scipy's log densities)."""
    from scipy.special import logsumexp

    axis = np.linspace(-limit, limit, num)
    h = axis[1] - axis[0]
    z = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    lq = multivariate_normal(mq, sq).logpdf(z)
    lp = multivariate_normal(mp, sp).logpdf(z)
    if alpha == 1.0:
        return float(np.sum(np.exp(lq) * (lq - lp)) * h * h)
    return float((logsumexp(alpha * lq + (1 - alpha) * lp) + 2 * np.log(h)) / (alpha - 1))


@pytest.mark.parametrize("alpha", [-1.0, -0.5, 0.0, 0.3, 0.5, 0.999, 1.0, 1.5, 2.0])
def test_gaussian_renyi_divergence_matches_quadrature(alpha):
    """The closed form against a 2-D Riemann sum that uses only the two log densities,
    for alpha on both sides of [0, 1] (a sign slip in S_alpha, or a log-det weight
    swapped, is off at the first digit)."""
    want = _grid_renyi(alpha, _MQ, _SQ, _MP, _SP)
    got = gaussian_renyi_divergence(alpha, _MQ, _SQ, _MP, _SP)
    assert got == pytest.approx(want, rel=1e-8, abs=1e-10)


def test_gaussian_renyi_divergence_limits_and_order():
    """alpha = 1 is the KL (and alpha -> 1 tends to it), alpha = 0 is 0, the 1-D case is
    Gil et al.'s formula, and D_alpha does not decrease with alpha."""
    kl = gaussian_kl_full(_MQ, _SQ, _MP, _SP)
    assert gaussian_renyi_divergence(1.0, _MQ, _SQ, _MP, _SP) == kl
    assert gaussian_renyi_divergence(1 - 1e-7, _MQ, _SQ, _MP, _SP) == pytest.approx(kl,
                                                                                  rel=1e-6)
    assert gaussian_renyi_divergence(0.0, _MQ, _SQ, _MP, _SP) == pytest.approx(0.0,
                                                                             abs=1e-15)
    values = [gaussian_renyi_divergence(a, _MQ, _SQ, _MP, _SP)
              for a in (-1, -0.5, 0.2, 0.7, 1.2, 1.8)]
    assert np.all(np.diff(values) > 0)
    # 1-D: (alpha/2) d^2 / s_a + log(s_a / (s_q^(1-a) s_p^a)) / (2 (1 - a))
    a, mq, vq, mp, vp = 0.4, 0.5, 2.0, -1.0, 0.7
    s_a = a * vp + (1 - a) * vq
    want = a / 2 * (mq - mp) ** 2 / s_a + math.log(s_a / (vq ** (1 - a) * vp**a)) / (2 * (1 - a))
    assert gaussian_renyi_divergence(a, [mq], [[vq]], [mp], [[vp]]) == pytest.approx(want,
                                                                                    rel=1e-12)


def test_gaussian_chi2_divergence_matches_monte_carlo():
    """chi^2(q || p) = E_p[(q/p)^2] - 1 by Monte Carlo under p (fixed seed, 400,000
    samples) and by quadrature."""
    want_grid = math.expm1(_grid_renyi(2.0, _MP, _SP, _MQ, 1.6 * _SQ))
    got = gaussian_chi2_divergence(_MP, _SP, _MQ, 1.6 * _SQ)
    assert got == pytest.approx(want_grid, rel=1e-7)
    gen = np.random.default_rng(0)
    z = gen.multivariate_normal(_MQ, 1.6 * _SQ, size=400_000)
    ratio = np.exp(multivariate_normal(_MP, _SP).logpdf(z)
                   - multivariate_normal(_MQ, 1.6 * _SQ).logpdf(z))
    se = (ratio**2).std() / math.sqrt(ratio.size)
    assert abs(got - (np.mean(ratio**2) - 1)) < 5 * se
    assert gaussian_chi2_divergence(_MQ, _SQ, _MQ, _SQ) == pytest.approx(0.0, abs=1e-14)


@pytest.mark.parametrize("alpha, sq", [(3.0, _SQ), (-1.0, 0.3 * _SP)])
def test_gaussian_renyi_divergence_refuses_an_infinite_divergence(alpha, sq):
    """alpha > 1 with a q too wide and alpha < 0 with a q too narrow: the integral of
    q^alpha p^(1-alpha) diverges (S_alpha has a non-positive eigenvalue)."""
    assert np.linalg.eigvalsh(alpha * _SP + (1 - alpha) * sq).min() <= 0
    with pytest.raises(ValueError, match=r"alpha = .* gives an infinite divergence"):
        gaussian_renyi_divergence(alpha, _MQ, sq, _MP, _SP)


BAD_INPUTS["gaussian_renyi_divergence"] = [
    (lambda: gaussian_renyi_divergence(np.nan, _MQ, _SQ, _MP, _SP), ValueError,
     r"alpha must be finite"),
    (lambda: gaussian_renyi_divergence("2", _MQ, _SQ, _MP, _SP), TypeError,
     r"alpha must be a real number"),
    (lambda: gaussian_renyi_divergence(2.0, _MQ, 3 * _SP, _MP, _SP), ValueError,
     r"alpha = 2.0 gives an infinite divergence"),
    (lambda: gaussian_renyi_divergence(0.5, _MQ, -_SQ, _MP, _SP), ValueError,
     r"cov_q must be positive definite"),
    (lambda: gaussian_renyi_divergence(0.5, _MQ, _SQ, np.zeros(3), np.eye(3)), ValueError,
     r"mean_q and mean_p must have the same shape"),
]
BAD_INPUTS["gaussian_chi2_divergence"] = [
    (lambda: gaussian_chi2_divergence(_MQ, 3 * _SP, _MP, _SP), ValueError,
     r"2 cov_p - cov_q must be positive definite"),
    (lambda: gaussian_chi2_divergence(_MQ, _SQ, _MP, _ASYM[0]), ValueError,
     r"cov_p must be symmetric"),
    (lambda: gaussian_chi2_divergence([np.nan, 0.0], _SQ, _MP, _SP), ValueError,
     r"mean_q must contain only finite"),
]
