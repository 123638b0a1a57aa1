"""Tests of elbo_lib.variational: families and the one VI loop, against closed forms."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from torch.distributions import (
    AffineTransform,
    Independent,
    Normal,
    TransformedDistribution,
)

from elbo_lib.gaussians import gaussian_kl_full
from elbo_lib.objectives import (
    PathDerivativeELBO,
    PathwiseELBO,
    ScoreControlVariateELBO,
    ScoreFunctionELBO,
)
from elbo_lib.variational import (
    DiagonalGaussian,
    FullRankGaussian,
    RunwiseAdam,
    VariationalFamily,
    best_gaussian_by_quadrature,
    fit_gaussian_vi_parallel,
    fit_vi,
)

# A correlated 2-D Gaussian target p(z | x) = N(m, S): the optimal full-rank q is p itself
# (ELBO = log Z), the optimal diagonal q has the precision's diagonal (Bishop 2006, 10.1.2).
MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
LOG_Z = 3.0  # log_joint = log N(z; m, S) + LOG_Z, so the evidence is exp(3)


def log_joint(z: torch.Tensor) -> torch.Tensor:
    diff = z - MEAN
    quad = (diff @ torch.linalg.inv(COV) * diff).sum(-1)
    return -0.5 * quad - 0.5 * torch.logdet(2 * math.pi * COV) + LOG_Z


class AffineFlow(VariationalFamily):
    """A one-layer 'flow': z = b + a * eps, elementwise, as a TransformedDistribution.

    Written only from torch.distributions, with a cached transform, to show that a family
    that is not one of the library's Gaussians fits through the same loop.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.shift = torch.nn.Parameter(torch.zeros(dim, dtype=torch.float64))
        self.log_scale = torch.nn.Parameter(torch.full((dim,), -1.0, dtype=torch.float64))

    def distribution(self):
        base = Independent(Normal(torch.zeros(self.dim, dtype=torch.float64),
                                  torch.ones(self.dim, dtype=torch.float64)), 1)
        layer = AffineTransform(self.shift, self.log_scale.exp(), event_dim=1, cache_size=1)
        return TransformedDistribution(base, [layer])


def fit(family: VariationalFamily, seed: int, **kwargs):
    """Adam at lr 0.05, then at lr 0.005 (a second fit_vi call continues from the first)
    so that the final iterate's SGD jitter is small against the tolerances below, which
    are about three times the largest error seen over seeds 10-15."""
    torch.manual_seed(seed)
    fit_vi(log_joint, family, num_samples=16, num_steps=300, lr=0.05, eval_every=300,
           eval_samples=16, **kwargs)
    return fit_vi(log_joint, family, num_samples=32, num_steps=300, lr=0.005,
                  eval_every=150, eval_samples=4096, **kwargs)


# KL(q || p) of the fitted q, in closed form, above its minimum over the family: one
# number that any error of mean or covariance raises (a mean off by 0.1 along the
# posterior's narrow axis adds 0.025). Measured over seeds 0-8: at most 0.004.
KL_EXCESS_TOL = 0.01
PRECISION = np.linalg.inv(COV.numpy())
KL_MEAN_FIELD = 0.5 * (np.log(np.diag(PRECISION)).sum() - np.linalg.slogdet(PRECISION)[1])


def _kl_to_target(mean, cov) -> float:
    return gaussian_kl_full(np.asarray(mean), np.asarray(cov), MEAN.numpy(), COV.numpy())


def test_full_rank_family_recovers_the_gaussian_posterior():
    result = fit(FullRankGaussian(2, init_scale=0.5), 0)
    q = result.q
    assert 0 <= _kl_to_target(q.mean.detach().numpy(), q.covariance()) < KL_EXCESS_TOL
    # at q = p the ELBO is log Z; the estimate's error is of order 1/sqrt(4096)*sd(terms)
    assert abs(result.elbo[-1] - LOG_Z) < 0.03
    assert result.steps.tolist() == [0, 150, 300]
    assert result.model_evaluations == 300 * 32


def test_diagonal_family_finds_the_mean_field_optimum():
    result = fit(DiagonalGaussian(2, init_scale=0.5), 1)
    precision = np.linalg.inv(COV.numpy())
    np.testing.assert_allclose(result.q.std().detach().numpy() ** 2,
                               1 / np.diag(precision), rtol=0.15)
    # the gap is KL(q || p) = 0.5 * log(det diag(S^-1)^-1 ... ) in closed form:
    # for the mean-field optimum KL = 0.5 * (sum log Lambda_ii - log det Lambda)
    kl = 0.5 * (np.log(np.diag(precision)).sum() - np.linalg.slogdet(precision)[1])
    assert abs((LOG_Z - result.elbo[-1]) - kl) < 0.06
    excess = _kl_to_target(result.q.mean.detach().numpy(), result.q.covariance()) - kl
    assert 0 <= excess < KL_EXCESS_TOL


def test_a_new_family_plugs_into_fit_vi_without_edits():
    result = fit(AffineFlow(2), 2)
    q = result.q
    np.testing.assert_allclose(q.shift.detach().numpy(), MEAN.numpy(), atol=0.1)
    # an elementwise affine flow is a diagonal Gaussian: same optimum as mean field
    precision = np.linalg.inv(COV.numpy())
    np.testing.assert_allclose(q.log_scale.detach().exp().numpy() ** 2,
                               1 / np.diag(precision), rtol=0.15)
    var = q.log_scale.detach().exp().numpy() ** 2
    excess = _kl_to_target(q.shift.detach().numpy(), np.diag(var)) - KL_MEAN_FIELD
    assert 0 <= excess < KL_EXCESS_TOL


