"""Tests of elbo_lib.flows: log-determinants, inverses, densities, test energies."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.distributions import Independent, Normal
from torch.distributions.transforms import AffineTransform, ComposeTransform

from elbo_lib.flows import (
    FLOW_KINDS,
    MADE,
    AffineCoupling,
    AffineCouplingTransform,
    Autoregressive,
    AutoregressiveTransform,
    FlowFamily,
    Grid2D,
    PlanarStackTransform,
    PlanarTransform,
    RadialTransform,
    fit_maximum_likelihood,
    log_density_u1,
    log_density_u2,
    log_density_u3,
    log_density_u4,
    square_grid,
)

F64 = torch.float64


def _perturbed_family(kind: str, dim: int, num_layers: int = 3, seed: int = 0,
                      scale: float = 0.7) -> FlowFamily:
    """A flow with parameters moved well away from the (near-)identity initialisation."""
    torch.manual_seed(seed)
    family = FlowFamily(dim, num_layers, kind, hidden=8)
    with torch.no_grad():
        for p in family.parameters():
            p.add_(scale * torch.randn_like(p))
    return family


@pytest.mark.parametrize("kind", FLOW_KINDS)
@pytest.mark.parametrize("dim", [2, 3])
def test_log_det_matches_autograd_jacobian(kind, dim):
    family = _perturbed_family(kind, dim)
    x = torch.randn(6, dim, dtype=F64)
    for transform in family.transforms():
        fresh = transform.with_cache(0)
        y = fresh(x)
        log_det = fresh.log_abs_det_jacobian(x, y)
        assert log_det.shape == (6,)
        exact = torch.stack([torch.linalg.slogdet(jacobian(fresh, xi))[1] for xi in x])
        torch.testing.assert_close(log_det, exact, rtol=0, atol=1e-12)
        x = y.detach()


@pytest.mark.parametrize("wu_raw", [-27.6, -5.0, 0.0, 3.0, 1e4])
def test_planar_inverse_at_extreme_slopes(wu_raw):
    """The planar inverse solves a + wu tanh(a + b) = w^T y to rounding error for wu from
    -1 + 1e-12 (g' nearly 0 where a + b = 0: Newton alone would jump, halving must take
    over) to 1e4 (a steep tanh), on points on both sides of and at the kink."""
    w = torch.tensor([1.0, 0.0], dtype=F64)
    u = torch.tensor([wu_raw, 0.5], dtype=F64)
    b = torch.tensor(0.3, dtype=F64)
    layer = PlanarTransform(u, w, b, cache_size=0)
    wu = float(layer.wu)
    x = torch.cat([torch.linspace(-8, 8, 401, dtype=F64)[:, None].expand(-1, 2),
                   torch.tensor([[-0.3, 1.0], [-0.3 + 1e-9, 0.0]], dtype=F64)])
    y = layer(x)
    back = layer.inv(y)
    a = back @ w
    residual = (a + wu * torch.tanh(a + b) - y @ w).abs()
    # a = w^T (y - u_hat tanh) carries the rounding of |y| <= 8 + |wu|, and g' <= 1 + |wu|
    bound = 8 * torch.finfo(F64).eps * (1 + abs(wu)) * (8 + abs(wu))
    assert float(residual.max()) <= bound
    if wu > -0.5:      # well conditioned: the inverse recovers x itself
        torch.testing.assert_close(back, x, rtol=0, atol=1e-12 * (1 + abs(wu)))


@pytest.mark.parametrize("kind", FLOW_KINDS)
def test_inverse_undoes_forward(kind):
    family = _perturbed_family(kind, 3, seed=1)
    x = 2 * torch.randn(50, 3, dtype=F64)
    for transform in family.transforms():
        fresh = transform.with_cache(0)
        y = fresh(x)
        torch.testing.assert_close(fresh.inv(y), x, rtol=0, atol=1e-10)
        x = y.detach()


def test_planar_log_det_by_hand():
    # w = (1, 0), u = (0, 1): w^T u = 0, m(0) = -1 + log 2, u_hat = (log 2 - 1, 1)
    u = torch.tensor([0.0, 1.0], dtype=F64)
    w = torch.tensor([1.0, 0.0], dtype=F64)
    log2 = math.log(2.0)
    # b = 0 at z = 0: tanh' = 1, det = 1 + w^T u_hat = log 2; f(0) = 0
    t = PlanarTransform(u, w, torch.tensor(0.0, dtype=F64), cache_size=0)
    z = torch.zeros(2, dtype=F64)
    assert float(t.log_abs_det_jacobian(z, t(z))) == pytest.approx(math.log(log2), abs=1e-14)
    torch.testing.assert_close(t.u_hat, torch.tensor([log2 - 1, 1.0], dtype=F64))
    # b = atanh(1/2): tanh = 1/2, tanh' = 3/4, det = 1 + 3/4 (log 2 - 1); f(0) = u_hat / 2
    t = PlanarTransform(u, w, torch.tensor(math.atanh(0.5), dtype=F64), cache_size=0)
    assert float(t.log_abs_det_jacobian(z, t(z))) == pytest.approx(
        math.log(1 + 0.75 * (log2 - 1)), abs=1e-14)
    torch.testing.assert_close(t(z), torch.tensor([(log2 - 1) / 2, 0.5], dtype=F64))


def test_planar_constraint_keeps_invertibility():
    # raw u anti-parallel to w would give w^T u = -4 < -1; u_hat has w^T u_hat > -1
    w = torch.tensor([2.0, 0.0], dtype=F64)
    u = torch.tensor([-2.0, 1.0], dtype=F64)
    t = PlanarTransform(u, w, torch.tensor(0.3, dtype=F64))
    assert float(w @ t.u_hat) > -1
    assert float(w @ t.u_hat) == pytest.approx(-1 + math.log1p(math.exp(-4.0)), rel=1e-12)


def test_radial_beta_at_least_minus_alpha():
    t = RadialTransform(torch.zeros(2, dtype=F64), torch.tensor(0.5, dtype=F64),
                        torch.tensor(-30.0, dtype=F64))
    assert float(t.beta) >= -float(t.alpha)
    x = torch.randn(20, 2, dtype=F64)
    assert torch.all(torch.isfinite(t.log_abs_det_jacobian(x, t(x))))


def test_planar_stack_equals_single_layers():
    torch.manual_seed(3)
    u, w, b = torch.randn(4, 2, dtype=F64), torch.randn(4, 2, dtype=F64), torch.randn(4, dtype=F64)
    x = torch.randn(7, 2, dtype=F64)
    for k, layer in enumerate(PlanarTransform.stack(u, w, b, cache_size=0)):
        single = PlanarTransform(u[k], w[k], b[k], cache_size=0)
        torch.testing.assert_close(layer(x), single(x), rtol=0, atol=1e-15)


@pytest.mark.parametrize("cls_name", ["planar", "radial"])
def test_planar_radial_match_pyro(cls_name):
    pyro_module = pytest.importorskip(f"pyro.distributions.transforms.{cls_name}")
    torch.manual_seed(4)
    x = torch.randn(9, 2, dtype=F64)
    if cls_name == "planar":
        u, w, b = torch.randn(2, dtype=F64), torch.randn(2, dtype=F64), torch.randn(1, dtype=F64)
        ours = PlanarTransform(u, w, b[0], cache_size=0)
        theirs = pyro_module.ConditionedPlanar((b, u, w))
    else:
        z0, a, bt = torch.randn(2, dtype=F64), torch.randn(1, dtype=F64), torch.randn(1, dtype=F64)
        ours = RadialTransform(z0, a[0], bt[0], cache_size=0)
        theirs = pyro_module.ConditionedRadial((z0, a, bt))
    y = theirs(x)
    torch.testing.assert_close(ours(x), y, rtol=0, atol=1e-14)
    torch.testing.assert_close(ours.log_abs_det_jacobian(x, y),
                               theirs.log_abs_det_jacobian(x, y), rtol=0, atol=1e-14)


def test_coupling_with_constant_conditioner_is_torch_affine():
    s = torch.tensor([0.3, -0.8, 1.1], dtype=F64)
    t = torch.tensor([1.0, 2.0, -0.5], dtype=F64)
    mask = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    layer = AffineCouplingTransform(lambda z: (s.expand_as(z), t.expand_as(z)), mask,
                                    cache_size=0)
    affine = AffineTransform(loc=t * (1 - mask), scale=torch.exp(s * (1 - mask)), event_dim=1)
    x = torch.randn(5, 3, dtype=F64)
    torch.testing.assert_close(layer(x), affine(x))
    torch.testing.assert_close(layer.log_abs_det_jacobian(x, layer(x)),
                               affine.log_abs_det_jacobian(x, affine(x)))


@pytest.mark.parametrize("kind", FLOW_KINDS)
def test_flow_log_prob_is_compose_transform(kind):
    family = _perturbed_family(kind, 2, seed=5)
    q = family.distribution()
    z = q.rsample((11,))
    compose = ComposeTransform([t.with_cache(0) for t in family.transforms()])
    z0 = compose.inv(z)
    expected = family.base().log_prob(z0) - compose.log_abs_det_jacobian(z0, z)
    torch.testing.assert_close(q.log_prob(z), expected, rtol=0, atol=1e-10)
    # arbitrary points go through the inverse: the same formula
    fresh = torch.randn(4, 2, dtype=F64)
    torch.testing.assert_close(family.distribution().log_prob(fresh),
                               family.base().log_prob(compose.inv(fresh))
                               - compose.log_abs_det_jacobian(compose.inv(fresh), fresh),
                               rtol=0, atol=1e-10)


def test_zero_layers_is_the_diagonal_gaussian():
    family = FlowFamily(3, 0, init_scale=0.5)
    z = torch.randn(4, 3, dtype=F64)
    expected = Independent(Normal(torch.zeros(3, dtype=F64), 0.5), 1).log_prob(z)
    torch.testing.assert_close(family.distribution().log_prob(z), expected)


@pytest.mark.parametrize("kind", FLOW_KINDS)
def test_density_integrates_to_one(kind):
    family = _perturbed_family(kind, 2, num_layers=4, seed=6, scale=0.2)
    grid = square_grid(12.0, 481)
    with torch.no_grad():
        log_q = family.distribution().log_prob(grid.points)
    # 1e-4: the radial layers' density has a kink at their centres (|z - z0|)
    assert abs(grid.log_integral(log_q)) < 1e-4


def test_rsample_is_differentiable_and_log_prob_uses_cache():
    family = _perturbed_family("planar", 2, seed=7)
    q = family.distribution()
    z = q.rsample((8,))
    loss = (z**2).sum() + q.log_prob(z).sum()
    loss.backward()
    assert all(p.grad is not None and torch.all(torch.isfinite(p.grad))
               for p in family.parameters())


def test_made_is_autoregressive():
    torch.manual_seed(8)
    made = MADE(4, hidden=12)
    with torch.no_grad():
        for p in made.parameters():
            p.add_(torch.randn_like(p))
    z = torch.randn(4, dtype=F64)
    jac_m = jacobian(lambda v: made(v)[0], z)
    jac_s = jacobian(lambda v: made(v)[1], z)
    upper = torch.triu(torch.ones(4, 4, dtype=torch.bool))   # output i on inputs >= i
    assert torch.all(jac_m[upper] == 0) and torch.all(jac_s[upper] == 0)
    assert torch.any(jac_m[~upper] != 0)


def test_log_density_u1_values():
    # on the ring at (2, 0): ring term 0, lobes log(1 + exp(-1/2 (4/0.6)^2))
    z = torch.tensor([[2.0, 0.0], [0.0, 2.0]], dtype=F64)
    expected = torch.tensor([math.log1p(math.exp(-0.5 * (4 / 0.6) ** 2)),
                             math.log(2 * math.exp(-0.5 * (2 / 0.6) ** 2))], dtype=F64)
    torch.testing.assert_close(log_density_u1(z), expected)


@pytest.mark.parametrize("log_density", [log_density_u2, log_density_u3, log_density_u4])
def test_wave_densities_confined_are_integrable(log_density):
    # the wave's slices all have the same mass: confine=c multiplies by N(z1; 0, c^2)
    # up to sqrt(2 pi) c, so the integral converges; U2's is 2 pi c 0.4 exactly
    small, large = square_grid(8.0, 201), square_grid(10.0, 251)
    a = small.log_integral(log_density(small.points, confine=1.5))
    b = large.log_integral(log_density(large.points, confine=1.5))
    assert abs(a - b) < 1e-6
    if log_density is log_density_u2:
        assert a == pytest.approx(math.log(2 * math.pi * 1.5 * 0.4), abs=1e-6)


def test_fit_maximum_likelihood_raises_the_likelihood():
    torch.manual_seed(9)
    samples = torch.randn(500, 2, dtype=F64) * torch.tensor([2.0, 0.5], dtype=F64) + 1.0
    family = FlowFamily(2, 2, "coupling", hidden=8)
    trace = fit_maximum_likelihood(family, samples, num_steps=300, lr=0.03, batch_size=100)
    assert trace.shape == (300,)
    # the exact Gaussian is in the family: its mean log-likelihood is the MLE's limit
    exact = Independent(Normal(torch.tensor([1.0, 1.0], dtype=F64),
                               torch.tensor([2.0, 0.5], dtype=F64)), 1)
    with torch.no_grad():
        fitted = float(family.distribution().log_prob(samples).mean())
    assert fitted > float(exact.log_prob(samples).mean()) - 0.05
    assert trace[-20:].mean() > trace[0] + 1.0


# ----------------------------------------------------------------------------- bad input
# the contract of issue 16: tests/test_contract.py runs every case
U = torch.ones(2, dtype=F64)
B = torch.tensor(0.0, dtype=F64)
X3 = torch.ones(5, 3, dtype=F64)          # the wrong last dimension for a 2-D flow


def _layer(kind):
    return FlowFamily(2, 2, kind).transforms()[0]


BAD_INPUTS = {
    "PlanarTransform": [
        (lambda: PlanarTransform([1.0, 0.0], U, B), TypeError, r"u must be a torch.Tensor"),
        (lambda: PlanarTransform(U, torch.zeros(2, dtype=F64), B), ValueError,
         r"w must be nonzero"),
        (lambda: PlanarTransform(U, torch.ones(3, dtype=F64), B), ValueError,
         r"u and w must have the same last dim"),
        (lambda: PlanarTransform(U, U, B, cache_size=2), ValueError, r"cache_size"),
        (lambda: PlanarTransform(torch.ones(2, dtype=torch.int64), U, B), TypeError,
         r"u must be a floating"),
    ],
    "PlanarTransform.stack": [
        (lambda: PlanarTransform.stack(U, U, B), ValueError, r"u, w must have shape"),
        (lambda: PlanarTransform.stack(torch.ones(3, 2), torch.ones(3, 2), torch.ones(2)),
         ValueError, r"b shape \(K, ...\)"),
    ],
    "PlanarTransform.log_abs_det_jacobian": [
        (lambda: PlanarTransform(U, U, B).log_abs_det_jacobian(X3, X3), ValueError,
         r"x must have last dimension 2"),
    ],
    "PlanarTransform.with_cache": [
        (lambda: PlanarTransform(U, U, B).with_cache(3), ValueError, r"cache_size"),
    ],
    "PlanarStackTransform": [
        (lambda: PlanarStackTransform(U, U, B), ValueError, r"u must have at least 2"),
        (lambda: PlanarStackTransform(torch.ones(3, 2), torch.ones(3, 2), torch.ones(2)),
         ValueError, r"b shape"),
        (lambda: PlanarStackTransform(torch.ones(3, 2), torch.zeros(3, 2), torch.ones(3)),
         ValueError, r"w must be nonzero"),
    ],
    "PlanarStackTransform.log_abs_det_jacobian": [
        (lambda: _layer("planar").log_abs_det_jacobian(X3, X3), ValueError,
         r"x must have last dimension 2"),
    ],
    "PlanarStackTransform.with_cache": [
        (lambda: _layer("planar").with_cache(-1), ValueError, r"cache_size"),
    ],
    "RadialTransform": [
        (lambda: RadialTransform(torch.tensor(1.0, dtype=F64), B, B), ValueError,
         r"z0 must have"),
        (lambda: RadialTransform(U, "a", B), TypeError, r"alpha_raw must be a torch.Tensor"),
        (lambda: RadialTransform(U, B, B, cache_size=5), ValueError, r"cache_size"),
    ],
    "RadialTransform.log_abs_det_jacobian": [
        (lambda: _layer("radial").log_abs_det_jacobian(X3, X3), ValueError,
         r"x must have last dimension 2"),
    ],
    "RadialTransform.with_cache": [
        (lambda: _layer("radial").with_cache(2), ValueError, r"cache_size"),
    ],
    "AffineCouplingTransform": [
        (lambda: AffineCouplingTransform(None, torch.tensor([1.0, 0.0])), TypeError,
         r"conditioner must be callable"),
        (lambda: AffineCouplingTransform(lambda z: (z, z), torch.tensor([1.0, 1.0])),
         ValueError, r"mask must contain at least one 0"),
        (lambda: AffineCouplingTransform(lambda z: (z, z), torch.tensor([1.0, 0.5])),
         ValueError, r"mask must be a 1-D tensor of zeros and ones"),
    ],
    "AffineCouplingTransform.log_abs_det_jacobian": [
        (lambda: _layer("coupling").log_abs_det_jacobian(X3, X3), ValueError,
         r"x must have last dimension 2"),
    ],
    "AffineCouplingTransform.with_cache": [
        (lambda: _layer("coupling").with_cache(2), ValueError, r"cache_size"),
    ],
    "AutoregressiveTransform": [
        (lambda: AutoregressiveTransform(torch.nn.Linear(2, 4)), TypeError, r"made must be"),
        (lambda: AutoregressiveTransform(MADE(2), cache_size=4), ValueError, r"cache_size"),
    ],
    "AutoregressiveTransform.log_abs_det_jacobian": [
        (lambda: _layer("autoregressive").log_abs_det_jacobian(X3, X3), ValueError,
         r"x must have last dimension 2"),
    ],
    "AutoregressiveTransform.with_cache": [
        (lambda: _layer("autoregressive").with_cache(7), ValueError, r"cache_size"),
    ],
    "MADE": [
        (lambda: MADE(1), ValueError, r"dim must be >= 2"),
        (lambda: MADE(4, hidden=2), ValueError, r"hidden must be >= 3"),
        (lambda: MADE(2, max_log_scale=0.0), ValueError, r"max_log_scale"),
    ],
    "MADE.forward": [
        (lambda: MADE(2)(X3), ValueError, r"z must have last dimension 2"),
    ],
    "AffineCoupling": [
        (lambda: AffineCoupling(1), ValueError, r"dim must be >= 2"),
        (lambda: AffineCoupling(2, index=-1), ValueError, r"index must be >= 0"),
        (lambda: AffineCoupling(2, hidden=0), ValueError, r"hidden must be >= 1"),
        (lambda: AffineCoupling(2, max_log_scale=-1.0), ValueError, r"max_log_scale"),
    ],
    "Autoregressive": [
        (lambda: Autoregressive(1), ValueError, r"dim must be >= 2"),
        (lambda: Autoregressive(2, index=1.5), TypeError, r"index must be an integer"),
    ],
    "FlowFamily": [
        (lambda: FlowFamily(2, 3, "spline"), ValueError, r"kind must be one of"),
        (lambda: FlowFamily(2, -1), ValueError, r"num_layers must be >= 0"),
        (lambda: FlowFamily(0, 1), ValueError, r"dim must be >= 1"),
        (lambda: FlowFamily(2, 1, init_scale=0.0), ValueError, r"init_scale"),
        (lambda: FlowFamily(1, 1, "coupling"), ValueError, r"dim must be >= 2"),
    ],
    "fit_maximum_likelihood": [
        (lambda: fit_maximum_likelihood(torch.nn.Linear(2, 2), torch.ones(3, 2)), TypeError,
         r"family must be"),
        (lambda: fit_maximum_likelihood(FlowFamily(2, 1), torch.ones(3)), ValueError,
         r"samples must have"),
        (lambda: fit_maximum_likelihood(FlowFamily(2, 1), torch.ones(3, 2), num_steps=0),
         ValueError, r"num_steps must be >= 1"),
        (lambda: fit_maximum_likelihood(FlowFamily(2, 1), torch.ones(3, 2), lr=-1.0),
         ValueError, r"lr must be"),
        (lambda: fit_maximum_likelihood(FlowFamily(2, 1), torch.full((3, 2), float("nan"))),
         ValueError, r"samples must be finite"),
    ],
    "log_density_u1": [
        (lambda: log_density_u1(torch.ones(4, 3, dtype=F64)), ValueError,
         r"z must have last dimension 2"),
        (lambda: log_density_u1(torch.tensor([[float("nan"), 0.0]])), ValueError,
         r"z must be finite"),
        (lambda: log_density_u1([[0.0, 1.0]]), TypeError, r"z must be a torch.Tensor"),
    ],
    "log_density_u2": [
        (lambda: log_density_u2(torch.ones(4, 2), confine=-1.0), ValueError, r"confine"),
        (lambda: log_density_u2(torch.ones(4, 1)), ValueError, r"z must have last dim"),
    ],
    "log_density_u3": [
        (lambda: log_density_u3(torch.ones(4, 2), confine=0.0), ValueError, r"confine"),
        (lambda: log_density_u3(torch.ones(2, dtype=torch.int64)), TypeError, r"z must be"),
    ],
    "log_density_u4": [
        (lambda: log_density_u4(torch.ones(4, 2), confine=float("inf")), ValueError,
         r"confine"),
        (lambda: log_density_u4(torch.ones(4, 5)), ValueError, r"z must have last dim"),
    ],
    "square_grid": [
        (lambda: square_grid(0.0, 11), ValueError, r"limit must be"),
        (lambda: square_grid(1.0, 2), ValueError, r"num_points must be >= 3"),
        (lambda: square_grid(1.0, 5.5), TypeError, r"num_points must be an integer"),
    ],
    "Grid2D": [
        (lambda: Grid2D(torch.ones(3), torch.ones(4, 2), 1.0), ValueError,
         r"points must have shape \(9, 2\)"),
        (lambda: Grid2D(torch.ones(3, 1), torch.ones(9, 2), 1.0), ValueError,
         r"axis must be 1-D"),
        (lambda: Grid2D(torch.ones(3), torch.ones(9, 2), 0.0), ValueError, r"cell_area"),
    ],
    "Grid2D.log_integral": [
        (lambda: square_grid(1.0, 5).log_integral(torch.zeros(24)), ValueError,
         r"log_values must have 25 entries"),
    ],
    "Grid2D.integral": [
        (lambda: square_grid(1.0, 5).integral(torch.zeros(3)), ValueError,
         r"values must have 25 entries"),
    ],
    "Grid2D.matrix": [
        (lambda: square_grid(1.0, 5).matrix(torch.zeros(30)), ValueError,
         r"values must have 25 entries"),
    ],
    "Grid2D.image": [
        (lambda: square_grid(1.0, 5).image(torch.zeros(5)), ValueError,
         r"values must have 25 entries"),
    ],
}


def test_bad_input_shape_at_call():
    t = PlanarTransform(U, U, B)
    with pytest.raises(ValueError, match="x must have last dimension 2"):
        t(torch.ones(5, 3, dtype=F64))
    grid = square_grid(1.0, 5)
    with pytest.raises(ValueError, match="log_values must have 25 entries"):
        grid.log_integral(torch.zeros(24))


# ----------------------------------------------------------------- fused planar stack
@pytest.mark.parametrize(("z_shape", "param_shape"), [
    ((5, 2), (4, 2)),          # one flow, a batch of samples
    ((3, 5, 2), (4, 5, 2)),    # one flow per data point (amortised), 3 samples each
    ((3, 1, 2), (4, 5, 2)),    # samples broadcast against the data points
])
def test_planar_stack_transform_matches_compose_and_gradcheck(z_shape, param_shape):
    torch.manual_seed(10)
    u = torch.randn(param_shape, dtype=F64, requires_grad=True)
    w = torch.randn(param_shape, dtype=F64, requires_grad=True)
    b = torch.randn(param_shape[:-1], dtype=F64, requires_grad=True)
    z = torch.randn(z_shape, dtype=F64, requires_grad=True)

    def fused(z, u, w, b):
        t = PlanarStackTransform(u, w, b, cache_size=0)
        y = t(z)
        return y, t.log_abs_det_jacobian(z, y)

    compose = ComposeTransform(PlanarTransform.stack(u, w, b, cache_size=0))
    y_ref = compose(z)
    y, log_det = fused(z, u, w, b)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-13)
    torch.testing.assert_close(log_det, compose.log_abs_det_jacobian(z, y_ref),
                               rtol=0, atol=1e-13)
    torch.testing.assert_close(PlanarStackTransform(u, w, b).inv(y.detach()),
                               z.detach().expand_as(y), rtol=0, atol=1e-9)
    assert torch.autograd.gradcheck(fused, (z, u, w, b))


@pytest.mark.parametrize(("z_shape", "param_shape"), [
    ((32, 20, 2), (8, 20, 2)),      # samples of R runs (chapter 7's fits)
    ((5, 64, 2), (3, 5, 64, 2)),    # one set of layers per image of R models (the VAE)
    ((7, 2, 2), (32, 2, 2)),        # two runs, a long stack
])
def test_planar_stack_compiled_backward_is_the_numpy_loop_bit_for_bit(
        z_shape, param_shape, monkeypatch):
    # the compiled backward promises the NumPy loop's bits, so that a trained result
    # does not depend on which path ran: gradients of every input compared exactly
    from elbo_lib.flows import transforms

    def gradients():
        torch.manual_seed(12)
        u, w = torch.randn(param_shape, dtype=F64), torch.randn(param_shape, dtype=F64)
        b = torch.randn(param_shape[:-1], dtype=F64)
        z = torch.randn(z_shape, dtype=F64)
        inputs = [t.requires_grad_() for t in (z, u, w, b)]
        t = PlanarStackTransform(u, w, b, cache_size=0)
        y = t(z)
        weight = torch.randn(y.shape, dtype=F64)
        ((y * weight).sum() + 0.7 * t.log_abs_det_jacobian(z, y).sum()).backward()
        return [x.grad for x in inputs]

    assert transforms._compiled_backward_applies(
        *(torch.zeros(z_shape, dtype=F64).numpy(), torch.zeros(z_shape[:-1], dtype=F64).numpy(),
          torch.zeros(param_shape, dtype=F64).numpy(),
          [torch.zeros(z_shape, dtype=F64).numpy()], z_shape))
    compiled = gradients()
    monkeypatch.setattr(transforms, "_compiled_backward_applies", lambda *args: False)
    for a, b in zip(compiled, gradients(), strict=True):
        assert torch.equal(a, b)


def test_planar_stack_inverse_without_gradient_matches_layer_by_layer():
    # the compiled no-gradient inverse (a quadrature grid's log_prob) against the
    # differentiable layer-by-layer one and the forward pass's log-determinant, with
    # broadcasting as on a grid: points (n, 1, D) under R runs' layers (K, R, D)
    torch.manual_seed(11)
    u, w = 1.5 * torch.randn(6, 3, 2, dtype=F64), torch.randn(6, 3, 2, dtype=F64)
    b = torch.randn(6, 3, dtype=F64)
    y = 3 * torch.randn(500, 1, 2, dtype=F64)
    layered = y.expand(500, 3, 2)
    for layer in reversed(PlanarTransform.stack(u, w, b, cache_size=0)):
        layered = layer.inv(layered)
    t = PlanarStackTransform(u, w, b, cache_size=0)
    with torch.no_grad():
        x = t.inv(y)
        log_det = t.log_abs_det_jacobian(x, y)
        forward_log_det = t.with_cache(0).log_abs_det_jacobian(layered, t(layered))
    torch.testing.assert_close(x, layered, rtol=0, atol=1e-11)
    torch.testing.assert_close(log_det, forward_log_det, rtol=0, atol=1e-11)
    assert x.shape == (500, 3, 2) and log_det.shape == (500, 3)
    # parameters that need a gradient keep the differentiable path
    u.requires_grad_(True)
    x_grad = PlanarStackTransform(u, w, b, cache_size=0).inv(y)
    assert x_grad.requires_grad
    torch.testing.assert_close(x_grad.detach(), layered, rtol=0, atol=1e-11)


def test_planar_stack_keeps_float32():
    u, w = torch.randn(3, 2), torch.randn(3, 2)
    t = PlanarStackTransform(u, w, torch.zeros(3))
    z = torch.randn(4, 2)
    y = t(z)
    assert y.dtype == torch.float32 and t.log_abs_det_jacobian(z, y).dtype == torch.float32


def test_grid_matrix_is_meshgrid_ij():
    grid = square_grid(1.0, 5)
    values = grid.points[:, 0] + 10 * grid.points[:, 1]
    z0, z1 = torch.meshgrid(grid.axis, grid.axis, indexing="ij")
    torch.testing.assert_close(torch.from_numpy(grid.matrix(values)), z0 + 10 * z1)
    torch.testing.assert_close(torch.from_numpy(grid.image(values)), (z0 + 10 * z1).T)


def test_wave_energies_match_the_paper_formulas():
    # Rezende & Mohamed (2015), table 1, written out directly
    torch.manual_seed(12)
    z = 3 * torch.randn(50, 2, dtype=F64)
    z1, z2 = z[:, 0], z[:, 1]
    w1 = torch.sin(2 * math.pi * z1 / 4)
    w2 = 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + torch.exp(-(z1 - 1) / 0.3))
    u2 = 0.5 * ((z2 - w1) / 0.4) ** 2
    u3 = -torch.log(torch.exp(-0.5 * ((z2 - w1) / 0.35) ** 2)
                    + torch.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2))
    u4 = -torch.log(torch.exp(-0.5 * ((z2 - w1) / 0.4) ** 2)
                    + torch.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2))
    for log_density, energy in ((log_density_u2, u2), (log_density_u3, u3),
                                (log_density_u4, u4)):
        torch.testing.assert_close(log_density(z), -energy, rtol=0, atol=1e-10)
        torch.testing.assert_close(log_density(z, confine=2.0),
                                   -energy - 0.5 * (z1 / 2.0) ** 2, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------
# R independent flows in one family (num_runs), chapter 7
# --------------------------------------------------------------------------------------
def _member(batch: FlowFamily, r: int) -> FlowFamily:
    """A single-run family holding run r's parameters (the unbatched code path)."""
    single = FlowFamily(batch.dim, batch.num_layers, batch.kind, hidden=8)
    with torch.no_grad():
        single.base_family.mean.copy_(batch.base_family.mean[r])
        single.base_family.raw_std.copy_(batch.base_family.raw_std[r])
        if batch.kind == "planar":
            for name in ("u", "w", "b"):
                getattr(single, name).copy_(getattr(batch, name)[:, r])
        else:
            for mine, theirs in zip(single.layers, batch.layers, strict=True):
                mine.net.inner.weight.copy_(theirs.net.inner.weight[r].T)
                mine.net.inner.bias.copy_(theirs.net.inner.bias[r])
                mine.net.outer.weight.copy_(theirs.net.outer.weight[r].T)
                mine.net.outer.bias.copy_(theirs.net.outer.bias[r])
    return single


