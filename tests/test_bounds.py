"""Tests of elbo_lib.bounds: ELBO and evidence estimators against closed forms."""

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal

from elbo_lib import seed_everything
from elbo_lib.bounds import (
    importance_sampling_posterior,
    kl_on_grid,
    monte_carlo_elbo,
    score_function_elbo_surrogate,
)
from elbo_lib.gaussians import diagonal_gaussian, gaussian_kl_full
from elbo_lib.models import ConjugateGaussianMean


@pytest.fixture
def model(rng):
    return ConjugateGaussianMean(rng.normal(1.0, 1.0, size=10), 1.0, 0.0, 2.0)


def _q(m, v):
    return Normal(torch.tensor(m, dtype=torch.float64), torch.tensor(v, dtype=torch.float64) ** 0.5)


def test_mc_elbo_is_unbiased_within_standard_error(model):
    torch.manual_seed(0)
    est, se = monte_carlo_elbo(model.log_joint, _q(0.5, 0.3), 20_000, return_std_error=True)
    exact = model.elbo(0.5, 0.3)
    assert abs(est.item() - exact) < 4 * se.item()


def test_mc_elbo_standard_error_matches_its_closed_form(model):
    """With z = m + sqrt(v) e, log p(x, z) - log q(z) = const + a e + b e^2 where
    a = -(m - m_n) sqrt(v) / s_n^2 and b = (1 - v / s_n^2) / 2 (the posterior is
    N(m_n, s_n^2)), so Var = a^2 + 2 b^2 and the standard error is sqrt(Var / S)."""
    m, v, num = 0.5, 0.3, 20_000
    torch.manual_seed(0)
    _, se = monte_carlo_elbo(model.log_joint, _q(m, v), num, return_std_error=True)
    s2 = model.posterior_var
    a = -(m - model.posterior_mean) * np.sqrt(v) / s2
    b = 0.5 * (1 - v / s2)
    exact = np.sqrt((a**2 + 2 * b**2) / num)
    # the sample sd of S = 20000 draws is within a few percent of the true sd
    assert se.item() == pytest.approx(exact, rel=0.05)


def test_mc_elbo_is_exact_at_the_posterior(model):
    """At q = p(z|x), log p(x,z) - log q(z) = log p(x) for every z: zero variance."""
    torch.manual_seed(0)
    est, se = monte_carlo_elbo(model.log_joint, model.posterior(), 5, return_std_error=True)
    assert est.item() == pytest.approx(model.log_evidence(), abs=1e-10)
    assert se.item() < 1e-10


def test_mc_elbo_pathwise_gradient_matches_closed_form(model):
    torch.manual_seed(0)
    mean = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    q = Normal(mean, torch.tensor(0.5, dtype=torch.float64))
    monte_carlo_elbo(model.log_joint, q, 50_000).backward()
    h = 1e-6
    fd = (model.elbo(0.2 + h, 0.25) - model.elbo(0.2 - h, 0.25)) / (2 * h)
    # d ELBO / d mean is linear in z here, so the estimator's error is small
    assert mean.grad.item() == pytest.approx(fd, abs=0.05)


def test_mc_elbo_without_rsample_has_no_pathwise_gradient(model):
    """With ``sample`` the z are constants: the only gradient left is that of -log q(z)
    at fixed z, d/dm = -mean_s (z_s - m) / s^2; through ``rsample`` the gradient would
    also carry d log p(x, z(m)) / dm."""
    mean = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    q = Normal(mean, torch.tensor(0.5, dtype=torch.float64))
    torch.manual_seed(3)
    monte_carlo_elbo(model.log_joint, q, 10, reparameterize=False).backward()
    torch.manual_seed(3)
    z = q.sample((10,))
    expected = -((z - 0.2) / 0.25).mean()
    assert mean.grad.item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-12)
    mean.grad = None
    torch.manual_seed(3)
    monte_carlo_elbo(model.log_joint, q, 10, reparameterize=True).backward()
    assert abs(mean.grad.item() - expected.item()) > 1e-3