def test_default_adam_is_torch_adam_bit_for_bit():
    # fit_vi's default optimiser (fit._Adam, torch's step without its framework) against
    # torch.optim.Adam itself: the same trace and parameters to the last bit, for a
    # family of several runs and for one whose parameters have several shapes
    for make in (lambda: FullRankGaussian(2, init_scale=1.0, num_runs=3),
                 lambda: AffineFlow(2)):
        results = []
        for optimizer in ({"lr": 0.05}, {"optimizer": functools.partial(torch.optim.Adam,
                                                                          lr=0.05)}):
            torch.manual_seed(3)
            family = make()
            result = fit_vi(log_joint, family, num_samples=8, num_steps=60,
                            eval_every=20, eval_samples=16, **optimizer)
            results.append((result.elbo, [p.detach().clone() for p in family.parameters()]))
        (elbo, params), (elbo_torch, params_torch) = results
        np.testing.assert_array_equal(elbo, elbo_torch)
        assert all(torch.equal(a, b) for a, b in zip(params, params_torch, strict=True))


def test_score_function_estimator_runs_the_same_loop():
    result = fit(DiagonalGaussian(2, init_scale=0.5), 3, objective=ScoreFunctionELBO())
    excess = (_kl_to_target(result.q.mean.detach().numpy(), result.q.covariance())
              - KL_MEAN_FIELD)
    assert 0 <= excess < KL_EXCESS_TOL


def test_families_agree_with_torch_distributions():
    torch.manual_seed(4)
    diag, full = DiagonalGaussian(3, 0.7), FullRankGaussian(3, 0.7)
    z = torch.randn(5, 3, dtype=torch.float64)
    ref = Independent(Normal(torch.zeros(3, dtype=torch.float64),
                             torch.full((3,), 0.7, dtype=torch.float64)), 1).log_prob(z)
    torch.testing.assert_close(diag.distribution().log_prob(z), ref)
    torch.testing.assert_close(full.distribution().log_prob(z), ref)
    assert diag.num_parameters() == 6 and full.num_parameters() == 3 + 6
    np.testing.assert_allclose(full.covariance(), 0.49 * np.eye(3))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"family": "diagonal"}, TypeError, "family must be"),
    ({"objective": "reinforce"}, TypeError, "objective must be an elbo_lib.objectives"),
    ({"num_steps": 0}, ValueError, "num_steps must be >= 1"),
    ({"objective": ScoreFunctionELBO(), "num_samples": 1}, ValueError,
     "num_samples must be >= 2"),
    ({"objective": ScoreControlVariateELBO(), "num_samples": 2}, ValueError,
     "num_samples must be >= 3"),
    ({"lr": -1.0}, ValueError, "lr must be"),
    ({"optimizer": "adam"}, TypeError, "optimizer must be a callable"),
    ({"optimizer": functools.partial(torch.optim.SGD, lr=0.1), "lr": 0.1}, ValueError,
     "lr sets the step size of the default Adam only"),
])
def test_fit_vi_rejects_bad_arguments(kwargs, error, match):
    args = {"family": DiagonalGaussian(2), **kwargs}
    family = args.pop("family")
    with pytest.raises(error, match=match):
        fit_vi(log_joint, family, **args)


def test_fit_vi_names_the_step_where_the_elbo_became_non_finite():
    def exploding(z: torch.Tensor) -> torch.Tensor:
        return torch.where(z[:, 0] > 0.3, torch.tensor(float("nan"), dtype=z.dtype),
                           -0.5 * (z**2).sum(-1))

    family = DiagonalGaussian(2, init_scale=0.01)
    with torch.no_grad():
        family.mean.fill_(-1.0)
    with pytest.raises(ValueError, match=r"fit_vi stopped at step \d+ of 10000: .*finite"):
        fit_vi(lambda z: exploding(z) + 5 * z[:, 0], family, num_steps=10000, lr=0.1,
               eval_every=10000)


@pytest.mark.parametrize("make, error, match", [
    (lambda: DiagonalGaussian(0), ValueError, "dim must be >= 1"),
    (lambda: FullRankGaussian(2, init_scale=0.0), ValueError, "init_scale must be"),
    (lambda: VariationalFamily(2).distribution(), NotImplementedError, "must implement"),
])
def test_families_reject_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_large_init_scale_does_not_overflow():
    std = DiagonalGaussian(2, init_scale=1e4).std().detach().numpy()
    np.testing.assert_allclose(std, 1e4, rtol=1e-12)


