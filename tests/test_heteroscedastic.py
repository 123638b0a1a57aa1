"""Tests of elbo_lib.heteroscedastic: CRPS closed form vs Monte Carlo, and the CRPS fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import norm

from elbo_lib import seed_everything
from elbo_lib.heteroscedastic import (
    HeteroscedasticNet,
    crps_gaussian,
    fit_heteroscedastic,
    monte_carlo_crps,
)

F64 = torch.float64


@pytest.mark.parametrize("mean, std, y", [(0.0, 1.0, 0.5), (1.0, 0.3, 1.0), (-2.0, 2.0, 1.0)])
def test_crps_closed_form_matches_its_definition_by_quadrature(mean, std, y):
    """CRPS(F, y) = integral of (F(t) - 1{t >= y})^2 dt (Gneiting and Raftery 2007)."""
    left, _ = integrate.quad(lambda t: norm.cdf(t, mean, std) ** 2, -np.inf, y)
    right, _ = integrate.quad(lambda t: norm.sf(t, mean, std) ** 2, y, np.inf)
    assert float(crps_gaussian(mean, std, y)) == pytest.approx(left + right, rel=1e-8)


def test_crps_monte_carlo_matches_closed_form():
    seed_everything(0)
    mean = torch.tensor([0.0, 1.0, -2.0], dtype=F64)
    std = torch.tensor([1.0, 0.3, 2.0], dtype=F64)
    y = torch.tensor([0.5, 1.0, 1.0], dtype=F64)
    num = 200_000
    samples = mean + std * torch.randn(num, 3, dtype=F64)
    # standard error of the estimate: from the two halves' terms, below 0.005 here
    terms = (samples - y).abs()[: num // 2] + (samples - y).abs()[num // 2:]
    terms = 0.5 * terms - 0.5 * (samples[: num // 2] - samples[num // 2:]).abs()
    se = terms.std(0) / np.sqrt(num // 2)
    err = (monte_carlo_crps(samples, y) - crps_gaussian(mean, std, y)).abs()
    assert bool((err < 4 * se).all())


def test_fit_heteroscedastic_learns_a_noise_level_that_grows_with_x():
    gen = np.random.default_rng(0)
    x = gen.uniform(-2, 2, size=400)
    true_std = 0.1 + 0.2 * (x + 2)
    y = 0.5 * x + true_std * gen.standard_normal(400)
    seed_everything(0)
    net, losses = fit_heteroscedastic(x, y, hidden=16, num_samples=8, num_steps=600)
    assert losses.shape == (600,) and losses[-50:].mean() < losses[0]
    with torch.no_grad():
        mean, std = net(torch.tensor([-1.5, 1.5]))
    # 400 noisy points: over seeds 0-3 the errors were at most 0.06 (mean) and 20 % (std)
    np.testing.assert_allclose(mean.numpy(), [-0.75, 0.75], atol=0.1)
    np.testing.assert_allclose(std.numpy(), [0.2, 0.8], rtol=0.25)


def test_heteroscedastic_net_samples_are_reparameterised():
    torch.manual_seed(0)
    net = HeteroscedasticNet(4)
    x = torch.tensor([0.0, 1.0], dtype=F64)
    torch.manual_seed(1)
    samples = net.sample(x, 3)
    torch.manual_seed(1)
    mean, std = net(x)
    torch.testing.assert_close(samples, mean + std * torch.randn(3, 2, dtype=F64))
    samples.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("call, error, match", [
    (lambda: crps_gaussian(0.0, -1.0, 0.0), ValueError, "std must be > 0"),
    (lambda: crps_gaussian(np.nan, 1.0, 0.0), ValueError, "mean must be finite"),
    (lambda: crps_gaussian(0.0, 1.0, np.inf), ValueError, "y must be finite"),
    (lambda: monte_carlo_crps(torch.zeros(3, 2, dtype=F64), torch.zeros(2, dtype=F64)),
     ValueError, "even number of samples"),
    (lambda: monte_carlo_crps(torch.zeros(4, dtype=F64), torch.zeros(2, dtype=F64)),
     ValueError, "2-D tensor"),
    (lambda: monte_carlo_crps(torch.zeros(4, 2, dtype=F64), torch.zeros(3, dtype=F64)),
     ValueError, "y must have shape"),
    (lambda: monte_carlo_crps(torch.full((4, 2), np.nan, dtype=F64),
                              torch.zeros(2, dtype=F64)), ValueError, "finite"),
    (lambda: fit_heteroscedastic([0.0, 1.0], [0.0]), ValueError, "same shape"),
    (lambda: fit_heteroscedastic([0.0, 1.0], [0.0, 1.0], num_samples=3), ValueError,
     "even"),
    (lambda: fit_heteroscedastic([0.0, 1.0], [0.0, 1.0], lr=0.0), ValueError, "lr"),
    (lambda: fit_heteroscedastic([0.0, np.nan], [0.0, 1.0]), ValueError, "x"),
    (lambda: HeteroscedasticNet(0), ValueError, "hidden"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_fit_heteroscedastic_names_the_step_where_the_loss_became_non_finite():
    with pytest.raises(ValueError, match=r"stopped at step \d+ of 50: .*finite"):
        fit_heteroscedastic([0.0, 1.0], [0.0, 1e308], num_steps=50, lr=1e3)


# --------------------------------------------------------------------------------------
# Contract cases (issue 16): every public name of elbo_lib.heteroscedastic has bad-input
# cases.
# --------------------------------------------------------------------------------------
def _net():
    torch.manual_seed(0)
    return HeteroscedasticNet(4)


def _crps_scaled(scale):
    """CRPS is positively homogeneous: CRPS(a m, a s, a y) = a CRPS(m, s, y)."""
    return float(crps_gaussian(0.3 * scale, 1.0 * scale, -0.2 * scale)) / scale


BAD_INPUTS = {
    "HeteroscedasticNet": [
        (lambda: HeteroscedasticNet(0), ValueError, r"hidden must be >= 1"),
        (lambda: HeteroscedasticNet(2.5), TypeError, r"hidden must be an integer"),
    ],
    "HeteroscedasticNet.forward": [
        (lambda: _net()(torch.tensor([0.0, np.nan], dtype=F64)), ValueError,
         r"x must contain only finite"),
        (lambda: _net()(torch.zeros(3, 2, dtype=F64)), ValueError,
         r"x must have 0 or 1 dimension"),
        (lambda: _net()("x"), TypeError, r"x must be numeric"),
    ],
    "HeteroscedasticNet.sample": [
        (lambda: _net().sample(torch.zeros(3, dtype=F64), 0), ValueError,
         r"num_samples must be >= 1"),
        (lambda: _net().sample(torch.tensor([np.inf], dtype=F64), 2), ValueError,
         r"x must contain only finite"),
    ],
    "crps_gaussian": [
        (lambda: crps_gaussian(0.0, -1.0, 0.0), ValueError, r"std must be > 0"),
        (lambda: crps_gaussian(0.0, 0.0, 0.0), ValueError, r"std must be > 0"),
        (lambda: crps_gaussian(0.0, np.nan, 0.0), ValueError, r"std must be finite"),
        (lambda: crps_gaussian(np.nan, 1.0, 0.0), ValueError, r"mean must be finite"),
        (lambda: crps_gaussian(0.0, 1.0, [0.0, np.inf]), ValueError, r"y must be finite"),
        (lambda: crps_gaussian("a", 1.0, 0.0), TypeError, r"mean must be numeric"),
        (lambda: crps_gaussian([0.0, 1.0], [1.0, 1.0, 1.0], 0.0), ValueError,
         r"mean, std and y must broadcast"),
    ],
    "monte_carlo_crps": [
        (lambda: monte_carlo_crps(torch.zeros(3, 2, dtype=F64), torch.zeros(2, dtype=F64)),
         ValueError, r"samples must hold an even number"),
        (lambda: monte_carlo_crps(torch.zeros(4, dtype=F64), torch.zeros(2, dtype=F64)),
         ValueError, r"samples must be a 2-D tensor"),
        (lambda: monte_carlo_crps(np.zeros((4, 2)), torch.zeros(2, dtype=F64)),
         TypeError, r"samples must be a torch.Tensor"),
        (lambda: monte_carlo_crps(torch.zeros(4, 2, dtype=F64), torch.zeros(3, dtype=F64)),
         ValueError, r"y must have shape \(2,\)"),
        (lambda: monte_carlo_crps(torch.full((4, 2), np.nan, dtype=F64),
                                  torch.zeros(2, dtype=F64)), ValueError,
         r"samples must be finite"),
        (lambda: monte_carlo_crps(torch.zeros(4, 2, dtype=F64),
                                  torch.tensor([0.0, np.nan], dtype=F64)), ValueError,
         r"y must be finite"),
    ],
    "fit_heteroscedastic": [
        (lambda: fit_heteroscedastic([0.0, 1.0], [0.0]), ValueError,
         r"x and y must have the same shape"),
        (lambda: fit_heteroscedastic([0.0, 1.0], [0.0, 1.0], num_samples=3), ValueError,
         r"num_samples must be even"),
        (lambda: fit_heteroscedastic([0.0, 1.0], [0.0, 1.0], lr=0.0), ValueError,
         r"lr must be a finite number > 0"),
        (lambda: fit_heteroscedastic([0.0, np.nan], [0.0, 1.0]), ValueError,
         r"x must contain only finite"),
        (lambda: fit_heteroscedastic([0.0, 1.0], [np.nan, 1.0]), ValueError,
         r"y must contain only finite"),
        (lambda: fit_heteroscedastic([0.0, 1.0], [0.0, 1.0], num_steps=0), ValueError,
         r"num_steps must be >= 1"),
        (lambda: fit_heteroscedastic([0.0, 1.0], [0.0, 1.0], hidden=0), ValueError,
         r"hidden must be >= 1"),
        (lambda: fit_heteroscedastic([[0.0, 1.0]], [[0.0, 1.0]]), ValueError,
         r"x must have 1 dimension"),
    ],
}

EXTREME_INPUTS = {
    "crps_gaussian": [
        (lambda: _crps_scaled(1e150),
         lambda out: np.testing.assert_allclose(out, _crps_scaled(1.0), rtol=1e-13)),
        (lambda: _crps_scaled(1e-150),
         lambda out: np.testing.assert_allclose(out, _crps_scaled(1.0), rtol=1e-13)),
        # far in the tail: CRPS -> |y - mean| - std / sqrt(pi)
        (lambda: float(crps_gaussian(0.0, 1.0, 1e10)),
         lambda out: np.testing.assert_allclose(out, 1e10 - 1 / np.sqrt(np.pi), rtol=1e-15)),
    ],
    "monte_carlo_crps": [
        # two samples equal to y: E|Y - y| = 0 and E|Y - Y'| = 0
        (lambda: monte_carlo_crps(torch.full((2, 1), 1e150, dtype=F64),
                                  torch.tensor([1e150], dtype=F64)),
         lambda out: np.testing.assert_array_equal(out.numpy(), [0.0])),
    ],
}
