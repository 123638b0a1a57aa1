import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.stats import multivariate_normal, norm
from sklearn.linear_model import LogisticRegression

from elbo_lib.models import (
    BayesianLogisticRegression,
    ConjugateGaussianMean,
    NormalGamma,
    NormalGammaMeanField,
    SquaredMeanModel,
    bsc_exact_moments,
    bsc_exact_posterior,
    bsc_log_joint,
    bsc_log_joint_table,
    bsc_log_likelihood,
    dirichlet_mixture_log_evidence,
    normal_gamma_log_evidence,
    normal_gamma_posterior,
    set_partitions,
)


@pytest.fixture
def model(rng):
    return ConjugateGaussianMean(rng.normal(1.5, 2.0, size=15), noise_std=2.0, prior_mean=-0.5,
                                 prior_std=3.0)


def test_log_evidence_matches_multivariate_normal(model):
    cov = model.noise_var * np.eye(model.n) + model.prior_var * np.ones((model.n, model.n))
    want = multivariate_normal(np.full(model.n, model.prior_mean), cov).logpdf(model.x)
    assert model.log_evidence() == pytest.approx(want, rel=1e-12)


def test_log_evidence_matches_quadrature(model):
    def joint(z):
        return np.exp(model.log_joint(torch.tensor(z)).item() - model.log_evidence())

    total, _ = integrate.quad(joint, -20, 20, points=[model.posterior_mean], limit=200)
    assert total == pytest.approx(1.0, abs=1e-8)


def test_posterior_is_normalised_joint(model):
    z = np.linspace(-3, 3, 7)
    log_post = model.log_joint(torch.tensor(z)).numpy() - model.log_evidence()
    want = norm(model.posterior_mean, np.sqrt(model.posterior_var)).logpdf(z)
    np.testing.assert_allclose(log_post, want, rtol=1e-10)


def test_two_readings_of_the_elbo_agree(model):
    m, v = np.array([-1.0, 0.0, 2.0]), np.array([0.1, 1.0, 5.0])
    np.testing.assert_allclose(model.elbo(m, v), model.elbo_from_entropy(m, v), rtol=1e-12)


def test_elbo_is_maximised_at_the_posterior(model):
    best = model.elbo(model.posterior_mean, model.posterior_var)
    assert best == pytest.approx(model.log_evidence(), abs=1e-10)
    for dm, dv in [(0.1, 1.0), (-0.1, 1.0), (0.0, 1.2), (0.0, 0.8)]:
        assert model.elbo(model.posterior_mean + dm, model.posterior_var * dv) < best


@settings(max_examples=200, deadline=None)
@given(m=st.floats(-50, 50), log_v=st.floats(-10, 8), n=st.integers(1, 30),
       seed=st.integers(0, 2**16))
def test_identity_and_bound_for_random_q(m, log_v, n, seed):
    x = np.random.default_rng(seed).normal(0.0, 1.0, size=n)
    model = ConjugateGaussianMean(x, noise_std=0.7, prior_mean=0.3, prior_std=1.9)
    v = float(np.exp(log_v))
    kl = model.kl_to_posterior(m, v)
    elbo = model.elbo(m, v)
    assert kl >= 0.0
    assert elbo <= model.log_evidence() + 1e-9
    assert elbo + kl == pytest.approx(model.log_evidence(), rel=1e-9, abs=1e-8)


@pytest.mark.parametrize("kwargs, err, msg", [
    ({"x": [[1.0, 2.0]]}, ValueError, "dimension"),
    ({"x": []}, ValueError, "empty"),
    ({"x": [1.0, np.nan]}, ValueError, "finite"),
    ({"x": ["a"]}, TypeError, "numeric"),
    ({"x": [1.0], "noise_std": 0.0}, ValueError, "noise_std"),
    ({"x": [1.0], "prior_std": -1.0}, ValueError, "prior_std"),
    ({"x": [1.0], "prior_std": "1"}, TypeError, "prior_std"),
    ({"x": [1.0], "prior_mean": np.inf}, ValueError, "finite"),
])
def test_bad_construction(kwargs, err, msg):
    with pytest.raises(err, match=msg):
        ConjugateGaussianMean(**kwargs)