# --------------------------------------------------------------------------------------
# fit_gaussian_vi_parallel: many runs at once (chapter 5's step-size sweep)
# --------------------------------------------------------------------------------------
def test_parallel_full_rank_path_derivative_finds_the_posterior_exactly(gaussian_target):
    """At q = p the path-derivative gradient is zero for every sample, so the runs
    converge to the posterior itself (measured errors: mean 2e-3, covariance 1.4e-4)."""
    m, cov, log_joint, log_z = gaussian_target
    res = fit_gaussian_vi_parallel(log_joint, FullRankGaussian(3, num_runs=3), [0.02] * 3,
                                   objective=PathDerivativeELBO(), num_steps=1500,
                                   eval_every=500, final_samples=4000,
                                   generator=torch.Generator().manual_seed(2))
    assert res.elbo.shape == (3, 4) and res.steps.tolist() == [0, 500, 1000, 1500]
    assert not res.diverged.any() and res.model_evaluations == 1500 * 8
    np.testing.assert_allclose(res.mean, np.tile(m, (3, 1)), atol=0.01)
    for low in res.scale_tril:
        np.testing.assert_allclose(low @ low.T, cov, atol=2e-3)
        assert np.allclose(low, np.tril(low))
    # final ELBO: E_q log p by 4000 samples (sd about 0.03 here) + the exact entropy
    assert np.all(np.abs(res.final_elbo - log_z) < 0.15)


@pytest.mark.parametrize("objective, tol", [(PathwiseELBO(), 0.03),
                                            (PathDerivativeELBO(), 0.005)])
def test_parallel_diagonal_reaches_the_mean_field_optimum(objective, tol, gaussian_target):
    """The final q's exact KL(q || p) is near the mean-field optimum's
    KL = (sum_i log P_ii + log det C) / 2: measured excess up to 0.014 (pathwise) and
    0.0016 (path derivative) over six runs; one variance off by a factor 2 adds 0.15."""
    m, cov, log_joint, _ = gaussian_target
    res = fit_gaussian_vi_parallel(log_joint, DiagonalGaussian(3, num_runs=2), [0.02] * 2,
                                   objective=objective, num_steps=1500, eval_every=1500,
                                   generator=torch.Generator().manual_seed(2))
    prec = np.linalg.inv(cov)
    kl_opt = 0.5 * (np.sum(np.log(np.diag(prec))) + np.linalg.slogdet(cov)[1])
    for mean, low in zip(res.mean, res.scale_tril, strict=True):
        assert np.count_nonzero(low - np.diag(np.diag(low))) == 0
        kl = gaussian_kl_full(mean, low @ low.T, m, cov)
        assert 0 <= kl - kl_opt < tol


def test_parallel_estimators_agree_and_divergence_is_flagged(gaussian_target):
    m, cov, log_joint, log_z = gaussian_target
    for objective in (PathwiseELBO(), ScoreFunctionELBO()):
        res = fit_gaussian_vi_parallel(log_joint, FullRankGaussian(3), [0.02],
                                       objective=objective, num_steps=1500, eval_every=500,
                                       generator=torch.Generator().manual_seed(4))
        assert not res.diverged[0] and log_z - res.final_elbo[0] < 0.2
        # the exact gap KL(q || p) of the final q: measured at most 0.026 over four
        # replicates of each estimator
        low = res.scale_tril[0]
        assert 0 <= gaussian_kl_full(res.mean[0], low @ low.T, m, cov) < 0.06
    # an absurd step size for the score function leaves the ELBO below where it started
    bad = fit_gaussian_vi_parallel(log_joint, FullRankGaussian(3), [50.0],
                                   objective=ScoreFunctionELBO(), num_steps=50,
                                   eval_every=50, generator=torch.Generator().manual_seed(0))
    assert bad.diverged[0]


def test_parallel_vi_draws_from_the_generator_it_is_given(gaussian_target):
    """The randomness rule (CONTRIBUTING): no generator means torch's global one, a
    generator gives the sweep its own stream and leaves the global one alone. Rejects a
    private generator made behind the caller's back (the default would then not follow
    torch.manual_seed) and a generator that is accepted but not used."""
    log_joint = gaussian_target[2]

    def run(generator):
        res = fit_gaussian_vi_parallel(log_joint, FullRankGaussian(3, num_runs=2),
                                       [0.02, 0.05], num_steps=20, eval_every=10,
                                       eval_samples=8, final_samples=16,
                                       generator=generator)
        return np.concatenate([res.mean.ravel(), res.elbo.ravel(), res.final_elbo])

    torch.manual_seed(3)
    from_global, after_global = run(None), torch.rand(4)
    torch.manual_seed(3)
    from_own, after_own = run(torch.Generator().manual_seed(3)), torch.rand(4)
    untouched = torch.rand(4, generator=torch.Generator().manual_seed(3))
    assert np.array_equal(from_global, from_own)   # the same stream, the same bits
    assert torch.equal(after_own, untouched)       # a given generator: global stream unused
    assert not torch.equal(after_global, untouched)   # None: the global stream moved on
    assert not np.array_equal(from_own, run(torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"lrs": [0.1, -0.1]}, ValueError, "step size"),
    ({"lrs": [0.1], "objective": "reinforce"}, TypeError, "objective"),
    ({"lrs": [0.1], "family": "lowrank"}, TypeError, "family"),
    ({"lrs": [0.1], "num_steps": 0}, ValueError, "num_steps"),
    ({"lrs": [0.1], "objective": ScoreFunctionELBO(), "num_samples": 1}, ValueError,
     "num_samples must be >= 2"),
    ({"lrs": [0.1], "objective": ScoreControlVariateELBO(), "num_samples": 2}, ValueError,
     "num_samples must be >= 3"),
    ({"lrs": [0.1, 0.2]}, ValueError, "one step size per run"),
    ({"lrs": [0.1], "optimizer": "adam"}, TypeError, "optimizer must be a callable"),
])
def test_parallel_vi_rejects_bad_arguments(kwargs, error, match, gaussian_target):
    log_joint = gaussian_target[2]
    kwargs = {"family": FullRankGaussian(3), **kwargs}
    with pytest.raises(error, match=match):
        fit_gaussian_vi_parallel(log_joint, **kwargs)