def test_mc_elbo_multivariate_q():
    q = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)

    def log_joint(z):
        return Independent(Normal(torch.zeros(3), torch.ones(3)), 1).log_prob(z)

    assert monte_carlo_elbo(log_joint, q, 7).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("args, err, msg", [
    ((lambda z: z, "q", 10), TypeError, "Distribution"),
    (("f", Normal(0.0, 1.0), 10), TypeError, "callable"),
    ((lambda z: z, Normal(0.0, 1.0), 0), ValueError, "num_samples"),
    ((lambda z: z, Normal(0.0, 1.0), 2.5), TypeError, "num_samples"),
    ((lambda z: z, Normal(torch.zeros(2), torch.ones(2)), 10), ValueError, "batch_shape"),
    ((lambda z: z.sum(), Normal(0.0, 1.0), 10), ValueError, "shape"),
    ((lambda z: z * np.inf, Normal(0.0, 1.0), 10), ValueError, "finite"),
])
def test_mc_elbo_bad_input(args, err, msg):
    with pytest.raises(err, match=msg):
        monte_carlo_elbo(*args)


def test_mc_elbo_rsample_required():
    with pytest.raises(ValueError, match="rsample"):
        monte_carlo_elbo(lambda z: z, Bernoulli(torch.tensor(0.5)), 10)
    with pytest.raises(ValueError, match="num_samples"):
        monte_carlo_elbo(lambda z: z, Normal(0.0, 1.0), 1, return_std_error=True)


# --------------------------------------------------------------------------------------
# the score-function surrogate (chapter 5)
# --------------------------------------------------------------------------------------
F64 = torch.float64


def test_score_function_elbo_surrogate_is_unbiased_for_conjugate_model():
    # log p(x, z) = N(z; 1, 0.5^2) (unnormalised evidence irrelevant): exact ELBO gradient
    # for q = N(m, s^2): d/dm = -(m - 1)/0.25, d/ds = -s/0.25 + 1/s
    target = torch.distributions.Normal(torch.tensor(1.0, dtype=F64),
                                        torch.tensor(0.5, dtype=F64))
    m, s = 0.3, 0.8
    ests = []
    seed_everything(0)
    for _ in range(300):
        mu = torch.tensor([m], dtype=F64, requires_grad=True)
        sd = torch.tensor([s], dtype=F64, requires_grad=True)
        surrogate, _ = score_function_elbo_surrogate(lambda z: target.log_prob(z[:, 0]),
                                                     diagonal_gaussian(mu, sd), 32)
        surrogate.backward()
        ests.append([mu.grad.item(), sd.grad.item()])
    ests = np.array(ests)
    exact = np.array([-(m - 1) / 0.25, -s / 0.25 + 1 / s])
    se = ests.std(axis=0, ddof=1) / np.sqrt(len(ests))
    assert np.all(np.abs(ests.mean(axis=0) - exact) < 4 * se)


def test_score_function_surrogate_value_is_the_elbo_estimate(model):
    torch.manual_seed(1)
    _, elbo = score_function_elbo_surrogate(model.log_joint, _q(0.5, 0.3), 20_000,
                                            baseline=None)
    torch.manual_seed(1)
    _, se = monte_carlo_elbo(model.log_joint, _q(0.5, 0.3), 20_000, return_std_error=True)
    assert abs(elbo.item() - model.elbo(0.5, 0.3)) < 4 * se.item()


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((lambda z: z, "q", 4), {}, TypeError, "q must be a torch.distributions"),
    (("f", Normal(0.0, 1.0), 4), {}, TypeError, "callable"),
    ((lambda z: z, Normal(torch.zeros(2), torch.ones(2)), 4), {}, ValueError,
     "batch_shape"),
    ((lambda z: z, Normal(0.0, 1.0), 1), {}, ValueError, "num_samples >= 2"),
    ((lambda z: z, Normal(0.0, 1.0), 4), {"baseline": "median"}, ValueError,
     "baseline must be None"),
    ((lambda z: z.sum(), Normal(0.0, 1.0), 4), {}, ValueError, "shape"),
    ((lambda z: z * np.nan, Normal(0.0, 1.0), 4), {}, ValueError, "finite"),
])
def test_score_function_surrogate_rejects_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        score_function_elbo_surrogate(*args, **kwargs)


