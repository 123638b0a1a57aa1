"""A flow as a variational family (:class:`FlowFamily`) and its maximum-likelihood fit
to samples (chapter 7)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution, TransformedDistribution
from torch.distributions.transforms import Transform

from elbo_lib._validation import check_positive, check_positive_int
from elbo_lib.flows.coupling import AffineCoupling, Autoregressive
from elbo_lib.flows.transforms import (
    PlanarStackTransform,
    RadialTransform,
    _check_input,
    _check_tensor,
)
from elbo_lib.variational import DiagonalGaussian, VariationalFamily
from elbo_lib.variational.fit import _Adam

__all__ = ["FLOW_KINDS", "FlowFamily", "fit_maximum_likelihood"]

#: Layer kinds understood by :class:`FlowFamily`.
FLOW_KINDS = ("planar", "radial", "coupling", "autoregressive")


class FlowFamily(VariationalFamily):
    """q(z): a learnable diagonal Gaussian pushed through K flow layers (chapter 7).

    :meth:`distribution` returns a :class:`torch.distributions.TransformedDistribution`
    whose transforms are built with ``cache_size=1``: ``log_prob`` of its own
    ``rsample`` reuses the forward pass (no inverse), as the ELBO needs. ``log_prob`` of
    other points (a quadrature grid, data for maximum likelihood) goes through the
    layers' inverses. Any :class:`~elbo_lib.variational.VariationalFamily` consumer,
    e.g. :func:`~elbo_lib.variational.fit_vi`, fits it unchanged.

    Planar layers start near the identity: w ~ N(0, I), b = 0 and u chosen so that
    w^T u_hat = 0 and u_hat is a small shear orthogonal to w (std 0.1), a map with
    det = 1 (small random u and w would start every layer as a contraction along w,
    since the constraint gives w^T u_hat = m(0) = log 2 - 1). Radial ones start
    too (centres z0 ~ N(0, I), alpha = log 2, beta ~ N(0, 0.1^2)); their parameters are
    stacked in one tensor per kind ((K, D) or (K,)). Coupling and autoregressive
    conditioners start at the identity exactly (zero output layers).

    Parameters
    ----------
    dim : int
        Dimension D of z.
    num_layers : int
        Number of layers K (>= 0; K = 0 is the diagonal Gaussian).
    kind : {"planar", "radial", "coupling", "autoregressive"}
    hidden : int
        Hidden units of the coupling / MADE conditioners.
    init_scale : float
        Initial standard deviation of the base Gaussian (mean 0), a
        :class:`~elbo_lib.variational.DiagonalGaussian` (float64, like every layer).
    num_runs : int
        Independent flows R held at once (planar and coupling layers, when R > 1): the
        parameters get a run dimension (planar (K, R, D) and (K, R), coupling networks
        one weight matrix per run, the base (R, D)), :meth:`distribution` has batch
        shape (R,) (score points of shape (..., R, D), or (..., 1, D) under every run),
        so that
        :func:`~elbo_lib.variational.fit_vi` trains R independent runs (each from its
        own random start, with its own samples) in one computation.
    """

    def __init__(self, dim: int, num_layers: int, kind: str = "planar", *,
                 hidden: int = 16, init_scale: float = 1.0, num_runs: int = 1) -> None:
        super().__init__(dim, num_runs)
        num_layers = check_positive_int(num_layers, "num_layers", minimum=0)
        hidden = check_positive_int(hidden, "hidden")
        if kind not in FLOW_KINDS:
            raise ValueError(f"kind must be one of {FLOW_KINDS}, got {kind!r}")
        if self.num_runs > 1 and kind not in ("planar", "coupling"):
            raise ValueError(f"num_runs > 1 is implemented for planar and coupling flows "
                             f"only, got kind={kind!r} with num_runs={self.num_runs}")
        dim, dtype = self.dim, torch.float64
        self.kind, self.num_layers = kind, num_layers
        self.base_family = DiagonalGaussian(dim, init_scale, num_runs=self.num_runs)
        k = num_layers
        if kind == "planar":          # K layers' parameters stacked: one tensor each
            w = torch.randn(k, *self._run_shape(), dim, dtype=dtype)
            unit = w / w.norm(dim=-1, keepdim=True)
            u_perp = 0.1 * torch.randn(k, *self._run_shape(), dim, dtype=dtype)
            u_perp = u_perp - (u_perp * unit).sum(-1, keepdim=True) * unit
            # w^T u = log(e - 1) gives m(w^T u) = 0: u_hat = u_perp, a small shear
            along = math.log(math.e - 1) / w.norm(dim=-1, keepdim=True)
            self.u = nn.Parameter(u_perp + along * unit)
            self.w = nn.Parameter(w)
            self.b = nn.Parameter(torch.zeros(k, *self._run_shape(), dtype=dtype))
        elif kind == "radial":        # near the identity: beta ~ N(0, 0.1^2), alpha = log 2
            self.z0 = nn.Parameter(torch.randn(k, dim, dtype=dtype))
            self.alpha_raw = nn.Parameter(torch.zeros(k, dtype=dtype))
            beta = 0.1 * torch.randn(k, dtype=dtype)
            self.beta_raw = nn.Parameter(torch.log(torch.expm1(beta + math.log(2.0))))
        elif kind == "coupling":
            self.layers = nn.ModuleList(AffineCoupling(dim, i, hidden, dtype=dtype,
                                                       num_runs=self.num_runs)
                                        for i in range(k))
        else:
            self.layers = nn.ModuleList(Autoregressive(dim, i, hidden, dtype=dtype)
                                        for i in range(k))

    def transforms(self) -> list[Transform]:
        """The K layers as transforms with ``cache_size=1`` (base to output)."""
        if self.num_layers == 0:
            return []
        if self.kind == "planar":
            return [PlanarStackTransform(self.u, self.w, self.b, cache_size=1,
                                         validate=False)]
        if self.kind == "radial":
            return [RadialTransform(z0, a, b, cache_size=1, validate=False) for z0, a, b
                    in zip(self.z0.unbind(0), self.alpha_raw.unbind(0),
                           self.beta_raw.unbind(0), strict=True)]
        return [layer.transform() for layer in self.layers]

    def base(self) -> Distribution:
        """The base q0 = N(mean, diag(std^2)) with event shape (D,) (``base_family``)."""
        return self.base_family.distribution()

    def distribution(self) -> TransformedDistribution:
        """q as a TransformedDistribution with event shape (D,).

        Its ``log_prob`` takes a real floating tensor of last dimension D (another
        floating dtype is converted to float64, the layers' dtype, for every kind).
        """
        return _FlowDistribution(self.base(), self.transforms())


class _FlowDistribution(TransformedDistribution):
    """A TransformedDistribution whose ``log_prob`` checks ``value`` by name (type, real,
    last dimension) and converts it to float64, the layers' dtype (attribute checks only:
    it runs at every step of a fit)."""

    #: Leading rows of ``value`` per pass when ``log_prob`` scores many points (a
    #: quadrature grid): each point's result is the same, the working set stays in cache.
    chunk_rows = 4096

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        value = _check_input(value, self.event_shape[-1], "value", dtype=torch.float64)
        sample_dims = value.dim() - 1 - len(self.batch_shape)
        if sample_dims < 1 or value.shape[0] <= self.chunk_rows:
            return super().log_prob(value)
        return torch.cat([super(_FlowDistribution, self).log_prob(part)
                          for part in value.split(self.chunk_rows)])


def fit_maximum_likelihood(family: VariationalFamily, samples: torch.Tensor, *,
                           num_steps: int = 1000, lr: float = 0.01,
                           batch_size: int = 256) -> np.ndarray:
    """Fit q to samples of p by maximum likelihood, i.e. minimise the forward KL(p || q).

    Adam on the mean of -log q(x_i) over minibatches drawn uniformly with replacement
    (torch's global generator). log q of data points goes through the layers'
    inverses, so use a family whose inverse is cheap (coupling layers). Chapter 7.

    Parameters
    ----------
    family : VariationalFamily
        Its ``distribution().log_prob`` must accept arbitrary points.
    samples : torch.Tensor, shape (n, D)
    num_steps, batch_size : int
    lr : float

    Returns
    -------
    numpy.ndarray, shape (num_steps,) or (num_steps, R)
        The minibatch mean log-likelihood at every step (of every run, for a family
        with ``num_runs = R > 1``: each run draws its own minibatches, and the loss is
        the sum of the runs' losses, so each run's step is what it would be alone).

    Raises
    ------
    TypeError, ValueError
        For bad arguments, or the first step at which the log-likelihood is not finite
        or q cannot be formed (a step too large: "stopped at step s of num_steps"); the
        family's parameters are then put back as they were at the start of the fit.
    """
    if not isinstance(family, VariationalFamily):
        raise TypeError(f"family must be a VariationalFamily, got {type(family).__name__}")
    samples = _check_tensor(samples, "samples", min_dim=2, check_finite=True)
    if samples.dim() != 2 or samples.shape[0] < 1:
        raise ValueError(f"samples must have shape (n, D), got {tuple(samples.shape)}")
    num_steps = check_positive_int(num_steps, "num_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive(lr, "lr")
    opt = _Adam(family.parameters(), lr=lr)   # torch's Adam, bit for bit
    start = [p.detach().clone() for p in family.parameters()]
    runs = family.num_runs
    trace = np.empty((num_steps,) if runs == 1 else (num_steps, runs))
    for step in range(num_steps):
        shape = (batch_size,) if runs == 1 else (batch_size, runs)
        batch = samples[torch.randint(len(samples), shape)]
        opt.zero_grad()
        try:
            log_lik = family.distribution().log_prob(batch).mean(0)
            trace[step] = log_lik.detach().numpy()
            if not np.isfinite(trace[step]).all():
                raise ValueError("the log-likelihood is not finite")
        except ValueError as err:   # also torch's check of the base Gaussian's scale
            with torch.no_grad():
                for p, p0 in zip(family.parameters(), start, strict=True):
                    p.copy_(p0)
            raise ValueError(f"fit_maximum_likelihood stopped at step {step + 1} of "
                             f"{num_steps}: {_stop_reason(err)} (a smaller lr than {lr} may "
                             f"help); the family's parameters are restored to their values "
                             f"at the start of the fit") from err
        (-log_lik.sum()).backward()
        opt.step()
    return trace


def _stop_reason(err: ValueError) -> str:
    """The reason of a stopped fit: ours, or torch's constraint check in a few words
    (its message prints whole tensors)."""
    reason = str(err)
    if reason.startswith("Expected parameter"):
        reason = (f"q cannot be formed (its {reason.split(' (')[0].removeprefix('Expected ')}"
                  f" is not finite or out of range)")
    return reason

