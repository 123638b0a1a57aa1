"""Flows as density models of discrete data: dequantisation and its bound (chapter 7).

A flow has a density on R^D; images have discrete pixel values. *Uniform
dequantisation* (Theis et al. 2016) adds u ~ U[0, 1)^D to a discrete x in
{0, ..., L - 1}^D and fits the flow's density p to v = x + u. The flow then defines a
discrete model by integrating p over the unit cell of x,

.. math::

    P(x) = \\int_{[0, 1)^D} p(x + u)\\, du , \\qquad
    \\log P(x) \\ge \\E_{u}\\big[\\log p(x + u)\\big]

by Jensen's inequality: the dequantised log-likelihood is an ELBO of log P(x) whose
"posterior" q(u | x) is uniform on the cell (Ho et al. 2019), and its gap is
KL(U[0,1)^D || p(x + . | cell)). With k independent u's, log-mean-exp of p(x + u_j) is
a tighter bound, the importance-weighted bound of chapter 6 with the uniform proposal.

- :class:`DequantizedFlow`: a RealNVP coupling flow (:class:`~elbo_lib.flows.FlowFamily`
  with ``kind="coupling"``) on R^D, followed by a fixed squashing map (a sigmoid and an
  affine map, as RealNVP's logit pre-processing) onto a box that holds the cells
  [0, L)^D; its ``distribution()`` is a torch ``TransformedDistribution`` on that box,
  fitted by :func:`elbo_lib.flows.fit_maximum_likelihood` on dequantised data;
- :func:`dequantize`, :func:`quantize`: from cells to points and back;
- :func:`dequantized_log_densities`: log p(x + u) at fresh u's, from which the bound,
  its standard error and the importance-weighted bound follow;
- :func:`bits_per_dim`: nats per image as bits per dimension.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.distributions import Distribution, TransformedDistribution
from torch.distributions.transforms import AffineTransform, SigmoidTransform, Transform

from elbo_lib._validation import check_positive, check_positive_int
from elbo_lib.flows import FlowFamily
from elbo_lib.variational import VariationalFamily

__all__ = [
    "DequantizedFlow",
    "bits_per_dim",
    "dequantize",
    "dequantized_log_densities",
    "quantize",
]


def _check_levels(levels) -> int:
    return check_positive_int(levels, "levels", minimum=2)


def _check_discrete(x, levels: int, name: str = "x") -> torch.Tensor:
    """``x`` as a float64 tensor (n, D) of integers in {0, ..., levels - 1}."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be a real tensor, got {x.dtype}")
    if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (n, D), got {tuple(x.shape)}")
    x = x.detach().to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    if not bool(((x == x.round()) & (x >= 0) & (x <= levels - 1)).all()):
        raise ValueError(f"{name} must hold integers in {{0, ..., {levels - 1}}} "
                         f"(levels = {levels}), got values in [{float(x.min())}, "
                         f"{float(x.max())}]")
    return x


class DequantizedFlow(VariationalFamily):
    """A coupling flow on R^D squashed onto the box of the cells [0, levels)^D.

    The density of v is that of a RealNVP flow y = f(z), z ~ N(mean, diag(std^2))
    (:class:`~elbo_lib.flows.FlowFamily`, ``kind="coupling"``), pushed through the fixed
    bijection

    .. math::

        v = \\frac{L}{1 - 2\\alpha}\\big(\\sigma(y) - \\alpha\\big) ,

    so v ranges over (-a, L + a)^D with a = L alpha / (1 - 2 alpha): the cells [0, L)^D
    and a margin. The squashing's log-determinant, sum_d log(L sigma'(y_d) /
    (1 - 2 alpha)), is part of log p(v) (torch's ``SigmoidTransform`` and
    ``AffineTransform``). Mass in the margin belongs to no cell, so the discrete model
    P(x) = int_cell p sums to less than 1 over x (a lower bound stays a lower bound).
    Chapter 7.

    Parameters
    ----------
    dim : int
        Dimension D (>= 2: a coupling layer splits the coordinates).
    num_layers : int
        Coupling layers K (>= 0).
    hidden : int
        Hidden units of each coupling layer's conditioner.
    levels : int
        Number L of discrete values per coordinate (2 for binary pixels).
    alpha : float
        Margin of the squashing map, in (0, 0.5).
    num_runs : int
        Independent flows R trained at once (see :class:`~elbo_lib.flows.FlowFamily`):
        ``distribution()`` then has batch shape (R,) and scores points (..., R, D) or
        (..., 1, D).
    """

    def __init__(self, dim: int, num_layers: int, *, hidden: int = 64, levels: int = 2,
                 alpha: float = 0.05, num_runs: int = 1) -> None:
        super().__init__(check_positive_int(dim, "dim", minimum=2), num_runs)
        self.levels = _check_levels(levels)
        alpha = check_positive(alpha, "alpha")
        if not alpha < 0.5:
            raise ValueError(f"alpha must lie in (0, 0.5), got {alpha!r}")
        self.alpha = alpha
        self.flow = FlowFamily(self.dim, num_layers, "coupling", hidden=hidden,
                               num_runs=self.num_runs)

    def squash(self) -> list[Transform]:
        """The fixed map from the flow's R^D onto the box: [sigmoid, affine]."""
        scale = self.levels / (1 - 2 * self.alpha)
        return [SigmoidTransform(), AffineTransform(-self.alpha * scale, scale)]

    def distribution(self) -> TransformedDistribution:
        """p(v) on the box, event shape (D,), batch shape () or (R,)."""
        return TransformedDistribution(self.flow.distribution(), self.squash())