# --------------------------------------------------------------------------------------
# importance sampling: the gold standard of chapter 5
# --------------------------------------------------------------------------------------
def test_importance_sampling_is_exact_on_a_gaussian_posterior(gaussian_target):
    m, cov, log_joint, log_z = gaussian_target
    res = importance_sampling_posterior(log_joint, m + 0.1, 1.3 * cov, 40_000,
                                        rng=np.random.default_rng(0), df=8.0)
    assert abs(res.log_evidence - log_z) < 4 * res.log_evidence_se
    assert 1000 < res.ess <= 40_000
    se_mean = np.sqrt(np.diag(cov) / res.ess)
    assert np.all(np.abs(res.mean - m) < 4 * se_mean)
    np.testing.assert_allclose(res.sd, np.sqrt(np.diag(cov)), rtol=0.05)
    assert np.all(np.abs(res.skewness) < 4 * np.sqrt(6 / res.ess))
    # an int seed is the same stream as default_rng(seed)
    again = importance_sampling_posterior(log_joint, m + 0.1, 1.3 * cov, 1000, rng=5)
    other = importance_sampling_posterior(log_joint, m + 0.1, 1.3 * cov, 1000,
                                          rng=np.random.default_rng(5))
    assert again.log_evidence == other.log_evidence


@pytest.mark.parametrize("kwargs, error, match", [
    ({"rng": "seed"}, TypeError, "rng"),
    ({"rng": None}, TypeError, "rng"),
    ({"cov": np.eye(2)}, ValueError, "cov"),
    ({"num_samples": 1}, ValueError, "num_samples"),
    ({"df": 0.0}, ValueError, "df"),
])
def test_importance_sampling_rejects_bad_input(kwargs, error, match, gaussian_target):
    _, cov, log_joint, _ = gaussian_target
    args = {"mean": np.zeros(3), "cov": cov, "num_samples": 10, "rng": 0, **kwargs}
    with pytest.raises(error, match=match):
        importance_sampling_posterior(log_joint, **args)


# --------------------------------------------------------------------------------------
# KL on a 2-D grid (chapter 4)
# --------------------------------------------------------------------------------------
def _log_mvn(points, mean, cov):
    diff = points - mean
    quad = np.einsum("...i,ij,...j->...", diff, np.linalg.inv(cov), diff)
    return -0.5 * (quad + np.linalg.slogdet(2 * np.pi * cov)[1])


def test_kl_on_grid_matches_the_closed_form_gaussian_kl():
    mean_q, cov_q = np.array([0.3, -0.2]), np.array([[0.5, 0.1], [0.1, 0.3]])
    mean_p, cov_p = np.array([0.0, 0.1]), np.array([[1.0, -0.3], [-0.3, 0.8]])
    g0, g1 = np.linspace(-6, 6, 401), np.linspace(-6, 6, 361)
    points = np.stack(np.meshgrid(g0, g1, indexing="ij"), axis=-1)
    kl = kl_on_grid(_log_mvn(points, mean_q, cov_q), _log_mvn(points, mean_p, cov_p), g0, g1)
    assert kl == pytest.approx(gaussian_kl_full(mean_q, cov_q, mean_p, cov_p), rel=1e-6)


def test_kl_on_grid_treats_a_zero_density_as_zero_mass():
    g = np.linspace(0, 1, 5)
    log_q = np.full((5, 5), -np.inf)
    log_q[2, 2] = 0.0
    assert kl_on_grid(log_q, np.zeros((5, 5)), g, g) == 0.0


@pytest.mark.parametrize("log_q, log_p, g0, g1, match", [
    (np.zeros((2, 2)), np.zeros((2, 2)), [1.0, 0.0], [0.0, 1.0], "grid_0 must be"),
    (np.zeros((2, 2)), np.zeros((2, 2)), [0.0, 1.0], [0.0], "grid_1 must be"),
    (np.zeros((2, 3)), np.zeros((2, 2)), [0.0, 1.0], [0.0, 1.0], "must have shape"),
    (np.full((2, 2), np.nan), np.zeros((2, 2)), [0.0, 1.0], [0.0, 1.0], "log_q must not"),
    (np.zeros((2, 2)), np.full((2, 2), np.inf), [0.0, 1.0], [0.0, 1.0], "log_p must not"),
])
def test_kl_on_grid_rejects_bad_input(log_q, log_p, g0, g1, match):
    with pytest.raises(ValueError, match=match):
        kl_on_grid(log_q, log_p, g0, g1)


# --------------------------------------------------------------------------------------
# Contract cases (issue 16): every public name of elbo_lib.bounds has bad-input cases.
# --------------------------------------------------------------------------------------
from elbo_lib.bounds import (  # noqa: E402
    gaussian_elbo_quadrature,
    importance_weighted_bound,
    log_evidence_quadrature,
)

_N01 = Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))


