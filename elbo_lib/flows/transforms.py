"""Planar and radial flow layers (Rezende & Mohamed 2015) as torch Transforms, and the
input checks that every layer of the package shares (chapter 7)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions import constraints
from torch.distributions.transforms import Transform

__all__ = ["PlanarStackTransform", "PlanarTransform", "RadialTransform"]


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
            z_np = z_np + th[..., None] * uh[k]
        if tanhs:   # every layer's log|det| in one pass (elementwise, so the same bits
            # as layer by layer), then added up in the layers' order
            th = np.stack(np.broadcast_arrays(*tanhs))
            wu_k = np.reshape(wu_np, wu_np.shape[:1] + (1,) * (th.ndim - wu_np.ndim)
                              + wu_np.shape[1:])
            terms = np.log1p(wu_k * (1 - th * th))
            for term in terms:
                log_det = log_det + term
        ctx.arrays = (uh, w_np, b_np, wu_np, inputs, tanhs)
        ctx.z_shape = tuple(z.shape)
        return torch.from_numpy(np.asarray(z_np)), torch.from_numpy(np.asarray(log_det))

    @staticmethod
    def backward(ctx, grad_z, grad_log_det):
        uh, w_np, b_np, wu_np, inputs, tanhs = ctx.arrays
        g = np.asarray(grad_z.detach().cpu().numpy())
        gl = np.asarray(grad_log_det.detach().cpu().numpy())
        if _compiled_backward_applies(g, gl, uh, inputs, ctx.z_shape):
            return tuple(torch.from_numpy(t) for t in _compiled_backward(
                g, gl, uh, w_np, b_np, wu_np, inputs, tanhs))
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


def _compiled_backward_applies(g, gl, uh, inputs, z_shape) -> bool:
    """Whether the compiled backward computes exactly the NumPy loop's bits: float64
    arrays of the full broadcast shape (S..., P..., D), the parameters' batch shape P...
    trailing it with at least 2 sets of parameters, and D = 2. Then NumPy adds the
    samples' terms in order (the sampled axes are outer) and a pair in one step, which
    the compiled loop repeats; for one set of parameters or D > 2 NumPy sums pairwise,
    in another order, and the NumPy loop runs (tested bit for bit against it)."""
    dim = uh.shape[-1]
    params = uh.shape[1:-1]
    full = tuple(z_shape)
    return (dim == 2 and math.prod(params) >= 2 and g.dtype == np.float64 and uh.dtype == np.float64
            and g.shape == full and gl.shape == full[:-1]
            and all(x.shape == full for x in inputs)
            and len(full) - 1 >= len(params) and full[len(full) - 1 - len(params):-1]
            == params)


def _compiled_backward(g, gl, uh, w_np, b_np, wu_np, inputs, tanhs):
    """The backward pass of :class:`_PlanarStackFunction` in one compiled loop, the same
    arithmetic in the same order as the NumPy loop (so the same bits), without the
    ~25 small array operations per layer."""
    num_layers, dim = uh.shape[0], uh.shape[-1]
    num_params = max(1, math.prod(uh.shape[1:-1]))
    shape = g.shape
    x = np.ascontiguousarray(np.stack(inputs).reshape(num_layers, -1, dim))
    th = np.ascontiguousarray(np.stack(tanhs).reshape(num_layers, -1))
    g2 = np.array(g.reshape(-1, dim))
    grads = [np.zeros((num_layers, num_params, dim)), np.zeros((num_layers, num_params, dim)),
             np.zeros((num_layers, num_params)), np.zeros((num_layers, num_params))]
    _planar_backward_kernel()(
        g2, np.ascontiguousarray(gl.reshape(-1)),
        np.ascontiguousarray(uh.reshape(num_layers, num_params, dim)),
        np.ascontiguousarray(w_np.reshape(num_layers, num_params, dim)),
        np.ascontiguousarray(np.reshape(wu_np, (num_layers, num_params))), x, th, *grads)
    return (g2.reshape(shape), grads[0].reshape(uh.shape), grads[1].reshape(w_np.shape),
            grads[2].reshape(np.shape(b_np)), grads[3].reshape(np.shape(wu_np)))


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
        if (self._last is not None and self._last[0] is x
                and (self._last[2].requires_grad or not torch.is_grad_enabled()
                     or not (self.u.requires_grad or self.w.requires_grad
                             or self.b.requires_grad))):   # no graph lost to the cache
            return self._last[1], self._last[2]
        x = _check_input(x, self.w.shape[-1], dtype=self.w.dtype)
        y, log_det = _PlanarStackFunction.apply(x, self.u_hat, self.w, self.b, self.wu)
        self._last = (x, y, log_det)
        return y, log_det

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[0]

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        y = _check_input(y, self.w.shape[-1], "y", dtype=self.w.dtype)
        if y.dtype != torch.float64 or torch.is_grad_enabled() and (
                y.requires_grad or self.u.requires_grad or self.w.requires_grad
                or self.b.requires_grad):
            for layer in reversed(self.layers):   # differentiable, layer by layer
                y = layer.inv(y)
            return y
        # float64 and no gradient wanted (a quadrature grid): one compiled pass, which
        # also gives the log-determinant, so log_prob needs no forward pass after it
        x, log_det = _planar_stack_inverse(y, self.u_hat.detach(), self.w.detach(),
                                           self.b.detach(), self.wu.detach())
        self._last = (x, y, log_det)
        return x

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum of the K layers' log |1 + u_hat^T psi|, shape (...)."""
        return self._forward(x)[1]