def test_bad_q(model):
    with pytest.raises(ValueError, match="var_q"):
        model.elbo(0.0, 0.0)
    with pytest.raises(ValueError, match="mean_q"):
        model.kl_to_posterior(np.nan, 1.0)


# -- SquaredMeanModel and the quadrature oracles (chapter 1) ----------------------------
def test_squared_mean_log_joint_matches_scipy():
    from scipy.stats import norm

    from elbo_lib.models import SquaredMeanModel

    x = np.array([1.1, 0.9, 1.3])
    model = SquaredMeanModel(x, noise_std=0.5, prior_mean=0.2, prior_std=1.5)
    z = np.linspace(-2, 2, 7)
    expected = norm(0.2, 1.5).logpdf(z) + norm.logpdf(x[None, :], z[:, None] ** 2, 0.5).sum(1)
    np.testing.assert_allclose(model.log_joint(z), expected, rtol=1e-12)
    zt = torch.tensor(z, requires_grad=True)
    np.testing.assert_allclose(model.log_joint(zt).detach().numpy(), expected, rtol=1e-12)


def test_squared_mean_evidence_quadrature_matches_scipy_quad():
    from scipy.integrate import quad

    from elbo_lib.bounds import log_evidence_quadrature
    from elbo_lib.models import SquaredMeanModel

    model = SquaredMeanModel(np.array([1.0, 0.8, 1.2]), noise_std=0.5)
    log_z, post = log_evidence_quadrature(model.log_joint, np.linspace(-5, 5, 20001))
    ref = quad(lambda z: np.exp(model.log_joint(z)), -5, 5, points=[-1, 1], epsrel=1e-12)[0]
    assert log_z == pytest.approx(np.log(ref), abs=1e-9)
    assert post.sum() * 10 / 20000 == pytest.approx(1.0, abs=1e-9)


def test_quadrature_oracles_reproduce_the_conjugate_closed_forms():
    from elbo_lib.bounds import gaussian_elbo_quadrature, log_evidence_quadrature

    rng = np.random.default_rng(3)
    model = ConjugateGaussianMean(rng.normal(1.0, 2.0, 15), 2.0, 0.0, 3.0)

    def log_joint(z):
        z = np.asarray(z, dtype=np.float64)
        return model.log_joint(torch.as_tensor(z)).numpy()

    log_z, _ = log_evidence_quadrature(log_joint, np.linspace(-8, 10, 40001))
    assert log_z == pytest.approx(model.log_evidence(), abs=1e-9)
    means, stds = np.array([-1.0, 0.5, 2.0]), np.array([0.1, 1.0, 3.0])
    np.testing.assert_allclose(gaussian_elbo_quadrature(log_joint, means, stds),
                               model.elbo(means, stds**2), rtol=1e-12)


def test_quadrature_oracles_validate_inputs():
    from elbo_lib.bounds import gaussian_elbo_quadrature, log_evidence_quadrature

    with pytest.raises(TypeError, match="callable"):
        gaussian_elbo_quadrature(3.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="std"):
        gaussian_elbo_quadrature(lambda z: -z**2, 0.0, -1.0)
    with pytest.raises(ValueError, match="cover"):
        log_evidence_quadrature(lambda z: -0.5 * z**2, np.linspace(-1, 1, 101))
    with pytest.raises(ValueError, match="uniform"):
        log_evidence_quadrature(lambda z: -0.5 * z**2, np.array([-9.0, 0.0, 1.0, 9.0]))