def _std_normal_log_joint(z):
    return -0.5 * z**2 - 0.5 * np.log(2 * np.pi)


def _torch_log_joint(z):
    return -0.5 * (z**2).reshape(len(z), -1).sum(-1)


_GRID = np.linspace(-10.0, 10.0, 201)
_EYE2 = np.eye(2)

BAD_INPUTS = {
    "monte_carlo_elbo": [
        (lambda: monte_carlo_elbo(_torch_log_joint, "q", 10), TypeError,
         r"q must be a torch.distributions.Distribution"),
        (lambda: monte_carlo_elbo("f", _N01, 10), TypeError, r"log_joint must be callable"),
        (lambda: monte_carlo_elbo(_torch_log_joint, _N01, 0), ValueError,
         r"num_samples must be >= 1"),
        (lambda: monte_carlo_elbo(_torch_log_joint, _N01, True), TypeError,
         r"num_samples must be an integer"),
        (lambda: monte_carlo_elbo(lambda z: z.sum(), _N01, 10), ValueError,
         r"log_joint must return a tensor of shape \(10,\)"),
        (lambda: monte_carlo_elbo(lambda z: z * np.nan, _N01, 10), ValueError,
         r"log_joint\(z\) - q.log_prob\(z\) must be finite"),
        (lambda: monte_carlo_elbo(lambda z: z * 0 + np.inf, _N01, 10), ValueError,
         r"log_joint\(z\) - q.log_prob\(z\) must be finite"),
        (lambda: monte_carlo_elbo(_torch_log_joint, _N01, 1, return_std_error=True),
         ValueError, r"num_samples must be >= 2"),
    ],
    "score_function_elbo_surrogate": [
        (lambda: score_function_elbo_surrogate(_torch_log_joint, "q", 4), TypeError,
         r"q must be a torch.distributions"),
        (lambda: score_function_elbo_surrogate(_torch_log_joint, _N01, 4, baseline="mean"),
         ValueError, r"baseline must be None"),
        (lambda: score_function_elbo_surrogate(lambda z: z * np.nan, _N01, 4), ValueError,
         r"log_joint\(z\) - q.log_prob\(z\) must be finite"),
        (lambda: score_function_elbo_surrogate(_torch_log_joint, _N01, 0), ValueError,
         r"num_samples must be >= 1"),
    ],
    "importance_weighted_bound": [
        (lambda: importance_weighted_bound(np.array([0.0, np.nan])), ValueError,
         r"log_weights must not contain NaN"),
        (lambda: importance_weighted_bound(torch.tensor([0.0, np.nan])), ValueError,
         r"log_weights must not contain NaN"),
        (lambda: importance_weighted_bound(np.array([0.0, np.inf])), ValueError,
         r"log_weights must not contain NaN or \+inf"),
        (lambda: importance_weighted_bound(np.zeros((0, 2))), ValueError,
         r"log_weights holds no samples"),
        (lambda: importance_weighted_bound(["a", "b"]), TypeError,
         r"log_weights must be a numeric array"),
        (lambda: importance_weighted_bound(np.zeros((3, 2)), dim=2), ValueError,
         r"dim=2 is out of range"),
        (lambda: importance_weighted_bound(np.zeros(3), dim=0.0), TypeError,
         r"dim must be an integer"),
    ],
    "gaussian_elbo_quadrature": [
        (lambda: gaussian_elbo_quadrature(_std_normal_log_joint, 0.0, 0.0), ValueError,
         r"std must be .*> 0"),
        (lambda: gaussian_elbo_quadrature(_std_normal_log_joint, 0.0, np.nan), ValueError,
         r"std must contain only finite"),
        (lambda: gaussian_elbo_quadrature(_std_normal_log_joint, np.nan, 1.0), ValueError,
         r"mean must contain only finite"),
        (lambda: gaussian_elbo_quadrature(_std_normal_log_joint, "a", 1.0), TypeError,
         r"mean must be numeric"),
        (lambda: gaussian_elbo_quadrature("f", 0.0, 1.0), TypeError,
         r"log_joint must be callable"),
        (lambda: gaussian_elbo_quadrature(_std_normal_log_joint, 0.0, 1.0, num_nodes=0),
         ValueError, r"num_nodes must be >= 1"),
        (lambda: gaussian_elbo_quadrature(lambda z: z * np.nan, 0.0, 1.0), ValueError,
         r"log_joint returned NaN"),
        (lambda: gaussian_elbo_quadrature(lambda z: z * 0 + np.inf, 0.0, 1.0), ValueError,
         r"log_joint returned .*\+inf"),
        (lambda: gaussian_elbo_quadrature(lambda z: z[..., 0], 0.0, 1.0), ValueError,
         r"log_joint must return an array of the shape"),
        (lambda: gaussian_elbo_quadrature(_std_normal_log_joint, [0.0, 1.0], [1.0, 2.0, 3.0]),
         ValueError, r"mean and std must broadcast"),
    ],
    "log_evidence_quadrature": [
        (lambda: log_evidence_quadrature(_std_normal_log_joint, [0.0, 1.0]), ValueError,
         r"grid needs at least 3 points"),
        (lambda: log_evidence_quadrature(_std_normal_log_joint, [0.0, 1.0, 3.0]), ValueError,
         r"grid must be uniformly spaced"),
        (lambda: log_evidence_quadrature(_std_normal_log_joint, [0.0, np.nan, 1.0]),
         ValueError, r"grid must contain only finite"),
        (lambda: log_evidence_quadrature("f", _GRID), TypeError,
         r"log_joint must be callable"),
        (lambda: log_evidence_quadrature(lambda z: z[:3], _GRID), ValueError,
         r"log_joint must return shape"),
        (lambda: log_evidence_quadrature(
            lambda z: np.where(z == z[100], np.nan, -0.5 * z**2), _GRID), ValueError,
         r"log_joint returned NaN"),
        (lambda: log_evidence_quadrature(lambda z: -0.5 * (z / 20) ** 2, _GRID), ValueError,
         r"grid does not cover"),
    ],
    "kl_on_grid": [
        (lambda: kl_on_grid(np.full((3, 3), np.nan), np.zeros((3, 3)), [0, 1, 2], [0, 1, 2]),
         ValueError, r"log_q must not contain NaN"),
        (lambda: kl_on_grid(np.zeros((3, 3)), np.full((3, 3), np.inf), [0, 1, 2], [0, 1, 2]),
         ValueError, r"log_p must not contain NaN or \+inf"),
        (lambda: kl_on_grid([["a"] * 3] * 3, np.zeros((3, 3)), [0, 1, 2], [0, 1, 2]),
         TypeError, r"log_q must be numeric"),
        (lambda: kl_on_grid(np.zeros((3, 2)), np.zeros((3, 3)), [0, 1, 2], [0, 1, 2]),
         ValueError, r"log_q and log_p must have shape \(3, 3\)"),
        (lambda: kl_on_grid(np.zeros((3, 3)), np.zeros((3, 3)), [0, 2, 1], [0, 1, 2]),
         ValueError, r"grid_0 must be strictly increasing"),
        (lambda: kl_on_grid(np.zeros((3, 3)), np.zeros((3, 3)), [0, 1, 2], [0, 1, np.nan]),
         ValueError, r"grid_1 must contain only finite"),
    ],
    "importance_sampling_posterior": [
        (lambda: importance_sampling_posterior(_torch_log_joint, [0.0, 0.0], _EYE2, 10,
                                               rng=None), TypeError, r"rng must be"),
        (lambda: importance_sampling_posterior(_torch_log_joint, [0.0, 0.0], np.eye(3), 10,
                                               rng=0), ValueError, r"cov must have shape"),
        (lambda: importance_sampling_posterior(_torch_log_joint, [0.0, 0.0],
                                               [[1.0, 2.0], [2.0, 1.0]], 10, rng=0),
         ValueError, r"cov must be positive definite"),
        (lambda: importance_sampling_posterior(_torch_log_joint, [0.0, 0.0],
                                               [[1.0, 0.5], [0.0, 1.0]], 10, rng=0),
         ValueError, r"cov must be symmetric"),
        (lambda: importance_sampling_posterior(_torch_log_joint, [0.0, 0.0], _EYE2, 1, rng=0),
         ValueError, r"num_samples must be >= 2"),
        (lambda: importance_sampling_posterior(_torch_log_joint, [0.0, 0.0], _EYE2, 10,
                                               rng=0, df=0.0), ValueError, r"df must be"),
        (lambda: importance_sampling_posterior("f", [0.0, 0.0], _EYE2, 10, rng=0), TypeError,
         r"log_joint must be callable"),
        (lambda: importance_sampling_posterior(lambda z: z, [0.0, 0.0], _EYE2, 10, rng=0),
         ValueError, r"log_joint must return a tensor of shape \(10,\)"),
        (lambda: importance_sampling_posterior(lambda z: z[:, 0] * np.nan, [0.0, 0.0],
                                               _EYE2, 10, rng=0), ValueError,
         r"log_joint must return finite values or -inf"),
    ],
}

