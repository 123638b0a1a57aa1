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
:func:`elbo_lib.gradients.score_function_elbo_surrogate` (Ranganath, Gerrish and Blei
2014): the same number of model evaluations per step for both.
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

from elbo_lib._validation import check_positive, check_positive_int
from elbo_lib.bounds import monte_carlo_elbo
from elbo_lib.gradients import score_function_elbo_surrogate

__all__ = [
    "DiagonalGaussian",
    "FullRankGaussian",
    "VIResult",
    "VariationalFamily",
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
    :func:`~elbo_lib.gradients.score_function_elbo_surrogate`. Chapters 5 and 7.

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

    def record(step: int) -> None:
        with torch.no_grad():
            value = float(monte_carlo_elbo(log_joint, family.distribution(), eval_samples))
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
            hint = f" (a smaller lr than {lr} may help)" if "finite" in str(err) else ""
            raise ValueError(f"fit_vi stopped at step {step} of {num_steps}: {err}{hint}"
                             ) from err
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == num_steps:
            record(step)
    return VIResult(family, np.asarray(steps), np.asarray(trace), num_steps * num_samples,
                    {"family": type(family).__name__, "estimator": estimator,
                     "num_samples": num_samples})
