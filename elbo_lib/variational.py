"""Variational families as objects, and the one stochastic-gradient VI loop (chapters 5, 7).

A *variational family* is a :class:`torch.nn.Module` whose parameters are the
variational parameters phi and whose :meth:`~VariationalFamily.distribution` returns
q_phi as a :class:`torch.distributions.Distribution` with event shape (D,) and an empty
batch shape, supporting ``rsample`` (for the pathwise gradient) and ``log_prob``. That
is all :func:`fit_vi` asks of a family, so a new family (a normalising flow, chapter 7)
is a new class and no edit of the loop. A flow returns a
:class:`~torch.distributions.TransformedDistribution` whose transforms cache their last
input (``cache_size=1``), so ``log_prob`` of its own samples needs no inverse.

:func:`fit_vi` maximises the ELBO (Blei, Kucukelbir and McAuliffe 2017, eq. 13)

.. math::

    \\mathcal L(\\phi) = \\mathbb E_{q_\\phi(z)}[\\log p(x, z) - \\log q_\\phi(z)]

with Adam (Kingma and Ba 2015) following either the pathwise (reparameterisation)
gradient of :func:`elbo_lib.bounds.monte_carlo_elbo` or the score-function gradient of
:func:`elbo_lib.bounds.score_function_elbo_surrogate` (Ranganath, Gerrish and Blei
2014): the same number of model evaluations per step for both.
:func:`fit_gaussian_vi_parallel` runs many Gaussian fits (a step-size sweep over seeds)
in one batched computation (chapter 5).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal
from torch.nn.functional import softplus

from elbo_lib._validation import as_float_array, check_positive, check_positive_int
from elbo_lib.bounds import monte_carlo_elbo, score_function_elbo_surrogate
from elbo_lib.gradients import apply_baseline, check_baseline

__all__ = [
    "DiagonalGaussian",
    "FullRankGaussian",
    "ParallelVIResult",
    "VIResult",
    "VariationalFamily",
    "fit_gaussian_vi_parallel",
    "fit_vi",
]

DTYPE = torch.float64
ESTIMATORS = ("pathwise", "score")


def _inverse_softplus(value: float) -> float:
    """softplus^{-1}(value) = log(expm1(value)), stable for large values."""
    if value > 30.0:  # expm1 overflows near 710; softplus(y) = y to double precision here
        return value + math.log1p(-math.exp(-value))
    return math.log(math.expm1(value))


class VariationalFamily(nn.Module):
    """Base class of variational families: subclass it and implement :meth:`distribution`.

    Attributes
    ----------
    dim : int
        Dimension D of z.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")

    def distribution(self) -> Distribution:
        """q as a torch distribution with empty batch shape and event shape (D,)."""
        raise NotImplementedError(f"{type(self).__name__} must implement distribution()")

    def num_parameters(self) -> int:
        """Number of free (trainable) variational parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class DiagonalGaussian(VariationalFamily):
    """q(z) = N(mean, diag(std^2)), the mean-field Gaussian (chapter 5).

    Unconstrained parameters: ``mean`` and ``raw_std`` with std = softplus(raw_std).

    Parameters
    ----------
    dim : int
        Dimension D of z.
    init_scale : float
        Initial standard deviation of every coordinate (> 0); the mean starts at 0.
    """

    def __init__(self, dim: int, init_scale: float = 0.1) -> None:
        super().__init__(dim)
        init_scale = check_positive(init_scale, "init_scale")
        self.mean = nn.Parameter(torch.zeros(self.dim, dtype=DTYPE))
        self.raw_std = nn.Parameter(
            torch.full((self.dim,), _inverse_softplus(init_scale), dtype=DTYPE))

    def std(self) -> torch.Tensor:
        """Standard deviations, shape (D,)."""
        return softplus(self.raw_std)

    def scale_tril(self) -> torch.Tensor:
        """The Cholesky factor of the covariance: diag(std), shape (D, D)."""
        return torch.diag(self.std())

    def distribution(self) -> Distribution:
        """``Independent(Normal(mean, std), 1)``."""
        return Independent(Normal(self.mean, self.std()), 1)

    def covariance(self) -> np.ndarray:
        """diag(std^2) as a NumPy array."""
        return np.diag(self.std().detach().numpy() ** 2)


class FullRankGaussian(VariationalFamily):
    """q(z) = N(mean, L L^T) with a full lower-triangular Cholesky factor L (chapter 5).

    Unconstrained parameters: ``mean`` and ``raw_scale_tril``, whose strictly lower
    triangle and softplus-ed diagonal form L.

    Parameters
    ----------
    dim : int
        Dimension D of z.
    init_scale : float
        Initial standard deviation of every coordinate (> 0): L = init_scale I at the
        start, and the mean starts at 0.
    """

    def __init__(self, dim: int, init_scale: float = 0.1) -> None:
        super().__init__(dim)
        init_scale = check_positive(init_scale, "init_scale")
        self.mean = nn.Parameter(torch.zeros(self.dim, dtype=DTYPE))
        self.raw_scale_tril = nn.Parameter(
            torch.diag(torch.full((self.dim,), _inverse_softplus(init_scale), dtype=DTYPE)))

    def scale_tril(self) -> torch.Tensor:
        """The Cholesky factor L of the covariance, shape (D, D)."""
        raw = self.raw_scale_tril
        return torch.tril(raw, -1) + torch.diag(softplus(torch.diagonal(raw)))

    def std(self) -> torch.Tensor:
        """Marginal standard deviations sqrt(diag(L L^T)), shape (D,)."""
        return self.scale_tril().pow(2).sum(-1).sqrt()

    def distribution(self) -> Distribution:
        """``MultivariateNormal(mean, scale_tril=L)``."""
        return MultivariateNormal(self.mean, scale_tril=self.scale_tril())

    def covariance(self) -> np.ndarray:
        """L L^T as a NumPy array."""
        low = self.scale_tril().detach()
        return (low @ low.T).numpy()

    def num_parameters(self) -> int:
        """D + D(D+1)/2: the strict upper triangle of ``raw_scale_tril`` is unused."""
        return self.dim + self.dim * (self.dim + 1) // 2


@dataclass
class VIResult:
    """Output of :func:`fit_vi`.

    Attributes
    ----------
    q : VariationalFamily
        The fitted family (the object passed in, trained in place).
    steps : ndarray
        Steps at which the ELBO was evaluated (0, every ``eval_every``, the last).
    elbo : ndarray
        ELBO estimates at those steps (``eval_samples`` fresh samples each).
    model_evaluations : int
        log-joint evaluations spent on gradients (num_steps x num_samples).
    info : dict
        The estimator and the number of samples per step.
    """

    q: VariationalFamily
    steps: np.ndarray
    elbo: np.ndarray
    model_evaluations: int
    info: dict = field(default_factory=dict)


def fit_vi(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    family: VariationalFamily,
    *,
    estimator: str = "pathwise",
    num_samples: int = 8,
    num_steps: int = 1000,
    lr: float = 0.05,
    baseline: None | float | str = "leave-one-out",
    eval_every: int = 50,
    eval_samples: int = 256,
) -> VIResult:
    """Stochastic-gradient (black-box) VI: maximise the ELBO of ``family`` with Adam.

    Each step draws ``num_samples`` samples of q (that many evaluations of the model)
    and follows the pathwise gradient of :func:`~elbo_lib.bounds.monte_carlo_elbo` or
    the score-function gradient of
    :func:`~elbo_lib.bounds.score_function_elbo_surrogate`. Chapters 5 and 7.

    Parameters
    ----------
    log_joint : callable
        Maps samples of shape (S, D) to log p(x, z), shape (S,); differentiable in z for
        the pathwise estimator.
    family : VariationalFamily
        The family to fit; its parameters are trained in place.
    estimator : {"pathwise", "score"}
        The pathwise estimator needs ``rsample``; the score-function estimator needs
        ``log_prob`` at arbitrary points (not available for flows without an inverse).
    num_samples, num_steps : int
        S per step (>= 2 for the leave-one-out baseline) and number of Adam steps.
    lr : float
        Adam learning rate.
    baseline : None, float or "leave-one-out"
        Score-function baseline (ignored by the pathwise estimator).
    eval_every, eval_samples : int
        ELBO trace: every ``eval_every`` steps, with ``eval_samples`` samples.

    Returns
    -------
    VIResult

    Raises
    ------
    TypeError
        If ``family`` is not a :class:`VariationalFamily` or ``log_joint`` not callable.
    ValueError
        For a bad estimator or size, or when the ELBO estimate becomes non-finite (the
        message names the step).
    """
    if not isinstance(family, VariationalFamily):
        raise TypeError(f"family must be an elbo_lib.variational.VariationalFamily, "
                        f"got {type(family).__name__}")
    if not callable(log_joint):
        raise TypeError(f"log_joint must be callable, got {type(log_joint).__name__}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    loo = estimator == "score" and baseline == "leave-one-out"
    num_samples = check_positive_int(num_samples, "num_samples", 2 if loo else 1)
    num_steps = check_positive_int(num_steps, "num_steps")
    eval_every = check_positive_int(eval_every, "eval_every")
    eval_samples = check_positive_int(eval_samples, "eval_samples")
    lr = check_positive(lr, "lr")
    params = [p for p in family.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"family {type(family).__name__} has no trainable parameters")
    opt = torch.optim.Adam(params, lr=lr)
    steps, trace = [], []

    def stopped(step: int, err: ValueError) -> ValueError:
        hint = f" (a smaller lr than {lr} may help)" if "finite" in str(err) else ""
        return ValueError(f"fit_vi stopped at step {step} of {num_steps}: {err}{hint}")

    def record(step: int) -> None:
        try:
            with torch.no_grad():
                value = float(monte_carlo_elbo(log_joint, family.distribution(),
                                               eval_samples))
        except ValueError as err:
            raise stopped(step, err) from err
        steps.append(step)
        trace.append(value)

    record(0)
    for step in range(1, num_steps + 1):
        opt.zero_grad()
        try:
            q = family.distribution()
            if estimator == "pathwise":
                loss = -monte_carlo_elbo(log_joint, q, num_samples)
            else:
                surrogate, _ = score_function_elbo_surrogate(log_joint, q, num_samples,
                                                             baseline=baseline)
                loss = -surrogate
            if not torch.isfinite(loss):
                raise ValueError("the loss is not finite")
        except ValueError as err:
            raise stopped(step, err) from err
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == num_steps:
            record(step)
    return VIResult(family, np.asarray(steps), np.asarray(trace), num_steps * num_samples,
                    {"family": type(family).__name__, "estimator": estimator,
                     "num_samples": num_samples})


# --------------------------------------------------------------------------------------
# many Gaussian black-box VI runs at once: step-size sweeps over several seeds
# --------------------------------------------------------------------------------------
PARALLEL_ESTIMATORS = ("pathwise", "path-derivative", "score")
FAMILIES = ("diagonal", "full")


@dataclass
class ParallelVIResult:
    """Output of :func:`fit_gaussian_vi_parallel`: R independent runs.

    Attributes
    ----------
    lrs : ndarray (R,)
        Adam step size of each run.
    mean, scale_tril : ndarray (R, D) and (R, D, D)
        Final q = N(mean, L L^T) of each run (NaN where a run's parameters overflowed).
    steps : ndarray (T,)
        Steps at which the ELBO trace was recorded.
    elbo : ndarray (R, T)
        ELBO estimates (``eval_samples`` fresh samples, closed-form entropy).
    final_elbo : ndarray (R,)
        ELBO of the final q from ``final_samples`` samples.
    diverged : ndarray of bool (R,)
        The run's final ELBO is non-finite or below the ELBO of its starting point.
    model_evaluations : int
        log-joint evaluations spent on gradients by each run (steps x S).
    """

    lrs: np.ndarray
    mean: np.ndarray
    scale_tril: np.ndarray
    steps: np.ndarray
    elbo: np.ndarray
    final_elbo: np.ndarray
    diverged: np.ndarray
    model_evaluations: int


def _batched_log_q(z: torch.Tensor, mu: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """log N(z; mu_r, L_r L_r^T) for z (R, S, D), mu (R, D), low (R, D, D) -> (R, S)."""
    diff = (z - mu[:, None, :]).transpose(1, 2)
    white = torch.linalg.solve_triangular(low, diff, upper=False)
    log_det = torch.log(torch.diagonal(low, dim1=1, dim2=2)).sum(-1, keepdim=True)
    return -0.5 * (white**2).sum(1) - log_det - 0.5 * mu.shape[-1] * math.log(2 * math.pi)


def fit_gaussian_vi_parallel(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    lrs,
    *,
    family: str = "diagonal",
    estimator: str = "pathwise",
    num_samples: int = 8,
    num_steps: int = 1000,
    baseline: None | float | str = "leave-one-out",
    eval_every: int = 100,
    eval_samples: int = 256,
    final_samples: int = 4096,
    init_scale: float = 0.1,
    seed: int = 0,
) -> ParallelVIResult:
    """Run ``len(lrs)`` independent Gaussian black-box VI runs in parallel.

    The same algorithm as :func:`fit_vi` with :class:`DiagonalGaussian` or
    :class:`FullRankGaussian` (q = N(mean, L L^T), softplus diagonal, mean = 0 and
    L = init_scale I at the start, Adam), but
    every run has its own step size and its own noise, and all runs advance in one
    batched computation. Repeating a step size in ``lrs`` gives independent replicates
    (seeds) of that setting. Chapter 5 uses it for a step-size sweep of the estimators.

    Parameters
    ----------
    log_joint : callable
        Maps samples (N, D) to log p(x, z) of shape (N,).
    dim : int
    lrs : array_like of float > 0, shape (R,)
    family : {"diagonal", "full"}
    estimator : {"pathwise", "path-derivative", "score"}
        Pathwise with closed-form entropy (the gradient of ``monte_carlo_elbo`` through
        ``rsample``), the path-derivative estimator of Roeder et al. (2017), or the
        score-function estimator of Ranganath et al. (2014) with ``baseline``.
    num_samples, num_steps : int
        S samples of q per step (S model evaluations per run and step) and steps.
    baseline : None, float or "leave-one-out"
        Score function only.
    eval_every, eval_samples, final_samples : int
        ELBO trace every ``eval_every`` steps; final ELBO from ``final_samples``.
    init_scale : float
    seed : int
        Seed of the private torch generator that draws every run's noise (so that a
        sweep's runs do not depend on what ran before it).

    Returns
    -------
    ParallelVIResult

    Raises
    ------
    ValueError
        For a bad size, step size, family, estimator or baseline.
    """
    if not callable(log_joint):
        raise TypeError(f"log_joint must be callable, got {type(log_joint).__name__}")
    dim = check_positive_int(dim, "dim")
    lrs_np = np.atleast_1d(as_float_array(lrs, "lrs", ndim=1))
    if np.any(lrs_np <= 0):
        raise ValueError(f"lrs must be > 0 (every step size), got minimum {lrs_np.min()!r}")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if estimator not in PARALLEL_ESTIMATORS:
        raise ValueError(f"estimator must be one of {PARALLEL_ESTIMATORS}, "
                         f"got {estimator!r}")
    if estimator != "score":
        baseline = None
    num_samples = check_positive_int(num_samples, "num_samples")
    baseline = check_baseline(baseline, num_samples)
    num_steps = check_positive_int(num_steps, "num_steps")
    eval_every = check_positive_int(eval_every, "eval_every")
    eval_samples = check_positive_int(eval_samples, "eval_samples")
    final_samples = check_positive_int(final_samples, "final_samples")
    init_scale = check_positive(init_scale, "init_scale")
    gen = torch.Generator().manual_seed(check_positive_int(seed, "seed", minimum=0))
    r, d, s = lrs_np.size, dim, num_samples
    raw0 = _inverse_softplus(init_scale)
    mu = torch.zeros(r, d, dtype=DTYPE, requires_grad=True)
    if family == "diagonal":
        raw = torch.full((r, d), raw0, dtype=DTYPE, requires_grad=True)
    else:
        raw = torch.diag_embed(torch.full((r, d), raw0, dtype=DTYPE)).requires_grad_(True)
    entropy_const = 0.5 * d * (1.0 + math.log(2 * math.pi))

    def tril_of(raw_t: torch.Tensor) -> torch.Tensor:
        if family == "diagonal":
            return torch.diag_embed(softplus(raw_t))
        return (torch.tril(raw_t, -1)
                + torch.diag_embed(softplus(torch.diagonal(raw_t, dim1=1, dim2=2))))

    def log_p(z: torch.Tensor) -> torch.Tensor:
        flat = given = z.reshape(-1, d)
        # a diverged run's samples are NaN or inf: log_joint sees zeros in their place
        # (it may reject non-finite input); the run's values and gradients are NaN, as
        # they would be from NaN samples
        bad = ~torch.isfinite(flat).all(-1)
        if bool(bad.any()):
            flat = torch.where(bad[:, None], torch.zeros_like(flat), flat)
        out = log_joint(flat)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (flat.shape[0],):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"log_joint must map samples of shape (N, {d}) to shape (N,), "
                             f"got {got} for N = {flat.shape[0]}")
        if bool(bad.any()):
            out = out.clone()
            out[bad] = given[bad].sum(-1) * float("nan")
        return out.reshape(z.shape[0], z.shape[1])

    def elbo_of(mu_t, low, num) -> np.ndarray:
        with torch.no_grad():
            eps = torch.randn(r, num, d, dtype=DTYPE, generator=gen)
            z = mu_t[:, None, :] + eps @ low.transpose(1, 2)
            ent = torch.log(torch.diagonal(low, dim1=1, dim2=2)).sum(-1) + entropy_const
            return (log_p(z).mean(1) + ent).numpy()

    lr_t = torch.as_tensor(lrs_np, dtype=DTYPE)
    beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
    state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in (mu, raw)]
    steps, trace = [0], [elbo_of(mu.detach(), tril_of(raw.detach()), eval_samples)]
    if not np.all(np.isfinite(trace[0])):
        raise ValueError(f"log_joint is not finite at the starting point q = N(0, "
                         f"{init_scale:g}^2 I) (step 0): every run would start diverged")
    for step in range(1, num_steps + 1):
        low = tril_of(raw)
        eps = torch.randn(r, s, d, dtype=DTYPE, generator=gen)
        if estimator == "score":
            with torch.no_grad():
                z = mu[:, None, :] + eps @ low.transpose(1, 2)
            log_q = _batched_log_q(z, mu, low)
            with torch.no_grad():
                w = apply_baseline(log_p(z) - log_q, baseline, allow_nonfinite=True)
            objective = (w * log_q).mean(1)
        else:
            z = mu[:, None, :] + eps @ low.transpose(1, 2)
            if estimator == "pathwise":
                ent = torch.log(torch.diagonal(low, dim1=1, dim2=2)).sum(-1)
                objective = log_p(z).mean(1) + ent
            else:
                objective = (log_p(z) - _batched_log_q(z, mu.detach(),
                                                       low.detach())).mean(1)
        grads = torch.autograd.grad(-objective.sum(), (mu, raw))
        with torch.no_grad():
            for p, g, (m1, m2) in zip((mu, raw), grads, state, strict=True):
                m1.mul_(beta1).add_(g, alpha=1 - beta1)
                m2.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (m2 / (1 - beta2**step)).sqrt_().add_(adam_eps)
                lr_b = lr_t.reshape(-1, *([1] * (p.ndim - 1)))
                p.sub_(lr_b * (m1 / (1 - beta1**step)) / denom)
        if step % eval_every == 0 or step == num_steps:
            steps.append(step)
            trace.append(elbo_of(mu.detach(), tril_of(raw.detach()), eval_samples))
    low = tril_of(raw.detach())
    final = elbo_of(mu.detach(), low, final_samples)
    elbo = np.stack(trace, axis=1)
    diverged = ~np.isfinite(final) | (final < elbo[:, 0])
    return ParallelVIResult(lrs_np, mu.detach().numpy(), low.numpy(), np.asarray(steps),
                            elbo, final, diverged, num_steps * num_samples)