# --------------------------------------------------------------------------------------
# Contract cases (issue 16): every public name of elbo_lib.variational has bad-input cases.
# --------------------------------------------------------------------------------------
def _nan_log_joint(z: torch.Tensor) -> torch.Tensor:
    return z.sum(-1) * np.nan


def _std_log_joint(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z**2).sum(-1)


def _full(dim: int, num_runs: int = 1) -> FullRankGaussian:
    return FullRankGaussian(dim, num_runs=num_runs)


BAD_INPUTS = {
    "VariationalFamily": [
        (lambda: VariationalFamily(0), ValueError, r"dim must be >= 1"),
        (lambda: VariationalFamily(2.0), TypeError, r"dim must be an integer"),
        (lambda: VariationalFamily("2"), TypeError, r"dim must be an integer"),
    ],
    "DiagonalGaussian": [
        (lambda: DiagonalGaussian(0), ValueError, r"dim must be >= 1"),
        (lambda: DiagonalGaussian(2, init_scale=0.0), ValueError,
         r"init_scale must be a finite number > 0"),
        (lambda: DiagonalGaussian(2, init_scale=np.nan), ValueError,
         r"init_scale must be a finite number > 0"),
        (lambda: DiagonalGaussian(2, init_scale=np.inf), ValueError,
         r"init_scale must be a finite number > 0"),
        (lambda: DiagonalGaussian(2, init_scale="1"), TypeError,
         r"init_scale must be a positive number"),
    ],
    "FullRankGaussian": [
        (lambda: FullRankGaussian(-1), ValueError, r"dim must be >= 1"),
        (lambda: FullRankGaussian(2, num_runs=0), ValueError, r"num_runs must be >= 1"),
        (lambda: FullRankGaussian(2, init_scale=-1.0), ValueError,
         r"init_scale must be a finite number > 0"),
        (lambda: FullRankGaussian(2, init_scale=np.nan), ValueError,
         r"init_scale must be a finite number > 0"),
    ],
    "fit_vi": [
        (lambda: fit_vi(_std_log_joint, "diagonal"), TypeError, r"family must be"),
        (lambda: fit_vi("f", DiagonalGaussian(2)), TypeError, r"log_joint must be callable"),
        (lambda: fit_vi(_std_log_joint, DiagonalGaussian(2), "reinforce"),
         TypeError, r"objective must be an elbo_lib.objectives.VariationalObjective"),
        (lambda: fit_vi(_std_log_joint, DiagonalGaussian(2, num_runs=2), ScoreFunctionELBO()),
         ValueError, r"num_runs = 2 needs an objective that supports runs"),
        (lambda: fit_vi(_std_log_joint, DiagonalGaussian(2), num_samples=0), ValueError,
         r"num_samples must be >= 1"),
        (lambda: fit_vi(_std_log_joint, DiagonalGaussian(2), num_steps=0), ValueError,
         r"num_steps must be >= 1"),
        (lambda: fit_vi(_std_log_joint, DiagonalGaussian(2), lr=np.nan), ValueError,
         r"lr must be a finite number > 0"),
        (lambda: fit_vi(_std_log_joint, DiagonalGaussian(2), eval_every=0), ValueError,
         r"eval_every must be >= 1"),
        (lambda: fit_vi(_std_log_joint, DiagonalGaussian(2), eval_samples=2.5), TypeError,
         r"eval_samples must be an integer"),
        (lambda: fit_vi(_std_log_joint, DiagonalGaussian(2), optimizer="adam"), TypeError,
         r"optimizer must be a callable params -> torch.optim.Optimizer"),
        (lambda: fit_vi(_std_log_joint, DiagonalGaussian(2), optimizer=lambda params: None),
         TypeError, r"optimizer\(params\) must return a torch.optim.Optimizer"),
        (lambda: fit_vi(_std_log_joint, DiagonalGaussian(2), lr=0.1,
                        optimizer=functools.partial(torch.optim.SGD, lr=0.1)), ValueError,
         r"lr sets the step size of the default Adam only"),
        # a log_joint that is NaN from the start: named, with the step (0: the first ELBO)
        (lambda: fit_vi(_nan_log_joint, DiagonalGaussian(2), num_steps=5), ValueError,
         r"fit_vi stopped at step 0 of 5: log_joint\(z\) - q.log_prob\(z\) must be finite"),
        (lambda: fit_vi(lambda z: z, DiagonalGaussian(2), num_steps=5), ValueError,
         r"fit_vi stopped at step 0 of 5: log_joint must return a tensor of shape"),
    ],
    "fit_gaussian_vi_parallel": [
        (lambda: fit_gaussian_vi_parallel(_std_log_joint, _full(2, 2), [0.1, -0.1]),
         ValueError, r"lrs must be > 0"),
        (lambda: fit_gaussian_vi_parallel(_std_log_joint, _full(2, 2), [0.1, np.nan]),
         ValueError, r"lrs must contain only finite"),
        (lambda: fit_gaussian_vi_parallel(_std_log_joint, _full(2), [[0.1]]), ValueError,
         r"lrs must have 1 dimension"),
        (lambda: fit_gaussian_vi_parallel(_std_log_joint, _full(2, 3), [0.1, 0.2]),
         ValueError, r"lrs must give one step size per run of the family \(num_runs = 3\)"),
        (lambda: fit_gaussian_vi_parallel(_std_log_joint, "full", [0.1]), TypeError,
         r"family must be a DiagonalGaussian or FullRankGaussian"),
        (lambda: fit_gaussian_vi_parallel(_std_log_joint, _full(2), [0.1], objective="magic"),
         TypeError, r"objective must be an elbo_lib.objectives.VariationalObjective"),
        (lambda: fit_gaussian_vi_parallel(_std_log_joint, _full(2), [0.1], generator=0),
         TypeError, r"generator must be a torch.Generator or None, got int"),
        (lambda: fit_gaussian_vi_parallel(_std_log_joint, _full(2), [0.1], optimizer=3),
         TypeError, r"optimizer must be a callable \(params, lrs\)"),
        (lambda: fit_gaussian_vi_parallel(_std_log_joint, _full(2), [0.1],
                                          optimizer=lambda params, lrs: None), TypeError,
         r"optimizer\(params, lrs\) must return a torch.optim.Optimizer"),
        (lambda: fit_gaussian_vi_parallel("f", _full(2), [0.1]), TypeError,
         r"log_joint must be callable"),
        (lambda: fit_gaussian_vi_parallel(lambda z: z, _full(2), [0.1], num_steps=2),
         ValueError, r"log_joint must map samples of shape \(N, 2\) to shape \(N,\)"),
        (lambda: fit_gaussian_vi_parallel(_nan_log_joint, _full(2), [0.1], num_steps=2),
         ValueError, r"log_joint .*not finite at the starting point"),
    ],
    "RunwiseAdam": [
        (lambda: RunwiseAdam([torch.zeros(2, 3, requires_grad=True)], [0.1, -0.1]),
         ValueError, r"lr must hold one step size > 0 per run"),
        (lambda: RunwiseAdam([torch.zeros(2, 3, requires_grad=True)], [0.1, np.nan]),
         ValueError, r"lr must contain only finite"),
        (lambda: RunwiseAdam([torch.zeros(3, 2, requires_grad=True)], [0.1, 0.1]),
         ValueError, r"params must have a leading run axis of length 2"),
        (lambda: RunwiseAdam([torch.zeros(2, requires_grad=True)], [0.1], betas=(0.9, 1.0)),
         ValueError, r"betas must be a pair of numbers in \[0, 1\)"),
        (lambda: RunwiseAdam([torch.zeros(2, requires_grad=True)], [0.1], eps=0.0),
         ValueError, r"eps must be a finite number > 0"),
        (lambda: RunwiseAdam([torch.zeros(2, requires_grad=True)], "0.1"), TypeError,
         r"lr"),
    ],
    "RunwiseAdam.step": [
        (lambda: RunwiseAdam([torch.zeros(2, requires_grad=True)], [0.1]).step("loss"),
         TypeError, r"closure must be callable or None"),
    ],
    "best_gaussian_by_quadrature": [
        (lambda: best_gaussian_by_quadrature(_std_log_joint, [[0.0] * 4]), ValueError,
         r"starts must have shape \(num_starts, D\) with 1 <= D <= 3"),
        (lambda: best_gaussian_by_quadrature(_std_log_joint, [[0.0, 0.0]], num_nodes=1),
         ValueError, r"num_nodes must be >= 2"),
        (lambda: best_gaussian_by_quadrature("f", [[0.0, 0.0]]), TypeError,
         r"log_density must be callable"),
        (lambda: best_gaussian_by_quadrature(_std_log_joint, [[np.nan, 0.0]]), ValueError,
         r"starts"),
        (lambda: best_gaussian_by_quadrature(_std_log_joint, [[0.0, 0.0]], max_iter=0),
         ValueError, r"max_iter must be >= 1"),
    ],
}