NO_INPUTS = {
    "ImportanceSamplingResult": "a result object returned by importance_sampling_posterior",
}

# ELBO of q = N(m, s^2) for log p(x, z) = log N(z; 0, 1): -(m^2 + s^2)/2 + log s + 1/2
def _norm_logpdf(x, mean=0.0, var=1.0):
    return -0.5 * ((x - mean) ** 2 / var + np.log(2 * np.pi * var))


def _kl_on_grid_of_gaussians():
    """KL(N(0, 1) N(0, 1) || N(0.5, 2) N(0, 1)) on a fine grid, and in closed form."""
    g = np.linspace(-12, 12, 1201)
    mu, tau = np.meshgrid(g, g, indexing="ij")
    log_q = _norm_logpdf(mu) + _norm_logpdf(tau)
    log_p = _norm_logpdf(mu, 0.5, 2.0) + _norm_logpdf(tau)
    want = 0.5 * (np.log(2.0) + (1 + 0.25) / 2 - 1)
    return kl_on_grid(log_q, log_p, g, g), want


EXTREME_INPUTS = {
    "kl_on_grid": [
        (_kl_on_grid_of_gaussians,
         lambda out: np.testing.assert_allclose(out[0], out[1], rtol=1e-6)),
    ],
    "gaussian_elbo_quadrature": [
        (lambda: gaussian_elbo_quadrature(_std_normal_log_joint, 0.0, 1e-200),
         lambda out: np.testing.assert_allclose(out, np.log(1e-200) + 0.5, rtol=1e-13)),
        (lambda: gaussian_elbo_quadrature(_std_normal_log_joint, 1e-150, 1e-150),
         lambda out: np.testing.assert_allclose(out, np.log(1e-150) + 0.5, rtol=1e-13)),
        (lambda: gaussian_elbo_quadrature(_std_normal_log_joint, 0.0, 1e150),
         lambda out: np.testing.assert_allclose(out, -0.5e300, rtol=1e-13)),
    ],
    "importance_weighted_bound": [
        (lambda: importance_weighted_bound(np.array([-1e300, -1e300 + 1e284])),
         lambda out: np.testing.assert_allclose(out, -1e300 + 1e284, rtol=1e-15)),
        (lambda: importance_weighted_bound(np.array([[3.0]])),       # k = 1: the weight
         lambda out: np.testing.assert_array_equal(out, [3.0])),
    ],
    "log_evidence_quadrature": [
        # one tiny-scale posterior: N(0, 1e-150^2) has log p(x) = 0 (normalised joint)
        (lambda: log_evidence_quadrature(
            lambda z: -0.5 * (z / 1e-150) ** 2 - np.log(1e-150) - 0.5 * np.log(2 * np.pi),
            np.linspace(-1e-149, 1e-149, 2001))[0],
         lambda out: np.testing.assert_allclose(out, 0.0, atol=1e-12)),
    ],
}


