"""Tests of elbo_lib.mean_field (chapter 4): every CAVI routine against an exact answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.stats import gamma, norm
from sklearn.metrics import adjusted_rand_score
from torch.distributions import Gamma, Normal

from elbo_lib.bounds import kl_on_grid
from elbo_lib.gaussians import gaussian_kl_full
from elbo_lib.mean_field import (
    bsc_elbo,
    bsc_elbo_enumeration,
    bsc_mean_field,
    cavi_gaussian,
    cavi_gaussian_mixture,
    cavi_normal_gamma,
    gaussian_mixture_elbo,
    mean_field_gaussian,
    normal_gamma_elbo,
)
from elbo_lib.models import (
    NormalGamma,
    NormalGammaMeanField,
    bsc_exact_moments,
    bsc_exact_posterior,
    bsc_log_joint,
    bsc_log_likelihood,
    normal_gamma_log_evidence,
    normal_gamma_posterior,
)


# --- Normal-Gamma ----------------------------------------------------------------------
@pytest.fixture
def ng_data():
    rng = np.random.default_rng(3)
    return rng.normal(1.0, 0.7, size=12), NormalGamma(0.5, 2.0, 1.5, 0.8)


def _log_joint_grid(x, prior, mu, tau):
    """log p(x, mu, tau) from scipy.stats densities, independent of the closed forms."""
    sd = 1 / np.sqrt(tau)
    return (norm.logpdf(x[:, None, None], mu[None], sd[None]).sum(axis=0)
            + norm.logpdf(mu, prior.mean, sd / np.sqrt(prior.lam))
            + gamma.logpdf(tau, prior.shape, scale=1 / prior.rate))


def test_normal_gamma_evidence_matches_numerical_integration(ng_data):
    x, prior = ng_data
    post = normal_gamma_posterior(x, prior)
    mu = np.linspace(post.mean - 3, post.mean + 3, 401)
    tau = np.linspace(1e-4, 12, 601)
    grid_mu, grid_tau = np.meshgrid(mu, tau, indexing="ij")
    log_joint = _log_joint_grid(x, prior, grid_mu, grid_tau)
    shift = log_joint.max()
    z = np.trapezoid(np.trapezoid(np.exp(log_joint - shift), tau, axis=1), mu)
    assert np.log(z) + shift == pytest.approx(normal_gamma_log_evidence(x, prior), abs=1e-6)
    # the closed-form posterior density is log joint minus log evidence
    np.testing.assert_allclose(post.log_pdf(grid_mu, grid_tau)[::40, ::40],
                               (log_joint - np.log(z) - shift)[::40, ::40], atol=1e-6)


def test_cavi_normal_gamma_monotone_and_matches_posterior_means(ng_data):
    x, prior = ng_data
    init = NormalGammaMeanField(-2.0, 30.0, 2.0, 9.0)
    res = cavi_normal_gamma(x, prior, init)
    assert res.converged
    assert np.all(np.diff(res.elbo) >= -1e-12)
    assert res.updated[:3] == ["init", "mu", "tau"]
    post = normal_gamma_posterior(x, prior)
    assert res.q.mean == pytest.approx(post.mean, rel=1e-12)
    assert res.q.mean_tau == pytest.approx(post.mean_tau, rel=1e-7)
    assert 1 / res.q.precision < post.var_mu        # mean-field under-estimates the spread


def test_normal_gamma_gap_equals_kl_on_grid(ng_data):
    x, prior = ng_data
    res = cavi_normal_gamma(x, prior)
    post = normal_gamma_posterior(x, prior)
    q = res.q
    sd = 1 / np.sqrt(q.precision)
    mu = np.linspace(q.mean - 9 * sd, q.mean + 9 * sd, 901)
    tau = np.linspace(gamma.ppf(1e-13, q.shape, scale=1 / q.rate),
                      gamma.ppf(1 - 1e-13, q.shape, scale=1 / q.rate), 901)
    gm, gt = np.meshgrid(mu, tau, indexing="ij")
    kl = kl_on_grid(q.log_pdf(gm, gt), post.log_pdf(gm, gt), mu, tau)
    gap = normal_gamma_log_evidence(x, prior) - res.elbo[-1]
    assert gap > 0
    assert kl == pytest.approx(gap, abs=1e-6)


def test_normal_gamma_elbo_matches_monte_carlo(ng_data):
    x, prior = ng_data
    q = NormalGammaMeanField(0.8, 5.0, 3.0, 2.0)
    torch.manual_seed(0)
    mu = Normal(torch.tensor(q.mean, dtype=torch.float64),
                torch.tensor(q.precision, dtype=torch.float64) ** -0.5)
    tau = Gamma(torch.tensor(q.shape, dtype=torch.float64),
                torch.tensor(q.rate, dtype=torch.float64))
    m, t = mu.sample((200_000,)), tau.sample((200_000,))
    xt = torch.as_tensor(x)
    log_joint = (Normal(m[:, None], t[:, None] ** -0.5).log_prob(xt).sum(1)
                 + Normal(prior.mean, (prior.lam * t) ** -0.5).log_prob(m)
                 + Gamma(torch.tensor(prior.shape, dtype=torch.float64),
                         torch.tensor(prior.rate, dtype=torch.float64)).log_prob(t))
    terms = log_joint - mu.log_prob(m) - tau.log_prob(t)
    se = float(terms.std() / len(terms) ** 0.5)
    assert float(terms.mean()) == pytest.approx(normal_gamma_elbo(x, prior, q), abs=5 * se)


def test_normal_gamma_bad_inputs(ng_data):
    x, prior = ng_data
    with pytest.raises(ValueError, match="lam"):
        NormalGamma(0.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="rate"):
        NormalGamma(0.0, 1.0, 1.0, -1.0)
    with pytest.raises(ValueError, match="empty"):
        cavi_normal_gamma([], prior)
    with pytest.raises(ValueError, match="dimension"):
        normal_gamma_posterior(np.ones((3, 2)), prior)
    with pytest.raises(TypeError, match="NormalGamma"):
        cavi_normal_gamma(x, (0.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="precision"):
        NormalGammaMeanField(0.0, -1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="increasing"):
        kl_on_grid(np.zeros((2, 2)), np.zeros((2, 2)), [1.0, 0.0], [0.0, 1.0])


# --- correlated Gaussian ---------------------------------------------------------------
def test_mean_field_gaussian_is_the_kl_optimum_and_cavi_converges():
    mean = np.array([1.0, -0.5])
    cov = np.array([[1.0, 0.9], [0.9, 1.5]])
    prec = np.linalg.inv(cov)
    m, v = mean_field_gaussian(mean, prec)
    np.testing.assert_allclose(v, 1 / np.diag(prec))
    assert np.all(v < np.diag(cov))

    def kl_qp(theta):
        return gaussian_kl_full(theta[:2], np.diag(np.exp(theta[2:])), mean, cov)

    best = minimize(kl_qp, np.zeros(4), method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(best.x[:2], m, atol=1e-5)
    np.testing.assert_allclose(np.exp(best.x[2:]), v, atol=1e-5)
    path = cavi_gaussian(mean, prec, [-2.0, 2.0], num_sweeps=60)
    assert path.shape == (121, 2)
    np.testing.assert_allclose(path[-1], mean, atol=1e-8)
    with pytest.raises(ValueError, match="shape"):
        mean_field_gaussian(mean, np.eye(3))




# --- Bayesian mixture of Gaussians -----------------------------------------------------
@pytest.fixture
def mixture_data():
    rng = np.random.default_rng(5)
    true = np.array([[-4.0, 0.0], [3.0, 3.0], [2.0, -4.0]])
    labels = rng.integers(3, size=300)
    return true[labels] + rng.normal(size=(300, 2)), labels, true, rng


def test_cavi_mixture_monotone_and_recovers_means(mixture_data):
    x, labels, true, rng = mixture_data
    res = cavi_gaussian_mixture(x, 3, prior_var=25.0, rng=rng, num_init=4)
    assert res.converged
    assert np.all(np.diff(res.elbo) >= -1e-9 * np.abs(res.elbo[1:]))
    assert res.restart_elbos.shape == (4,) and res.elbo[-1] == res.restart_elbos.max()
    dist = np.linalg.norm(res.means[:, None] - true[None], axis=2)
    assert np.all(dist.min(axis=0) < 0.3)       # every true mean found, up to permutation
    assert adjusted_rand_score(labels, res.labels) > 0.95
    np.testing.assert_allclose(res.variances, 1 / (1 / 25.0 + res.resp.sum(0)))


def test_cavi_mixture_elbo_formula_against_monte_carlo(mixture_data):
    x, _, _, rng = mixture_data
    x = x[:20]
    k = 3
    m, s2 = rng.normal(size=(k, 2)), np.array([0.3, 0.5, 0.8])
    phi = rng.dirichlet(np.ones(k), size=20)
    sigma2 = 4.0
    elbo = gaussian_mixture_elbo(x, m, s2, phi, sigma2)
    # Monte Carlo over mu only; the sums over c_i are done exactly.
    mu = m[None] + np.sqrt(s2)[None, :, None] * rng.normal(size=(30_000, k, 2))
    log_prior = norm.logpdf(mu, 0, np.sqrt(sigma2)).sum(axis=(1, 2))
    log_q_mu = norm.logpdf(mu, m[None], np.sqrt(s2)[None, :, None]).sum(axis=(1, 2))
    log_lik = norm.logpdf(x[None, :, None, :], mu[:, None], 1).sum(-1)      # (S, n, K)
    per_sample = (log_prior - log_q_mu + (phi * (log_lik - np.log(k) - np.log(phi))).sum((1, 2)))
    se = per_sample.std() / np.sqrt(per_sample.size)
    assert per_sample.mean() == pytest.approx(elbo, abs=5 * se)


def test_cavi_mixture_univariate_and_bad_inputs(mixture_data):
    x, _, _, rng = mixture_data
    res = cavi_gaussian_mixture(x[:, 0], 2, rng=rng)
    assert res.means.shape == (2, 1)
    with pytest.raises(ValueError, match="n_components"):
        cavi_gaussian_mixture(x[:2], 3, rng=rng)
    with pytest.raises(ValueError, match="prior_var"):
        cavi_gaussian_mixture(x, 3, prior_var=0.0, rng=rng)
    with pytest.raises(ValueError, match="empty"):
        cavi_gaussian_mixture(np.empty((0, 2)), 1, rng=rng)
    with pytest.raises(ValueError, match="init_means"):
        cavi_gaussian_mixture(x, 3, init_means=np.zeros((2, 2)))
    with pytest.raises(TypeError, match="rng"):
        cavi_gaussian_mixture(x, 3)
    with pytest.raises(ValueError, match="dimension"):
        cavi_gaussian_mixture(np.ones((2, 2, 2)), 1, rng=rng)
    with pytest.raises(ValueError, match="resp"):
        gaussian_mixture_elbo(x[:3], np.zeros((2, 2)), np.ones(2), np.ones((3, 2)), 1.0)


# --- binary sparse coding --------------------------------------------------------------




def test_bsc_elbo_closed_form_matches_enumeration(bsc_problem):
    v, w, b, beta = bsc_problem
    for h_hat in (np.full(6, 0.5), np.array([0.9, 0.1, 0.0, 1.0, 0.3, 0.7])):
        assert bsc_elbo(h_hat, v, w, b, beta) == pytest.approx(
            bsc_elbo_enumeration(h_hat, v, w, b, beta), abs=1e-10)


def test_bsc_sequential_is_monotone_and_bounded(bsc_problem):
    v, w, b, beta = bsc_problem
    ex = bsc_exact_posterior(v, w, b, beta)
    tr = bsc_mean_field(v, w, b, beta, schedule="sequential")
    assert tr.converged
    assert np.all(np.diff(tr.elbo) >= -1e-12)
    assert tr.elbo[-1] < ex["log_evidence"]
    # the fixed point is a stationary point: one more update changes nothing
    again = bsc_mean_field(v, w, b, beta, schedule="parallel", init=tr.h_hat, max_iter=1)
    np.testing.assert_allclose(again.h_hat, tr.h_hat, atol=1e-8)
    # units that the data decide on agree with the exact marginals
    np.testing.assert_allclose(tr.h_hat[3:], ex["marginals"][3:], atol=0.02)


def test_bsc_parallel_oscillates_and_damping_fixes_it(bsc_problem):
    v, w, b, beta = bsc_problem
    undamped = bsc_mean_field(v, w, b, beta, schedule="parallel", max_iter=60)
    assert not undamped.converged
    assert np.abs(undamped.history[-1] - undamped.history[-2]).max() > 0.5   # period-2 cycle
    np.testing.assert_allclose(undamped.history[-1], undamped.history[-3], atol=1e-6)
    damped = bsc_mean_field(v, w, b, beta, schedule="parallel", damping=0.3, max_iter=300)
    seq = bsc_mean_field(v, w, b, beta)
    assert damped.converged
    np.testing.assert_allclose(damped.h_hat, seq.h_hat, atol=1e-6)


def test_bsc_bad_inputs(bsc_problem):
    v, w, b, beta = bsc_problem
    with pytest.raises(ValueError, match="noise_precision"):
        bsc_mean_field(v, w, b, 0.0)
    with pytest.raises(ValueError, match="weights"):
        bsc_mean_field(v[:3], w, b, beta)
    with pytest.raises(ValueError, match="bias"):
        bsc_mean_field(v, w, b[:2], beta)
    with pytest.raises(ValueError, match="schedule"):
        bsc_mean_field(v, w, b, beta, schedule="random")
    with pytest.raises(ValueError, match="damping"):
        bsc_mean_field(v, w, b, beta, damping=1.5)
    with pytest.raises(ValueError, match="h_hat"):
        bsc_elbo(np.full(6, 1.5), v, w, b, beta)
    with pytest.raises(ValueError, match="binary"):
        bsc_log_joint(np.full(6, 0.5), v, w, b, beta)
    with pytest.raises(ValueError, match="n_latent <= 20"):
        bsc_exact_posterior(np.zeros(2), np.zeros((2, 21)), np.zeros(21), 1.0)


# --- Dirichlet-weight mixture (chapter 4, learned weights) -------------------------------
from elbo_lib.mean_field import (  # noqa: E402
    bsc_elbo_batch,
    bsc_mean_field_batch,
    bsc_mean_field_multistart,
    bsc_variational_em,
    cavi_dirichlet_mixture,
    dirichlet_mixture_elbo,
    svi_gaussian_mixture,
)
from elbo_lib.models import dirichlet_mixture_log_evidence  # noqa: E402


def test_cavi_dirichlet_mixture_elbo_is_monte_carlo_expectation_and_below_evidence():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-2, 1, 5), rng.normal(2, 1, 4)])
    k, sigma2, alpha0 = 3, 4.0, 0.5
    res = cavi_dirichlet_mixture(x, k, sigma2, alpha0, rng=rng, num_init=3, tol=1e-12)
    assert np.all(np.diff(res.elbo) >= -1e-9)
    elbo = dirichlet_mixture_elbo(x, res.means, res.variances, res.resp, res.concentration,
                                  sigma2, alpha0)
    assert np.isclose(elbo, res.elbo[-1], rtol=0, atol=1e-9)
    # Monte Carlo E_q[log p(x, z) - log q(z)] with scipy densities
    from scipy.stats import dirichlet, norm

    s = 200_000
    mu = rng.normal(res.means[:, 0], np.sqrt(res.variances), size=(s, k))
    pi = rng.dirichlet(res.concentration, size=s)
    u = rng.random((s, x.size, 1))
    c = (u > np.cumsum(res.resp, axis=1)[None]).sum(-1)             # (s, n) labels
    log_p = (norm.logpdf(mu, 0, np.sqrt(sigma2)).sum(1)
             + dirichlet(np.full(k, alpha0)).logpdf(pi.T)
             + np.log(np.take_along_axis(pi, c, 1)).sum(1)
             + norm.logpdf(x[None], np.take_along_axis(mu, c, 1), 1).sum(1))
    log_q = (norm.logpdf(mu, res.means[:, 0], np.sqrt(res.variances)).sum(1)
             + dirichlet(res.concentration).logpdf(pi.T)
             + np.log(res.resp[np.arange(x.size), c]).sum(1))
    diff = log_p - log_q
    assert abs(diff.mean() - elbo) < 5 * diff.std() / np.sqrt(s)
    assert elbo < dirichlet_mixture_log_evidence(x, k, sigma2, alpha0)


def test_cavi_dirichlet_mixture_updates_are_factor_optima():
    """At convergence no perturbation of one factor's parameters raises the ELBO."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 2)) + np.repeat([[-2, 0], [2, 0]], 15, axis=0)
    k, sigma2, alpha0 = 3, 10.0, 0.1
    res = cavi_dirichlet_mixture(x, k, sigma2, alpha0, rng=rng, num_init=2, tol=1e-13,
                                 max_iter=5000)
    base = dirichlet_mixture_elbo(x, res.means, res.variances, res.resp, res.concentration,
                                  sigma2, alpha0)
    for _ in range(20):
        alpha = res.concentration * np.exp(0.01 * rng.normal(size=k))
        assert dirichlet_mixture_elbo(x, res.means, res.variances, res.resp, alpha,
                                      sigma2, alpha0) <= base + 1e-9
        means = res.means + 0.01 * rng.normal(size=res.means.shape)
        assert dirichlet_mixture_elbo(x, means, res.variances, res.resp, res.concentration,
                                      sigma2, alpha0) <= base + 1e-9