def test_bsc_log_joint_and_exact_posterior(bsc_problem):
    v, w, b, beta = bsc_problem
    h = np.array([1, 0, 1, 0, 0, 1.0])
    prior = torch.distributions.Bernoulli(logits=torch.as_tensor(b)).log_prob(torch.as_tensor(h))
    lik = torch.distributions.Normal(torch.as_tensor(w @ h), beta**-0.5).log_prob(
        torch.as_tensor(v))
    assert bsc_log_joint(h, v, w, b, beta) == pytest.approx(float(prior.sum() + lik.sum()))
    ex = bsc_exact_posterior(v, w, b, beta)
    assert ex["codes"].shape == (64, 6)
    assert np.exp(ex["log_posterior"]).sum() == pytest.approx(1.0)


def test_set_partitions_counts_bell_numbers():
    bell = [1, 2, 5, 15, 52, 203, 877, 4140]
    for n, b in enumerate(bell, start=1):
        parts = set_partitions(n)
        assert parts.shape == (b, n)
        assert len({tuple(row) for row in parts}) == b        # all distinct
    with pytest.raises(ValueError, match="n must be <= 12"):
        set_partitions(13)


def test_dirichlet_mixture_evidence_matches_prior_monte_carlo():
    """Exact evidence (sum over partitions) vs a Monte Carlo average over the prior."""
    rng = np.random.default_rng(0)
    x = np.array([[-1.0, 0.3], [1.2, -0.4], [0.9, 0.1]])
    k, sigma2, alpha0 = 2, 2.0, 0.7
    exact = dirichlet_mixture_log_evidence(x, k, sigma2, alpha0)
    s = 400_000
    mu = rng.normal(scale=np.sqrt(sigma2), size=(s, k, 2))
    pi = rng.dirichlet(np.full(k, alpha0), size=s)
    log_n = -np.log(2 * np.pi) - 0.5 * ((x[None, :, None, :] - mu[:, None]) ** 2).sum(-1)
    log_lik = np.log((pi[:, None, :] * np.exp(log_n)).sum(-1)).sum(-1)
    mc = np.log(np.mean(np.exp(log_lik - log_lik.max()))) + log_lik.max()
    assert abs(exact - mc) < 0.02