# ---------------------------------------------------------------------------------------
# issue 34: the second round of bad input, and importance sampling at its edges
# ---------------------------------------------------------------------------------------
def _one_dim_conjugate_log_joint(z):
    """log N(z; 0, 1) + log N(x = 1; z, 1): p(x) = N(1; 0, 2), z | x ~ N(1/2, 1/2)."""
    z = z[:, 0]
    return -0.5 * z**2 - 0.5 * (1.0 - z) ** 2 - np.log(2 * np.pi)


def _half_normal_log_joint(z):
    """2 N(z; 0, 1) on z > 0 and zero density (-inf) elsewhere: p(x) = 1."""
    inside = -0.5 * z[:, 0] ** 2 + 0.5 * np.log(2.0 / np.pi)
    return torch.where(z[:, 0] > 0, inside, torch.full_like(inside, -np.inf))


def _assert_one_dim_posterior(out):
    np.testing.assert_allclose(out.log_evidence, -0.5 * np.log(4 * np.pi) - 0.25, atol=0.01)
    np.testing.assert_allclose([out.mean[0], out.sd[0]], [0.5, np.sqrt(0.5)], atol=0.02)


def _assert_half_normal(out):
    # the folded normal: E z = sqrt(2 / pi), sd = sqrt(1 - 2 / pi); log p(x) = 0
    np.testing.assert_allclose(out.log_evidence, 0.0, atol=0.02)
    np.testing.assert_allclose([out.mean[0], out.sd[0]],
                               [np.sqrt(2 / np.pi), np.sqrt(1 - 2 / np.pi)], atol=0.02)