def test_cavi_dirichlet_mixture_validates():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="n_components"):
        cavi_dirichlet_mixture(x, 6, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng"):
        cavi_dirichlet_mixture(x, 2)
    with pytest.raises(ValueError, match="alpha0"):
        cavi_dirichlet_mixture(x, 2, alpha0=0.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="at most 12 points"):
        dirichlet_mixture_log_evidence(np.zeros(13), 2, 1.0, 1.0)


# --- binary sparse coding: batch mean-field and variational EM ---------------------------
@pytest.fixture
def bsc_batch():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(5, 4))
    b = np.full(4, -0.5)
    h = (rng.random((20, 4)) < 0.4).astype(float)
    v = h @ w.T + 0.5 * rng.normal(size=(20, 5))
    return v, w, b, 3.0


def test_bsc_batch_matches_single_input_routines(bsc_batch):
    v, w, b, beta = bsc_batch
    h_batch = bsc_mean_field_batch(v, w, b, beta, tol=1e-12, max_iter=1000)
    elbos = bsc_elbo_batch(h_batch, v, w, b, beta)
    ll = bsc_log_likelihood(v, w, b, beta)
    mean, second = bsc_exact_moments(v, w, b, beta)
    for n in range(v.shape[0]):
        single = bsc_mean_field(v[n], w, b, beta, tol=1e-12, max_iter=1000)
        assert np.allclose(single.h_hat, h_batch[n], atol=1e-8)
        assert np.isclose(elbos[n], bsc_elbo_enumeration(h_batch[n], v[n], w, b, beta),
                          atol=1e-10)
        exact = bsc_exact_posterior(v[n], w, b, beta)
        assert np.isclose(ll[n], exact["log_evidence"], atol=1e-10)
        assert np.allclose(mean[n], exact["marginals"], atol=1e-12)
        post = np.exp(exact["log_posterior"])
        assert np.allclose(second[n], (exact["codes"].T * post) @ exact["codes"], atol=1e-12)
    assert np.all(elbos <= ll + 1e-12)