def test_dirichlet_mixture_evidence_brute_force_labelled_sum():
    """Sum over all K^n labelled assignments (independent of the partition bookkeeping)."""
    from itertools import product as iproduct

    from scipy.special import gammaln, logsumexp
    from scipy.stats import multivariate_normal

    x = np.array([0.5, -1.0, 2.0, 0.1])
    k, sigma2, alpha0 = 3, 1.5, 0.5
    terms = []
    for labels in iproduct(range(k), repeat=x.size):
        labels = np.array(labels)
        counts = np.bincount(labels, minlength=k)
        log_c = (gammaln(k * alpha0) - gammaln(x.size + k * alpha0)
                 + np.sum(gammaln(counts + alpha0) - gammaln(alpha0)))
        cov = np.eye(x.size) + sigma2 * (labels[:, None] == labels[None, :])
        terms.append(log_c + multivariate_normal(np.zeros(x.size), cov).logpdf(x))
    assert np.isclose(dirichlet_mixture_log_evidence(x, k, sigma2, alpha0), logsumexp(terms),
                      rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------
# Contract cases (issue 16): every public name of elbo_lib.models has bad-input cases.
# ---------------------------------------------------------------------------------------
_CGM = ConjugateGaussianMean([0.5, 1.0, 2.0], noise_std=1.0)
_SMM = SquaredMeanModel([0.5, 1.0, 2.0])
_NG = NormalGamma(0.5, 2.0, 1.5, 0.8)
_NG_Q = NormalGammaMeanField(1.0, 10.0, 7.5, 4.0)
_X1 = np.array([0.3, 1.1, 0.7])
_BV = np.array([1.0, -0.5, 0.3])
_BW = np.array([[1.0, 0.0], [0.5, 1.0], [0.0, -1.0]])
_BB = np.array([-1.0, 0.0])
_BV_BATCH = np.stack([_BV, -_BV])
_NAN_Z = torch.tensor([0.0, float("nan")], dtype=torch.float64)


def _q_method_cases(method):
    return [
        (lambda: getattr(_CGM, method)(0.0, 0.0), ValueError, r"var_q must be > 0"),
        (lambda: getattr(_CGM, method)(np.nan, 1.0), ValueError, r"mean_q must contain only"),
        (lambda: getattr(_CGM, method)(np.zeros(3), np.ones(2)), ValueError,
         r"mean_q .*var_q .*broadcast"),
    ]


def _scaled_log_evidence(scale):
    """log p(x s) with every standard deviation times s = log p(x) - n log s."""
    x = np.array([0.3, -1.2, 2.0, 0.7])
    base = ConjugateGaussianMean(x, noise_std=0.8, prior_mean=0.5, prior_std=1.5)
    big = ConjugateGaussianMean(x * scale, noise_std=0.8 * scale, prior_mean=0.5 * scale,
                                prior_std=1.5 * scale)
    return big, base, scale


def _assert_scaled(out):
    big, base, scale = out
    shift = base.n * np.log(scale)
    np.testing.assert_allclose(big.log_evidence(), base.log_evidence() - shift, rtol=1e-12)
    np.testing.assert_allclose(big.elbo(big.posterior_mean, big.posterior_var),
                               base.log_evidence() - shift, rtol=1e-12)
    z = torch.tensor([0.1, -0.4], dtype=torch.float64)
    np.testing.assert_allclose(big.log_joint(z * scale).numpy(),
                               base.log_joint(z).numpy() - shift - np.log(scale),
                               rtol=1e-12)


BAD_INPUTS = {
    "NormalGammaMeanField": [
        (lambda: NormalGammaMeanField(0.0, 0.0, 1.0, 1.0), ValueError,
         r"precision must be a finite number > 0"),
        (lambda: NormalGammaMeanField(np.nan, 1.0, 1.0, 1.0), ValueError, r"mean must be finite"),
        (lambda: NormalGammaMeanField(0.0, 1.0, "1", 1.0), TypeError,
         r"shape must be a positive number"),
    ],
    "NormalGammaMeanField.log_pdf": [
        (lambda: _NG_Q.log_pdf(np.nan, 1.0), ValueError, r"mu must .*(finite|NaN)"),
        (lambda: _NG_Q.log_pdf(0.0, np.array([1.0, np.nan])), ValueError,
         r"tau must .*(finite|NaN)"),
        (lambda: _NG_Q.log_pdf("mu", 1.0), TypeError, r"mu must be numeric"),
        (lambda: _NG_Q.log_pdf(np.zeros(3), np.ones(2)), ValueError,
         r"mu .*tau .*broadcast"),
    ],
    "NormalGammaMeanField.from_prior": [
        (lambda: NormalGammaMeanField.from_prior("prior"), TypeError,
         r"prior must be a NormalGamma"),
        (lambda: NormalGammaMeanField.from_prior(_NG_Q), TypeError,
         r"prior must be a NormalGamma"),
    ],
    "ConjugateGaussianMean": [
        (lambda: ConjugateGaussianMean([[1.0, 2.0]]), ValueError, r"x must have 1 dimension"),
        (lambda: ConjugateGaussianMean([]), ValueError, r"x must not be empty"),
        (lambda: ConjugateGaussianMean([1.0, np.nan]), ValueError, r"x must contain only"),
        (lambda: ConjugateGaussianMean(["a"]), TypeError, r"x must be numeric"),
        (lambda: ConjugateGaussianMean([1.0], noise_std=0.0), ValueError,
         r"noise_std must be a finite number > 0"),
        (lambda: ConjugateGaussianMean([1.0], prior_std="1"), TypeError,
         r"prior_std must be a positive number"),
        (lambda: ConjugateGaussianMean([1.0], prior_mean=np.inf), ValueError,
         r"prior_mean must be finite"),
        # valid numbers, but (x / noise_std)^2 overflows float64: rejected, saying why
        (lambda: ConjugateGaussianMean([1e160, 2e160]), ValueError,
         r"x is too large relative to noise_std"),
        (lambda: ConjugateGaussianMean([1.0], noise_std=1e200), ValueError,
         r"noise_std\*\*2 .*float64"),
    ],
    "ConjugateGaussianMean.expected_log_likelihood":
        _q_method_cases("expected_log_likelihood"),
    "ConjugateGaussianMean.kl_to_prior": _q_method_cases("kl_to_prior"),
    "ConjugateGaussianMean.elbo": _q_method_cases("elbo"),
    "ConjugateGaussianMean.elbo_from_entropy": _q_method_cases("elbo_from_entropy"),
    "ConjugateGaussianMean.kl_to_posterior": _q_method_cases("kl_to_posterior"),
    "ConjugateGaussianMean.log_likelihood": [
        (lambda: _CGM.log_likelihood(_NAN_Z), ValueError, r"z must contain only finite"),
        (lambda: _CGM.log_likelihood("z"), TypeError, r"z must be a torch.Tensor or numeric"),
    ],
    "ConjugateGaussianMean.log_joint": [
        (lambda: _CGM.log_joint(_NAN_Z), ValueError, r"z must contain only finite"),
        (lambda: _CGM.log_joint(["z"]), TypeError, r"z must be a torch.Tensor or numeric"),
    ],
    "SquaredMeanModel": [
        (lambda: SquaredMeanModel([1.0, np.nan]), ValueError, r"x must contain only"),
        (lambda: SquaredMeanModel([1.0], noise_std=-1.0), ValueError,
         r"noise_std must be a finite number > 0"),
        (lambda: SquaredMeanModel([1.0], prior_mean="0"), TypeError,
         r"prior_mean must be a real number"),
    ],
    "SquaredMeanModel.log_joint": [
        (lambda: _SMM.log_joint(np.array([0.0, np.nan])), ValueError,
         r"z must contain only finite"),
        (lambda: _SMM.log_joint(_NAN_Z), ValueError, r"z must contain only finite"),
        (lambda: _SMM.log_joint("z"), TypeError, r"z must be (a torch.Tensor or )?numeric"),
    ],
    "NormalGamma": [
        (lambda: NormalGamma(0.0, 0.0, 1.0, 1.0), ValueError, r"lam must be a finite number > 0"),
        (lambda: NormalGamma(np.nan, 1.0, 1.0, 1.0), ValueError, r"mean must be finite"),
        (lambda: NormalGamma(0.0, 1.0, 1.0, "1"), TypeError, r"rate must be a positive number"),
    ],
    "NormalGamma.log_pdf": [
        (lambda: _NG.log_pdf(np.nan, 1.0), ValueError, r"mu must .*(finite|NaN)"),
        (lambda: _NG.log_pdf(0.0, [np.nan]), ValueError, r"tau must .*(finite|NaN)"),
        (lambda: _NG.log_pdf(np.zeros(3), np.ones(2)), ValueError, r"mu .*tau .*broadcast"),
    ],
    "normal_gamma_posterior": [
        (lambda: normal_gamma_posterior(_X1, (0.5, 2.0, 1.5, 0.8)), TypeError,
         r"prior must be a NormalGamma"),
        (lambda: normal_gamma_posterior([], _NG), ValueError, r"x must not be empty"),
    ],
    "normal_gamma_log_evidence": [
        (lambda: normal_gamma_log_evidence([1.0, np.inf], _NG), ValueError,
         r"x must contain only finite"),
        (lambda: normal_gamma_log_evidence(_X1[:, None], _NG), ValueError,
         r"x must have 1 dimension"),
    ],
    "bsc_log_joint": [
        (lambda: bsc_log_joint([0.5, 1.0], _BV, _BW, _BB, 4.0), ValueError,
         r"h must be binary with 2 columns"),
        (lambda: bsc_log_joint([0.0, 1.0], _BV, _BW, _BB[:1], 4.0), ValueError,
         r"bias must have length n_latent = 2"),
        (lambda: bsc_log_joint([0.0, 1.0], _BV, _BW, _BB, -1.0), ValueError,
         r"noise_precision must be > 0"),
    ],
    "bsc_exact_posterior": [
        (lambda: bsc_exact_posterior(np.zeros(2), np.zeros((2, 21)), np.zeros(21), 1.0),
         ValueError, r"bias has n_latent = 21 .*n_latent <= 20"),
        (lambda: bsc_exact_posterior(_BV, _BW.T, _BB, 1.0), ValueError,
         r"weights must have shape \(len\(v\), n_latent\)"),
    ],
    "bsc_log_joint_table": [
        (lambda: bsc_log_joint_table(_BV, _BW, _BB, 4.0), ValueError, r"v must have 2 dim"),
        (lambda: bsc_log_joint_table(np.zeros((2, 2)), np.zeros((2, 17)), np.zeros(17), 1.0),
         ValueError, r"bias has n_latent = 17 .*n_latent <= 16"),
    ],
    "bsc_log_likelihood": [
        (lambda: bsc_log_likelihood(_BV_BATCH, _BW, _BB, np.array([1.0, 2.0, 3.0])), TypeError,
         r"noise_precision must be a positive number"),
    ],
    "bsc_exact_moments": [
        (lambda: bsc_exact_moments(np.full((2, 3), np.nan), _BW, _BB, 4.0), ValueError,
         r"v must contain only finite"),
    ],
    "set_partitions": [
        (lambda: set_partitions(0), ValueError, r"n must be >= 1"),
        (lambda: set_partitions(13), ValueError, r"n must be <= 12"),
        (lambda: set_partitions(2.5), TypeError, r"n must be an integer"),
    ],
    "dirichlet_mixture_log_evidence": [
        (lambda: dirichlet_mixture_log_evidence(np.zeros(13), 2, 1.0, 1.0), ValueError,
         r"x must have at most 12 points"),
        (lambda: dirichlet_mixture_log_evidence(_X1, 2, 1.0, 0.0), ValueError,
         r"alpha0 must be a finite number > 0"),
        (lambda: dirichlet_mixture_log_evidence(_X1, 0, 1.0, 1.0), ValueError,
         r"n_components must be >= 1"),
    ],
}

EXTREME_INPUTS = {
    "ConjugateGaussianMean": [
        (lambda: _scaled_log_evidence(1e150), _assert_scaled),
        (lambda: _scaled_log_evidence(1e-150), _assert_scaled),
    ],
    "dirichlet_mixture_log_evidence": [
        # one point: the Gaussian N(0, 1 + sigma^2), whatever K and alpha0
        (lambda: dirichlet_mixture_log_evidence([1.5], 3, 2.0, 0.7),
         lambda out: np.testing.assert_allclose(out, norm.logpdf(1.5, 0, np.sqrt(3.0)),
                                                rtol=1e-13)),
    ],
}


# --------------------------------------------------------------------------------------
# Bayesian logistic regression (chapter 5)
# --------------------------------------------------------------------------------------
def _logistic_data(n: int = 200, seed: int = 0):
    gen = np.random.default_rng(seed)
    x = np.c_[np.ones(n), gen.normal(size=(n, 3))]
    y = (gen.uniform(size=n) < 1 / (1 + np.exp(-x @ np.array([0.5, 1.0, -2.0, 0.0])))) * 1.0
    return x, y


def test_logistic_map_matches_scikit_learn_and_laplace_is_the_inverse_hessian():
    x, y = _logistic_data()
    model = BayesianLogisticRegression(x, y, prior_std=2.0)
    w_map, cov = model.laplace()
    # scikit-learn: minimises 0.5 ||w||^2 + C sum log-loss, i.e. prior N(0, C I)
    sk = LogisticRegression(C=4.0, fit_intercept=False, tol=1e-12, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(w_map, sk.coef_[0], atol=1e-5)
    # the Laplace covariance is minus the inverse Hessian of log_joint, by autograd
    hess = torch.autograd.functional.hessian(
        lambda w: model.log_joint(w[None])[0], torch.tensor(w_map))
    np.testing.assert_allclose(cov, np.linalg.inv(-hess.numpy()), rtol=1e-8)


def test_logistic_log_joint_matches_torch_distributions():
    x, y = _logistic_data()
    model = BayesianLogisticRegression(x, y, prior_std=2.0)
    w = torch.tensor(np.random.default_rng(1).normal(size=(5, 4)))
    direct = (torch.distributions.Bernoulli(logits=w @ torch.tensor(x).T)
              .log_prob(torch.tensor(y)).sum(1)
              + torch.distributions.Normal(0.0, 2.0).log_prob(w).sum(1))
    torch.testing.assert_close(model.log_joint(w), direct.to(torch.float64))


def test_logistic_predictive_probability_of_a_point_estimate():
    x = np.array([[1.0, 0.0], [1.0, 2.0]])
    w = np.array([0.5, -1.0])
    np.testing.assert_allclose(BayesianLogisticRegression.predictive_proba(x, w),
                               1 / (1 + np.exp(-(x @ w))), rtol=1e-14)


@pytest.mark.parametrize("make, error, match", [
    (lambda: BayesianLogisticRegression(np.ones((3, 2)), [0, 1, 2]), ValueError,
     "only 0 and 1"),
    (lambda: BayesianLogisticRegression(np.ones((3, 2)), [0, 1]), ValueError,
     "same number of rows"),
    (lambda: BayesianLogisticRegression(np.ones((3, 2)), [0, 1, 1], prior_std=0.0),
     ValueError, "prior_std"),
    (lambda: BayesianLogisticRegression(np.ones((2, 2)), [0, 1]).log_joint(
        torch.zeros(3)), ValueError, "w must have shape"),
    (lambda: BayesianLogisticRegression.predictive_proba(np.ones((2, 3)), np.ones(2)),
     ValueError, "weights must have 3 columns"),
    (lambda: BayesianLogisticRegression(np.ones((2, 2)), [0, 1]).map_estimate(max_iter=0),
     ValueError, "max_iter"),
])
def test_logistic_rejects_bad_input(make, error, match):
    with pytest.raises(error, match=match):
        make()


# --------------------------------------------------------------------------------------
# Contract cases (issue 16, H6's block): BayesianLogisticRegression. Merged into the
# module's BAD_INPUTS / EXTREME_INPUTS, whether or not the other models' block (H4's)
# comes first.
# --------------------------------------------------------------------------------------
def _blr():
    return BayesianLogisticRegression(np.array([[1.0, 0.5], [1.0, -1.0], [1.0, 2.0]]),
                                      [0, 1, 1])


def _one_point_map():
    """One point x = 2, y = 1, prior N(0, 1): the MAP solves 2 (1 - sigmoid(2 w)) = w."""
    from scipy.optimize import brentq

    return brentq(lambda w: 2 * (1 - 1 / (1 + np.exp(-2 * w))) - w, -10, 10, xtol=1e-15)


_LOGISTIC_BAD_INPUTS = {
    "BayesianLogisticRegression": [
        (lambda: BayesianLogisticRegression(np.ones((3, 2)), [0, 1, 2]), ValueError,
         r"y must contain only 0 and 1"),
        (lambda: BayesianLogisticRegression(np.ones((3, 2)), [0, 1]), ValueError,
         r"x and y must have the same number of rows"),
        (lambda: BayesianLogisticRegression(np.ones((3, 2)), [0, 1, 1], prior_std=0.0),
         ValueError, r"prior_std must be a finite number > 0"),
        (lambda: BayesianLogisticRegression([[1.0, np.nan]], [1]), ValueError,
         r"x must contain only finite"),
        (lambda: BayesianLogisticRegression(np.ones((2, 2)), [0, np.nan]), ValueError,
         r"y must contain only finite"),
        (lambda: BayesianLogisticRegression(np.ones(3), [0, 1, 1]), ValueError,
         r"x must have 2 dimension"),
        (lambda: BayesianLogisticRegression([["a", "b"]], [1]), TypeError,
         r"x must be numeric"),
    ],
    "BayesianLogisticRegression.log_joint": [
        (lambda: _blr().log_joint(torch.zeros(3)), ValueError,
         r"w must have shape \(S, 2\)"),
        (lambda: _blr().log_joint(torch.tensor([[0.0, np.nan]])), ValueError,
         r"w must contain only finite"),
        (lambda: _blr().log_joint(torch.tensor([[0.0, np.inf]])), ValueError,
         r"w must contain only finite"),
        (lambda: _blr().log_joint("w"), TypeError, r"w must be a torch.Tensor or numeric"),
    ],
    "BayesianLogisticRegression.map_estimate": [
        (lambda: _blr().map_estimate(max_iter=0), ValueError, r"max_iter must be >= 1"),
        (lambda: _blr().map_estimate(tol=np.nan), ValueError,
         r"tol must be a finite number >= 0"),
        (lambda: _blr().map_estimate(tol=-1.0), ValueError,
         r"tol must be a finite number >= 0"),
    ],
    "BayesianLogisticRegression.predictive_proba": [
        (lambda: BayesianLogisticRegression.predictive_proba(np.ones((2, 3)), np.ones(2)),
         ValueError, r"weights must have 3 columns"),
        (lambda: BayesianLogisticRegression.predictive_proba(np.ones((2, 2)),
                                                             [0.0, np.nan]),
         ValueError, r"weights must contain only finite"),
        (lambda: BayesianLogisticRegression.predictive_proba(np.ones(2), np.ones(2)),
         ValueError, r"x must have 2 dimension"),
    ],
}
_LOGISTIC_EXTREME_INPUTS = {
    "BayesianLogisticRegression.map_estimate": [
        (lambda: BayesianLogisticRegression([[2.0]], [1]).map_estimate(),
         lambda w: np.testing.assert_allclose(w, [_one_point_map()], rtol=1e-12)),
    ],
    "BayesianLogisticRegression.log_joint": [
        # a weight of 1e100 on a point of the right class: log sigmoid(1e100) = 0, so
        # log p is the log prior alone, -(1e100)^2 / 2 - log(2 pi) / 2
        (lambda: BayesianLogisticRegression([[1.0]], [1]).log_joint(
            torch.tensor([[1e100]], dtype=torch.float64)),
         lambda out: np.testing.assert_allclose(
             out.numpy(), [-0.5e200 - 0.5 * np.log(2 * np.pi)], rtol=1e-15)),
    ],
}
BAD_INPUTS.update(_LOGISTIC_BAD_INPUTS)
EXTREME_INPUTS.update(_LOGISTIC_EXTREME_INPUTS)


def test_normal_gamma_mean_field_log_pdf_matches_scipy():
    from scipy.stats import gamma, norm

    mu, tau = np.linspace(-1.0, 3.0, 7), np.linspace(0.1, 4.0, 7)
    want = norm(1.0, 10.0 ** -0.5).logpdf(mu) + gamma(7.5, scale=1 / 4.0).logpdf(tau)
    np.testing.assert_allclose(_NG_Q.log_pdf(mu, tau), want, rtol=1e-12)
    assert _NG_Q.log_pdf(0.0, -1.0) == -np.inf


def test_mean_field_from_prior_matches_prior_moments():
    q = NormalGammaMeanField.from_prior(_NG)
    assert (q.mean, q.shape, q.rate) == (_NG.mean, _NG.shape, _NG.rate)
    assert q.precision == pytest.approx(_NG.lam * _NG.shape / _NG.rate, rel=1e-15)
