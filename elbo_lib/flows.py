"""Normalising flows: invertible maps with cheap Jacobian determinants (chapter 7).

A flow pushes a simple base density q0 through an invertible map f = f_K o ... o f_1;
by the change of variables, the density of z_K = f(z_0) is

.. math::

    \\log q_K(z_K) = \\log q_0(z_0) - \\sum_{k=1}^K \\log \\left|\\det
    \\frac{\\partial f_k}{\\partial z_{k-1}}\\right| .

The layers here are :class:`torch.distributions.transforms.Transform` subclasses, so a
flow is a :class:`torch.distributions.TransformedDistribution` and plugs into anything
that takes a torch distribution (the book's one VI loop,
:func:`elbo_lib.variational.fit_vi`, and the VAE's encoder):

- :class:`PlanarTransform` and :class:`RadialTransform` (Rezende & Mohamed 2015), with
  the reparameterisations that keep them invertible;
- :class:`AffineCouplingTransform` (RealNVP, Dinh et al. 2017): cheap in both
  directions;
- :class:`AutoregressiveTransform` with a :class:`MADE` conditioner (Germain et al.
  2015), in the inverse-autoregressive direction of IAF (Kingma et al. 2016): sampling
  and the density of its own samples in one pass, the density of an arbitrary point in
  D passes.

:class:`FlowFamily` stacks K layers on a learnable diagonal Gaussian, as a
:class:`~elbo_lib.variational.VariationalFamily`. The module also holds Rezende &
Mohamed's 2-D test densities (:func:`log_density_u1` ... :func:`log_density_u4`), a
square quadrature grid (:func:`square_grid`) for their normalisers and for KL(q || p),
and a maximum-likelihood (forward-KL) fit of a flow to samples
(:func:`fit_maximum_likelihood`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import (
    Distribution,
    Independent,
    Normal,
    TransformedDistribution,
    constraints,
)
from torch.distributions.transforms import Transform

from elbo_lib import vae as _vae
from elbo_lib._validation import (
    as_numeric_array,
    check_finite_tensor,
    check_positive,
    check_positive_int,
)
from elbo_lib.variational import DiagonalGaussian, VariationalFamily

__all__ = [
    "FLOW_KINDS",
    "MADE",
    "AffineCoupling",
    "AffineCouplingTransform",
    "Autoregressive",
    "AutoregressiveTransform",
    "FlowFamily",
    "Grid2D",
    "PlanarFlowEncoder",
    "PlanarStackTransform",
    "PlanarTransform",
    "RadialTransform",
    "fit_maximum_likelihood",
    "log_density_u1",
    "log_density_u2",
    "log_density_u3",
    "log_density_u4",
    "refine_flow_posterior",
    "square_grid",
    "train_flow_vaes",
    "vae_elbo_of",
]

#: Layer kinds understood by :class:`FlowFamily`.
FLOW_KINDS = ("planar", "radial", "coupling", "autoregressive")


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------
def _check_tensor(value, name: str, min_dim: int = 0,
                  check_finite: bool = False) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if value.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), "
                         f"got shape {tuple(value.shape)}")
    if check_finite and not torch.all(torch.isfinite(value.detach())):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return value


def _check_vectors(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"{name_a} and {name_b} must have the same last dimension, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")


def _check_cache_size(cache_size) -> int:
    if cache_size not in (0, 1):
        raise ValueError(f"cache_size must be 0 or 1, got {cache_size!r}")
    return int(cache_size)


def _check_input(x: torch.Tensor, dim: int, name: str = "x",
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` checked at the entry of a layer's method (a real floating tensor of last
    dimension ``dim``) and converted to ``dtype`` where it differs; attribute checks only,
    no pass over the values (these run at every step of a fit). NaN in ``x`` gives NaN
    out, as in torch's own transforms."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point tensor, got {x.dtype}")
    if x.dim() < 1 or x.shape[-1] != dim:
        raise ValueError(f"{name} must have last dimension {dim}, got shape {tuple(x.shape)}")
    return x if dtype is None or x.dtype == dtype else x.to(dtype)


def _check_params(validate: bool, **tensors: torch.Tensor) -> None:
    """Finite parameters of one dtype (a layer built by the library's own families skips
    this with ``validate=False``: it runs once per step there, and a NaN parameter shows
    as a non-finite loss, which the training loops check)."""
    if not validate:
        return
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) > 1:
        listed = ", ".join(f"{n} {t.dtype}" for n, t in tensors.items())
        raise TypeError(f"{', '.join(tensors)} must have one dtype, got {listed}")
    for name, t in tensors.items():
        if not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(f"{name} must be finite (no NaN or inf)")


# --------------------------------------------------------------------------------------
# planar and radial flows (Rezende & Mohamed 2015)
# --------------------------------------------------------------------------------------
class _VectorBijection(Transform):
    """Base of the layers: an invertible map of R^D onto R^D (event dimension 1)."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, cache_size: int = 1) -> None:
        super().__init__(cache_size=_check_cache_size(cache_size))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x is None:   # torch's cache starts as (None, None): t(None) would return None
            raise TypeError("x must be a torch.Tensor, got NoneType")
        return super().__call__(x)

    def _inv_call(self, y: torch.Tensor) -> torch.Tensor:
        if y is None:
            raise TypeError("y must be a torch.Tensor, got NoneType")
        return super()._inv_call(y)