def test_bsc_variational_em_monotone_and_bounded(bsc_batch):
    v, w, b, beta = bsc_batch
    rng = np.random.default_rng(5)
    w0 = 0.3 * rng.normal(size=w.shape)
    vem = bsc_variational_em(v, w0, np.zeros(4), 1.0, num_iter=15)
    assert np.all(np.diff(vem.elbo) >= -1e-8)
    assert np.all(vem.elbo <= vem.log_likelihood + 1e-10)
    em = bsc_variational_em(v, w0, np.zeros(4), 1.0, num_iter=15, exact=True)
    assert np.all(np.diff(em.log_likelihood) >= -1e-8)
    assert np.allclose(em.elbo, em.log_likelihood)           # exact E-step: bound is tight
    assert em.weights_history.shape == (16, 5, 4)


def test_bsc_variational_em_m_step_is_the_maximiser(bsc_batch):
    """One M-step: perturbing W, b or beta never raises the expected complete log-lik."""
    v, w, b, beta = bsc_batch
    h = bsc_mean_field_batch(v, w, b, beta, tol=1e-10, max_iter=500)  # as in the E-step
    fit = bsc_variational_em(v, w, b, beta, num_iter=1)
    w1, b1, beta1 = fit.weights, fit.bias, fit.noise_precision
    # the ELBO with q fixed at h is E_q[log p(v, h)] + entropy: compare at fixed h
    base = bsc_elbo_batch(h, v, w1, b1, beta1).sum()
    rng = np.random.default_rng(6)
    for _ in range(10):
        assert bsc_elbo_batch(h, v, w1 + 0.01 * rng.normal(size=w1.shape), b1, beta1).sum() <= base
        assert bsc_elbo_batch(h, v, w1, b1 + 0.01 * rng.normal(size=4), beta1).sum() <= base
        assert bsc_elbo_batch(h, v, w1, b1, beta1 * np.exp(0.01 * rng.normal())).sum() <= base