def dequantize(x: torch.Tensor, levels: int = 2, copies: int = 1) -> torch.Tensor:
    """``copies`` dequantised copies of every row of x: x + u, u ~ U[0, 1)^D.

    Uses torch's global generator. Returns a float64 tensor of shape (copies * n, D),
    the copies stacked one after the other.

    Parameters
    ----------
    x : torch.Tensor, shape (n, D)
        Integers in {0, ..., levels - 1}.
    levels : int
    copies : int
    """
    levels = _check_levels(levels)
    x = _check_discrete(x, levels)
    copies = check_positive_int(copies, "copies")
    return (x.repeat(copies, 1) + torch.rand(copies * len(x), x.shape[1],
                                              dtype=torch.float64))


def quantize(v: torch.Tensor, levels: int = 2) -> torch.Tensor:
    """The cell of every point: floor(v), clipped to {0, ..., levels - 1} (points in the
    squashing margin go to the nearest cell). Float64, the shape of ``v``.

    Parameters
    ----------
    v : torch.Tensor
        Real points, any shape.
    levels : int
    """
    levels = _check_levels(levels)
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"v must be a torch.Tensor, got {type(v).__name__}")
    if not v.is_floating_point():
        raise TypeError(f"v must be a floating-point tensor, got {v.dtype}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError("v must be finite (no NaN or inf)")
    return v.detach().floor().clamp(0, levels - 1).to(torch.float64)


def dequantized_log_densities(distribution: Distribution, x: torch.Tensor,
                              num_samples: int, levels: int = 2,
                              max_batch: int = 2**16) -> torch.Tensor:
    """log p(x_i + u_ij) at ``num_samples`` fresh u_ij ~ U[0, 1)^D per data point.

    Their mean over j estimates the dequantised bound E_u[log p(x + u)] <= log P(x)
    (standard error: their standard deviation over sqrt(num_samples)); their
    log-mean-exp over j is the k-sample importance-weighted bound, also <= log P(x) in
    expectation and larger than the mean of the same samples. Evaluated without
    gradients, in chunks of at most ``max_batch`` points. Uses torch's global generator.
    With a batch of R runs every run is scored at its own u's, so that the runs'
    estimates are independent (shared u's would correlate them: their spread would
    understate how much a mean over runs moves under other random numbers).

    Parameters
    ----------
    distribution : torch.distributions.Distribution
        Event shape (D,) and batch shape () or (R,), e.g.
        ``DequantizedFlow.distribution()``.
    x : torch.Tensor, shape (n, D)
        Integers in {0, ..., levels - 1}.
    num_samples : int
    levels : int
    max_batch : int

    Returns
    -------
    torch.Tensor, shape (num_samples, n) or (num_samples, n, R)
    """
    if not isinstance(distribution, Distribution):
        raise TypeError(f"distribution must be a torch Distribution, got "
                        f"{type(distribution).__name__}")
    levels = _check_levels(levels)
    x = _check_discrete(x, levels)
    if tuple(distribution.event_shape) != (x.shape[1],) or len(distribution.batch_shape) > 1:
        raise ValueError(f"distribution must have event shape ({x.shape[1]},) (the "
                         f"columns of x) and batch shape () or (R,), got "
                         f"{tuple(distribution.event_shape)} and "
                         f"{tuple(distribution.batch_shape)}")
    num_samples = check_positive_int(num_samples, "num_samples")
    max_batch = check_positive_int(max_batch, "max_batch")
    runs = distribution.batch_shape
    chunk = max(1, max_batch // (len(x) * max(1, math.prod(runs))))
    out = []
    with torch.no_grad():
        for start in range(0, num_samples, chunk):
            s = min(chunk, num_samples - start)
            if runs:                             # (s, n, R, D): each run its own u's
                v = x.unsqueeze(-2) + torch.rand(s, len(x), *runs, x.shape[1],
                                                 dtype=torch.float64)
            else:
                v = x + torch.rand(s, *x.shape, dtype=torch.float64)
            out.append(distribution.log_prob(v))
    log_p = torch.cat(out)
    if not bool(torch.isfinite(log_p).all()):
        raise ValueError("the log-densities are not finite: the distribution returned NaN "
                         "or inf at dequantised points")
    return log_p


def bits_per_dim(nats, dim: int) -> float | torch.Tensor:
    """Convert a log-likelihood in nats per data point to bits per dimension,
    -nats / (dim log 2) (positive: a code length).

    Parameters
    ----------
    nats : float, NumPy real scalar or torch.Tensor
        Log-likelihood per data point, in nats (<= 0 for a discrete model).
    dim : int
        Dimensions D per data point.
    """
    dim = check_positive_int(dim, "dim")
    if isinstance(nats, torch.Tensor):
        if not nats.is_floating_point():
            raise TypeError(f"nats must be a real floating tensor or number, got {nats.dtype}")
        if not bool(torch.isfinite(nats).all()):
            raise ValueError("nats must be finite (no NaN or inf)")
        return -nats / (dim * math.log(2.0))
    if isinstance(nats, bool | np.bool_) or not isinstance(nats, int | float | np.integer
                                                             | np.floating):
        raise TypeError(f"nats must be a real number or tensor, got {type(nats).__name__}")
    if not math.isfinite(nats):
        raise ValueError(f"nats must be finite, got {nats!r}")
    return -float(nats) / (dim * math.log(2.0))