NO_INPUTS = {
    "QuadratureGaussianFit": "a result object returned by best_gaussian_by_quadrature",
    "VIResult": "a result object returned by fit_vi",
    "ParallelVIResult": "a result object returned by fit_gaussian_vi_parallel",
}

EXTREME_INPUTS = {
    "DiagonalGaussian": [
        (lambda: DiagonalGaussian(2, init_scale=1e4).std().detach().numpy(),
         lambda out: np.testing.assert_allclose(out, 1e4, rtol=1e-12)),
        (lambda: DiagonalGaussian(2, init_scale=1e300).std().detach().numpy(),
         lambda out: np.testing.assert_allclose(out, 1e300, rtol=1e-12)),
        (lambda: DiagonalGaussian(2, init_scale=1e-300).std().detach().numpy(),
         lambda out: np.testing.assert_allclose(out, 1e-300, rtol=1e-12)),
    ],
    "FullRankGaussian": [
        (lambda: FullRankGaussian(3, init_scale=1e4).covariance(),
         lambda out: np.testing.assert_allclose(out, 1e8 * np.eye(3), rtol=1e-12)),
        (lambda: FullRankGaussian(1, init_scale=1e-100).covariance(),
         lambda out: np.testing.assert_allclose(out, [[1e-200]], rtol=1e-12)),
    ],
    "fit_gaussian_vi_parallel": [
        # one dimension, one run, the exact target N(0, 1) with the path derivative:
        # zero-variance gradient at q = p, so q converges to N(0, 1) itself
        (lambda: fit_gaussian_vi_parallel(_std_log_joint, FullRankGaussian(1, init_scale=1.0),
                                          [0.05], objective=PathDerivativeELBO(),
                                          num_steps=600,
                                          generator=torch.Generator().manual_seed(0)),
         lambda res: (np.testing.assert_allclose(res.mean, [[0.0]], atol=1e-12),
                      np.testing.assert_allclose(res.scale_tril, [[[1.0]]], rtol=1e-12))),
    ],
}