_KERNELS: dict = {}


def _planar_inverse_kernel():
    """The compiled kernel of :func:`_planar_stack_inverse` (Numba, compiled on first
    use and cached on disk; imported here so that ``elbo_lib.flows`` loads without it)."""
    if "inverse" in _KERNELS:
        return _KERNELS["inverse"]
    import numba

    @numba.njit(cache=True, nogil=True)
    def solve(t, wu, b, eps):  # pragma: no cover - compiled; tested through callers
        """The root a of a + wu tanh(a + b) = t and tanh(a + b), to rounding error:
        _solve_planar's safeguarded Newton iteration (same bracket and tests), which
        stops as soon as a Newton step leaves an error below rounding (the error of
        a Newton iterate is at most 0.385 |wu| move^2 / slope, since |g''| <= 0.77
        |wu|); tanh at the last iterate is then updated to first order (the step is
        below 1e-8, so the update's error is below 0.385e-16)."""
        spread = abs(wu) + 1e-12
        low, high, a = t - spread, t + spread, t
        step_before = 2 * spread
        step_last = step_before
        for _ in range(200):
            th = math.tanh(a + b)
            g = a + wu * th - t
            if g > 0:
                high = a
            else:
                low = a
            slope = 1 + wu * (1 - th * th)
            newton = a - g / slope
            move = abs(newton - a)
            scale = eps * (1 + abs(a))
            if move <= 4 * scale or (low < newton < high and move <= 1e-8 and
                                     0.385 * abs(wu) * move * move <= scale * slope):
                return newton, th + (1 - th * th) * (newton - a)
            if low < newton < high and 2 * move <= step_before:
                new = newton
            else:
                new = 0.5 * (low + high)
            step_before, step_last = step_last, abs(new - a)
            a = new
            if high - low <= 2 * scale:
                break
        return a, math.tanh(a + b)

    @numba.njit(cache=True, nogil=True)
    def inverse(y, u_hat, w, b, wu, x, log_det):  # pragma: no cover - compiled
        num_layers, num_params, dim = u_hat.shape
        eps = np.finfo(np.float64).eps
        terms = np.empty(num_layers)
        for n in range(y.shape[0]):
            p = n % num_params
            for d in range(dim):
                x[n, d] = y[n, d]
            for k in range(num_layers - 1, -1, -1):
                t = 0.0
                for d in range(dim):
                    t += w[k, p, d] * x[n, d]
                wuk = wu[k, p]
                a, th = solve(t, wuk, b[k, p], eps)
                for d in range(dim):
                    x[n, d] = x[n, d] - u_hat[k, p, d] * th
                terms[k] = math.log1p(wuk * (1 - th * th))
            total = 0.0
            for k in range(num_layers):    # summed in the forward pass's order
                total = total + terms[k]
            log_det[n] = total

    _KERNELS["inverse"] = inverse
    return inverse