def test_bsc_multistart_is_the_best_of_its_starts_and_beats_random_restarts():
    """Every start's run is a bsc_mean_field_batch run; the kept one has the highest ELBO;
    no random start finds a higher optimum; the result never falls below init's run."""
    rng = np.random.default_rng(8)
    w = rng.normal(size=(6, 5))
    w[:, 1] = w[:, 0] + 0.1 * rng.normal(size=6)       # explaining away: local optima
    b = np.full(5, -1.0)
    v = (rng.random((30, 5)) < 0.3) @ w.T + 0.5 * rng.normal(size=(30, 6))
    h, elbo = bsc_mean_field_multistart(v, w, b, 4.0)
    assert np.allclose(elbo, bsc_elbo_batch(h, v, w, b, 4.0), atol=1e-12)
    codes = np.array(list(np.ndindex(*(2,) * 5)), dtype=float)
    per_start = np.stack([
        bsc_elbo_batch(bsc_mean_field_batch(v, w, b, 4.0, init=np.tile(c, (30, 1)),
                                            tol=1e-10, max_iter=500), v, w, b, 4.0)
        for c in codes
    ])
    assert np.allclose(elbo, per_start.max(axis=0), atol=1e-8)
    prior_run = bsc_elbo_batch(bsc_mean_field_batch(v, w, b, 4.0, tol=1e-10, max_iter=500),
                               v, w, b, 4.0)
    assert np.any(elbo > prior_run + 1e-3)              # the prior start stalls on some
    _, random_best = bsc_mean_field_multistart(v, w, b, 4.0, starts=rng.random((200, 5)))
    assert np.all(random_best <= elbo + 1e-9)
    assert np.all(elbo <= bsc_log_likelihood(v, w, b, 4.0))
    bad = np.full((30, 5), 0.5)
    bad[:, :2] = [1.0, 1.0]                             # a start the codes do not contain
    _, with_init = bsc_mean_field_multistart(v, w, b, 4.0, starts=codes[:1], init=bad)
    alone = bsc_elbo_batch(bsc_mean_field_batch(v, w, b, 4.0, init=bad, tol=1e-10,
                                                max_iter=500), v, w, b, 4.0)
    assert np.all(with_init >= alone - 1e-9)


