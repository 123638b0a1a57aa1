"""Variational families as objects (chapters 5, 7).

:class:`VariationalFamily` (an :class:`torch.nn.Module` whose ``distribution()`` is q_phi)
and its Gaussian instances :class:`DiagonalGaussian` and :class:`FullRankGaussian`, each
holding one or ``num_runs`` independent members; :data:`DTYPE`, the dtype of every
family.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal
from torch.nn.functional import softplus

from elbo_lib._validation import check_positive, check_positive_int

DTYPE = torch.float64



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
    num_runs : int
        Number R of independent members the family holds (1 by default). With R > 1
        every parameter has a leading run dimension, :meth:`distribution` has batch
        shape (R,), and :func:`fit_vi` trains the members as R independent runs.
    """

    def __init__(self, dim: int, num_runs: int = 1) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.num_runs = check_positive_int(num_runs, "num_runs")

    def _run_shape(self) -> tuple[int, ...]:
        """() for one member, (R,) for R independent ones: the parameters' leading shape."""
        return () if self.num_runs == 1 else (self.num_runs,)

    def distribution(self) -> Distribution:
        """q with event shape (D,); batch shape () for one member, (R,) for R runs."""
        raise NotImplementedError(f"{type(self).__name__} must implement distribution()")

    def num_parameters(self) -> int:
        """Number of free (trainable) variational parameters of one member."""
        total = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return total // self.num_runs



class DiagonalGaussian(VariationalFamily):
    """q(z) = N(mean, diag(std^2)), the mean-field Gaussian (chapter 5).

    Unconstrained parameters: ``mean`` and ``raw_std`` with std = softplus(raw_std).

    Parameters
    ----------
    dim : int
        Dimension D of z.
    init_scale : float
        Initial standard deviation of every coordinate (> 0); the mean starts at 0.
    num_runs : int
        Independent members R (parameters of shape (R, D) when R > 1).
    """

    def __init__(self, dim: int, init_scale: float = 0.1, num_runs: int = 1) -> None:
        super().__init__(dim, num_runs)
        init_scale = check_positive(init_scale, "init_scale")
        shape = (*self._run_shape(), self.dim)
        self.mean = nn.Parameter(torch.zeros(shape, dtype=DTYPE))
        self.raw_std = nn.Parameter(
            torch.full(shape, _inverse_softplus(init_scale), dtype=DTYPE))

    def std(self) -> torch.Tensor:
        """Standard deviations, shape (D,) (or (R, D))."""
        return softplus(self.raw_std)

    def scale_tril(self) -> torch.Tensor:
        """The Cholesky factor of the covariance: diag(std), shape (D, D) (or (R, D, D))."""
        return torch.diag_embed(self.std())

    def distribution(self) -> Distribution:
        """``Independent(Normal(mean, std), 1)``."""
        return Independent(Normal(self.mean, self.std()), 1)

    def covariance(self) -> np.ndarray:
        """diag(std^2) as a NumPy array, shape (D, D) (or (R, D, D))."""
        return torch.diag_embed(self.std().detach() ** 2).numpy()



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
    num_runs : int
        Independent members R (``mean`` of shape (R, D), ``raw_scale_tril`` (R, D, D)
        when R > 1). Restarts from different means: set ``mean`` before fitting.
    """

    def __init__(self, dim: int, init_scale: float = 0.1, num_runs: int = 1) -> None:
        super().__init__(dim, num_runs)
        init_scale = check_positive(init_scale, "init_scale")
        runs = self._run_shape()
        self.mean = nn.Parameter(torch.zeros((*runs, self.dim), dtype=DTYPE))
        self.raw_scale_tril = nn.Parameter(torch.diag_embed(
            torch.full((*runs, self.dim), _inverse_softplus(init_scale), dtype=DTYPE)))

    def scale_tril(self) -> torch.Tensor:
        """The Cholesky factor L of the covariance, shape (D, D) (or (R, D, D))."""
        raw = self.raw_scale_tril
        return torch.tril(raw, -1) + torch.diag_embed(
            softplus(torch.diagonal(raw, dim1=-2, dim2=-1)))

    def std(self) -> torch.Tensor:
        """Marginal standard deviations sqrt(diag(L L^T)), shape (D,) (or (R, D))."""
        return self.scale_tril().pow(2).sum(-1).sqrt()

    def distribution(self) -> Distribution:
        """``MultivariateNormal(mean, scale_tril=L)``."""
        return MultivariateNormal(self.mean, scale_tril=self.scale_tril())

    def covariance(self) -> np.ndarray:
        """L L^T as a NumPy array, shape (D, D) (or (R, D, D))."""
        low = self.scale_tril().detach()
        return (low @ low.transpose(-1, -2)).numpy()

    def num_parameters(self) -> int:
        """D + D(D+1)/2: the strict upper triangle of ``raw_scale_tril`` is unused."""
        return self.dim + self.dim * (self.dim + 1) // 2
