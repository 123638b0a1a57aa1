"""Tests of elbo_lib.diffusion: schedules, the forward process and its posterior, the
ELBO's terms, and the two oracles (Gaussian-mixture denoiser, grid likelihood).

Every check compares with an answer computed another way (a product, a recursion, 1-D
quadrature of Bayes' rule, Monte Carlo, a closed form of a linear-Gaussian chain,
importance sampling), and where a plausible wrong formula is close, the test shows that
the wrong formula fails the same check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from elbo_lib.diffusion import (
    GaussianMixtureData,
    NoiseSchedule,
    cosine_schedule,
    decoder_log_likelihood,
    denoising_kl,
    diffusion_elbo,
    epsilon_loss_weight,
    forward_marginal,
    forward_sample,
    linear_schedule,
    mean_from_epsilon,
    prior_kl,
    reverse_chain_log_density_2d,
    reverse_chain_log_likelihood,
    reverse_posterior,
    train_noise_predictors,
)
from elbo_lib.gaussians import gaussian_kl

SCHED = linear_schedule(4, 0.05, 0.5)
MIX_1D = GaussianMixtureData([0.3, 0.7], [-1.5, 1.0], [0.1, 0.3])
MIX_2D = GaussianMixtureData([0.5, 0.2, 0.3], [[-1.0, 0.5], [1.5, 1.0], [0.5, -1.5]],
                             [[[0.2, 0.05], [0.05, 0.1]], [[0.1, 0.0], [0.0, 0.3]],
                              [[0.3, -0.1], [-0.1, 0.2]]])
Y = np.linspace(-12, 12, 24001)  # quadrature grid for the 1-D checks


def _hermite(num_nodes: int = 40):
    """Gauss-Hermite nodes and weights for E over a standard normal, shape (S, 1), (S,)."""
    z, w = np.polynomial.hermite.hermgauss(num_nodes)
    return np.sqrt(2) * z[:, None], w / np.sqrt(np.pi)


# ---------------------------------------------------------------------------------------
# schedules and the forward process
# ---------------------------------------------------------------------------------------
def test_linear_schedule_is_ho_et_al_and_alpha_bars_are_products():
    s = linear_schedule(1000)
    np.testing.assert_array_equal(s.betas, np.linspace(1e-4, 0.02, 1000))
    products = np.array([np.prod(1 - s.betas[:t]) for t in (0, 1, 10, 500, 1000)])
    np.testing.assert_allclose(s.alpha_bars[[0, 1, 10, 500, 1000]], products, rtol=1e-11)
    assert 4.0e-5 < s.alpha_bars[-1] < 4.1e-5  # Ho et al.: q(x_T | x_0) close to N(0, 1)
    abar = np.cumprod(np.r_[1.0, 1 - s.betas])  # abar_0 .. abar_T
    np.testing.assert_allclose(s.posterior_variances[1:],
                               s.betas[1:] * (1 - abar[1:-1]) / (1 - abar[2:]), rtol=1e-9)


def test_cosine_schedule_follows_nichol_and_dhariwal():
    num_steps, offset = 50, 0.008
    s = cosine_schedule(num_steps)
    f = np.cos((np.arange(num_steps + 1) / num_steps + offset) / (1 + offset) * np.pi / 2) ** 2
    # abar_t = f(t) / f(0) wherever beta_t is not clipped (all but the last step)
    np.testing.assert_allclose(s.alpha_bars[:-1], f[:-1] / f[0], rtol=1e-12)
    assert s.betas[-1] == 0.999 and np.all(s.betas[:-1] < 0.999)
    assert np.all(np.diff(s.betas) > 0)


def test_forward_marginal_composes_the_one_step_kernels_and_sampling_uses_it():
    s = cosine_schedule(7)
    x0 = np.array([-2.0, 0.3, 1.7])
    mean, var = x0.copy(), np.zeros(3)
    for t in range(1, 8):  # x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) noise
        mean, var = np.sqrt(1 - s.betas[t - 1]) * mean, (1 - s.betas[t - 1]) * var + s.betas[t - 1]
        m, v = forward_marginal(s, x0, t)
        np.testing.assert_allclose(m, mean, rtol=1e-12)
        np.testing.assert_allclose(v, var, rtol=1e-12)
    noise = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.3]])
    t = np.array([1, 4, 7])  # one t per point
    got = forward_sample(s, x0, t, noise)
    m, v = forward_marginal(s, x0, t)
    np.testing.assert_allclose(got, m + np.sqrt(v) * noise, rtol=1e-14)
    x0_t = torch.tensor(x0, requires_grad=True)
    out = forward_sample(s, x0_t, torch.tensor(t), torch.tensor(noise))
    np.testing.assert_allclose(out.detach().numpy(), got, rtol=1e-14)
    out.sum().backward()
    np.testing.assert_allclose(x0_t.grad.numpy(), 2 * np.sqrt(s.alpha_bars[t]), rtol=1e-14)


# ---------------------------------------------------------------------------------------
# the reverse posterior, against Bayes' rule by quadrature
# ---------------------------------------------------------------------------------------
def _bayes_posterior(s, x0, xt, t):
    """q(x_{t-1} | x_t, x_0) on the grid Y, from q(x_t | x_{t-1}) q(x_{t-1} | x_0)."""
    log_q = (norm.logpdf(xt, np.sqrt(s.alphas[t - 1]) * Y, np.sqrt(s.betas[t - 1]))
             + norm.logpdf(Y, np.sqrt(s.alpha_bars[t - 1]) * x0,
                           np.sqrt(1 - s.alpha_bars[t - 1])))
    dens = np.exp(log_q - log_q.max())
    dens /= np.trapezoid(dens, Y)
    mean = np.trapezoid(Y * dens, Y)
    return dens, mean, np.trapezoid((Y - mean) ** 2 * dens, Y)


@pytest.mark.parametrize("t", [2, 3, 4])
def test_reverse_posterior_is_bayes_rule_by_quadrature(t):
    for x0, xt in [(1.3, -0.4), (-2.0, 1.5)]:
        _, mean_b, var_b = _bayes_posterior(SCHED, x0, xt, t)
        mean, var = reverse_posterior(SCHED, x0, xt, t)
        np.testing.assert_allclose([mean, var], [mean_b, var_b], rtol=1e-9)
        # the check can fail: abar_t in place of abar_{t-1} (an off-by-one) is far off
        wrong = SCHED.betas[t - 1] * (1 - SCHED.alpha_bars[t]) / (1 - SCHED.alpha_bars[t])
        assert abs(wrong - var_b) > 1e-3
    mean, var = reverse_posterior(SCHED, 0.7, 2.0, 1)  # t = 1: the point x_0
    assert mean == pytest.approx(0.7, rel=1e-14) and var == 0


def test_kl_terms_match_quadrature_and_the_decoder_is_a_gaussian_density():
    x0, xt, t, mean_p, var_p = 0.8, -0.3, 3, 0.2, 0.4
    dens, _, _ = _bayes_posterior(SCHED, x0, xt, t)
    keep = dens > 1e-300
    kl = np.trapezoid(np.where(keep, dens * (np.log(np.where(keep, dens, 1))
                                             - norm.logpdf(Y, mean_p, np.sqrt(var_p))), 0), Y)
    assert denoising_kl(SCHED, x0, xt, t, mean_p, var_p) == pytest.approx(kl, rel=1e-8)
    q_T = norm.pdf(Y, np.sqrt(SCHED.alpha_bars[-1]) * x0, np.sqrt(1 - SCHED.alpha_bars[-1]))
    kl_T = np.trapezoid(q_T * (np.log(q_T) - norm.logpdf(Y)), Y)
    assert prior_kl(SCHED, x0) == pytest.approx(kl_T, rel=1e-8)
    x = np.array([-1.0, 0.0, 2.5])
    np.testing.assert_allclose(decoder_log_likelihood(x, 0.5, 0.3),
                               norm.logpdf(x, 0.5, np.sqrt(0.3)), rtol=1e-13)


# ---------------------------------------------------------------------------------------
# the epsilon loss is the KL term up to a weight and a constant
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("posterior_var", [True, False])
def test_epsilon_loss_weight_turns_the_squared_error_into_the_kl(posterior_var):
    s = linear_schedule(10, 1e-3, 0.2)
    gen = np.random.default_rng(1)
    x0, eps, eps_pred = gen.normal(size=(3, 200))
    t = gen.integers(2, 11, size=200)
    var_p = s.posterior_variances[t - 1] if posterior_var else s.betas[t - 1]
    xt = forward_sample(s, x0, t, eps)
    kl = denoising_kl(s, x0, xt, t, mean_from_epsilon(s, xt, t, eps_pred), var_p)
    const = gaussian_kl(0.0, s.posterior_variances[t - 1], 0.0, var_p)
    w = epsilon_loss_weight(s, t, var_p)
    np.testing.assert_allclose(kl, const + w * (eps - eps_pred) ** 2, rtol=1e-9, atol=1e-12)
    # the check can fail: Ho et al.'s "simple" weight 1 is not the ELBO's
    assert not np.allclose(kl, const + (eps - eps_pred) ** 2, rtol=1e-3)
    assert w.max() > 1.5 * w.min()  # and no constant multiple of it is either
    # t = 1: -log p(x_0 | x_1) = log(2 pi v) / 2 + w_1 (eps - eps_pred)^2
    x1 = forward_sample(s, x0, 1, eps)
    nll = -decoder_log_likelihood(x0, mean_from_epsilon(s, x1, 1, eps_pred), s.betas[0])
    np.testing.assert_allclose(nll, 0.5 * np.log(2 * np.pi * s.betas[0])
                               + epsilon_loss_weight(s, 1, s.betas[0]) * (eps - eps_pred) ** 2,
                               rtol=1e-9)


def test_epsilon_loss_gradient_through_torch():
    s = linear_schedule(5, 0.01, 0.3)
    x0, eps = torch.tensor([0.4, -1.2], dtype=torch.float64), torch.tensor([1.0, -0.5],
                                                                           dtype=torch.float64)
    eps_pred = torch.tensor([0.2, 0.1], dtype=torch.float64, requires_grad=True)
    xt = forward_sample(s, x0, 3, eps)
    var_p = s.betas[2]
    denoising_kl(s, x0, xt, 3, mean_from_epsilon(s, xt, 3, eps_pred), var_p).sum().backward()
    np.testing.assert_allclose(eps_pred.grad.numpy(), 2 * epsilon_loss_weight(s, 3, var_p)
                               * (eps_pred - eps).detach().numpy(), rtol=1e-10)


# ---------------------------------------------------------------------------------------
# Gaussian-mixture data: diffused density, denoiser, reverse mean
# ---------------------------------------------------------------------------------------
def _data_density(y):
    return sum(w * norm.pdf(y, m, np.sqrt(v)) for w, m, v in [(0.3, -1.5, 0.1), (0.7, 1.0, 0.3)])


@pytest.mark.parametrize("t", [1, 2, 4])
def test_mixture_marginal_denoiser_and_reverse_mean_match_quadrature(t):
    s, xt = SCHED, np.array([-2.0, -0.5, 0.4, 1.8])
    x0 = np.linspace(-6, 6, 6001)
    joint = _data_density(x0) * norm.pdf(xt[:, None], np.sqrt(s.alpha_bars[t]) * x0,
                                         np.sqrt(1 - s.alpha_bars[t]))  # (4, G)
    q_t = np.trapezoid(joint, x0, axis=1)
    np.testing.assert_allclose(MIX_1D.diffused(s, t).log_density(xt), np.log(q_t), rtol=1e-10)
    np.testing.assert_allclose(MIX_1D.denoiser(s, xt, t),
                               np.trapezoid(joint * x0, x0, axis=1) / q_t, rtol=1e-9)
    # E[x_{t-1} | x_t] by 2-D quadrature over (x_0, x_{t-1}) of p(x_0) q(x_{t-1}|x_0) q(x_t|x_{t-1})
    x0g, y = np.linspace(-5, 5, 401)[:, None], np.linspace(-6, 6, 601)[None, :]
    base = _data_density(x0g) * norm.pdf(y, np.sqrt(s.alpha_bars[t - 1]) * x0g,
                                         np.sqrt(max(1 - s.alpha_bars[t - 1], 1e-300)))
    if t == 1:  # x_{t-1} = x_0: the denoiser itself
        return
    for i, x in enumerate(xt):
        w = base * norm.pdf(x, np.sqrt(s.alphas[t - 1]) * y, np.sqrt(s.betas[t - 1]))
        mass = np.trapezoid(np.trapezoid(w, y[0], axis=1), x0g[:, 0])
        first = np.trapezoid(np.trapezoid(w * y, y[0], axis=1), x0g[:, 0])
        assert MIX_1D.reverse_mean(s, x, t) == pytest.approx(first / mass, rel=1e-7), i


def test_mixture_2d_denoiser_matches_monte_carlo_and_tweedie():
    s, t = cosine_schedule(10), 4
    root, noise_var = np.sqrt(s.alpha_bars[t]), 1 - s.alpha_bars[t]
    xt = np.array([[-0.8, 0.4], [1.0, 0.9], [0.3, -1.0]])
    got = MIX_2D.denoiser(s, xt, t)
    # Monte Carlo: x_0 from the data, weighted by q(x_t | x_0) (self-normalised)
    x0 = MIX_2D.sample(200_000, rng=3)
    for x, g in zip(xt, got, strict=True):
        log_w = -0.5 * ((x - root * x0) ** 2).sum(1) / noise_var
        w = np.exp(log_w - log_w.max())
        w /= w.sum()
        est = w @ x0
        se = np.sqrt((w**2) @ (x0 - est) ** 2)
        assert np.all(np.abs(g - est) < 5 * se), (g, est, se)
    # Tweedie: E[x_0 | x_t] = (x_t + (1 - abar) grad log q(x_t)) / sqrt(abar)
    h, diffused = 1e-5, MIX_2D.diffused(s, t)
    grad = np.stack([(diffused.log_density(xt + h * e) - diffused.log_density(xt - h * e))
                     / (2 * h) for e in np.eye(2)], axis=1)
    np.testing.assert_allclose(got, (xt + noise_var * grad) / root, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(MIX_2D.reverse_mean(s, xt, t),
                               reverse_posterior(s, got, xt, t)[0], rtol=1e-14)


def test_mixture_reverse_mean_is_the_best_mean_for_the_data_averaged_elbo():
    # E_data ELBO(m* + delta) = E_data ELBO(m*) - sum_t E_q(x_t)[delta^2] / (2 v_t) holds
    # only when m* = E[x_{t-1} | x_t] (else a cross term remains), and at t = 1 when
    # m* = E[x_0 | x_1]
    s, v = SCHED, SCHED.betas
    x0 = np.linspace(-5, 5, 1001)
    weights = _data_density(x0) * np.r_[0.5, np.ones(999), 0.5] * (x0[1] - x0[0])
    nodes, node_weights = _hermite(20)

    def average_elbo(shift):
        def mean_fn(x, t):
            return MIX_1D.reverse_mean(s, x, t) + shift * np.sin(x)
        return weights @ diffusion_elbo(s, x0, mean_fn, v, nodes, node_weights).elbo

    y = np.linspace(-8, 8, 4001)
    loss = sum(np.trapezoid(np.exp(MIX_1D.diffused(s, t).log_density(y))
                            * (0.2 * np.sin(y)) ** 2, y) / (2 * v[t - 1]) for t in range(1, 5))
    assert average_elbo(0.0) - average_elbo(0.2) == pytest.approx(loss, rel=1e-5)
    assert loss > 0.3


def test_mixture_samples_have_the_mixture_moments():
    x = MIX_2D.sample(100_000, rng=0)
    w, m, c = MIX_2D.weights, MIX_2D.means, MIX_2D.covariances
    mean = w @ m
    cov = np.einsum("k,kij->ij", w, c + np.einsum("ki,kj->kij", m - mean, m - mean))
    np.testing.assert_allclose(x.mean(0), mean, atol=5 * np.sqrt(cov.diagonal().max() / 1e5))
    np.testing.assert_allclose(np.cov(x.T), cov, atol=0.02)
    assert MIX_1D.sample(5, rng=0).shape == (5,)


# ---------------------------------------------------------------------------------------
# the grid oracle and the ELBO
# ---------------------------------------------------------------------------------------
def _linear_chain(num_steps=4):
    a = np.array([0.9, 1.2, 0.8, 1.1])[:num_steps]
    b = np.array([0.1, -0.3, 0.2, 0.05])[:num_steps]
    v = np.array([0.05, 0.1, 0.2, 0.3])[:num_steps]
    return a, b, v, (lambda x, t: a[t - 1] * x + b[t - 1])


def test_grid_oracle_is_exact_for_a_linear_gaussian_chain():
    a, b, v, mean_fn = _linear_chain()
    mean, var = 0.0, 1.0  # x_{t-1} = a_t x_t + b_t + noise: a Gaussian marginal
    for t in range(4, 0, -1):
        mean, var = a[t - 1] * mean + b[t - 1], a[t - 1] ** 2 * var + v[t - 1]
    x0 = np.array([-3.0, 0.1, 2.0, 5.0])
    got = reverse_chain_log_likelihood(x0, mean_fn, v, np.linspace(-8, 8, 400))
    np.testing.assert_allclose(got, norm.logpdf(x0, mean, np.sqrt(var)), rtol=1e-10)


def _importance_log_p(x0, mean_fn, variances, num_samples, seed):
    """log p(x_0) by importance sampling with the noising chain as proposal (T small)."""
    s, gen = SCHED, np.random.default_rng(seed)
    prev = np.repeat(x0[:, None], num_samples, axis=1)
    log_w = np.zeros_like(prev)
    for t in range(1, s.num_steps + 1):
        scale = np.sqrt(s.alphas[t - 1])
        xt = scale * prev + np.sqrt(s.betas[t - 1]) * gen.standard_normal(prev.shape)
        log_w += (norm.logpdf(prev, mean_fn(xt.ravel(), t).reshape(xt.shape),
                              np.sqrt(variances[t - 1]))
                  - norm.logpdf(xt, scale * prev, np.sqrt(s.betas[t - 1])))
        prev = xt
    log_w += norm.logpdf(prev)
    top = log_w.max(1, keepdims=True)
    w = np.exp(log_w - top)
    return top[:, 0] + np.log(w.mean(1)), w.std(1) / w.mean(1) / np.sqrt(num_samples)


def test_grid_oracle_agrees_with_importance_sampling_and_a_wrong_variance_does_not():
    def mean_fn(x, t):
        return MIX_1D.reverse_mean(SCHED, x, t)

    x0, grid = np.array([-1.5, 0.0, 1.0, 2.0]), np.linspace(-8, 8, 500)
    exact = reverse_chain_log_likelihood(x0, mean_fn, SCHED.betas, grid)
    est, se = _importance_log_p(x0, mean_fn, SCHED.betas, 50_000, seed=0)
    assert np.all(np.abs(exact - est) < 5 * se + 1e-3), (exact, est, se)
    wrong_var = SCHED.betas * np.array([1.0, 1.5, 1.0, 1.0])  # one step's variance off
    wrong = reverse_chain_log_likelihood(x0, mean_fn, wrong_var, grid)
    assert np.all(np.abs(wrong - est) > 10 * se + 1e-3), (wrong, est, se)
    # the bound: ELBO <= log p(x_0), with a gap (the forward chain is not the posterior)
    nodes, weights = _hermite()
    elbo = diffusion_elbo(SCHED, x0, mean_fn, SCHED.betas, nodes, weights).elbo
    assert np.all(elbo < exact - 0.02), (elbo, exact)


def test_grid_oracle_rejects_a_grid_too_coarse_for_a_steep_mean():
    """Chapter 9's two-step chain: its optimal mean is steep between the modes, so a grid
    spaced at the step standard deviation (fine enough in x_(t-1)) is off by up to 0.17
    nats (measured against a grid 22x finer); the guard on the mean's images rejects it,
    and a grid that passes agrees with one 3x finer within 1e-9 (measured 1e-12)."""
    data = GaussianMixtureData(weights=[0.35, 0.65], means=[-1.2, 0.9],
                               covariances=[0.06, 0.15])
    sched = linear_schedule(2, 0.05, 0.999)

    def mean_fn(x, t):
        return data.reverse_mean(sched, x, t)

    x0 = np.linspace(-2.6, 3.0, 29)
    coarse = np.linspace(-7, 7, int(14 / np.sqrt(sched.betas.min())) + 2)
    assert np.diff(coarse).max() <= np.sqrt(sched.betas.min())  # the spacing alone passes
    with pytest.raises(ValueError, match=r"too coarse where mean_fn is steep: "
                                         r"mean_fn\(grid, 1\) moves by"):
        reverse_chain_log_likelihood(x0, mean_fn, sched.betas, coarse)
    fine, finer = (reverse_chain_log_likelihood(x0, mean_fn, sched.betas,
                                                np.linspace(-7, 7, n)) for n in (468, 1402))
    np.testing.assert_allclose(fine, finer, rtol=0, atol=1e-9)


def test_diffusion_elbo_matches_the_closed_form_of_a_linear_chain():
    a, b, v, mean_fn = _linear_chain()
    s, x0 = SCHED, np.array([-1.0, 0.5, 2.0])
    abar = s.alpha_bars
    expected = -0.5 * (abar[4] * x0**2 - abar[4] - np.log(1 - abar[4]))  # -KL(q(x_T) || N(0,1))
    for t in range(1, 5):  # x_t ~ N(mu, sd^2); the term is quadratic in x_t
        mu, sd2 = np.sqrt(abar[t]) * x0, 1 - abar[t]
        if t == 1:
            expected += (norm.logpdf(x0, a[0] * mu + b[0], np.sqrt(v[0]))
                         - a[0] ** 2 * sd2 / (2 * v[0]))
            continue
        c0 = reverse_posterior(s, 1.0, 0.0, t)[0]  # posterior mean = c0 x_0 + c1 x_t
        c1, var_q = reverse_posterior(s, 0.0, 1.0, t)
        c, d = c1 - a[t - 1], c0 * x0 - b[t - 1]
        sq = (c * mu + d) ** 2 + c**2 * sd2
        expected -= 0.5 * (np.log(v[t - 1] / var_q) + (var_q + sq) / v[t - 1] - 1)
    nodes, weights = _hermite(8)
    got = diffusion_elbo(s, x0, mean_fn, v, nodes, weights)
    np.testing.assert_allclose(got.elbo, expected, rtol=1e-12)
    assert got.denoising_kl.shape == (3, 3)
    # torch: the same numbers, and gradients reach the model's parameters
    a_t = torch.tensor(a, requires_grad=True)
    out = diffusion_elbo(s, torch.tensor(x0), lambda x, t: a_t[t - 1] * x + b[t - 1],
                         torch.tensor(v), torch.tensor(nodes), weights)
    np.testing.assert_allclose(out.elbo.detach().numpy(), expected, rtol=1e-12)
    out.elbo.sum().backward()
    assert torch.isfinite(a_t.grad).all() and bool((a_t.grad != 0).all())
    # Monte Carlo draws give an unbiased estimate; vectors sum over their last axis
    mc = diffusion_elbo(s, x0, mean_fn, v, np.random.default_rng(0).normal(size=(4000, 1)))
    assert np.all(np.abs(mc.elbo - expected) < 0.05)
    two = diffusion_elbo(s, np.c_[x0, x0], mean_fn, v, nodes[:, :, None], weights)
    np.testing.assert_allclose(two.elbo, 2 * expected, rtol=1e-12)


def test_diffusion_elbo_with_one_step_has_no_denoising_terms():
    s, (_, _, v, mean_fn) = linear_schedule(1, 0.5, 0.5), _linear_chain(1)
    nodes, weights = _hermite(8)
    got = diffusion_elbo(s, np.array([0.3, -1.0]), mean_fn, v, nodes, weights)
    assert got.denoising_kl.shape == (0, 2)
    exact = reverse_chain_log_likelihood([0.3, -1.0], mean_fn, v, np.linspace(-8, 8, 400))
    assert np.all(got.elbo < exact)


# ---------------------------------------------------------------------------------------
# the contract (tests/test_contract.py runs these)
# ---------------------------------------------------------------------------------------
def _mean0(x, t):
    return 0 * x


BAD_INPUTS = {
    "NoiseSchedule": [
        (lambda: NoiseSchedule([0.1, 1.0]), ValueError, r"betas must lie in \(0, 1\)"),
        (lambda: NoiseSchedule([0.1, 0.0]), ValueError, r"betas must lie in \(0, 1\)"),
        (lambda: NoiseSchedule([[0.1]]), ValueError, r"betas must have 1 dimension"),
        (lambda: NoiseSchedule([]), ValueError, r"betas must not be empty"),
        (lambda: NoiseSchedule([np.nan]), ValueError, r"betas must contain only finite"),
        (lambda: NoiseSchedule("0.1"), TypeError, r"betas must be numeric"),
    ],
    "linear_schedule": [
        (lambda: linear_schedule(0), ValueError, r"num_steps must be >= 1"),
        (lambda: linear_schedule(2.5), TypeError, r"num_steps must be an integer"),
        (lambda: linear_schedule(10, 0.1, 0.01), ValueError, r"beta_start and beta_end"),
        (lambda: linear_schedule(10, 0.1, 1.0), ValueError, r"beta_end"),
        (lambda: linear_schedule(10, -0.1), ValueError, r"beta_start must be a finite"),
        (lambda: linear_schedule(10**8), ValueError, r"num_steps must be <="),
    ],
    "cosine_schedule": [
        (lambda: cosine_schedule(-1), ValueError, r"num_steps must be >= 1"),
        (lambda: cosine_schedule(10, offset=0.0), ValueError, r"offset must be a finite"),
        (lambda: cosine_schedule(10, max_beta=1.0), ValueError, r"max_beta must be < 1"),
        (lambda: cosine_schedule(10, max_beta=np.nan), ValueError, r"max_beta must be a"),
    ],
    "forward_marginal": [
        (lambda: forward_marginal([0.1], 1.0, 1), TypeError, r"schedule must be a Noise"),
        (lambda: forward_marginal(SCHED, np.nan, 1), ValueError, r"x0 must contain only"),
        (lambda: forward_marginal(SCHED, 1.0, 5), ValueError, r"t must be <= 4"),
        (lambda: forward_marginal(SCHED, 1.0, 1.5), TypeError, r"t must be an integer"),
        (lambda: forward_marginal(SCHED, np.ones(3), np.array([1, 2])), ValueError,
         r"t of shape \(2,\) must match"),
        (lambda: forward_marginal(SCHED, np.ones(2), np.array([1.0, 2.0])), TypeError,
         r"t must be an integer or an array of integers"),
    ],
    "forward_sample": [
        (lambda: forward_sample(SCHED, np.ones(3), 1, np.ones(2)), ValueError,
         r"x0 \(3,\) and noise \(2,\) must broadcast"),
        (lambda: forward_sample(SCHED, 1.0, 1, np.inf), ValueError, r"noise must contain"),
        (lambda: forward_sample(SCHED, 1.0, np.array([0, 9]), 1.0), ValueError,
         r"t must lie in \[0, 4\]"),
    ],
    "reverse_posterior": [
        (lambda: reverse_posterior(SCHED, 1.0, 1.0, 0), ValueError, r"t must be >= 1"),
        (lambda: reverse_posterior(SCHED, np.ones(2), np.ones(3), 2), ValueError,
         r"x0 \(2,\) and xt \(3,\) must broadcast"),
        (lambda: reverse_posterior(SCHED, "a", 1.0, 2), TypeError, r"x0 must be"),
    ],
    "prior_kl": [
        (lambda: prior_kl("schedule", 1.0), TypeError, r"schedule must be a NoiseSchedule"),
        (lambda: prior_kl(SCHED, [1.0, np.nan]), ValueError, r"x0 must contain only finite"),
    ],
    "denoising_kl": [
        (lambda: denoising_kl(SCHED, 1.0, 1.0, 1, 0.0, 1.0), ValueError, r"t must be >= 2"),
        (lambda: denoising_kl(SCHED, 1.0, 1.0, 2, 0.0, 0.0), ValueError,
         r"var_p must be > 0"),
        (lambda: denoising_kl(SCHED, np.ones(2), 1.0, 2, np.ones(3), 1.0), ValueError,
         r"mean_p .*must broadcast"),
    ],
    "decoder_log_likelihood": [
        (lambda: decoder_log_likelihood(1.0, 0.0, -1.0), ValueError, r"var_p must be > 0"),
        (lambda: decoder_log_likelihood(np.ones(2), np.ones(3), 1.0), ValueError,
         r"x0 \(2,\), mean_p \(3,\) .*must broadcast"),
        (lambda: decoder_log_likelihood(1.0, np.nan, 1.0), ValueError, r"mean_p must contain"),
    ],
    "mean_from_epsilon": [
        (lambda: mean_from_epsilon(SCHED, 1.0, 0, 1.0), ValueError, r"t must be >= 1"),
        (lambda: mean_from_epsilon(SCHED, 1.0, 1, np.inf), ValueError,
         r"eps_pred must contain only finite"),
    ],
    "epsilon_loss_weight": [
        (lambda: epsilon_loss_weight(SCHED, 2, 0.0), ValueError, r"var_p must be > 0"),
        (lambda: epsilon_loss_weight(SCHED, np.array([1, 2]), np.ones(3)), ValueError,
         r"t \(2,\) and var_p \(3,\) must broadcast"),
        (lambda: epsilon_loss_weight(None, 2, 1.0), TypeError, r"schedule must be a"),
    ],
    "diffusion_elbo": [
        (lambda: diffusion_elbo(SCHED, np.ones(2), "f", SCHED.betas, np.ones((3, 2))),
         TypeError, r"mean_fn must be callable"),
        (lambda: diffusion_elbo(SCHED, np.ones(2), _mean0, SCHED.betas[:3], np.ones((3, 2))),
         ValueError, r"variances must have shape \(4,\)"),
        (lambda: diffusion_elbo(SCHED, np.ones(2), _mean0, SCHED.betas, np.ones(2)),
         ValueError, r"noise one more leading axis"),
        (lambda: diffusion_elbo(SCHED, np.ones(2), _mean0, SCHED.betas, np.ones((3, 2)),
                                [0.5, 0.5, 0.5]), ValueError, r"noise_weights must be >= 0"),
        (lambda: diffusion_elbo(SCHED, np.ones(2), lambda x, t: x[:1], SCHED.betas,
                                np.ones((3, 2))), ValueError, r"mean_fn must return the shape"),
        (lambda: diffusion_elbo(SCHED, np.ones(2), _mean0, -SCHED.betas, np.ones((3, 2))),
         ValueError, r"variances must have shape \(4,\) with entries > 0"),
    ],
    "GaussianMixtureData": [
        (lambda: GaussianMixtureData([0.5, 0.6], [0.0, 1.0], [1.0, 1.0]), ValueError,
         r"weights must be >= 0 with rows summing to 1"),
        (lambda: GaussianMixtureData([0.5, 0.5], [0.0, 1.0], [1.0, 0.0]), ValueError,
         r"covariances must be > 0"),
        (lambda: GaussianMixtureData([0.5, 0.5], [0.0, 1.0], [1.0]), ValueError,
         r"covariances must have shape \(2,\)"),
        (lambda: GaussianMixtureData([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]]),
         ValueError, r"covariances\[0\] must be positive definite"),
        (lambda: GaussianMixtureData([1.0], np.zeros((1, 1, 1)), [1.0]), ValueError,
         r"means must have 1 or 2 dimension"),
    ],
    "GaussianMixtureData.sample": [
        (lambda: MIX_1D.sample(0, rng=0), ValueError, r"num_samples must be >= 1"),
        (lambda: MIX_1D.sample(5, rng=None), TypeError, r"rng must be a numpy"),
    ],
    "GaussianMixtureData.diffused": [
        (lambda: MIX_1D.diffused(SCHED, 5), ValueError, r"t must be <= 4"),
        (lambda: MIX_1D.diffused(SCHED, [1, 2]), TypeError, r"t must be an integer"),
        (lambda: MIX_1D.diffused("s", 1), TypeError, r"schedule must be a NoiseSchedule"),
    ],
    "GaussianMixtureData.log_density": [
        (lambda: MIX_2D.log_density(np.ones(3)), ValueError, r"x must have shape \(\.\.\., 2\)"),
        (lambda: MIX_1D.log_density([np.nan]), ValueError, r"x must contain only finite"),
    ],
    "GaussianMixtureData.denoiser": [
        (lambda: MIX_1D.denoiser(SCHED, 1.0, 0), ValueError, r"t must be >= 1"),
        (lambda: MIX_2D.denoiser(SCHED, np.ones((2, 3)), 1), ValueError,
         r"xt must have shape \(\.\.\., 2\)"),
    ],
    "GaussianMixtureData.reverse_mean": [
        (lambda: MIX_1D.reverse_mean(SCHED, [np.inf], 2), ValueError, r"xt must contain"),
        (lambda: MIX_1D.reverse_mean(SCHED, 1.0, np.array([2])), TypeError,
         r"t must be one integer"),
    ],
    "reverse_chain_log_likelihood": [
        (lambda: reverse_chain_log_likelihood([0.0], _mean0, [1.0], np.linspace(-5, 5, 5)),
         ValueError, r"grid spacing 2\.5 must be at most"),
        (lambda: reverse_chain_log_likelihood([0.0], _mean0, [1.0], np.linspace(-2, 2, 50)),
         ValueError, r"grid holds mass"),
        (lambda: reverse_chain_log_likelihood([0.0], _mean0, [1.0], [1.0, 0.0, 2.0]),
         ValueError, r"grid must be strictly increasing"),
        (lambda: reverse_chain_log_likelihood([0.0], _mean0, [0.0], np.linspace(-8, 8, 99)),
         ValueError, r"variances must be > 0"),
        (lambda: reverse_chain_log_likelihood([[0.0]], _mean0, [1.0], np.linspace(-8, 8, 99)),
         ValueError, r"x0 must have 1 dimension"),
        (lambda: reverse_chain_log_likelihood([0.0], lambda x, t: x[:3], [1.0],
                                              np.linspace(-8, 8, 99)),
         ValueError, r"mean_fn must return finite values"),
        (lambda: reverse_chain_log_likelihood([0.0], None, [1.0], np.linspace(-8, 8, 99)),
         TypeError, r"mean_fn must be callable"),
        (lambda: reverse_chain_log_likelihood([0.0, 25.0], lambda x, t: x, [1.0],
                                              np.linspace(-8, 8, 99)),
         ValueError, r"x0\[1\] = 25\.0: its integrand over x_1 reaches the grid's edge"),
    ],
    "reverse_chain_log_density_2d": [
        (lambda: reverse_chain_log_density_2d(_mean0, [1.0], np.linspace(-8, 8, 5)),
         ValueError, r"grid spacing .* at most the smallest step"),
        (lambda: reverse_chain_log_density_2d(_mean0, [1.0], np.linspace(-2, 2, 21)),
         ValueError, r"grid holds mass .* widen the grid"),
        (lambda: reverse_chain_log_density_2d(_mean0, [1.0], np.r_[0.0, 0.1, 0.3]),
         ValueError, r"grid must be evenly spaced"),
        (lambda: reverse_chain_log_density_2d(_mean0, [-1.0], np.linspace(-8, 8, 99)),
         ValueError, r"variances must be > 0"),
        (lambda: reverse_chain_log_density_2d(lambda x, t: x[:, :1], [1.0],
                                              np.linspace(-8, 8, 99)),
         ValueError, r"mean_fn must return finite values"),
        (lambda: reverse_chain_log_density_2d(None, [1.0], np.linspace(-8, 8, 99)),
         TypeError, r"mean_fn must be callable"),
    ],
    "GaussianMixtureData.average_elbo": [
        (lambda: MIX_2D.average_elbo(SCHED, _mean0, SCHED.betas[:2], np.linspace(-9, 9, 91)),
         ValueError, r"variances must have shape \(4,\)"),
        (lambda: MIX_2D.average_elbo(SCHED, _mean0, SCHED.betas, np.linspace(-2, 2, 41)),
         ValueError, r"grid holds mass .* widen the grid"),
        (lambda: MIX_2D.average_elbo(SCHED, None, SCHED.betas, np.linspace(-9, 9, 91)),
         TypeError, r"mean_fn must be callable"),
        (lambda: MIX_2D.average_elbo(None, _mean0, SCHED.betas, np.linspace(-9, 9, 91)),
         TypeError, r"schedule must be a NoiseSchedule"),
    ],
    "train_noise_predictors": [
        (lambda: train_noise_predictors(MIX_1D, SCHED, [0]), TypeError, r"data must be"),
        (lambda: train_noise_predictors(MIX_2D, SCHED, []), ValueError,
         r"seeds must hold at least one"),
        (lambda: train_noise_predictors(MIX_2D, SCHED, [0], lr=0.0), ValueError,
         r"lr must be a finite number > 0"),
        (lambda: train_noise_predictors(MIX_2D, SCHED, [0], num_iters=0), ValueError,
         r"num_iters must be"),
        (lambda: train_noise_predictors(MIX_2D, None, [0]), TypeError,
         r"schedule must be a NoiseSchedule"),
    ],
    "NoisePredictors.mean_fn": [
        (lambda: train_noise_predictors(MIX_2D, SCHED, [0], hidden=4,
                                        num_iters=1).mean_fn(2),
         ValueError, r"run must be"),
    ],
}

NO_INPUTS = {"DiffusionELBO": "a result object returned by diffusion_elbo",
             "NoisePredictors": "a result object returned by train_noise_predictors"}


def _check_one_minus(s):
    # abar_1 = 1 - 1e-12 rounds; 1 - abar_1 must still be beta_1 to full precision
    np.testing.assert_allclose(s.one_minus_alpha_bars[1:], [1e-12, 2e-12], rtol=1e-9)


EXTREME_INPUTS = {
    "NoiseSchedule": [(lambda: NoiseSchedule([1e-12, 1e-12]), _check_one_minus)],
    "decoder_log_likelihood": [
        # a variance of 1e-300 at its mean: -(log(2 pi) + log(1e-300)) / 2, finite
        (lambda: decoder_log_likelihood(0.5, 0.5, 1e-300),
         lambda out: np.testing.assert_allclose(
             out, -0.5 * (np.log(2 * np.pi) + np.log(1e-300)), rtol=1e-14)),
    ],
    "reverse_chain_log_likelihood": [
        # x0 = 40 lies 15 standard deviations out: log p far below -100, still exact
        (lambda: reverse_chain_log_likelihood([40.0], _linear_chain()[3], _linear_chain()[2],
                                              np.linspace(-50, 50, 1000)),
         lambda out: np.testing.assert_allclose(out, [_linear_chain_log_p(40.0)], rtol=1e-10)),
    ],
}


def _linear_chain_log_p(x):
    a, b, v, _ = _linear_chain()
    mean, var = 0.0, 1.0
    for t in range(4, 0, -1):
        mean, var = a[t - 1] * mean + b[t - 1], a[t - 1] ** 2 * var + v[t - 1]
    return norm.logpdf(x, mean, np.sqrt(var))