# --------------------------------------------------------------------------------------
# R independent runs in one family (num_runs), chapter 7
# --------------------------------------------------------------------------------------
def test_runs_are_scored_each_on_its_own_samples():
    """The ELBO of each run against its closed form: q_r = N(m_r, I) under the target
    N(0, I) (normalised) has ELBO -|m_r|^2 / 2. A run scored on another run's samples
    (a wrong reshape of the stacked samples) gives the average instead."""
    torch.manual_seed(0)
    family = DiagonalGaussian(2, init_scale=1.0, num_runs=3)
    starts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    with torch.no_grad():
        family.mean.copy_(starts)
        family.raw_std.fill_(math.log(math.e - 1))           # softplus^-1(1): std 1
    standard = Independent(Normal(torch.zeros(2, dtype=torch.float64),
                                  torch.ones(2, dtype=torch.float64)), 1)
    result = fit_vi(standard.log_prob, family, num_samples=2, num_steps=1, lr=1e-12,
                    eval_every=1, eval_samples=20_000)
    assert result.elbo.shape == (2, 3) and result.info["num_runs"] == 3
    exact = -0.5 * (starts**2).sum(-1).numpy()
    # Monte Carlo s.e. of each estimate: sqrt(|m|^2 + 1/2) / sqrt(20000) < 0.02
    np.testing.assert_allclose(result.elbo[0], exact, atol=0.07)


def test_runs_fit_independently_to_the_posterior():
    """Four full-rank runs from four different starts each reach the exact posterior
    (the KL excess bound of the single-run tests), in one batched fit."""
    torch.manual_seed(3)
    family = FullRankGaussian(2, init_scale=0.5, num_runs=4)
    with torch.no_grad():
        family.mean.copy_(torch.tensor([[5.0, 5.0], [-5, 0], [0, -6], [1, 1]]))
    fit_vi(log_joint, family, num_samples=16, num_steps=600, lr=0.05, eval_every=600,
           eval_samples=16)
    fit_vi(log_joint, family, num_samples=32, num_steps=300, lr=0.005, eval_every=300,
           eval_samples=16)
    covariances = family.covariance()
    assert covariances.shape == (4, 2, 2)
    for mean, cov in zip(family.mean.detach().numpy(), covariances, strict=True):
        assert _kl_to_target(mean, cov) < KL_EXCESS_TOL


def test_batched_family_matches_its_members():
    """log q of a num_runs family, run by run, equals a single family holding that run's
    parameters (the unbatched code path)."""
    torch.manual_seed(1)
    batch = FullRankGaussian(3, num_runs=2)
    with torch.no_grad():
        batch.mean.normal_()
        batch.raw_scale_tril.normal_()
    points = torch.randn(7, 3, dtype=torch.float64)
    log_q = batch.distribution().log_prob(points[:, None, :])
    for r in range(2):
        single = FullRankGaussian(3)
        with torch.no_grad():
            single.mean.copy_(batch.mean[r])
            single.raw_scale_tril.copy_(batch.raw_scale_tril[r])
        torch.testing.assert_close(log_q[:, r], single.distribution().log_prob(points))
    assert batch.num_parameters() == FullRankGaussian(3).num_parameters() == 9


def test_runs_need_an_objective_that_supports_runs():
    with pytest.raises(ValueError, match="num_runs = 2 needs an objective that supports runs"):
        fit_vi(log_joint, DiagonalGaussian(2, num_runs=2), ScoreFunctionELBO())


# --------------------------------------------------------------------------------------
# the best Gaussian by quadrature, chapter 7
# --------------------------------------------------------------------------------------
def test_best_gaussian_by_quadrature_finds_a_gaussian_target_exactly():
    """For a Gaussian target the best q is the target and the ELBO is log Z (the
    Gauss-Hermite rule is exact for the quadratic log-density): a wrong entropy, log-det
    or node scaling moves one of these."""
    fit = best_gaussian_by_quadrature(log_joint, [[0.0, 0.0], [3.0, -1.0]],
                                      num_nodes=8)
    best = fit.best
    np.testing.assert_allclose(fit.mean[best], MEAN.numpy(), atol=1e-5)
    np.testing.assert_allclose(fit.scale_tril[best] @ fit.scale_tril[best].T,
                               COV.numpy(), atol=1e-5)
    np.testing.assert_allclose(fit.elbo, LOG_Z, atol=1e-8)