def test_bsc_variational_em_with_restarts_is_monotone_and_beats_warm_start(bsc_batch):
    v, w, b, beta = bsc_batch
    w0 = 0.3 * np.random.default_rng(5).normal(size=w.shape)
    best = bsc_variational_em(v, w0, np.zeros(4), 1.0, num_iter=10, starts="codes")
    warm = bsc_variational_em(v, w0, np.zeros(4), 1.0, num_iter=10)
    assert np.all(np.diff(best.elbo) >= -1e-8)
    assert np.all(best.elbo <= best.log_likelihood + 1e-10)
    assert best.elbo[0] >= warm.elbo[0] - 1e-9
    with pytest.raises(ValueError, match="starts must be None, 'codes' or an array"):
        bsc_variational_em(v, w0, np.zeros(4), 1.0, starts="all")


def test_svi_full_batch_unit_step_is_cavi(mixture_data):
    x = mixture_data[0] if isinstance(mixture_data, tuple) else mixture_data
    init = x[:3].copy()
    cavi = cavi_gaussian_mixture(x, 3, 10.0, init_means=init, max_iter=7, tol=1e-300)
    svi = svi_gaussian_mixture(x, 3, 10.0, init_means=init, rng=0, batch_size=x.shape[0],
                               num_steps=7, step_power=0.0, record_every=1)
    assert np.allclose(svi.means, cavi.means, atol=1e-12)
    assert np.allclose(svi.variances, cavi.variances, atol=1e-14)


def test_svi_step_is_the_natural_gradient_of_the_elbo():
    """lambda_hat - lambda (full batch) = F(lambda)^-1 grad_lambda max_phi ELBO, with the
    gradient by central differences of the closed-form ELBO and F the Hessian of the
    log-normaliser A(lambda) = |lambda_1|^2 / (2 lambda_2) - (d/2) log lambda_2."""
    from elbo_lib.mean_field import gaussian_mixture_elbo
    from elbo_lib.mean_field.svi import _optimal_resp
    rng = np.random.default_rng(11)
    x = rng.normal(size=(40, 2)) + np.repeat([[2.0, 0.0], [-2.0, 1.0]], 20, axis=0)
    lam2 = np.array([3.0, 5.0])
    lam1 = np.array([[1.0, 0.5], [-4.0, 2.0]])
    sigma2, d = 10.0, 2

    def elbo(l1, l2):
        s2 = 1 / l2
        m = l1 * s2[:, None]
        return gaussian_mixture_elbo(x, m, s2, _optimal_resp(x, m, s2), sigma2)

    s2 = 1 / lam2
    phi = _optimal_resp(x, lam1 * s2[:, None], s2)
    hat1, hat2 = phi.T @ x, 1 / sigma2 + phi.sum(axis=0)
    eps = 1e-5
    for k in range(2):
        theta = np.append(lam1[k], lam2[k])

        def f(t, k=k):
            l1, l2 = lam1.copy(), lam2.copy()
            l1[k], l2[k] = t[:2], t[2]
            return elbo(l1, l2)

        def log_norm(t):
            return t[:2] @ t[:2] / (2 * t[2]) - 0.5 * d * np.log(t[2])

        basis = np.eye(3) * eps
        grad = np.array([(f(theta + e) - f(theta - e)) / (2 * eps) for e in basis])
        fisher = np.array([[(log_norm(theta + a + b) - log_norm(theta + a - b)
                             - log_norm(theta - a + b) + log_norm(theta - a - b))
                            / (4 * eps**2) for b in basis] for a in basis])
        # sufficient statistics (mu, -|mu|^2 / 2): natural parameters (lambda_1, lambda_2)
        nat = np.linalg.solve(fisher, grad)
        want = np.append(hat1[k] - lam1[k], hat2[k] - lam2[k])
        assert np.allclose(nat, want, rtol=1e-4, atol=1e-4), (nat, want)
        assert np.abs(want).max() > 1.0                # not at the optimum: a real test