@pytest.mark.parametrize("kind", ["planar", "coupling"])
def test_runs_are_independent_flows(kind):
    """log q of each run of a num_runs family (points scored under every run, with run
    dimension 1) equals the single-run family with that run's parameters, and the runs
    differ (each has its own random start)."""
    torch.manual_seed(4)
    batch = FlowFamily(2, 3, kind, hidden=8, num_runs=3)
    with torch.no_grad():
        for p in batch.parameters():
            p.add_(0.3 * torch.randn_like(p))
    points = torch.randn(11, 2, dtype=F64)
    with torch.no_grad():
        log_q = batch.distribution().log_prob(points[:, None, :])
        assert log_q.shape == (11, 3)
        for r in range(3):
            expected = _member(batch, r).distribution().log_prob(points)
            torch.testing.assert_close(log_q[:, r], expected)
    assert not torch.allclose(log_q[:, 0], log_q[:, 1])


def test_runs_fit_by_maximum_likelihood_each_on_its_own_batches():
    """Two coupling runs fitted to samples of N(m, I): each run's mean log-likelihood
    rises to the target's entropy-level value; the trace has one column per run."""
    torch.manual_seed(5)
    target = Independent(Normal(torch.tensor([1.0, -1.0], dtype=F64),
                                torch.ones(2, dtype=F64)), 1)
    samples = target.sample((2000,))
    family = FlowFamily(2, 2, "coupling", hidden=8, num_runs=2)
    trace = fit_maximum_likelihood(family, samples, num_steps=300, lr=0.02,
                                   batch_size=128)
    assert trace.shape == (300, 2)
    with torch.no_grad():
        log_q = family.distribution().log_prob(samples[:, None, :]).mean(0)
    # the best achievable is -entropy of N(m, I) = -(1 + log 2 pi) = -2.838
    assert torch.all((log_q + 1 + math.log(2 * math.pi)).abs() < 0.05)