def test_best_gaussian_by_quadrature_sees_local_optima():
    """Two well-separated modes with weights 0.7 and 0.3: a start near each finds that
    mode (reverse KL is mode-seeking), and the best is the heavier one, at
    KL = -log 0.7 to the mixture (the other mode's mass is negligible under q)."""
    weights = torch.tensor([0.7, 0.3], dtype=torch.float64)
    centres = torch.tensor([[-4.0, 0.0], [4.0, 0.0]], dtype=torch.float64)

    def mixture(z):
        comps = -0.5 * ((z[:, None, :] - centres) ** 2).sum(-1) - math.log(2 * math.pi)
        return torch.logsumexp(comps + weights.log(), -1)

    fit = best_gaussian_by_quadrature(mixture, [[-3.0, 0.5], [3.0, 0.5]])
    np.testing.assert_allclose(fit.mean[:, 0], [-4.0, 4.0], atol=1e-3)
    assert fit.best == 0
    np.testing.assert_allclose(-fit.elbo, -np.log([0.7, 0.3]), atol=5e-4)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"starts": [[0.0] * 4]}, ValueError, r"starts must have shape \(num_starts, D\)"),
    ({"starts": [[0.0, 0.0]], "num_nodes": 1}, ValueError, "num_nodes"),
    ({"starts": [[0.0, 0.0]], "log_density": 3}, TypeError, "log_density must be callable"),
])
def test_best_gaussian_by_quadrature_rejects_bad_arguments(kwargs, error, match):
    kwargs = {"log_density": log_joint, **kwargs}
    with pytest.raises(error, match=match):
        best_gaussian_by_quadrature(**kwargs)


def test_fit_vi_rejects_a_log_joint_without_gradient():
    """A detached log joint (issue 34) used to return normally with the mean stuck at 0:
    the pathwise loss then follows only the entropy. Now a clear error names log_joint,
    and the family is left where it started."""
    family = DiagonalGaussian(2)
    with pytest.raises(ValueError, match=r"step 1 of 50: log_joint\(z\) carries no "
                                         r"gradient with respect to z"):
        fit_vi(lambda z: log_joint(z).detach(), family, num_steps=50)
    assert torch.equal(family.mean.detach(), torch.zeros(2, dtype=torch.float64))
    # the score-function estimator needs no gradient of log_joint: the same detached
    # callable fits (mean within 0.3 of the target's after 300 steps)
    torch.manual_seed(0)
    res = fit_vi(lambda z: log_joint(z).detach(), DiagonalGaussian(2), ScoreFunctionELBO(),
                 num_samples=16, num_steps=300, lr=0.05, eval_every=300, eval_samples=16)
    assert np.max(np.abs(res.q.mean.detach().numpy() - MEAN.numpy())) < 0.3


def test_fit_vi_rejects_a_loss_that_does_not_depend_on_the_family():
    class Frozen(VariationalFamily):
        def __init__(self):
            super().__init__(2)
            self.unused = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))

        def distribution(self):
            return Independent(Normal(torch.zeros(2, dtype=torch.float64),
                                      torch.ones(2, dtype=torch.float64)), 1)

    with pytest.raises(ValueError, match="no gradient reaches the family's parameters"):
        fit_vi(log_joint, Frozen(), num_steps=5)


def test_a_diverging_fit_names_the_step_and_restores_the_start():
    """lr 1e3 on a log joint that overflows far from 0: the ELBO becomes -inf, the
    error is the library's own and names the step, and the parameters are those the fit
    started from (a later fit can use the family)."""
    family = FullRankGaussian(2)
    with torch.no_grad():
        family.mean.fill_(0.5)
    before = [p.detach().clone() for p in family.parameters()]
    with pytest.raises(ValueError, match=r"fit_vi stopped at step \d+ of 100: .*finite"
                                         r".*restored"):
        fit_vi(lambda z: -torch.exp((z**2).sum(-1)), family, num_steps=100, lr=1e3)
    after = list(family.parameters())
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, after, strict=True))
    torch.manual_seed(1)
    fit_vi(log_joint, family, num_steps=20, eval_every=20, eval_samples=16)
    assert all(bool(torch.isfinite(p).all()) for p in family.parameters())


@pytest.mark.parametrize("family", ["full", "diagonal"])
def test_score_cv_gradient_is_the_exact_elbo_gradient_on_average(family, gaussian_target):
    """The "score-cv" estimator (closed-form entropy, per-coordinate control variates)
    averaged over 4000 independent steps of S = 32 samples matches the exact ELBO gradient
    of a Gaussian target (gradients.gaussian_target_elbo_gradient, through the softplus of
    the diagonal) within 5 standard errors. Coefficients estimated on the samples they
    multiply were biased by 7% in mu (9 SE) and 20% in an off-diagonal of L here; the
    leave-one-out coefficients are not."""
    from elbo_lib.gradients import gaussian_target_elbo_gradient

    m, cov, log_joint, _ = gaussian_target
    reps, s, d = 4000, 32, 3
    mu = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    raw_diag = torch.tensor([0.2, -0.4, 0.1], dtype=torch.float64)
    off = torch.tensor([[0, 0, 0], [0.3, 0, 0], [-0.2, 0.4, 0]], dtype=torch.float64)
    low = (off if family == "full" else 0 * off) + torch.diag(softplus_t(raw_diag))
    raw = (off + torch.diag(raw_diag)) if family == "full" else raw_diag
    gen = torch.Generator().manual_seed(5)
    eps = torch.randn(reps, s, d, dtype=torch.float64, generator=gen)

    def log_p(z):
        return log_joint(z.reshape(-1, d)).reshape(z.shape[:2])

    # the sweep's loss of `reps` independent runs at the same point: its gradient with
    # respect to run r's parameters is run r's (negated) estimate
    mu_r = mu.expand(reps, d).clone().requires_grad_(True)
    raw_r = raw.expand(reps, *raw.shape).clone().requires_grad_(True)
    loss = ScoreControlVariateELBO().gaussian_runs_loss(log_p, mu_r, raw_r,
                                                        low.expand(reps, d, d), eps)
    g_mu, g_raw = torch.autograd.grad(loss, (mu_r, raw_r))
    exact = gaussian_target_elbo_gradient(mu.numpy(), low.numpy(), m, np.linalg.inv(cov))
    slope = torch.sigmoid(raw_diag).numpy()
    exact_raw = exact["scale_tril"].copy()
    exact_raw[np.diag_indices(d)] *= slope
    if family == "diagonal":
        exact_raw = np.diag(exact_raw)
    for est, ex in ((-g_mu, exact["mu"]), (-g_raw, exact_raw)):
        est = est.numpy()
        z = np.abs(est.mean(0) - ex) / (est.std(0, ddof=1) / np.sqrt(reps) + 1e-300)
        assert np.all(z[ex != 0] < 5) if family == "full" else np.all(z < 5)