def test_svi_reaches_the_cavi_optimum(mixture_data):
    x = mixture_data[0] if isinstance(mixture_data, tuple) else mixture_data
    init = x[:3].copy()
    cavi = cavi_gaussian_mixture(x, 3, 10.0, init_means=init, tol=1e-12)
    svi = svi_gaussian_mixture(x, 3, 10.0, init_means=init, rng=1,
                               batch_size=max(1, x.shape[0] // 10), num_steps=2000)
    match = np.linalg.norm(svi.means[:, None] - cavi.means[None], axis=2).argmin(axis=1)
    assert np.abs(svi.means - cavi.means[match]).max() < 2 * np.sqrt(cavi.variances.max())
    assert cavi.elbo[-1] - svi.elbo[-1] < 1.0


def test_bsc_batch_validates(bsc_batch):
    v, w, b, beta = bsc_batch
    with pytest.raises(ValueError, match="weights"):
        bsc_mean_field_batch(v, w[:3], b, beta)
    with pytest.raises(ValueError, match="init"):
        bsc_mean_field_batch(v, w, b, beta, init=np.full((2, 4), 0.5))
    with pytest.raises(ValueError, match="noise_precision"):
        bsc_log_likelihood(v, w, b, -1.0)
    with pytest.raises(ValueError, match="n_latent <= 16"):
        bsc_log_likelihood(np.zeros((1, 2)), np.zeros((2, 17)), np.zeros(17), 1.0)


# ---------------------------------------------------------------------------------------
# Contract cases (issue 16): every public name of elbo_lib.mean_field has bad-input cases.
# ---------------------------------------------------------------------------------------
_NG_X = np.random.default_rng(3).normal(1.0, 0.7, size=12)
_NG_PRIOR = NormalGamma(0.5, 2.0, 1.5, 0.8)
_NG_Q = NormalGammaMeanField(1.0, 10.0, 7.5, 4.0)
_MIX_X = np.concatenate([np.linspace(-4, -3, 5), np.linspace(3, 4, 5)])
_MIX_M, _MIX_S2, _MIX_R = np.array([-3.5, 3.5]), np.array([0.2, 0.2]), np.full((10, 2), 0.5)
_BV = np.array([1.0, -0.5, 0.3])
_BW = np.array([[1.0, 0.0], [0.5, 1.0], [0.0, -1.0]])
_BB = np.array([-1.0, 0.0])
_BV_BATCH = np.stack([_BV, -_BV, 2 * _BV])
_PREC = np.array([[2.0, 0.5], [0.5, 1.0]])


BAD_INPUTS = {
    "normal_gamma_elbo": [
        (lambda: normal_gamma_elbo(_NG_X, "prior", _NG_Q), TypeError,
         r"prior must be a NormalGamma"),
        (lambda: normal_gamma_elbo(_NG_X, _NG_PRIOR, _NG_PRIOR), TypeError,
         r"q must be a NormalGammaMeanField"),
        (lambda: normal_gamma_elbo(np.append(_NG_X, np.nan), _NG_PRIOR, _NG_Q), ValueError,
         r"x must contain only finite"),
    ],
    "cavi_normal_gamma": [
        (lambda: cavi_normal_gamma(_NG_X, _NG_PRIOR, tol=0.0), ValueError,
         r"tol must be a finite number > 0"),
        (lambda: cavi_normal_gamma(_NG_X, _NG_PRIOR, max_iter=0), ValueError,
         r"max_iter must be >= 1"),
        (lambda: cavi_normal_gamma(_NG_X, _NG_PRIOR, init=(1, 1, 1, 1)), TypeError,
         r"init must be a NormalGammaMeanField"),
        (lambda: cavi_normal_gamma(_NG_X[:, None], _NG_PRIOR), ValueError,
         r"x must have 1 dimension"),
    ],
    "mean_field_gaussian": [
        (lambda: mean_field_gaussian(np.zeros(2), -_PREC), ValueError,
         r"precision must be positive definite"),
        (lambda: mean_field_gaussian(np.zeros(3), _PREC), ValueError,
         r"precision must have shape \(3, 3\)"),
        (lambda: mean_field_gaussian([np.nan, 0.0], _PREC), ValueError,
         r"mean must contain only finite"),
    ],
    "cavi_gaussian": [
        (lambda: cavi_gaussian(np.zeros(2), _PREC, np.zeros(2), num_sweeps=0), ValueError,
         r"num_sweeps must be >= 1"),
        (lambda: cavi_gaussian(np.zeros(2), _PREC, np.zeros(3)), ValueError,
         r"init_mean must have shape \(2,\)"),
        (lambda: cavi_gaussian(np.zeros(2), _PREC + [[0, 1], [0, 0]], np.zeros(2)), ValueError,
         r"precision must be symmetric"),
    ],
    "gaussian_mixture_elbo": [
        (lambda: gaussian_mixture_elbo(_MIX_X, _MIX_M, _MIX_S2, np.full((10, 2), 0.7), 10.0),
         ValueError, r"resp must be >= 0 with rows summing to 1"),
        (lambda: gaussian_mixture_elbo(_MIX_X, _MIX_M, [0.2, 0.0], _MIX_R, 10.0), ValueError,
         r"variances must be > 0"),
        (lambda: gaussian_mixture_elbo(_MIX_X, _MIX_M, _MIX_S2, _MIX_R, 0.0), ValueError,
         r"prior_var must be a finite number > 0"),
        (lambda: gaussian_mixture_elbo(_MIX_X, _MIX_M, _MIX_S2, _MIX_R[:, :1], 10.0),
         ValueError, r"resp must have shape \(10, 2\)"),
    ],
    "cavi_gaussian_mixture": [
        (lambda: cavi_gaussian_mixture(_MIX_X[:2], 3, rng=0), ValueError,
         r"n_components=3 is larger than the number of points n=2"),
        (lambda: cavi_gaussian_mixture(_MIX_X, 2, prior_var=-1.0, rng=0), ValueError,
         r"prior_var must be a finite number > 0"),
        (lambda: cavi_gaussian_mixture(_MIX_X, 2, num_init=0, rng=0), ValueError,
         r"num_init must be >= 1"),
        (lambda: cavi_gaussian_mixture(_MIX_X, 2), TypeError, r"rng must be"),
        (lambda: cavi_gaussian_mixture(_MIX_X, 2, init_means=np.zeros(3)), ValueError,
         r"init_means must have shape \(2, 1\)"),
        (lambda: cavi_gaussian_mixture(np.append(_MIX_X, np.nan), 2, rng=0), ValueError,
         r"x must contain only finite"),
    ],
    "bsc_elbo": [
        (lambda: bsc_elbo([0.5, 1.5], _BV, _BW, _BB, 4.0), ValueError,
         r"h_hat must hold 2 probabilities in \[0, 1\]"),
        (lambda: bsc_elbo([0.5, 0.5], _BV, _BW[:2], _BB, 4.0), ValueError,
         r"weights must have shape \(len\(v\), n_latent\)"),
        (lambda: bsc_elbo([0.5, 0.5], _BV, _BW, _BB, 0.0), ValueError,
         r"noise_precision must be > 0"),
        (lambda: bsc_elbo([0.5, 0.5], [np.nan, 0, 0], _BW, _BB, 4.0), ValueError,
         r"v must contain only finite"),
    ],
    "bsc_elbo_enumeration": [
        (lambda: bsc_elbo_enumeration([0.5, -0.1], _BV, _BW, _BB, 4.0), ValueError,
         r"h_hat must hold 2 probabilities"),
        (lambda: bsc_elbo_enumeration(np.full(21, 0.5), _BV, np.zeros((3, 21)), np.zeros(21),
                                      4.0), ValueError, r"bias has n_latent = 21 .*n_latent <= 20"),
    ],
    "bsc_mean_field": [
        (lambda: bsc_mean_field(_BV, _BW, _BB, 4.0, schedule="random"), ValueError,
         r"schedule must be 'sequential' or 'parallel'"),
        (lambda: bsc_mean_field(_BV, _BW, _BB, 4.0, damping=1.5), ValueError,
         r"damping must be in \(0, 1\]"),
        (lambda: bsc_mean_field(_BV, _BW, _BB, 4.0, init=[0.5]), ValueError,
         r"init must hold 2 probabilities"),
        (lambda: bsc_mean_field(_BV, _BW, _BB, 4.0, max_iter=0), ValueError,
         r"max_iter must be >= 1"),
        (lambda: bsc_mean_field(_BV, _BW, _BB, [4.0, 1.0]), ValueError,
         r"noise_precision must be a scalar or have shape \(3,\)"),
    ],
    "dirichlet_mixture_elbo": [
        (lambda: dirichlet_mixture_elbo(_MIX_X, _MIX_M, _MIX_S2, _MIX_R, [1.0, 0.0], 10.0, 1.0),
         ValueError, r"concentration must be > 0"),
        (lambda: dirichlet_mixture_elbo(_MIX_X, _MIX_M, _MIX_S2, _MIX_R, [1.0, 1.0], 10.0,
                                        -1.0), ValueError, r"alpha0 must be a finite number > 0"),
        (lambda: dirichlet_mixture_elbo(_MIX_X, _MIX_M, _MIX_S2, _MIX_R, [1.0], 10.0, 1.0),
         ValueError, r"concentration must have shape \(2,\)"),
    ],
    "cavi_dirichlet_mixture": [
        (lambda: cavi_dirichlet_mixture(_MIX_X, 2, alpha0=0.0, rng=0), ValueError,
         r"alpha0 must be a finite number > 0"),
        (lambda: cavi_dirichlet_mixture(_MIX_X[:1], 2, rng=0), ValueError,
         r"n_components=2 is larger than the number of points n=1"),
        (lambda: cavi_dirichlet_mixture(_MIX_X, 2, tol=-1.0, rng=0), ValueError,
         r"tol must be a finite number > 0"),
    ],
    "bsc_mean_field_batch": [
        (lambda: bsc_mean_field_batch(_BV, _BW, _BB, 4.0), ValueError,
         r"v must have 2 dimension"),
        (lambda: bsc_mean_field_batch(_BV_BATCH, _BW, _BB, 4.0, init=np.full((3, 2), 2.0)),
         ValueError, r"init must hold probabilities"),
        (lambda: bsc_mean_field_batch(_BV_BATCH, _BW, _BB, np.nan), ValueError,
         r"noise_precision must be a finite number > 0"),
    ],
    "bsc_mean_field_multistart": [
        (lambda: bsc_mean_field_multistart(_BV, _BW, _BB, 4.0), ValueError,
         r"v must have 2 dimension"),
        (lambda: bsc_mean_field_multistart(_BV_BATCH, _BW, _BB, 4.0, starts=np.ones((2, 3))),
         ValueError, r"starts must hold probabilities of shape \(S, 2\)"),
        (lambda: bsc_mean_field_multistart(_BV_BATCH, _BW, _BB, 4.0,
                                           init=np.full((3, 2), 2.0)),
         ValueError, r"init must hold probabilities"),
        (lambda: bsc_mean_field_multistart(np.zeros((1, 2)), np.zeros((2, 11)), np.zeros(11),
                                           4.0),
         ValueError, r"bias has n_latent = 11 .*n_latent <= 10"),
    ],
    "svi_gaussian_mixture": [
        (lambda: svi_gaussian_mixture(_MIX_X, 2, init_means=_MIX_X[:2], rng=0,
                                      batch_size=0, num_steps=5), ValueError,
         r"batch_size must be"),
        (lambda: svi_gaussian_mixture(_MIX_X, 2, init_means=_MIX_X[:2], rng=0,
                                      batch_size=10**6, num_steps=5), ValueError,
         r"batch_size must be <= n"),
        (lambda: svi_gaussian_mixture(_MIX_X, 2, init_means=_MIX_X[:2], rng=0,
                                      batch_size=2, num_steps=5, step_power=1.5),
         ValueError, r"step_power must lie in \[0, 1\]"),
        (lambda: svi_gaussian_mixture(_MIX_X, 2, init_means=_MIX_X[:2], rng=0,
                                      batch_size=2, num_steps=5, step_offset=-1.0),
         ValueError, r"step_offset must be >= 0"),
        (lambda: svi_gaussian_mixture(_MIX_X, 2, init_means=_MIX_X[:1], rng=0,
                                      batch_size=2, num_steps=5), ValueError,
         r"init_means must have shape"),
    ],
    "bsc_elbo_batch": [
        (lambda: bsc_elbo_batch(np.full((2, 2), 0.5), _BV_BATCH, _BW, _BB, 4.0), ValueError,
         r"h_hat must have shape \(3, 2\)"),
        (lambda: bsc_elbo_batch(np.full((3, 2), 1.5), _BV_BATCH, _BW, _BB, 4.0), ValueError,
         r"h_hat must hold probabilities in \[0, 1\]"),
    ],
    "bsc_variational_em": [
        (lambda: bsc_variational_em(_BV_BATCH, _BW, _BB, 4.0, num_iter=0), ValueError,
         r"num_iter must be >= 1"),
        (lambda: bsc_variational_em(_BV_BATCH, np.zeros((3, 17)), np.zeros(17), 4.0,
                                    exact=True), ValueError,
         r"init_bias has n_latent = 17 .*n_latent <= 16"),
        (lambda: bsc_variational_em(_BV_BATCH, _BW, _BB, -4.0), ValueError,
         r"init_noise_precision must be a finite number > 0"),
        (lambda: bsc_variational_em(_BV_BATCH, _BW.T, _BB, 4.0), ValueError,
         r"init_weights must have shape"),
    ],
}

NO_INPUTS = {
    "NormalGammaCAVIResult": "result object of cavi_normal_gamma",
    "MixtureCAVIResult": "result object of cavi_gaussian_mixture",
    "DirichletMixtureCAVIResult": "result object of cavi_dirichlet_mixture",
    "BSCTrace": "result object of bsc_mean_field",
    "BSCLearningResult": "result object of bsc_variational_em",
    "SVIMixtureResult": "result object of svi_gaussian_mixture",
}

EXTREME_INPUTS = {
    "mean_field_gaussian": [
        # one dimension: the factor is the distribution itself
        (lambda: mean_field_gaussian([1e150], [[1e-300]]),
         lambda out: np.testing.assert_allclose(np.concatenate(out), [1e150, 1e300],
                                                rtol=1e-15)),
    ],
}


# ---------------------------------------------------------------------------------------
# issue 34: the second round of bad input
# ---------------------------------------------------------------------------------------
BAD_INPUTS["cavi_gaussian_mixture"] += [
    # a unit-variance mixture's ELBO (about -sum x^2 / 2) is beyond float64 at this scale
    (lambda: cavi_gaussian_mixture(_MIX_X * 1e160, 2, rng=0), ValueError,
     r"x \(max \|x\| = 4e\+160\) is too large for a mixture of unit-variance Gaussians"),
    (lambda: cavi_gaussian_mixture(_MIX_X, 2, rng=-1), ValueError, r"rng must be .*>= 0"),
    (lambda: cavi_gaussian_mixture(_MIX_X, 2, rng=0, max_iter=2**63), ValueError,
     r"max_iter must be <= 2\*\*32 - 1"),
    (lambda: cavi_gaussian_mixture(_MIX_X, 2, rng=0, num_init=2**63), ValueError,
     r"num_init must be <= 2\*\*32 - 1"),
    (lambda: cavi_gaussian_mixture(_MIX_X + 0j, 2, rng=0), TypeError, r"x must be real"),
    (lambda: cavi_gaussian_mixture(_MIX_X, 2, prior_var="10", rng=0), TypeError,
     r"prior_var must be a positive number, got str"),
]
BAD_INPUTS["cavi_dirichlet_mixture"] += [
    (lambda: cavi_dirichlet_mixture(_MIX_X * 1e160, 2, rng=0), ValueError,
     r"x \(max \|x\| = 4e\+160\) is too large"),
    (lambda: cavi_dirichlet_mixture(_MIX_X, 2, alpha0=10**400, rng=0), ValueError,
     r"alpha0 must be .*float range"),
]
BAD_INPUTS["cavi_gaussian"] += [
    (lambda: cavi_gaussian([0.0, 0.0], np.eye(2), [1.0, 1.0], num_sweeps=2**63),
     ValueError, r"num_sweeps must be <= 2\*\*32 - 1"),
]
BAD_INPUTS["bsc_variational_em"] += [
    (lambda: bsc_variational_em(np.ones((3, 3)), np.eye(3)[:, :2], np.zeros(2), 1.0,
                                num_iter=2**63), ValueError, r"num_iter must be <= 2\*\*32 - 1"),
]
EXTREME_INPUTS["cavi_gaussian_mixture"] = [
    # a requires-grad tensor and NumPy integers give the fit of the plain arrays
    (lambda: (cavi_gaussian_mixture(torch.tensor(_MIX_X, requires_grad=True), np.int64(2),
                                    rng=np.int64(0), max_iter=np.int32(50)).means,
              cavi_gaussian_mixture(_MIX_X, 2, rng=0, max_iter=50).means),
     lambda out: np.testing.assert_array_equal(out[0], out[1])),
]