BAD_INPUTS["importance_weighted_bound"] += [
    (lambda: importance_weighted_bound(np.array([0.0, 1j])), TypeError,
     r"log_weights must be real"),
    (lambda: importance_weighted_bound(torch.tensor([0.0, 1j])), TypeError,
     r"log_weights must be real, got a complex tensor"),
    (lambda: importance_weighted_bound([0.0, 10**400]), ValueError,
     r"log_weights holds an integer beyond the range of float64"),
    (lambda: importance_weighted_bound(np.zeros(2), dim=np.int64(3)), ValueError,
     r"dim=3 is out of range"),
    (lambda: importance_weighted_bound(np.zeros(2), dim=True), TypeError,
     r"dim must be an integer, got bool"),
]
BAD_INPUTS["kl_on_grid"] += [
    (lambda: kl_on_grid(np.zeros((3, 3)) + 0j, np.zeros((3, 3)), [0, 1, 2], [0, 1, 2]),
     TypeError, r"log_q must be real"),
    (lambda: kl_on_grid(np.zeros((3, 3)), np.full((3, 3), "0"), [0, 1, 2], [0, 1, 2]),
     TypeError, r"log_p must be numeric array-like"),
]
BAD_INPUTS["importance_sampling_posterior"] += [
    (lambda: importance_sampling_posterior(_torch_log_joint, [0.0, 0.0], _EYE2, 10, rng=-1),
     ValueError, r"rng must be .*>= 0, got -1"),
    (lambda: importance_sampling_posterior(_torch_log_joint, [0.0, 0.0], _EYE2, 2**63,
                                           rng=0), ValueError,
     r"num_samples must be <= 2\*\*32 - 1"),
    (lambda: importance_sampling_posterior(_torch_log_joint, [0.0, 1j], _EYE2, 10, rng=0),
     TypeError, r"mean must be real"),
    (lambda: importance_sampling_posterior(lambda z: torch.full((len(z),), -np.inf),
                                           [0.0], [[1.0]], 10, rng=0), ValueError,
     r"log_joint is -inf at all 10 samples"),
    (lambda: importance_sampling_posterior(lambda z: torch.full((len(z),), np.inf),
                                           [0.0], [[1.0]], 10, rng=0), ValueError,
     r"log_joint must return finite values or -inf"),
]
BAD_INPUTS["monte_carlo_elbo"] += [
    (lambda: monte_carlo_elbo(_torch_log_joint, _N01, 2**63), ValueError,
     r"num_samples must be <= 2\*\*32 - 1"),
]
EXTREME_INPUTS["importance_sampling_posterior"] = [
    # a one-dimensional latent (scipy's multivariate_t draws a vector there)
    (lambda: importance_sampling_posterior(_one_dim_conjugate_log_joint, [0.5], [[0.5]],
                                           20_000, rng=0), _assert_one_dim_posterior),
    # a log joint that is -inf on half the support: those samples get weight zero
    (lambda: importance_sampling_posterior(_half_normal_log_joint, [0.5], [[1.0]], 40_000,
                                           rng=1, df=5.0), _assert_half_normal),
]


def _torch_bound_and_gradient():
    """IWAE_3 of log weights (-1e5, -1e5 + 1, -inf) as a tensor: the value and its
    gradient (the normalised weights) in closed form."""
    lw = torch.tensor([-1e5, -1e5 + 1.0, -np.inf], dtype=F64, requires_grad=True)
    bound = importance_weighted_bound(lw)
    bound.backward()
    e = np.e
    want = (-1e5 + 1 + np.log1p(1 / e) - np.log(3), [1 / (1 + e), e / (1 + e), 0.0])
    return (float(bound), lw.grad.numpy()), want


EXTREME_INPUTS["importance_weighted_bound"] += [
    (_torch_bound_and_gradient,
     lambda out: (np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-15),
                  # weights exp(lw - bound): one ulp of 1e5 (1.5e-11) in the exponent
                  np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-10, atol=0))),
]