def test_runs_need_planar_or_coupling_layers():
    with pytest.raises(ValueError, match="num_runs > 1 is implemented for planar and"):
        FlowFamily(2, 2, "radial", num_runs=2)


# -- issue 34: NaN parameters, inputs of the wrong kind to the layers' methods, float32
#    where the layers are float64, divergence of the per-image refinement
def _nan(t):
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


def _seeded_ml_problem():
    """A coupling family and data on which Adam with lr = 1e6 diverges at step 2 (seed 1;
    with some seeds the huge steps stay finite, which is a valid outcome)."""
    torch.manual_seed(1)
    return FlowFamily(2, 2, "coupling"), torch.randn(200, 2, dtype=F64)


_Z = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=F64)

for _name, _cases in {
    "PlanarTransform": [(lambda: PlanarTransform(_nan(U), U, B), ValueError,
                         r"u must be finite"),
                        (lambda: PlanarTransform(U, U.float(), B), TypeError,
                         r"u, w, b must have one dtype")],
    "PlanarStackTransform": [(lambda: PlanarStackTransform(U[None], U[None], _nan(B[None])),
                              ValueError, r"b must be finite")],
    "RadialTransform": [(lambda: RadialTransform(U, _nan(B), B), ValueError,
                         r"alpha_raw must be finite")],
    "PlanarTransform.log_abs_det_jacobian": [
        (lambda: _layer("planar").log_abs_det_jacobian(_Z.numpy(), None), TypeError,
         r"x must be a torch.Tensor")],
    "AffineCouplingTransform.log_abs_det_jacobian": [
        (lambda: FlowFamily(2, 1, "coupling").transforms()[0].log_abs_det_jacobian(
            _Z.to(torch.complex128), None), TypeError, r"x must be a real floating")],
    "MADE.forward": [(lambda: MADE(2)(_Z.numpy()), TypeError, r"z must be a torch.Tensor")],
    "Grid2D.log_integral": [
        (lambda: square_grid(3.0, 5).log_integral(torch.full((25,), math.inf)), ValueError,
         r"log_values must be finite or -inf"),
        (lambda: square_grid(3.0, 5).log_integral(_nan(torch.zeros(25))), ValueError,
         r"log_values must be finite or -inf")],
    "Grid2D.integral": [
        (lambda: square_grid(3.0, 5).integral(_nan(torch.zeros(25))), ValueError,
         r"values must be finite"),
        (lambda: square_grid(3.0, 5).integral(torch.zeros(25, dtype=torch.complex64)),
         TypeError, r"values must be real")],
    "FlowFamily": [(lambda: FlowFamily(2, 2, "planar", hidden=2.5), TypeError,
                    r"hidden must be an integer")],
    "fit_maximum_likelihood": [
        (lambda: fit_maximum_likelihood(*_seeded_ml_problem(), num_steps=50, lr=1e6),
         ValueError, r"stopped at step \d+ of 50: .* smaller lr")],
}.items():
    BAD_INPUTS.setdefault(_name, []).extend(_cases)