def _planar_backward_kernel():
    """The compiled kernel of :func:`_compiled_backward` (Numba, cached on disk)."""
    if "backward" in _KERNELS:
        return _KERNELS["backward"]
    import numba

    @numba.njit(cache=True, nogil=True)
    def backward(g, gl, uh, w, wu, x, th, g_uh, g_w, g_b, g_wu):  # pragma: no cover
        num_layers, num_params, dim = uh.shape
        num_points = g.shape[0]
        d_a_row = np.empty(num_points)
        for k in range(num_layers - 1, -1, -1):
            for n in range(num_points):
                p = n % num_params
                t = th[k, n]
                slope = 1 - t * t
                denom = 1 + wu[k, p] * slope
                first = n < num_params            # the sums start from their first term
                for d in range(dim):
                    v = g[n, d] * t
                    g_uh[k, p, d] = v if first else g_uh[k, p, d] + v
                v = gl[n] * slope / denom
                g_wu[k, p] = v if first else g_wu[k, p] + v
                dot = g[n, 0] * uh[k, p, 0] + g[n, 1] * uh[k, p, 1]   # D = 2
                d_a = (dot - 2 * gl[n] * wu[k, p] * t / denom) * slope
                d_a_row[n] = d_a
                for d in range(dim):
                    v = d_a * x[k, n, d]
                    g_w[k, p, d] = v if first else g_w[k, p, d] + v
                g_b[k, p] = d_a if first else g_b[k, p] + d_a
            for n in range(num_points):
                p = n % num_params
                for d in range(dim):
                    g[n, d] = g[n, d] + d_a_row[n] * w[k, p, d]

    _KERNELS["backward"] = backward
    return backward


def _planar_stack_inverse(y: torch.Tensor, u_hat: torch.Tensor, w: torch.Tensor,
                          b: torch.Tensor, wu: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of K planar layers and its log-determinant, without gradients.

    ``y`` (..., D) against parameters u_hat, w (K, ..., D), b, wu (K, ...), which
    broadcast as in the forward pass. Each point goes back through the layers in one
    compiled loop: the scalar root of each layer by :func:`_solve_planar`'s
    safeguarded Newton iteration, stopped once a step leaves an error below rounding
    (no extra tanh to confirm convergence, none to polish), then the layer's inverse
    and its log|det|. The same map as the layer-by-layer inverse (a log_prob through
    it and the forward pass from its result) up to rounding, and several times faster
    (no temporary arrays, a third of the tanh evaluations, and no forward pass for
    the log-determinant). Returns x (..., D) and log|det df/dx| (...), float64.
    """
    batch = torch.broadcast_shapes(y.shape[:-1], b.shape[1:])
    dim, layers = y.shape[-1], b.shape[0]
    tail = batch[len(batch) - (b.dim() - 1):] if b.dim() > 1 else ()
    num_params = math.prod(tail)

    def params(t: torch.Tensor, *event: int) -> np.ndarray:
        full = t.detach().to(torch.float64).expand(layers, *tail, *event)
        return np.ascontiguousarray(full.numpy()).reshape(layers, num_params, *event)

    y_np = np.ascontiguousarray(y.detach().to(torch.float64).expand(*batch, dim).numpy())
    y_np = y_np.reshape(-1, dim)
    x = np.empty_like(y_np)
    log_det = np.empty(len(y_np))
    _planar_inverse_kernel()(y_np, params(u_hat, dim), params(w, dim), params(b),
                             params(wu), x, log_det)
    return (torch.from_numpy(x).reshape(*batch, dim),
            torch.from_numpy(log_det).reshape(batch))


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

