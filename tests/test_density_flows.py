"""Tests of elbo_lib.density_flows: the squashed coupling flow's density, dequantisation
and its bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

from elbo_lib.density_flows import (
    DequantizedFlow,
    bits_per_dim,
    dequantize,
    dequantized_log_densities,
    quantize,
)
from elbo_lib.flows import Grid2D, fit_maximum_likelihood

F64 = torch.float64


def _perturbed(dim: int = 4, num_layers: int = 3, seed: int = 0, num_runs: int = 1,
               scale: float = 0.5) -> DequantizedFlow:
    """A flow with parameters moved away from the identity initialisation."""
    torch.manual_seed(seed)
    family = DequantizedFlow(dim, num_layers, hidden=8, num_runs=num_runs)
    with torch.no_grad():
        for p in family.parameters():
            p.add_(scale * torch.randn_like(p))
    return family


def _inverse_map(family: DequantizedFlow, run: int | None = None):
    """v -> z, the base point of v, through every layer's inverse (one run)."""
    transforms = family.flow.transforms() + family.squash()

    def inverse(v: torch.Tensor) -> torch.Tensor:
        z = v if run is None else v.expand(family.num_runs, -1)
        for t in reversed(transforms):
            z = t.with_cache(0).inv(z) if hasattr(t, "with_cache") else t.inv(z)
        return z if run is None else z[run]
    return inverse


@pytest.mark.parametrize("num_runs", [1, 3])
def test_log_prob_matches_autograd_jacobian(num_runs):
    family = _perturbed(num_runs=num_runs)
    torch.manual_seed(1)
    v = 2.0 * torch.rand(5, 4, dtype=F64)
    with torch.no_grad():
        log_p = family.distribution().log_prob(v[:, None, :] if num_runs > 1 else v)
    base = family.flow.base()
    for r in range(num_runs):
        inverse = _inverse_map(family, r if num_runs > 1 else None)
        for i, vi in enumerate(v):
            z = inverse(vi)
            log_det = torch.linalg.slogdet(jacobian(inverse, vi))[1]
            base_r = base.log_prob(z.expand(num_runs, -1))[r] if num_runs > 1 \
                else base.log_prob(z)
            expected = base_r + log_det
            got = log_p[i, r] if num_runs > 1 else log_p[i]
            assert abs(float((got - expected).detach())) < 1e-10


def test_inverse_undoes_forward():
    family = _perturbed()
    with torch.no_grad():
        v = family.distribution().sample((20,))
        z = _inverse_map(family)(v)
        y = z
        for t in family.flow.transforms() + family.squash():
            y = t.with_cache(0)(y) if hasattr(t, "with_cache") else t(y)
    assert float((y - v).abs().max()) < 1e-12


def test_density_integrates_to_one_in_2d():
    family = _perturbed(dim=2, num_layers=3, scale=0.3)
    limit = 2 / (1 - 2 * family.alpha) / 2     # half-width of the box (-a, 2 + a)
    n = 801
    axis = torch.linspace(1 - limit, 1 + limit, n, dtype=F64)[1:-1]
    grid = Grid2D(axis, torch.cartesian_prod(axis, axis), float(axis[1] - axis[0]) ** 2)
    with torch.no_grad():
        mass = math.exp(grid.log_integral(family.distribution().log_prob(grid.points)))
    assert abs(mass - 1) < 2e-3


def _cell_quadrature(family, cell, m=200):
    """(log P(x), E_u log p(x + u)) on one 2-D cell by the midpoint rule."""
    mid = (torch.arange(m, dtype=F64) + 0.5) / m
    u = torch.cartesian_prod(mid, mid)
    with torch.no_grad():
        log_p = family.distribution().log_prob(cell + u)
    return float(torch.logsumexp(log_p, 0) - 2 * math.log(m)), float(log_p.mean())


def test_bound_below_cell_probability_and_monte_carlo_agrees():
    family = _perturbed(dim=2, num_layers=3, scale=0.3)
    cells = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=F64)
    total = 0.0
    torch.manual_seed(3)
    samples = dequantized_log_densities(family.distribution(), cells, 4000)
    for i, cell in enumerate(cells):
        log_prob_cell, bound = _cell_quadrature(family, cell)
        total += math.exp(log_prob_cell)
        assert bound < log_prob_cell
        mean, se = float(samples[:, i].mean()), float(samples[:, i].std() / 4000**0.5)
        assert abs(mean - bound) < 4 * se
        iw = float(torch.logsumexp(samples[:, i], 0) - math.log(4000))
        assert bound < iw < log_prob_cell + 4 * se
    assert 0.9 < total <= 1.0


def test_fit_maximum_likelihood_raises_the_bound():
    torch.manual_seed(0)
    x = (torch.rand(200, 4) < torch.tensor([0.1, 0.9, 0.5, 0.2])).to(F64)
    x[:, 3] = x[:, 2]                      # a dependence a factorised model misses
    family = DequantizedFlow(4, 2, hidden=8, num_runs=2)
    before = dequantized_log_densities(family.distribution(), x, 20).mean((0, 1))
    fit_maximum_likelihood(family, dequantize(x, copies=10), num_steps=300, lr=0.01,
                           batch_size=100)
    after = dequantized_log_densities(family.distribution(), x, 20).mean((0, 1))
    assert bool((after > before + 0.5).all())