def _float32_is_rounded_float64(build):
    """float32 input gives the float64 answer at the float32-rounded input."""
    def check(out):
        torch.testing.assert_close(out, build(_Z.float().double()), rtol=0, atol=0)
    return (lambda: build(_Z.float())), check


def _made_m(z):
    torch.manual_seed(0)
    made = MADE(2, 3)
    torch.nn.init.normal_(made.outer.weight, std=0.3)
    return made(z)[0].detach()


def _ar_log_prob(z):
    torch.manual_seed(0)
    return FlowFamily(2, 2, "autoregressive", hidden=3).distribution().log_prob(z).detach()


def _ml_restored():
    fam, data = _seeded_ml_problem()
    before = [p.detach().clone() for p in fam.parameters()]
    with pytest.raises(ValueError, match="parameters are restored"):
        fit_maximum_likelihood(fam, data, num_steps=50, lr=1e6)
    return before, fam


def _check_ml_restored(out):
    before, fam = out
    assert all(torch.equal(a, b) for a, b in zip(before, fam.parameters(), strict=True))
    trace = fit_maximum_likelihood(fam, torch.randn(50, 2, dtype=F64), num_steps=3)
    assert all(math.isfinite(v) for v in trace)   # the next fit runs


EXTREME_INPUTS = {
    "fit_maximum_likelihood": [(_ml_restored, _check_ml_restored)],
    "MADE.forward": [_float32_is_rounded_float64(_made_m)],
    "FlowFamily": [_float32_is_rounded_float64(_ar_log_prob)],
    "Grid2D.log_integral": [   # zero density but at one point: log of one cell's area
        (lambda: square_grid(3.0, 5).log_integral(
            torch.cat([torch.full((24,), -math.inf, dtype=F64), torch.zeros(1, dtype=F64)])),
         lambda out: math.isclose(out, math.log(1.5**2), rel_tol=1e-15) or pytest.fail(
             f"{out} != log(1.5^2)"))],
}


@pytest.mark.parametrize(("t", "wu", "b"), [
    (4.548945871044227, 6.071922377318458, -0.00039393711967788644),
    (3.3077635334793456, 4.976794263914099, 0.058736061878685575)])
def test_planar_inverse_where_newton_creeps(t, wu, b):
    """Points of a trained flow (chapter 7's grid) where safeguarded Newton kept landing
    just inside one end of the bracket and crept for 200 steps without converging (the
    old solver returned a point whose residual was 5, not rounding); rejects a solver
    without the halving test of the step before last (Press et al.'s rtsafe)."""
    w = torch.tensor([1.0, 0.0], dtype=F64)
    u = torch.tensor([math.log(math.expm1(1 + wu)), 0.0], dtype=F64)   # w^T u_hat = wu
    layer = PlanarTransform(u, w, torch.tensor(b, dtype=F64), cache_size=0)
    assert math.isclose(float(layer.wu), wu, rel_tol=1e-12)
    y = torch.tensor([[t, 0.0]], dtype=F64)
    a = layer.inv(y) @ w
    residual = float((a + layer.wu * torch.tanh(a + b) - t).abs().max())
    assert residual <= 8 * torch.finfo(F64).eps * (1 + wu) * (abs(t) + wu)