def softplus_t(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.softplus(x)


def test_parallel_score_cv_reaches_the_posterior(gaussian_target):
    m, cov, log_joint, log_z = gaussian_target
    res = fit_gaussian_vi_parallel(log_joint, FullRankGaussian(3), [0.02],
                                   objective=ScoreControlVariateELBO(), num_steps=1500,
                                   eval_every=500, generator=torch.Generator().manual_seed(4))
    low = res.scale_tril[0]
    assert not res.diverged[0]
    assert 0 <= gaussian_kl_full(res.mean[0], low @ low.T, m, cov) < 0.06


# --------------------------------------------------------------------------------------
# optimisers passed in (issue 29, item 2)
# --------------------------------------------------------------------------------------
def test_runwise_adam_is_torch_adam_run_by_run():
    """Each run of RunwiseAdam moves as torch.optim.Adam with that run's step size would
    move it alone (torch's implementation, an independent answer), over 20 steps of a
    gradient that changes with the iterate; runs with the same gradients but different
    step sizes end in different places."""
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(3, 4, dtype=torch.float64, generator=gen)
    targets = torch.randn(3, 4, dtype=torch.float64, generator=gen)
    lrs = [0.01, 0.1, 0.3]

    def loss_of(p, t):
        return ((p - t) ** 4).sum() + (p**2).sum()

    batched = start.clone().requires_grad_(True)
    opt = RunwiseAdam([batched], lrs)
    singles = [start[r].clone().requires_grad_(True) for r in range(3)]
    torch_opts = [torch.optim.Adam([p], lr=lr, foreach=False)
                  for p, lr in zip(singles, lrs, strict=True)]
    for _ in range(20):
        opt.zero_grad()
        loss_of(batched, targets).backward()
        opt.step()
        for p, t, o in zip(singles, targets, torch_opts, strict=True):
            o.zero_grad()
            loss_of(p, t).backward()
            o.step()
    for r in range(3):
        torch.testing.assert_close(batched.detach()[r], singles[r].detach(), rtol=1e-12,
                                   atol=1e-14)
    assert float((batched.detach()[0] - batched.detach()[2]).abs().max()) > 0.1


class RunwiseSGD(torch.optim.Optimizer):
    """Plain SGD with one step size per run, written outside elbo_lib: a new optimiser
    needs no edit of fit_gaussian_vi_parallel."""

    def __init__(self, params, lrs):
        super().__init__(params, {"lrs": torch.as_tensor(lrs, dtype=torch.float64)})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.sub_(group["lrs"].reshape(-1, *([1] * (p.ndim - 1))) * p.grad)


def test_new_optimisers_train_through_the_unchanged_loops(gaussian_target):
    """torch's SGD in fit_vi and a runwise SGD defined here in the parallel sweep: both
    reach the posterior (KL(q || p) in closed form below the Adam tests' bound); a second
    run with step size 1e-300 stays at its start (the step sizes reach the optimiser run
    by run)."""
    m, cov, target_log_joint, _ = gaussian_target
    torch.manual_seed(0)
    family = FullRankGaussian(3, init_scale=0.5)
    fit_vi(target_log_joint, family, PathDerivativeELBO(), num_samples=8, num_steps=1500,
           optimizer=functools.partial(torch.optim.SGD, lr=0.05), eval_every=1500,
           eval_samples=16)
    assert gaussian_kl_full(family.mean.detach().numpy(), family.covariance(), m, cov) < 0.01
    sweep = FullRankGaussian(3, init_scale=0.5, num_runs=2)
    res = fit_gaussian_vi_parallel(target_log_joint, sweep, [0.05, 1e-300],
                                   objective=PathDerivativeELBO(), optimizer=RunwiseSGD,
                                   num_steps=1500, eval_every=1500,
                                   generator=torch.Generator().manual_seed(1))
    low = res.scale_tril[0]
    assert gaussian_kl_full(res.mean[0], low @ low.T, m, cov) < 0.01
    np.testing.assert_allclose(res.mean[1], np.zeros(3), rtol=0, atol=1e-250)
    np.testing.assert_allclose(res.scale_tril[1], 0.5 * np.eye(3), rtol=1e-12, atol=1e-250)