class PlanarTransform(_VectorBijection):
    """Planar flow f(z) = z + u_hat tanh(w^T z + b) (Rezende & Mohamed 2015, eq. 10).

    ``u`` is unconstrained; the layer uses

    .. math::

        \\hat u = u + \\big(m(w^\\top u) - w^\\top u\\big) \\frac{w}{\\lVert w\\rVert^2},
        \\qquad m(a) = -1 + \\log(1 + e^a),

    so that w^T u_hat = m(w^T u) > -1, which makes f invertible (appendix A.1 of the
    paper). Its log-determinant is log(1 + w^T u_hat tanh'(w^T z + b)) (eq. 12, by the
    matrix determinant lemma). The inverse has no closed form: it solves the scalar
    equation w^T y = a + (w^T u_hat) tanh(a + b) for a = w^T z by bisection (the left
    side is increasing in a) and polishes it with one Newton step, so it is
    differentiable. Chapter 7.

    Parameters
    ----------
    u, w : torch.Tensor, shape (..., D)
        Direction and normal of the layer (``w`` nonzero); leading dimensions broadcast
        against the input's (one layer per data point in an amortised encoder).
    b : torch.Tensor, shape (...)
        Offset.
    cache_size : {0, 1}
        1 caches the last (x, y) pair, so ``log_prob`` of the flow's own samples needs
        no inverse.
    validate : bool
        Check that u, w and b are finite and of one dtype (inputs of another floating
        dtype are converted to it). ``False`` skips the pass over the values, for
        parameters the caller knows to be finite (the library's own families).
    """

    def __init__(self, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                 cache_size: int = 1, *, validate: bool = True) -> None:
        super().__init__(cache_size)
        u = _check_tensor(u, "u", min_dim=1)
        w = _check_tensor(w, "w", min_dim=1)
        b = _check_tensor(b, "b")
        _check_params(validate, u=u, w=w, b=b)
        _check_vectors("u", u, "w", w)
        if bool(torch.any((w.detach() ** 2).sum(-1) == 0)):
            raise ValueError("w must be nonzero (the layer's normal vector)")
        self.u, self.w, self.b = u, w, b
        self._wu = self._u_hat = self._last = None

    @classmethod
    def stack(cls, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
              cache_size: int = 1) -> list[PlanarTransform]:
        """K planar layers from stacked parameters u, w (K, ..., D) and b (K, ...).

        Equivalent to ``[PlanarTransform(u[k], w[k], b[k]) for k in range(K)]``, with
        u_hat computed for all layers at once (fewer small tensor operations per
        gradient step of a long flow).
        """
        first = cls(u, w, b, cache_size)                 # validates the whole stack
        if u.dim() < 2 or b.shape != u.shape[:-1]:
            raise ValueError(f"u, w must have shape (K, ..., D) and b shape (K, ...), got "
                             f"{tuple(u.shape)}, {tuple(w.shape)}, {tuple(b.shape)}")
        layers = []
        for uk, wk, bk, uh, wuk in zip(u.unbind(0), w.unbind(0), b.unbind(0),
                                       first.u_hat.unbind(0), first.wu.unbind(0),
                                       strict=True):
            layer = cls.__new__(cls)
            Transform.__init__(layer, cache_size=cache_size)
            layer.u, layer.w, layer.b = uk, wk, bk
            layer._wu, layer._u_hat, layer._last = wuk, uh, None
            layers.append(layer)
        return layers

    def with_cache(self, cache_size: int = 1) -> PlanarTransform:
        """The same layer with another cache size."""
        if self._cache_size == cache_size:
            return self
        return PlanarTransform(self.u, self.w, self.b, cache_size=cache_size, validate=False)

    @property
    def wu(self) -> torch.Tensor:
        """w^T u_hat = m(w^T u) > -1, shape (...)."""
        if self._wu is None:
            self._wu = -1.0 + F.softplus((self.w * self.u).sum(-1))
        return self._wu

    @property
    def u_hat(self) -> torch.Tensor:
        """The constrained direction u_hat, shape (..., D)."""
        if self._u_hat is None:
            wu_raw = (self.w * self.u).sum(-1)
            norm2 = (self.w**2).sum(-1)
            self._u_hat = self.u + ((self.wu - wu_raw) / norm2).unsqueeze(-1) * self.w
        return self._u_hat

    def _tanh(self, x: torch.Tensor) -> torch.Tensor:
        """tanh(w^T x + b), remembered for the last x (the forward pass's log-det)."""
        if self._last is not None and self._last[0] is x:
            return self._last[1]
        th = torch.tanh(x @ self.w + self.b) if self.w.dim() == 1 else torch.tanh(
            (x * self.w).sum(-1) + self.b)
        self._last = (x, th)
        return th

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_input(x, self.w.shape[-1], dtype=self.w.dtype)
        return torch.addcmul(x, self._tanh(x).unsqueeze(-1), self.u_hat)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        y = _check_input(y, self.w.shape[-1], "y", dtype=self.w.dtype)
        wu, b = self.wu, self.b
        target = (self.w * y).sum(-1)                        # w^T y = a + wu tanh(a + b)
        with torch.no_grad():
            a = _solve_planar(target.detach(), wu.detach(), b.detach())
        # one Newton step through the parameters: exact value, implicit-function gradient
        th = torch.tanh(a + b)
        a = a - (a + wu * th - target) / (1 + wu * (1 - th**2))
        return y - self.u_hat * torch.tanh(a + b).unsqueeze(-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log |1 + u_hat^T psi(x)| with psi(x) = tanh'(w^T x + b) w, shape (...)."""
        x = _check_input(x, self.w.shape[-1], dtype=self.w.dtype)
        return torch.log1p(self.wu * (1 - self._tanh(x) ** 2))


def _solve_planar(t: torch.Tensor, wu: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The root a of g(a) = a + wu tanh(a + b) - t, elementwise, to rounding error.

    g is increasing (g' = 1 + wu (1 - tanh^2) > 0 for wu > -1) and its root lies in
    [t - |wu|, t + |wu|] (|tanh| < 1). Safeguarded Newton: each step shrinks that
    bracket with the sign of g and takes the Newton point where it falls strictly inside
    the bracket, else the bracket's midpoint (bisection), so it converges for every
    wu > -1 (where g' is near 0, or Newton would cycle between the bracket's ends, by
    halving) and in a few steps elsewhere (quadratically), instead of the 60 halvings of
    plain bisection. Each point stops when its own bracket or step is at rounding level
    and leaves the batch, so a few slow points (wu near -1) do not keep every point
    iterating. The iteration runs on NumPy views (torch's tanh, so the same bits as
    torch): NumPy's comparisons and an arithmetic select (:func:`_select`) are several
    times cheaper than torch's on these arrays, and every arithmetic operation is the
    same IEEE operation, so the root is bit for bit torch's.
    """
    shape = torch.broadcast_shapes(t.shape, wu.shape, b.shape)
    t, wu, b = (v.detach().expand(shape).reshape(-1).numpy() for v in (t, wu, b))
    spread = np.abs(wu) + 1e-12
    low, high = t - spread, t + spread
    a = t.copy()                                    # tanh's range: a root within |wu|
    step_before = step_last = 2 * spread            # the last two steps' sizes
    root = np.empty_like(a)
    index = np.arange(a.size)                       # the points still being solved
    eps = np.finfo(a.dtype).eps
    for _ in range(200):                            # halving alone needs ~60 steps
        th = torch.tanh(torch.from_numpy(a + b)).numpy()
        g = a + wu * th - t
        above = g > 0
        high = _select(above, a, high)
        low = _select(above, low, a)
        slope = 1 + wu * (1 - th * th)
        newton = a - g / slope
        scale = eps * (1 + np.abs(a))
        move = np.abs(newton - a)
        settled = move <= 4 * scale                 # converged: the step is rounding
        # Newton only strictly inside the bracket (else it can cycle between the
        # bracket's ends) and only while it at least halves the step before the last
        # one (else it can creep along one end of the bracket): Press et al.'s rtsafe
        fast = 2 * move <= step_before
        use = settled | ((newton > low) & (newton < high) & fast)
        new = _select(use, newton, 0.5 * (low + high))
        step_before, step_last = step_last, np.abs(new - a)
        a = new
        done = settled | ((high - low) <= 2 * scale)
        if 4 * np.count_nonzero(done) >= len(index):   # solved points leave the loop
            root[index[done]] = a[done]     # (once a quarter is solved: later steps cost
            going = np.flatnonzero(~done)   # only the points still moving; a solved
            index, a, t, wu, b, low, high, step_before, step_last = (   # point stays)
                v[going] for v in (index, a, t, wu, b, low, high, step_before, step_last))
            if not len(index):
                break
    root[index] = a
    return torch.from_numpy(root).reshape(shape)


def _select(mask: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``np.where(mask, x, y)`` for finite x and y, as arithmetic: x * 1 + y * 0 is x
    exactly (up to the sign of a zero), and without a branch per element it is about
    2.5 times faster on a random mask."""
    m = mask.astype(x.dtype)
    return x * m + y * (1.0 - m)


def _sum_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast result back to ``shape`` (the adjoint of broadcasting)."""
    extra = array.ndim - len(shape)
    if extra:
        array = array.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and array.shape[i] != 1)
    return array.sum(axis=axes, keepdims=True) if axes else array


class _PlanarStackFunction(torch.autograd.Function):
    """K planar layers in one autograd node, computed in NumPy.

    A long planar flow is K tiny sequential steps; as torch operations each costs
    more in dispatch than in arithmetic. Here the forward loop and the hand-written
    backward (the chain rule through the layers in reverse) run on NumPy views of
    the tensors (CPU only).
    """

    @staticmethod
    def forward(ctx, z, u_hat, w, b, wu):
        z_np, uh, w_np, b_np, wu_np = (t.detach().cpu().numpy() for t in (z, u_hat, w, b, wu))
        inputs, tanhs = [], []
        log_det = np.zeros(np.broadcast_shapes(z_np.shape[:-1], b_np.shape[1:]),
                           dtype=z_np.dtype)
        for k in range(uh.shape[0]):
            th = np.tanh((z_np * w_np[k]).sum(-1) + b_np[k])
            inputs.append(z_np)
            tanhs.append(th)
            log_det = log_det + np.log1p(wu_np[k] * (1 - th * th))
            z_np = z_np + th[..., None] * uh[k]
        ctx.arrays = (uh, w_np, b_np, wu_np, inputs, tanhs)
        ctx.z_shape = tuple(z.shape)
        return torch.from_numpy(np.asarray(z_np)), torch.from_numpy(np.asarray(log_det))

    @staticmethod
    def backward(ctx, grad_z, grad_log_det):
        uh, w_np, b_np, wu_np, inputs, tanhs = ctx.arrays
        g = np.asarray(grad_z.detach().cpu().numpy())
        gl = np.asarray(grad_log_det.detach().cpu().numpy())
        grads = [np.zeros_like(t) for t in (uh, w_np, b_np, wu_np)]
        for k in range(uh.shape[0] - 1, -1, -1):
            th = tanhs[k]
            slope = 1 - th * th
            denom = 1 + wu_np[k] * slope
            grads[0][k] = _sum_to(g * th[..., None], uh[k].shape)
            grads[3][k] = _sum_to(gl * slope / denom, np.shape(wu_np[k]))
            d_a = ((g * uh[k]).sum(-1) - 2 * gl * wu_np[k] * th / denom) * slope
            grads[1][k] = _sum_to(d_a[..., None] * inputs[k], w_np[k].shape)
            grads[2][k] = _sum_to(d_a, np.shape(b_np[k]))
            g = g + d_a[..., None] * w_np[k]
        g = np.array(_sum_to(np.broadcast_to(g, np.broadcast_shapes(g.shape, ctx.z_shape)),
                             ctx.z_shape))
        return tuple(torch.from_numpy(t) for t in (g, *grads))


class PlanarStackTransform(_VectorBijection):
    """K planar layers as one transform, with one autograd node for all of them.

    The same map and log-determinant as ``ComposeTransform(PlanarTransform.stack(u, w,
    b))``, but the forward pass runs in NumPy without building a graph and the
    backward pass is written by hand (the chain rule through the K layers in
    reverse), which makes a gradient step of a long planar flow several times
    cheaper (float64 CPU tensors). The log-determinant
    of the last forward pass is remembered, so ``log_prob`` of the flow's own samples
    costs nothing extra; the inverse goes layer by layer. Chapter 7.

    Parameters
    ----------
    u, w : torch.Tensor, shape (K, ..., D)
        Unconstrained directions and normals of the K layers (``w`` nonzero).
    b : torch.Tensor, shape (K, ...)
        Offsets. The dimensions ``...`` broadcast against the input's leading ones.
    cache_size : {0, 1}
    validate : bool
        As for :class:`PlanarTransform` (finite parameters of one dtype).
    """

    def __init__(self, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                 cache_size: int = 1, *, validate: bool = True) -> None:
        super().__init__(cache_size)
        u = _check_tensor(u, "u", min_dim=2)
        w = _check_tensor(w, "w", min_dim=2)
        b = _check_tensor(b, "b", min_dim=1)
        _check_params(validate, u=u, w=w, b=b)
        if u.shape != w.shape or b.shape != u.shape[:-1]:
            raise ValueError(f"u, w must have shape (K, ..., D) and b shape (K, ...), got "
                             f"{tuple(u.shape)}, {tuple(w.shape)}, {tuple(b.shape)}")
        if bool(torch.any((w.detach() ** 2).sum(-1) == 0)):
            raise ValueError("w must be nonzero (the layers' normal vectors)")
        self.u, self.w, self.b = u, w, b
        wu_raw = (w * u).sum(-1)
        self.wu = -1.0 + F.softplus(wu_raw)                     # (K, ...)
        self.u_hat = u + ((self.wu - wu_raw) / (w**2).sum(-1)).unsqueeze(-1) * w
        self._last = None

    @property
    def layers(self) -> list[PlanarTransform]:
        """The K layers as separate :class:`PlanarTransform` objects."""
        return PlanarTransform.stack(self.u, self.w, self.b, cache_size=0)

    def with_cache(self, cache_size: int = 1) -> PlanarStackTransform:
        """The same layers with another cache size."""
        if self._cache_size == cache_size:
            return self
        return PlanarStackTransform(self.u, self.w, self.b, cache_size, validate=False)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._last is not None and self._last[0] is x:
            return self._last[1], self._last[2]
        x = _check_input(x, self.w.shape[-1], dtype=self.w.dtype)
        y, log_det = _PlanarStackFunction.apply(x, self.u_hat, self.w, self.b, self.wu)
        self._last = (x, y, log_det)
        return y, log_det

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[0]

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            y = layer.inv(y)
        return y

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum of the K layers' log |1 + u_hat^T psi|, shape (...)."""
        return self._forward(x)[1]


class RadialTransform(_VectorBijection):
    """Radial flow f(z) = z + beta h(r) (z - z0), h(r) = 1 / (alpha + r), r = |z - z0|.

    Rezende & Mohamed (2015, eq. 14): a contraction or expansion around ``z0``. With
    alpha = softplus(``alpha_raw``) > 0 and beta = -alpha + softplus(``beta_raw``) >=
    -alpha the map is invertible; its log-determinant is

    .. math::

        (D - 1) \\log(1 + \\beta h(r)) + \\log\\big(1 + \\beta h(r) + \\beta h'(r) r\\big),

    and, unlike the planar flow's, its inverse is closed-form: the radius of y solves a
    quadratic in r. Chapter 7.

    Parameters
    ----------
    z0 : torch.Tensor, shape (..., D)
        Centre.
    alpha_raw, beta_raw : torch.Tensor, shape (...)
        Unconstrained parameters of alpha and beta.
    cache_size : {0, 1}
    validate : bool
        As for :class:`PlanarTransform` (finite parameters of one dtype).
    """

    def __init__(self, z0: torch.Tensor, alpha_raw: torch.Tensor, beta_raw: torch.Tensor,
                 cache_size: int = 1, *, validate: bool = True) -> None:
        super().__init__(cache_size)
        self.z0 = _check_tensor(z0, "z0", min_dim=1)
        self.alpha_raw = _check_tensor(alpha_raw, "alpha_raw")
        self.beta_raw = _check_tensor(beta_raw, "beta_raw")
        _check_params(validate, z0=self.z0, alpha_raw=self.alpha_raw, beta_raw=self.beta_raw)

    def with_cache(self, cache_size: int = 1) -> RadialTransform:
        """The same layer with another cache size."""
        if self._cache_size == cache_size:
            return self
        return RadialTransform(self.z0, self.alpha_raw, self.beta_raw, cache_size,
                               validate=False)

    @property
    def alpha(self) -> torch.Tensor:
        """alpha > 0."""
        return F.softplus(self.alpha_raw)

    @property
    def beta(self) -> torch.Tensor:
        """beta >= -alpha."""
        return -self.alpha + F.softplus(self.beta_raw)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_input(x, self.z0.shape[-1], dtype=self.z0.dtype)
        diff = x - self.z0
        r = diff.norm(dim=-1)
        return x + (self.beta / (self.alpha + r)).unsqueeze(-1) * diff

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        y = _check_input(y, self.z0.shape[-1], "y", dtype=self.z0.dtype)
        alpha, beta = self.alpha, self.beta
        diff = y - self.z0
        r_y = diff.norm(dim=-1)              # r_y = r (1 + beta / (alpha + r)), r >= 0:
        c = alpha + beta - r_y               # r^2 + c r - alpha r_y = 0
        disc = torch.sqrt(c**2 + 4 * alpha * r_y)
        r = torch.where(c > 0, 2 * alpha * r_y / (c + disc), 0.5 * (disc - c))
        return self.z0 + diff / (1 + beta / (alpha + r)).unsqueeze(-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(D - 1) log(1 + beta h) + log(1 + beta alpha / (alpha + r)^2), shape (...)."""
        x = _check_input(x, self.z0.shape[-1], dtype=self.z0.dtype)
        alpha, beta = self.alpha, self.beta
        r = (x - self.z0).norm(dim=-1)
        dim = x.shape[-1]
        return ((dim - 1) * torch.log1p(beta / (alpha + r))
                + torch.log1p(beta * alpha / (alpha + r) ** 2))


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
# modules holding the parameters, and the variational family
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
    opt = torch.optim.Adam(family.parameters(), lr=lr)
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


# --------------------------------------------------------------------------------------
# 2-D test densities (Rezende & Mohamed 2015, table 1) and quadrature
# --------------------------------------------------------------------------------------
def _check_points(z) -> torch.Tensor:
    z = _check_tensor(z, "z", min_dim=1, check_finite=True)
    if z.shape[-1] != 2:
        raise ValueError(f"z must have last dimension 2, got shape {tuple(z.shape)}")
    return z


def _confine(z: torch.Tensor, confine: float | None) -> torch.Tensor:
    if confine is None:
        return torch.zeros_like(z[..., 0])
    confine = check_positive(confine, "confine")
    return -0.5 * (z[..., 0] / confine) ** 2


def _w1(z: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * math.pi * z[..., 0] / 4)


def _split_wave(z: torch.Tensor, shift: torch.Tensor, width: float,
                confine: float | None) -> torch.Tensor:
    """log(exp(-1/2 ((z2 - w1) / width)^2) + exp(-1/2 ((z2 - w1 + shift) / 0.35)^2))."""
    w1 = _w1(z)
    out = torch.logaddexp(-0.5 * ((z[..., 1] - w1) / width) ** 2,
                          -0.5 * ((z[..., 1] - w1 + shift) / 0.35) ** 2)
    return out + _confine(z, confine)


def log_density_u1(z: torch.Tensor) -> torch.Tensor:
    """-U1(z): the ring with two lobes of Rezende & Mohamed (2015, table 1), unnormalised.

    U1(z) = 1/2 ((|z| - 2) / 0.4)^2 - log(exp(-1/2 ((z1 - 2) / 0.6)^2)
    + exp(-1/2 ((z1 + 2) / 0.6)^2)). Integrable over R^2. Chapter 7.

    Parameters
    ----------
    z : torch.Tensor, shape (..., 2)

    Returns
    -------
    torch.Tensor, shape (...)
    """
    z = _check_points(z)
    ring = -0.5 * ((z.norm(dim=-1) - 2) / 0.4) ** 2
    lobes = torch.logaddexp(-0.5 * ((z[..., 0] - 2) / 0.6) ** 2,
                            -0.5 * ((z[..., 0] + 2) / 0.6) ** 2)
    return ring + lobes


def log_density_u2(z: torch.Tensor, confine: float | None = None) -> torch.Tensor:
    """-U2(z) = -1/2 ((z2 - w1(z)) / 0.4)^2, w1(z) = sin(2 pi z1 / 4): the wave.

    Rezende & Mohamed (2015, table 1). Every vertical slice has the same mass, so the
    density is integrable only with ``confine``: a factor exp(-z1^2 / (2 confine^2)).
    Chapter 7.

    Parameters
    ----------
    z : torch.Tensor, shape (..., 2)
    confine : float, optional
        Standard deviation of the Gaussian factor in z1 (> 0), or None.
    """
    z = _check_points(z)
    return -0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2 + _confine(z, confine)


def log_density_u3(z: torch.Tensor, confine: float | None = None) -> torch.Tensor:
    """-U3(z): the wave split in two where w2(z) = 3 exp(-1/2 ((z1 - 1) / 0.6)^2) is large.

    U3 = -log(exp(-1/2 ((z2 - w1) / 0.35)^2) + exp(-1/2 ((z2 - w1 + w2) / 0.35)^2))
    (Rezende & Mohamed 2015, table 1); ``confine`` as in :func:`log_density_u2`.
    Chapter 7.
    """
    z = _check_points(z)
    shift = 3 * torch.exp(-0.5 * ((z[..., 0] - 1) / 0.6) ** 2)
    return _split_wave(z, shift, 0.35, confine)


def log_density_u4(z: torch.Tensor, confine: float | None = None) -> torch.Tensor:
    """-U4(z): the wave split by a step, w3(z) = 3 sigmoid((z1 - 1) / 0.3).

    U4 = -log(exp(-1/2 ((z2 - w1) / 0.4)^2) + exp(-1/2 ((z2 - w1 + w3) / 0.35)^2))
    (Rezende & Mohamed 2015, table 1); ``confine`` as in :func:`log_density_u2`.
    Chapter 7.
    """
    z = _check_points(z)
    return _split_wave(z, 3 * torch.sigmoid((z[..., 0] - 1) / 0.3), 0.4, confine)


@dataclass(frozen=True)
class Grid2D:
    """A square grid of m x m points for 2-D quadrature (see :func:`square_grid`).

    Attributes
    ----------
    axis : torch.Tensor, shape (m,)
        The coordinates along each axis.
    points : torch.Tensor, shape (m * m, 2)
        All points, first coordinate varying slowest (``reshape(m, m)`` gives [i, j] =
        (axis[i], axis[j])).
    cell_area : float
        h^2, the area per point.
    """

    axis: torch.Tensor
    points: torch.Tensor
    cell_area: float

    def __post_init__(self) -> None:
        axis = _check_tensor(self.axis, "axis", min_dim=1, check_finite=True)
        if axis.dim() != 1 or axis.numel() < 2:
            raise ValueError(f"axis must be 1-D with >= 2 points, got shape {tuple(axis.shape)}")
        points = _check_tensor(self.points, "points", min_dim=2, check_finite=True)
        if tuple(points.shape) != (axis.numel() ** 2, 2):
            raise ValueError(f"points must have shape ({axis.numel() ** 2}, 2), got "
                             f"{tuple(points.shape)}")
        check_positive(self.cell_area, "cell_area")

    def _values(self, values, name: str = "values", allow: str = "") -> torch.Tensor:
        """``values`` (one per point) as a float64 tensor, converted at the boundary
        (:func:`~elbo_lib._validation.as_numeric_array`), NaN refused, and -inf / +inf
        only where ``allow`` holds "-" / "+"."""
        values = torch.from_numpy(as_numeric_array(values, name)).reshape(-1)
        if values.numel() != self.points.shape[0]:
            raise ValueError(f"{name} must have {self.points.shape[0]} entries, "
                             f"got {values.numel()}")
        bad = torch.isnan(values)
        if "-" not in allow:
            bad |= values == -math.inf
        if "+" not in allow:
            bad |= values == math.inf
        if bool(bad.any()):
            allowed = {"": "finite", "-": "finite or -inf",
                       "-+": "non-NaN"}[allow]
            raise ValueError(f"{name} must be {allowed}, got {int(bad.sum())} other "
                             f"value(s), e.g. {float(values[bad][0])!r}")
        return values

    def log_integral(self, log_values: torch.Tensor) -> float:
        """log of the integral of exp(log_values) over the square (Riemann sum).

        For a smooth integrand that is negligible at the edges the sum converges very
        fast (it is then the trapezoidal rule). ``log_values`` may hold -inf (zero
        density), not NaN or +inf.
        """
        log_values = self._values(log_values, "log_values", "-")
        return float(torch.logsumexp(log_values, 0)) + math.log(self.cell_area)

    def integral(self, values: torch.Tensor) -> float:
        """The integral of ``values`` (one per point, finite) over the square (Riemann
        sum)."""
        return float(self._values(values).sum()) * self.cell_area

    def matrix(self, values: torch.Tensor) -> np.ndarray:
        """``values`` as an (m, m) array indexed [i, j] = (axis[i], axis[j]).

        The layout of ``np.meshgrid(axis, axis, indexing="ij")``, which
        :func:`elbo_lib.bounds.kl_on_grid` takes. ``values`` may hold -inf and +inf (a
        log density of zero), not NaN.
        """
        m = self.axis.numel()
        return self._values(values, "values", "-+").reshape(m, m).numpy()

    def image(self, values: torch.Tensor) -> np.ndarray:
        """``values`` as an (m, m) array indexed [row = second coordinate, column = first].

        Ready for ``imshow(..., origin="lower", extent=...)``.
        """
        return self.matrix(values).T


def square_grid(limit: float, num_points: int,
                dtype: torch.dtype = torch.float64) -> Grid2D:
    """The grid of ``num_points`` x ``num_points`` points over [-limit, limit]^2.

    Chapter 7 computes log Z of the 2-D targets, the mass of q and KL(q || p) on it.

    Parameters
    ----------
    limit : float
        Half-width of the square (> 0).
    num_points : int
        Points per axis (>= 3).
    dtype : torch.dtype
    """
    limit = check_positive(limit, "limit")
    num_points = check_positive_int(num_points, "num_points", minimum=3)
    axis = torch.linspace(-limit, limit, num_points, dtype=dtype)
    points = torch.cartesian_prod(axis, axis)
    return Grid2D(axis, points, float(axis[1] - axis[0]) ** 2)


# --------------------------------------------------------------------------------------
# flows in the VAE's encoder (amortised planar flows, Rezende & Mohamed 2015, sec. 4)
# --------------------------------------------------------------------------------------
class PlanarFlowEncoder(nn.Module):
    """x -> q_phi(z | x): a diagonal Gaussian pushed through K planar layers per image.

    One tanh hidden layer outputs, for every image, the mean and log-variance of the
    base Gaussian and the parameters (u, w, b) of K planar layers (Rezende & Mohamed
    2015, section 4: the flow is amortised like the Gaussian). With ``num_layers=0`` it
    is chapter 6's Gaussian encoder. The planar layers start near the identity, as in
    :class:`FlowFamily`: the output layer's flow weights start at zero and its biases
    at a random w with w^T u_hat = 0. Plugs into :class:`elbo_lib.vae.VAE` as
    ``encoder=``. Chapter 7.

    Parameters
    ----------
    num_pixels, latent_dim : int
        Input size and dimension of z.
    num_layers : int
        K >= 0.
    hidden : int
        Hidden units.
    """

    def __init__(self, num_pixels: int, latent_dim: int, num_layers: int,
                 hidden: int = 128) -> None:
        super().__init__()
        self.num_pixels = check_positive_int(num_pixels, "num_pixels")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.num_layers = check_positive_int(num_layers, "num_layers", minimum=0)
        hidden = check_positive_int(hidden, "hidden")
        d, k = self.latent_dim, self.num_layers
        self.inner = nn.Linear(num_pixels, hidden)
        self.outer = nn.Linear(hidden, 2 * d + k * (2 * d + 1))
        if k:
            w = torch.randn(k, d)
            unit = w / w.norm(dim=-1, keepdim=True)
            u = math.log(math.e - 1) / w.norm(dim=-1, keepdim=True) * unit
            with torch.no_grad():
                self.outer.weight[2 * d:].zero_()
                self.outer.bias[2 * d:] = torch.cat([u, w, torch.zeros(k, 1)], -1).reshape(-1)

    def raw_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The encoder's outputs for x (B, num_pixels): ``mean``, ``logvar`` (B, d) and
        ``u``, ``w`` (K, B, d), ``b`` (K, B).

        ``x`` must be a finite real tensor; another floating dtype is converted to the
        weights' (float32 by default), as :class:`elbo_lib.vae.GaussianEncoder` does.
        """
        x = _check_input(x, self.num_pixels, dtype=self.inner.weight.dtype)
        if not _vae._TRUSTED:   # inside a VAE's training step x was checked once
            check_finite_tensor(x, "x")
        d, k = self.latent_dim, self.num_layers
        out = self.outer(torch.tanh(self.inner(x)))
        params = {"mean": out[..., :d], "logvar": out[..., d:2 * d]}
        flow = out[..., 2 * d:].reshape(*x.shape[:-1], k, 2 * d + 1).movedim(-2, 0)
        params.update(u=flow[..., :d], w=flow[..., d:2 * d], b=flow[..., 2 * d])
        return params

    def posterior(self, params: dict[str, torch.Tensor]) -> Distribution:
        """q(z | x) from :meth:`raw_outputs` (or refined copies of them).

        Raises
        ------
        TypeError, ValueError
            If ``params`` lacks a key, or a value is not a finite real tensor.
        """
        keys = ("mean", "logvar") + (("u", "w", "b") if self.num_layers else ())
        if not isinstance(params, dict) or any(k not in params for k in keys):
            raise TypeError(f"params must be a dict with keys {keys} (from raw_outputs)")
        for key in keys:
            value = _check_tensor(params[key], f"params[{key!r}] ({key})")
            check_finite_tensor(value, f"params[{key!r}] ({key})")
        return self._posterior(params)

    def _posterior(self, params: dict[str, torch.Tensor]) -> Distribution:
        """:meth:`posterior` of outputs known to be finite tensors (no checks)."""
        base = Independent(Normal(params["mean"], torch.exp(0.5 * params["logvar"])), 1)
        if self.num_layers == 0:
            return base
        return TransformedDistribution(
            base, [PlanarStackTransform(params["u"], params["w"], params["b"],
                                        validate=False)])

    def forward(self, x: torch.Tensor) -> Distribution:
        """q_phi(z | x): batch shape (B,), event shape (latent_dim,)."""
        return self._posterior(self.raw_outputs(x))


def vae_elbo_of(model: nn.Module, x: torch.Tensor, q: Distribution,
                num_samples: int) -> torch.Tensor:
    """Per-image ELBO of any q(z | x) under a VAE's decoder: mean over S samples of
    log p(x | z) + log N(z; 0, I) - log q(z | x). Differentiable. Chapter 7.

    Parameters
    ----------
    model : elbo_lib.vae.VAE
        Provides ``decode`` (Bernoulli logits).
    x : torch.Tensor, shape (B, num_pixels)
    q : torch.distributions.Distribution
        Batch shape (B,), event shape (latent_dim,), with ``rsample``.
    num_samples : int

    Returns
    -------
    torch.Tensor, shape (B,)
    """
    from elbo_lib.vae import bernoulli_log_likelihood

    if not callable(getattr(model, "decode", None)):
        raise TypeError(f"model must be an elbo_lib.vae.VAE (with decode), got "
                        f"{type(model).__name__}")
    num_samples = check_positive_int(num_samples, "num_samples")
    if not isinstance(q, Distribution):
        raise TypeError(f"q must be a torch Distribution, got {type(q).__name__}")
    if not isinstance(x, torch.Tensor) or tuple(x.shape[:-1]) != tuple(q.batch_shape):
        raise ValueError(f"x must be a tensor whose leading shape is q's batch shape "
                         f"{tuple(q.batch_shape)}")
    z = q.rsample((num_samples,))
    log_prior = Independent(Normal(torch.zeros_like(z), torch.ones_like(z)), 1).log_prob(z)
    log_lik = bernoulli_log_likelihood(x, model.decode(z))
    return (log_lik + log_prior - q.log_prob(z)).mean(0)


def refine_flow_posterior(model: nn.Module, x: torch.Tensor, num_steps: int,
                          lr: float = 0.01, num_samples: int = 8, *,
                          start: dict[str, torch.Tensor] | None = None
                          ) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Optimise the encoder's outputs separately for every image (decoder frozen).

    The flow version of chapter 6's refinement (Cremer et al. 2018): the base
    Gaussian's mean and log-variance and the K planar layers' (u, w, b) of each image
    start at the :class:`PlanarFlowEncoder`'s output (or at ``start``) and follow Adam
    on that image's ELBO (:func:`vae_elbo_of`, ``num_samples`` samples per step). The
    images share no parameters, so one batched problem is n independent optimisations.
    Chapter 7 also uses it to fit one family's q on a decoder trained with another
    family's encoder (``start`` then comes from that other q).

    Parameters
    ----------
    model : elbo_lib.vae.VAE
        With a :class:`PlanarFlowEncoder`; its K sets the family.
    x : torch.Tensor, shape (n, num_pixels)
        Binary images.
    num_steps : int
    lr : float
    num_samples : int
    start : dict of torch.Tensor, optional
        Starting outputs with the keys and shapes of ``model.encoder.raw_outputs(x)``
        (``mean``, ``logvar`` (n, d); for K > 0 also ``u``, ``w`` (K, n, d), ``b``
        (K, n)); default: the encoder's outputs for x.

    Returns
    -------
    params : dict of torch.Tensor
        Refined outputs, detached (pass to ``model.encoder.posterior``).
    trace : numpy.ndarray, shape (num_steps,)
        Mean stochastic ELBO per step.

    Raises
    ------
    TypeError, ValueError
        For a model without a :class:`PlanarFlowEncoder`, x that is not a binary
        (n, num_pixels) tensor, bad sizes, or the first step at which the ELBO is not
        finite or q cannot be formed (a step too large: "stopped at step s of
        num_steps"). The model is never changed (its decoder is frozen and the encoder
        only supplies the start).
    """
    if not isinstance(getattr(model, "encoder", None), PlanarFlowEncoder):
        raise TypeError(f"model.encoder must be a PlanarFlowEncoder (model: an "
                        f"elbo_lib.vae.VAE), got {type(model).__name__}")
    if not callable(getattr(model, "decode", None)):
        raise TypeError(f"model must have a decode method (an elbo_lib.vae.VAE), got "
                        f"{type(model).__name__}")
    x = _vae._check_data(x, model.encoder.num_pixels, binary=True, batch=True,
                         dtype=model.encoder.inner.weight.dtype)
    num_steps = check_positive_int(num_steps, "num_steps")
    lr = check_positive(lr, "lr")
    num_samples = check_positive_int(num_samples, "num_samples")
    with torch.no_grad():
        own = model.encoder.raw_outputs(x)
    if start is not None:
        needed = {k for k, v in own.items() if v.numel() > 0}
        if not isinstance(start, dict) or not needed <= set(start):
            raise TypeError(f"start must be a dict with the keys of "
                            f"model.encoder.raw_outputs(x) {tuple(own)}")
        for key, value in own.items():
            if value.numel() == 0:
                continue
            given = _check_tensor(start[key], f"start[{key!r}]")
            check_finite_tensor(given, f"start[{key!r}]")
            if given.shape != value.shape:
                raise ValueError(f"start[{key!r}] must have shape {tuple(value.shape)}, "
                                 f"got {tuple(given.shape)}")
            own[key] = given.detach().to(value.dtype)
    params = {name: value.clone().requires_grad_(True) for name, value in own.items()
              if value.numel() > 0}
    optimizer = torch.optim.Adam(list(params.values()), lr=lr)
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    trace = np.empty(num_steps)
    try:
        for step in range(num_steps):
            try:
                with _vae._trusted():   # x was checked above; the ELBO is checked below
                    elbo = vae_elbo_of(model, x, model.encoder._posterior(params),
                                       num_samples)
                trace[step] = float(elbo.detach().mean())
                if not math.isfinite(trace[step]):
                    raise ValueError("the ELBO is not finite")
            except ValueError as err:   # also torch's check of the base Gaussian's scale
                raise ValueError(f"refine_flow_posterior stopped at step {step + 1} of "
                                 f"{num_steps}: {_stop_reason(err)} (a smaller lr than "
                                 f"{lr} may help)") from err
            optimizer.zero_grad(set_to_none=True)
            (-elbo.sum()).backward()
            optimizer.step()
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    return {name: value.detach() for name, value in params.items()}, trace


def _stacked_linear(layers: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights (R, n_in, n_out) and biases (R, 1, n_out) of R linear layers, as new
    leaf tensors (copies) for a batched training loop."""
    weight = torch.stack([m.weight.detach().T for m in layers]).contiguous()
    bias = torch.stack([m.bias.detach() for m in layers]).unsqueeze(1).contiguous()
    return weight.requires_grad_(True), bias.requires_grad_(True)


def train_flow_vaes(models: list, x_train: torch.Tensor, x_val: torch.Tensor,
                    num_epochs: int, generators: list[torch.Generator], *,
                    batch_size: int = 64, lr: float = 1e-3) -> list:
    """Train R VAEs with :class:`PlanarFlowEncoder` encoders at once, each as if alone.

    Each model follows :func:`elbo_lib.vae.train_vae` (beta = 1): every epoch a fresh
    permutation of the training set, minibatches of ``batch_size``, one reparameterised
    sample per image, the KL in closed form for K = 0 (``kl_divergence`` of the base
    Gaussian against N(0, I), as :func:`~elbo_lib.vae.kl_to_prior`) and by Monte Carlo
    (log q(z | x) - log p(z) at the sample) for K > 0, Adam with ``lr``, and the
    validation ELBO (one sample) at the end of every epoch. Model r draws its
    permutations and noise from ``generators[r]``, in the order and shapes
    :func:`~elbo_lib.vae.train_vae` draws them from torch's global generator, so a
    generator in the state the global one had after seeding and building the model
    reproduces that model's solo run up to rounding (the products are batched:
    ``baddbmm`` over the R models instead of one ``addmm`` each). The R models'
    parameters are stacked, and one step of all of them is one tensor program: the
    loss is the sum of the models' losses, so each model's gradient (and Adam,
    elementwise, its step) is that of its own loss. Chapter 7.

    Parameters
    ----------
    models : list of elbo_lib.vae.VAE
        Distinct models with :class:`PlanarFlowEncoder` encoders of one architecture
        (same K, latent dimension and widths); trained in place.
    x_train, x_val : torch.Tensor, shape (n, num_pixels)
        Binary data.
    num_epochs : int
    generators : list of torch.Generator
        One per model; advanced by the draws of its model's training.
    batch_size : int
    lr : float

    Returns
    -------
    list of elbo_lib.vae.TrainingHistory
        One per model (``seconds`` is the time of the whole stack).

    Raises
    ------
    TypeError, ValueError
        For bad arguments, or the first step at which a model's loss is not finite
        (naming the model, epoch and step); the models are then left unchanged.
    """
    import time as _time

    from elbo_lib.vae import VAE, TrainingHistory, bernoulli_log_likelihood

    if isinstance(models, VAE) or not isinstance(models, list | tuple) or not models:
        raise TypeError(f"models must be a non-empty list of VAE, got {type(models).__name__}")
    for model in models:
        if not isinstance(model, VAE) or not isinstance(model.encoder, PlanarFlowEncoder):
            raise TypeError("models must be elbo_lib.vae.VAE objects with a "
                            "PlanarFlowEncoder encoder")
    if len({id(m) for m in models}) != len(models):
        raise ValueError("models must be distinct objects (each is its own run)")
    shapes = [{n: tuple(p.shape) for n, p in m.named_parameters()} for m in models]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("models must have parameters of the same shapes (one architecture)")
    if (not isinstance(generators, list | tuple) or len(generators) != len(models)
            or not all(isinstance(g, torch.Generator) for g in generators)):
        raise TypeError(f"generators must be a list of {len(models)} torch.Generator "
                        f"objects, one per model")
    first = models[0]
    dtype = first.encoder.inner.weight.dtype
    if any(p.dtype != dtype for m in models for p in m.parameters()):
        raise TypeError("every parameter of the models must have one dtype")
    x_train = _vae._check_data(x_train, first.num_pixels, "x_train", binary=True,
                               dtype=dtype, batch=True)
    x_val = _vae._check_data(x_val, first.num_pixels, "x_val", binary=True, dtype=dtype,
                             batch=True)
    num_epochs = check_positive_int(num_epochs, "num_epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive(lr, "lr")
    num, d, k = len(models), first.latent_dim, first.encoder.num_layers
    layers = {"inner": [m.encoder.inner for m in models],
              "outer": [m.encoder.outer for m in models],
              "dec_in": [m.decoder[0] for m in models],
              "dec_out": [m.decoder[2] for m in models]}
    stacked = {name: _stacked_linear(mods) for name, mods in layers.items()}
    optimizer = torch.optim.Adam([t for pair in stacked.values() for t in pair], lr=lr)
    zero = torch.zeros(d, dtype=dtype)
    prior = Independent(Normal(zero, torch.ones_like(zero)), 1)

    def linear(name: str, x: torch.Tensor) -> torch.Tensor:
        weight, bias = stacked[name]
        return torch.baddbmm(bias, x, weight)

    def elbo_terms(x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and KL of each image of each model, (R, b), x (R, b, pixels)."""
        out = linear("outer", torch.tanh(linear("inner", x)))
        mean, logvar = out[..., :d], out[..., d:2 * d]
        base = Independent(Normal(mean, torch.exp(0.5 * logvar)), 1)
        z = base.base_dist.loc + eps * base.base_dist.scale      # Normal.rsample's form
        if k == 0:
            kl = torch.distributions.kl_divergence(base, prior)
        else:
            flow = out[..., 2 * d:].reshape(*x.shape[:-1], k, 2 * d + 1).movedim(-2, 0)
            stack = PlanarStackTransform(flow[..., :d], flow[..., d:2 * d],
                                         flow[..., 2 * d], validate=False)
            q = TransformedDistribution(base, [stack])
            z = stack(z)
            kl = q.log_prob(z) - _vae._log_prior(z)
        logits = linear("dec_out", torch.tanh(linear("dec_in", z)))
        return bernoulli_log_likelihood(x, logits), kl

    def noise(rows: int) -> torch.Tensor:
        return torch.stack([torch.empty(rows, d, dtype=dtype).normal_(generator=g)
                            for g in generators])

    histories = [TrainingHistory() for _ in models]
    n, where = len(x_train), "train_flow_vaes"
    start = _time.perf_counter()
    with _vae._trusted():   # the data are checked above and every loss is checked
        for epoch in range(num_epochs):
            totals = torch.zeros(num, 2, dtype=torch.float64)
            order = torch.stack([torch.randperm(n, generator=g) for g in generators])
            for step, idx in enumerate(order.split(batch_size, dim=1)):
                x = x_train[idx]                                          # (R, b, pixels)
                reconstruction, kl = elbo_terms(x, noise(x.shape[1]))
                loss = -(reconstruction - kl).mean(-1)                     # (R,)
                bad = (~torch.isfinite(loss)).nonzero()
                if len(bad):
                    raise ValueError(_vae._stopped(
                        where, epoch, num_epochs, step, lr,
                        f"the loss of model {int(bad[0, 0])} is not finite"))
                optimizer.zero_grad(set_to_none=True)
                loss.sum().backward()
                optimizer.step()
                totals += torch.stack([reconstruction.detach().sum(-1),
                                       kl.detach().sum(-1)], dim=1).double()
            with torch.no_grad():
                rec_v, kl_v = elbo_terms(x_val.expand(num, *x_val.shape),
                                         noise(len(x_val)))
                bad = (~torch.isfinite((rec_v - kl_v).mean(-1))).nonzero()
            if len(bad):
                raise ValueError(_vae._stopped(
                    where, epoch, num_epochs, None, lr,
                    f"the validation ELBO of model {int(bad[0, 0])} is not finite"))
            for i, history in enumerate(histories):
                rec, kl_mean = (totals[i] / n).tolist()
                rv, kv = float(rec_v[i].mean()), float(kl_v[i].mean())
                history.record({"elbo": rec - kl_mean, "reconstruction": rec, "kl": kl_mean},
                               {"elbo": rv - kv, "reconstruction": rv, "kl": kv})
    seconds = _time.perf_counter() - start
    with torch.no_grad():
        for name, mods in layers.items():
            weight, bias = stacked[name]
            for i, m in enumerate(mods):
                m.weight.copy_(weight[i].T)
                m.bias.copy_(bias[i, 0])
    for history in histories:
        history.seconds = seconds
    return histories