def test_runs_are_scored_at_their_own_noise():
    # each run of a batch is scored at its own u's (shared u's, drawn as (7, 2, D) and
    # broadcast over the runs, would give other numbers and correlated runs)
    family = _perturbed(dim=4, num_layers=2, num_runs=3)
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]], dtype=F64)
    torch.manual_seed(5)
    log_p = dequantized_log_densities(family.distribution(), x, 7)
    assert log_p.shape == (7, 2, 3)
    torch.manual_seed(5)
    u = torch.rand(7, 2, 3, 4, dtype=F64)
    assert float((u[:, :, 0] - u[:, :, 1]).abs().min()) > 0
    with torch.no_grad():
        expected = family.distribution().log_prob(x[None, :, None, :] + u)
    assert torch.allclose(log_p, expected, rtol=0, atol=1e-10)


def test_dequantize_and_quantize():
    x = torch.tensor([[0.0, 1.0, 2.0]], dtype=F64)
    v = dequantize(x, levels=3, copies=5)
    assert v.shape == (5, 3)
    assert bool(((v - x) >= 0).all() and ((v - x) < 1).all())
    assert torch.equal(quantize(v, levels=3), x.expand(5, 3))
    assert torch.equal(quantize(torch.tensor([-0.1, 2.05]), levels=2),
                       torch.tensor([0.0, 1.0], dtype=F64))


def test_bits_per_dim():
    assert bits_per_dim(-64 * math.log(2), 64) == pytest.approx(1.0)
    assert torch.allclose(bits_per_dim(torch.tensor([-math.log(2)]), 1),
                          torch.tensor([1.0]))
    # NumPy real scalars (a mean over runs) are numbers: the same value as a float
    assert bits_per_dim(np.float32(-32 * math.log(2)), 64) == pytest.approx(0.5)
    assert bits_per_dim(np.int64(-64), 64) == pytest.approx(64 / (64 * math.log(2)))
    assert isinstance(bits_per_dim(np.float32(-1.0), 64), float)


_FAMILY = DequantizedFlow(2, 1, hidden=4)
_X = torch.tensor([[0.0, 1.0]], dtype=F64)

BAD_INPUTS = {
    "DequantizedFlow": [
        (lambda: DequantizedFlow(1, 2), ValueError, r"dim"),
        (lambda: DequantizedFlow(4, 2, levels=1), ValueError, r"levels"),
        (lambda: DequantizedFlow(4, 2, alpha=0.5), ValueError, r"alpha must lie in"),
        (lambda: DequantizedFlow(4, 2, alpha=-0.1), ValueError, r"alpha"),
        (lambda: DequantizedFlow(4, -1), ValueError, r"num_layers"),
    ],
    "dequantize": [
        (lambda: dequantize([[0.0, 1.0]]), TypeError, r"x must be a torch.Tensor"),
        (lambda: dequantize(torch.tensor([[0.5, 1.0]])), ValueError,
         r"x must hold integers"),
        (lambda: dequantize(torch.tensor([[0.0, 2.0]])), ValueError, r"x must hold integers"),
        (lambda: dequantize(torch.tensor([0.0, 1.0])), ValueError, r"x must have shape"),
        (lambda: dequantize(_X, copies=0), ValueError, r"copies"),
    ],
    "quantize": [
        (lambda: quantize([0.5]), TypeError, r"v must be a torch.Tensor"),
        (lambda: quantize(torch.tensor([1])), TypeError, r"v must be a floating"),
        (lambda: quantize(torch.tensor([math.nan])), ValueError, r"v must be finite"),
        (lambda: quantize(torch.tensor([0.5]), levels=0), ValueError, r"levels"),
    ],
    "dequantized_log_densities": [
        (lambda: dequantized_log_densities("p", _X, 2), TypeError, r"distribution must be"),
        (lambda: dequantized_log_densities(_FAMILY.distribution(),
                                           torch.zeros(1, 3, dtype=F64), 2),
         ValueError, r"distribution must have event shape"),
        (lambda: dequantized_log_densities(_FAMILY.distribution(), _X, 0), ValueError,
         r"num_samples"),
        (lambda: dequantized_log_densities(_FAMILY.distribution(), _X + 0.5, 2), ValueError,
         r"x must hold integers"),
        (lambda: dequantized_log_densities(_FAMILY.distribution(), _X, 2, max_batch=0),
         ValueError, r"max_batch"),
    ],
    "bits_per_dim": [
        (lambda: bits_per_dim("1", 64), TypeError, r"nats must be"),
        (lambda: bits_per_dim(np.bool_(True), 64), TypeError, r"nats must be"),
        (lambda: bits_per_dim(np.float64("nan"), 64), ValueError, r"nats must be finite"),
        (lambda: bits_per_dim(math.inf, 64), ValueError, r"nats must be finite"),
        (lambda: bits_per_dim(torch.tensor([1]), 64), TypeError, r"nats must be"),
        (lambda: bits_per_dim(-1.0, 0), ValueError, r"dim"),
    ],
}
