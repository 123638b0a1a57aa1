"""Coupling (RealNVP, Dinh et al. 2017) and inverse-autoregressive (IAF with a MADE
conditioner; Germain et al. 2015, Kingma et al. 2016) flow layers, and the modules that
hold their conditioners' parameters (one weight matrix per run for batched fits).
Chapter 7."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from elbo_lib._validation import check_positive, check_positive_int
from elbo_lib.flows.transforms import _check_input, _check_tensor, _VectorBijection

__all__ = [
    "MADE",
    "AffineCoupling",
    "AffineCouplingTransform",
    "Autoregressive",
    "AutoregressiveTransform",
]


# --------------------------------------------------------------------------------------
# coupling and autoregressive layers
# --------------------------------------------------------------------------------------
class AffineCouplingTransform(_VectorBijection):
    """Affine coupling layer of RealNVP (Dinh et al. 2017).

    With a binary ``mask`` splitting z into a part a (mask 1) that passes unchanged and
    a part b (mask 0), and a conditioner (s, t) = conditioner(mask * z) that sees only
    part a,

    .. math::

        y_a = z_a, \\qquad y_b = z_b \\odot e^{s(z_a)} + t(z_a), \\qquad
        \\log|\\det J| = \\textstyle\\sum_b s_b(z_a).

    The Jacobian is triangular, and the inverse z_b = (y_b - t(y_a)) e^{-s(y_a)} costs
    one pass too: sampling and density evaluation are both cheap. Chapter 7.

    Parameters
    ----------
    conditioner : callable
        Maps a tensor (..., D) to (s, t), two tensors (..., D); only the entries where
        ``mask`` is 0 are used.
    mask : torch.Tensor, shape (D,)
        Zeros and ones, with at least one of each.
    cache_size : {0, 1}
    """

    def __init__(self, conditioner: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                 mask: torch.Tensor, cache_size: int = 1) -> None:
        super().__init__(cache_size)
        if not callable(conditioner):
            raise TypeError(f"conditioner must be callable, got {type(conditioner).__name__}")
        mask = _check_tensor(mask, "mask", min_dim=1, check_finite=True)
        if mask.dim() != 1 or not bool(torch.all((mask == 0) | (mask == 1))):
            raise ValueError("mask must be a 1-D tensor of zeros and ones")
        if bool(mask.all()) or not bool(mask.any()):
            raise ValueError("mask must contain at least one 0 and one 1")
        self.conditioner, self.mask = conditioner, mask
        self._last = None

    def with_cache(self, cache_size: int = 1) -> AffineCouplingTransform:
        """The same layer with another cache size."""
        if self._cache_size == cache_size:
            return self
        return AffineCouplingTransform(self.conditioner, self.mask, cache_size)

    def _params(self, x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, torch.Tensor]:
        """(s, t) at x, remembered for the last x (the forward pass's log-det)."""
        if self._last is not None and self._last[0] is x:
            return self._last[1]
        _check_input(x, self.mask.shape[-1], name)
        s, t = self.conditioner(x * self.mask)
        free = 1 - self.mask
        self._last = (x, (s * free, t * free))
        return self._last[1]

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        s, t = self._params(x)
        return x * torch.exp(s) + t

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        s, t = self._params(y, "y")            # y_a = x_a: the same conditioner input
        return (y - t) * torch.exp(-s)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """sum over the transformed coordinates of s(x_a), shape (...)."""
        return self._params(x)[0].sum(-1)


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation (Germain et al. 2015), one hidden layer.

    Maps z (..., D) to (m, s), two tensors (..., D) in which output i depends only on
    z_1, ..., z_{i-1} (so m_1, s_1 are constants): the masks give input i degree i,
    hidden unit j degree 1 + (j mod (D - 1)), and connect a unit to an output of
    degree i only if its degree is below i. The last layer starts at zero, so a fresh
    layer is the identity. ``s`` is bounded by ``max_log_scale * tanh``. Chapter 7.

    Parameters
    ----------
    dim : int
        D >= 2.
    hidden : int
        Hidden units (>= D - 1, so that every input can reach a later output).
    max_log_scale : float
        Bound on |s| (> 0).
    dtype : torch.dtype
    """

    def __init__(self, dim: int, hidden: int = 16, max_log_scale: float = 3.0,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        dim = check_positive_int(dim, "dim", minimum=2)
        hidden = check_positive_int(hidden, "hidden", minimum=dim - 1)
        self.max_log_scale = check_positive(max_log_scale, "max_log_scale")
        self.dim = dim
        deg_in = torch.arange(1, dim + 1)
        deg_hidden = 1 + torch.arange(hidden) % (dim - 1)
        self.register_buffer("mask_in", (deg_hidden[:, None] >= deg_in[None, :]).to(dtype))
        mask_out = (deg_in[:, None] > deg_hidden[None, :]).to(dtype)
        self.register_buffer("mask_out", torch.cat([mask_out, mask_out]))
        self.inner = nn.Linear(dim, hidden, dtype=dtype)
        self.outer = nn.Linear(hidden, 2 * dim, dtype=dtype)
        nn.init.zeros_(self.outer.weight)
        nn.init.zeros_(self.outer.bias)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m, s) of the autoregressive affine map, each of shape (..., D).

        ``z`` of another floating dtype is converted to the MADE's (float64 by default),
        as the coupling layers promote theirs.
        """
        return self._forward(_check_input(z, self.dim, "z", dtype=self.inner.weight.dtype))

    def _forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` of a z its caller has checked (the layers, every step)."""
        h = torch.tanh(F.linear(z, self.inner.weight * self.mask_in, self.inner.bias))
        out = F.linear(h, self.outer.weight * self.mask_out, self.outer.bias)
        m, s = out.split(self.dim, dim=-1)
        return m, self.max_log_scale * torch.tanh(s / self.max_log_scale)


class AutoregressiveTransform(_VectorBijection):
    """Affine autoregressive layer y_i = z_i exp(s_i(z_<i)) + m_i(z_<i) (IAF direction).

    The inverse autoregressive flow of Kingma et al. (2016) computes (m, s) from the
    layer's *input* with a :class:`MADE`, so the forward map (sampling, and the density
    of the flow's own samples) is one pass; its Jacobian is triangular with log|det| =
    sum_i s_i. The inverse, needed for the density of an arbitrary point, is
    sequential: z_i = (y_i - m_i(z_<i)) exp(-s_i(z_<i)) for i = 1, ..., D, i.e. D
    passes. (A masked autoregressive flow is the same layer used the other way round.)
    Chapter 7.

    Parameters
    ----------
    made : MADE
        The autoregressive conditioner.
    cache_size : {0, 1}
    """

    def __init__(self, made: MADE, cache_size: int = 1) -> None:
        super().__init__(cache_size)
        if not isinstance(made, MADE):
            raise TypeError(f"made must be a MADE, got {type(made).__name__}")
        self.made = made
        self._last = None

    def with_cache(self, cache_size: int = 1) -> AutoregressiveTransform:
        """The same layer with another cache size."""
        if self._cache_size == cache_size:
            return self
        return AutoregressiveTransform(self.made, cache_size)

    def _params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m, s) at x, remembered for the last x (the forward pass's log-det)."""
        if self._last is None or self._last[0] is not x:
            self._last = (x, self.made._forward(
                _check_input(x, self.made.dim, dtype=self.made.inner.weight.dtype)))
        return self._last[1]

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        m, s = self._params(x)
        return x * torch.exp(s) + m

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        y = _check_input(y, self.made.dim, "y", dtype=self.made.inner.weight.dtype)
        x = torch.zeros_like(y)
        for _ in range(self.made.dim):          # pass i fixes coordinate i
            m, s = self.made._forward(x)
            x = (y - m) * torch.exp(-s)
        return x

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """sum_i s_i(x_<i), shape (...)."""
        return self._params(x)[1].sum(-1)



# --------------------------------------------------------------------------------------
# modules holding the parameters of the layers
# --------------------------------------------------------------------------------------
class _RunLinear(nn.Module):
    """R independent linear maps, one per run: (..., R, n_in) -> (..., R, n_out).

    Weights (R, n_in, n_out) drawn as :class:`torch.nn.Linear` draws its own
    (uniform on +-1/sqrt(n_in), weights and biases); an input with run dimension 1
    is broadcast to all R runs (a grid of points scored under every run).
    """

    def __init__(self, num_runs: int, n_in: int, n_out: int, dtype: torch.dtype) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(n_in)
        self.weight = nn.Parameter(
            torch.empty(num_runs, n_in, n_out, dtype=dtype).uniform_(-bound, bound))
        self.bias = nn.Parameter(
            torch.empty(num_runs, n_out, dtype=dtype).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[-2] not in (1, self.weight.shape[0]):
            raise ValueError(f"x must have shape (..., {self.weight.shape[0]}, "
                             f"{self.weight.shape[1]}) (one row per run), got "
                             f"{tuple(x.shape)}")
        runs, n_in = self.weight.shape[:2]
        lead = x.shape[:-2]
        # (..., R, n_in) -> (R, N, n_in): one batched product per run (baddbmm), cheaper
        # than einsum's general contraction at these small sizes
        x = x.expand(*lead, runs, n_in).reshape(-1, runs, n_in).transpose(0, 1)
        out = torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)       # (R, N, n_out)
        return out.transpose(0, 1).reshape(*lead, runs, -1)


class _CouplingNet(nn.Module):
    """(s, t) = MLP(z): one tanh hidden layer, zero-initialised output, |s| bounded.

    With ``num_runs`` R > 1, R independent networks applied to (..., R, D) inputs.
    """

    def __init__(self, dim: int, hidden: int, max_log_scale: float,
                 dtype: torch.dtype, num_runs: int = 1) -> None:
        super().__init__()
        self.dim, self.max_log_scale = dim, max_log_scale
        if num_runs == 1:
            self.inner = nn.Linear(dim, hidden, dtype=dtype)
            self.outer = nn.Linear(hidden, 2 * dim, dtype=dtype)
        else:
            self.inner = _RunLinear(num_runs, dim, hidden, dtype)
            self.outer = _RunLinear(num_runs, hidden, 2 * dim, dtype)
        nn.init.zeros_(self.outer.weight)
        nn.init.zeros_(self.outer.bias)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.outer(torch.tanh(self.inner(z))).split(self.dim, dim=-1)
        return self.max_log_scale * torch.tanh(s / self.max_log_scale), t


class AffineCoupling(nn.Module):
    """Conditioner network and mask of one coupling layer; :meth:`transform` builds it.

    Layer ``index`` k keeps the coordinates with (i + k) even (so consecutive layers
    alternate halves). The network has one tanh hidden layer and a zero-initialised
    output layer: a fresh layer is the identity.
    """

    def __init__(self, dim: int, index: int = 0, hidden: int = 16,
                 max_log_scale: float = 3.0, dtype: torch.dtype = torch.float64,
                 num_runs: int = 1) -> None:
        super().__init__()
        dim = check_positive_int(dim, "dim", minimum=2)
        index = check_positive_int(index, "index", minimum=0)
        hidden = check_positive_int(hidden, "hidden")
        max_log_scale = check_positive(max_log_scale, "max_log_scale")
        num_runs = check_positive_int(num_runs, "num_runs")
        self.net = _CouplingNet(dim, hidden, max_log_scale, dtype, num_runs)
        self.register_buffer("mask", ((torch.arange(dim) + index) % 2 == 0).to(dtype))

    def transform(self) -> AffineCouplingTransform:
        """The layer as a transform with ``cache_size=1``."""
        return AffineCouplingTransform(self.net, self.mask, cache_size=1)


class Autoregressive(nn.Module):
    """A :class:`MADE` conditioner; :meth:`transform` builds the IAF layer.

    Odd-numbered layers (``index``) reverse the coordinate order (through a permuted
    MADE), so that stacked layers condition in alternating directions.
    """

    def __init__(self, dim: int, index: int = 0, hidden: int = 16,
                 max_log_scale: float = 3.0, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        index = check_positive_int(index, "index", minimum=0)
        self.made = MADE(dim, hidden, max_log_scale, dtype)
        if index % 2 == 1:
            order = torch.arange(self.made.dim - 1, -1, -1)
            self.made.mask_in.copy_(self.made.mask_in[:, order])
            self.made.mask_out.copy_(self.made.mask_out[torch.cat(
                [order, order + self.made.dim])])

    def transform(self) -> AutoregressiveTransform:
        """The layer as a transform with ``cache_size=1``."""
        return AutoregressiveTransform(self.made, cache_size=1)

