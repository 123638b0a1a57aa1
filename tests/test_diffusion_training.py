"""Tests of chapter 9's two-dimensional oracles and trained noise predictors
(elbo_lib.diffusion: reverse_chain_log_density_2d, GaussianMixtureData.average_elbo,
train_noise_predictors).

Each test compares with an answer computed another way (the closed-form marginal of a
linear-Gaussian chain, Gauss-Hermite and Monte Carlo ELBOs through diffusion_elbo, an
exact shortfall for a shifted mean, a run trained alone) and says which wrong answer it
rejects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from elbo_lib.diffusion import (
    GaussianMixtureData,
    cosine_schedule,
    diffusion_elbo,
    linear_schedule,
    reverse_chain_log_density_2d,
    train_noise_predictors,
)

MIX_1D = GaussianMixtureData([0.3, 0.7], [-1.5, 1.0], [0.1, 0.3])
MIX_2D = GaussianMixtureData([0.5, 0.2, 0.3], [[-1.0, 0.5], [1.5, 1.0], [0.5, -1.5]],
                             [[[0.2, 0.05], [0.05, 0.1]], [[0.1, 0.0], [0.0, 0.3]],
                              [[0.3, -0.1], [-0.1, 0.2]]])
SCHED = cosine_schedule(4)
AXIS = np.linspace(-9, 9, 91)  # spacing 0.2, below sqrt(beta_1) = 0.39; wide: no tail lost


def _linear_chain():
    """Means A_t x + b_t (A_t not symmetric, b_t unequal coordinates): every p_t Gaussian."""
    mats = [np.array([[0.6, 0.2], [-0.1, 0.5]]), np.array([[0.7, -0.15], [0.05, 0.4]]),
            np.array([[0.5, 0.1], [0.2, 0.6]]), np.array([[0.8, 0.0], [0.3, 0.45]])]
    shifts = [np.array([0.3, -0.2]), np.array([-0.1, 0.4]), np.array([0.2, 0.1]),
              np.array([0.0, -0.3])]
    mean, cov = np.zeros(2), np.eye(2)
    for t in range(4, 0, -1):
        mean = mats[t - 1] @ mean + shifts[t - 1]
        cov = mats[t - 1] @ cov @ mats[t - 1].T + SCHED.betas[t - 1] * np.eye(2)
    return (lambda x, t: x @ mats[t - 1].T + shifts[t - 1]), mean, cov


def test_grid_density_2d_is_exact_for_a_linear_gaussian_chain():
    # rejects swapped kernels (a transposed grid), a missing cell area h^2, a wrong
    # coordinate order of the returned array: each is off by far more than 1e-8 here
    mean_fn, mean, cov = _linear_chain()
    log_p = reverse_chain_log_density_2d(mean_fn, SCHED.betas, AXIS)
    points = np.stack(np.meshgrid(AXIS, AXIS, indexing="ij"), -1)
    exact = multivariate_normal(mean, cov).logpdf(points)
    near = exact > -12
    assert np.max(np.abs(log_p[near] - exact[near])) < 1e-8
    assert np.max(np.abs(log_p.T[near] - exact[near])) > 0.1  # the transpose is wrong


def test_grid_density_2d_checks_its_grid_and_mean_fn():
    mean_fn, _, _ = _linear_chain()
    with pytest.raises(ValueError, match="grid spacing"):
        reverse_chain_log_density_2d(mean_fn, SCHED.betas, np.linspace(-7, 7, 20))
    with pytest.raises(ValueError, match="widen the grid"):
        reverse_chain_log_density_2d(mean_fn, SCHED.betas, np.linspace(-2, 2, 30))
    with pytest.raises(ValueError, match="evenly spaced"):
        reverse_chain_log_density_2d(mean_fn, SCHED.betas, np.r_[AXIS[:-1], 9.05])
    with pytest.raises(TypeError, match="mean_fn"):
        reverse_chain_log_density_2d(None, SCHED.betas, AXIS)
    with pytest.raises(ValueError, match="mean_fn must return"):
        reverse_chain_log_density_2d(lambda x, t: x[:, :1], SCHED.betas, AXIS)
    with pytest.raises(ValueError, match="variances"):
        reverse_chain_log_density_2d(mean_fn, -SCHED.betas, AXIS)


def _gauss_hermite_average_elbo(sched, mean_fn, num_nodes=60):
    """The 1-D data average of diffusion_elbo by Gauss-Hermite over x_t and a fine x_0
    grid weighted by the data density."""
    x0 = np.linspace(-4, 4, 401)
    w = np.exp(MIX_1D.log_density(x0))
    w /= w.sum()
    nodes, weights = np.polynomial.hermite.hermgauss(num_nodes)
    terms = diffusion_elbo(sched, x0, mean_fn, sched.betas, np.sqrt(2) * nodes[:, None],
                           weights / np.sqrt(np.pi))
    return float(w @ terms.elbo)


@pytest.mark.parametrize("scale", [1.0, 0.9])
def test_average_elbo_matches_quadrature_of_diffusion_elbo_in_1d(scale):
    # rejects dropping the a_t^2 spread term (off by > 0.5 nats here), or the constants
    def mean_fn(x, t):
        return scale * MIX_1D.reverse_mean(SCHED, x, t)

    elbo, shortfall = MIX_1D.average_elbo(SCHED, mean_fn, SCHED.betas,
                                          np.linspace(-8, 8, 801))
    assert abs(elbo - _gauss_hermite_average_elbo(SCHED, mean_fn)) < 1e-6
    assert (shortfall.sum() == 0) == (scale == 1.0)


def test_average_elbo_shortfall_of_a_shifted_mean_is_its_squared_shift():
    # m* + c: E ||m - m*||^2 = ||c||^2 exactly, so shortfall_t = ||c||^2 / (2 v_t); rejects
    # a missing 1/(2 v_t), a shortfall summed over one coordinate only, a wrong grid weight
    shift = np.array([0.1, -0.25])
    opt, zero = MIX_2D.average_elbo(SCHED, lambda x, t: MIX_2D.reverse_mean(SCHED, x, t),
                                    SCHED.betas, AXIS)
    elbo, shortfall = MIX_2D.average_elbo(
        SCHED, lambda x, t: MIX_2D.reverse_mean(SCHED, x, t) + shift, SCHED.betas, AXIS)
    np.testing.assert_allclose(shortfall, shift @ shift / (2 * SCHED.betas), rtol=1e-6)
    assert np.all(zero == 0) and abs(opt - shortfall.sum() - elbo) < 1e-12


def test_average_elbo_in_2d_matches_monte_carlo_diffusion_elbo():
    # an independent route: per-point terms through denoising_kl on 40,000 draws; a wrong
    # prior term or spread term moves the grid value by many standard errors
    rng = np.random.default_rng(3)
    sched = linear_schedule(6, 0.05, 0.6)

    def mean_fn(x, t):
        return 0.95 * MIX_2D.reverse_mean(sched, x, t)

    elbo, _ = MIX_2D.average_elbo(sched, mean_fn, sched.betas, np.linspace(-7, 7, 71))
    x0 = MIX_2D.sample(40_000, rng)
    mc = diffusion_elbo(sched, x0, mean_fn, sched.betas,
                        rng.standard_normal((1,) + x0.shape)).elbo
    assert abs(mc.mean() - elbo) < 4 * mc.std() / np.sqrt(mc.size)


def test_average_elbo_checks_its_arguments():
    best = lambda x, t: MIX_2D.reverse_mean(SCHED, x, t)  # noqa: E731
    with pytest.raises(ValueError, match="variances must have shape"):
        MIX_2D.average_elbo(SCHED, best, SCHED.betas[:-1], AXIS)
    with pytest.raises(ValueError, match="widen the grid"):
        MIX_2D.average_elbo(SCHED, best, SCHED.betas, np.linspace(-2, 2, 21))
    with pytest.raises(TypeError, match="mean_fn"):
        MIX_2D.average_elbo(SCHED, "mean", SCHED.betas, AXIS)
    three = GaussianMixtureData([1.0], [[0.0, 0.0, 0.0]], [np.eye(3)])
    with pytest.raises(ValueError, match="dimension 1 or 2"):
        three.average_elbo(SCHED, best, SCHED.betas, AXIS)


def test_trained_predictors_track_their_elbo_and_runs_are_independent():
    # the minibatch estimates agree with the grid ELBO (a wrong constant or a prior term
    # left out would put them > 1 nat apart); the ELBO stays below the optimum; run 0
    # trained beside run 1 equals run 0 trained alone (no cross-talk in the batch)
    fit = train_noise_predictors(MIX_2D, SCHED, [5, 6], hidden=16, num_iters=300)
    alone = train_noise_predictors(MIX_2D, SCHED, [5], hidden=16, num_iters=300)
    for a, b in zip(fit.params, alone.params, strict=True):
        torch.testing.assert_close(a[:1], b, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(fit.params[0][0], fit.params[0][1])
    opt, _ = MIX_2D.average_elbo(SCHED, lambda x, t: MIX_2D.reverse_mean(SCHED, x, t),
                                 SCHED.betas, AXIS)
    late = fit.elbo_trace[-100:]
    for run in range(2):
        elbo, shortfall = MIX_2D.average_elbo(SCHED, fit.mean_fn(run), SCHED.betas, AXIS)
        assert elbo < opt and shortfall.min() >= 0
        assert abs(late[:, run].mean() - elbo) < 5 * late[:, run].std() / 10


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    (dict(data=MIX_1D), TypeError, "vector data"),
    (dict(seeds=[]), ValueError, "at least one seed"),
    (dict(seeds=[-1]), ValueError, "seeds"),
    (dict(lr=-0.1), ValueError, "lr"),
    (dict(num_iters=0), ValueError, "num_iters"),
    (dict(hidden=1.5), TypeError, "hidden"),
])
def test_train_noise_predictors_checks_its_arguments(kwargs, error, match):
    args = dict(data=MIX_2D, schedule=SCHED, seeds=[0], num_iters=2) | kwargs
    with pytest.raises(error, match=match):
        train_noise_predictors(**args)


def test_mean_fn_checks_run_and_t():
    fit = train_noise_predictors(MIX_2D, SCHED, [0], hidden=8, num_iters=2)
    with pytest.raises(ValueError, match="run"):
        fit.mean_fn(1)
    with pytest.raises(ValueError, match="t"):
        fit.mean_fn(0)(np.zeros((3, 2)), 5)
