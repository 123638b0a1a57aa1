"""Input validation shared by the public functions of elbo_lib, and shared constants.

Every public function checks its inputs with these helpers so that bad input fails
early with a message that says what was given and what was expected. This module is
private to the package, but its names are the library's internal API: any module may
import them (and no module imports another module's private names).

The one randomness policy of the NumPy code is :func:`as_generator`: every function that
draws random numbers takes ``rng``, an int seed or a ``numpy.random.Generator``.
"""

from __future__ import annotations

from numbers import Complex, Integral, Real

import numpy as np
import torch

__all__ = [
    "LOG_2PI",
    "MAX_COUNT",
    "as_float_array",
    "as_numeric_array",
    "as_generator",
    "as_tensor",
    "check_broadcast",
    "check_nonnegative",
    "check_positive",
    "check_bsc_batch_inputs",
    "check_bsc_inputs",
    "check_enumerable",
    "check_finite_tensor",
    "check_fit_controls",
    "check_int",
    "check_positive_int",
    "check_probability_rows",
    "check_real",
    "check_spd",
    "check_symmetric",
    "power_of_two_scale",
]

#: log(2 pi), the constant of every Gaussian log-density.
LOG_2PI = float(np.log(2.0 * np.pi))

#: The largest count (iterations, samples, sizes) :func:`check_positive_int` accepts:
#: 2**32 - 1. No loop of the library finishes that many steps in a reader's lifetime and
#: no array of that many float64 entries (32 GiB) fits in a laptop's memory, while NumPy
#: and torch internals fail with unrelated messages (or hang) at 2**63.
MAX_COUNT = 2**32 - 1


def as_numeric_array(x, name: str, dtype=np.float64, *,
                     expected: str = "numeric array-like") -> np.ndarray:
    """The one conversion of an array argument at the library's boundary (no value checks).

    * a ``torch.Tensor`` is detached (a NumPy-side function returns NumPy values, which
      carry no gradient either way) and copied to the CPU;
    * complex values are rejected (NumPy would drop the imaginary part with only a
      ``ComplexWarning``), and so are strings, bytes, dates and a bare ``True`` / ``False``
      (boolean arrays of one or more dimensions are accepted as 0/1 data);
    * Python ints beyond float range (``10**400``) are rejected by name.

    Non-finite values pass: :func:`as_float_array` adds that check where it is wanted.
    ``expected`` is what the messages say ``name`` must be.

    Raises
    ------
    TypeError
        If ``x`` is not real numeric array-like.
    ValueError
        If an entry is an int beyond the range of float64.
    """
    if type(x) is np.ndarray:  # the fast paths (subclasses become plain arrays below)
        if x.dtype == dtype:
            return x
        if x.dtype.kind in "fiu":
            return x.astype(dtype)
    elif type(x) is float:
        return np.asarray(x, dtype=dtype)
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{name} must be real, got a complex tensor ({x.dtype})")
        x = x.detach().cpu()
        x = (x.to(torch.float32) if x.dtype == torch.bfloat16 else x).numpy()
    elif isinstance(x, str | bytes):
        raise TypeError(f"{name} must be {expected}, got {type(x).__name__} {x!r:.40}")
    try:
        raw = np.asarray(x)
    except (TypeError, ValueError, RuntimeError) as exc:  # ragged, or tensors in a list
        raise TypeError(f"{name} must be {expected}, got {type(x).__name__}") from exc
    kind = raw.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} must be real, got complex values ({raw.dtype})")
    if kind in "USVMm":
        raise TypeError(f"{name} must be {expected}, got an array of {raw.dtype}")
    if kind == "b" and raw.ndim == 0:
        raise TypeError(f"{name} must be {expected}, got bool")
    if kind == "O":  # NumPy would parse "1.5" and take the real part of 2j: refuse both
        bad = next((v for v in raw.ravel() if isinstance(v, str | bytes | bool | np.bool_)
                    or (isinstance(v, Complex | np.complexfloating)
                        and not isinstance(v, Real))), None)
        if bad is not None:
            what = "complex" if isinstance(bad, Complex) and not isinstance(bad, Real) \
                else type(bad).__name__
            raise TypeError(f"{name} must be {expected} of real numbers, got {what}")
    try:
        return raw.astype(dtype, copy=False)
    except OverflowError as exc:
        raise ValueError(f"{name} holds an integer beyond the range of float64 "
                         f"(|value| > 1.8e308)") from exc
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be {expected} of real numbers, got "
                        f"{type(x).__name__}") from exc


def as_float_array(x, name: str, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Convert ``x`` to a finite float64 array, checking its number of dimensions.

    The conversion is :func:`as_numeric_array` (tensors detached, complex, strings and
    ints beyond float range rejected by name).

    Raises
    ------
    TypeError
        If ``x`` cannot be converted to a real numeric array.
    ValueError
        If ``x`` has the wrong number of dimensions, is empty, or is not finite.
    """
    arr = as_numeric_array(x, name)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimension(s), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values (no NaN or inf)")
    return arr


def as_points(x, name: str = "x") -> np.ndarray:
    """Data points as an (n, d) float64 array: a 1-D ``x`` is n points in one dimension.

    Raises as :func:`as_float_array` does, naming ``name``.
    """
    x = as_float_array(x, name, ndim=(1, 2))
    return x[:, None] if x.ndim == 1 else x


def _scalar_of(value):
    """A 0-d real NumPy array or tensor (detached) as its number; anything else as it is."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        return value[()]
    if (isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_complex()
            and value.dtype != torch.bool):
        return value.item()
    return value


def _real_scalar(value, name: str, what: str) -> float:
    """``value`` as a float: a real number (NumPy scalars and 0-d real arrays or tensors
    included), never a bool, a string, a complex number or an int beyond float range."""
    if type(value) is float:  # the common case, first
        return value
    value = _scalar_of(value)
    if isinstance(value, bool | np.bool_) or not isinstance(value, Real | np.floating
                                                             | np.integer):
        complex_ = isinstance(value, Complex | np.complexfloating) and not isinstance(value,
                                                                                     Real)
        kind = "complex" if complex_ else type(value).__name__
        raise TypeError(f"{name} must be {what}, got {kind}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} must be {what} within float range, got an integer of "
                         f"{len(str(abs(int(value))))} digits") from None


def check_positive(value, name: str, allow_array: bool = False) -> float | np.ndarray:
    """Return ``value`` as float (or float array) after checking it is finite and > 0."""
    if allow_array:
        arr = as_float_array(value, name)
        if np.any(arr <= 0):
            raise ValueError(f"{name} must be > 0 everywhere, got minimum {arr.min()!r}")
        return arr
    value = _real_scalar(value, name, "a positive number")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_int(value, name: str, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """Return ``value`` as a Python int: an int, a NumPy integer or a 0-d integer array
    or tensor (never a bool), within [``minimum``, ``maximum``] where given."""
    if type(value) is not int:  # a Python int is the common case
        value = _scalar_of(value)
        if isinstance(value, bool | np.bool_) or not isinstance(value, Integral | np.integer):
            raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
        value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        limit = "2**32 - 1" if maximum == MAX_COUNT else str(maximum)
        raise ValueError(f"{name} must be <= {limit}, got {value}")
    return value


def check_positive_int(value, name: str, minimum: int = 1, maximum: int | None = MAX_COUNT
                       ) -> int:
    """Return ``value`` as int after checking it is an integer in [``minimum``,
    ``maximum``] (a count: at most :data:`MAX_COUNT` unless told otherwise)."""
    return check_int(value, name, minimum, maximum)


def check_nonnegative(value, name: str) -> float:
    """Return ``value`` as float after checking it is a finite real number >= 0."""
    value = _real_scalar(value, name, "a real number >= 0")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def as_generator(rng) -> np.random.Generator:
    """The library's one randomness policy: ``rng`` as a ``numpy.random.Generator``.

    A Generator is returned as it is (so a chapter's ``seed_everything`` stream is
    shared); an int is a seed for ``numpy.random.default_rng``.

    Raises
    ------
    TypeError
        If ``rng`` is neither a Generator nor an int (a bool or ``None`` included: there
        are no hidden seeds and no unseeded runs).
    ValueError
        If ``rng`` is a negative int.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, Integral | np.integer) and not isinstance(rng, bool | np.bool_):
        if rng < 0:
            raise ValueError(f"rng must be a numpy.random.Generator or an int seed >= 0, "
                             f"got {int(rng)}")
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy.random.Generator or an int seed, "
                    f"got {type(rng).__name__}")


def check_probability_rows(p, name: str, shape: tuple[int, ...] | None = None,
                           atol: float = 1e-8) -> np.ndarray:
    """Return ``p`` as a float array whose last axis holds probability distributions.

    Every entry must be >= 0 and every row (last axis) must sum to 1 within ``atol``.

    Raises
    ------
    ValueError
        If ``p`` has the wrong shape, a negative entry or a row that does not sum to 1.
    """
    p = as_float_array(p, name, ndim=None if shape is None else len(shape))
    if shape is not None and p.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {p.shape}")
    sums = p.sum(axis=-1)
    if np.any(p < 0) or not np.allclose(sums, 1.0, rtol=0.0, atol=atol):
        raise ValueError(f"{name} must be >= 0 with rows summing to 1, got minimum "
                         f"{p.min()!r} and row sums in [{sums.min()!r}, {sums.max()!r}]")
    return p


def check_symmetric(mats, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Return ``mats`` (a matrix or a stack of matrices) after checking symmetry.

    Symmetric means equal to its transpose over the last two axes within
    ``rtol=1e-10, atol=1e-12``.

    Raises
    ------
    ValueError
        If the shape is not ``shape`` (when given), the matrices are not square, or not
        symmetric.
    """
    c = as_float_array(mats, name, ndim=len(shape) if shape is not None else None)
    if shape is not None and c.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {c.shape}")
    if c.ndim < 2 or c.shape[-1] != c.shape[-2]:
        raise ValueError(f"{name} must be square matrices, got shape {c.shape}")
    if not np.allclose(c, np.swapaxes(c, -1, -2), rtol=1e-10, atol=1e-12):
        raise ValueError(f"{name} must be symmetric")
    return c


def check_spd(mats, name: str, shape: tuple[int, ...] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Check that ``mats`` are symmetric positive definite; return them and their Cholesky.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The matrices as float64 and their lower Cholesky factors (same shape).

    Raises
    ------
    ValueError
        As :func:`check_symmetric`, or if a matrix is not positive definite.
    """
    c = check_symmetric(mats, name, shape)
    try:
        chol = np.linalg.cholesky(c)
    except np.linalg.LinAlgError as exc:
        if c.ndim == 2:
            raise ValueError(f"{name} must be positive definite, got smallest eigenvalue "
                             f"{np.linalg.eigvalsh(c).min():.3g}") from exc
        flat = c.reshape(-1, *c.shape[-2:])
        low = np.linalg.eigvalsh(flat).min(axis=1)
        bad = int(np.argmax(low <= 0)) if np.any(low <= 0) else int(np.argmin(low))
        index = np.unravel_index(bad, c.shape[:-2])
        where = ", ".join(str(int(i)) for i in index)
        raise ValueError(f"{name}[{where}] must be positive definite, got smallest "
                         f"eigenvalue {low[bad]:.3g}") from exc
    return c, chol


def check_broadcast(**arrays) -> tuple[int, ...]:
    """The broadcast shape of named arrays, or a ValueError naming them and their shapes."""
    shapes = {name: tuple(np.shape(a)) for name, a in arrays.items()}
    try:
        return tuple(np.broadcast_shapes(*shapes.values()))
    except ValueError as exc:
        listed = [f"{name} {shape}" for name, shape in shapes.items()]
        raise ValueError(f"{', '.join(listed[:-1])} and {listed[-1]} must broadcast to one "
                         f"shape") from exc


def as_tensor(x, name: str, dtype=None):
    """``x`` as a finite floating torch tensor (a tensor keeps its dtype and its graph).

    Array-likes become float64 tensors (or ``dtype``); float32 and float64 tensors are
    accepted as they are, integer tensors become float64.

    Raises
    ------
    TypeError
        If ``x`` is neither a tensor nor numeric array-like.
    ValueError
        If ``x`` holds NaN or inf.
    """

    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{name} must be real, got a complex tensor ({x.dtype})")
        t = x if x.is_floating_point() else x.to(torch.float64)
        if dtype is not None:
            t = t.to(dtype)
    else:
        t = torch.as_tensor(as_numeric_array(x, name, expected="a torch.Tensor or numeric "
                                             "array-like"),
                            dtype=torch.float64 if dtype is None else dtype)
    if not bool(torch.isfinite(t.detach()).all()):
        raise ValueError(f"{name} must contain only finite values (no NaN or inf)")
    return t


def check_real(value, name: str) -> float:
    """Return ``value`` as float after checking it is a finite real number."""
    value = _real_scalar(value, name, "a real number")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def check_bsc_inputs(v, weights, bias, noise_precision):
    """Check the parameters of binary sparse coding for one input ``v`` (chapter 4).

    Returns ``(v, weights, bias, beta)`` as float arrays, ``beta`` of shape ``v.shape``.
    """
    v = as_float_array(v, "v", ndim=1)
    weights = as_float_array(weights, "weights", ndim=2)
    if weights.shape[0] != v.size:
        raise ValueError(f"weights must have shape (len(v), n_latent) = ({v.size}, n), "
                         f"got {weights.shape}")
    bias = as_float_array(bias, "bias", ndim=1)
    if bias.size != weights.shape[1]:
        raise ValueError(f"bias must have length n_latent = {weights.shape[1]}, got {bias.size}")
    beta = check_positive(noise_precision, "noise_precision", allow_array=True)
    beta = np.broadcast_to(beta, v.shape).astype(np.float64) if beta.ndim == 0 else beta
    if beta.shape != v.shape:
        raise ValueError(f"noise_precision must be a scalar or have shape {v.shape}, "
                         f"got {beta.shape}")
    return v, weights, bias, beta


def check_bsc_batch_inputs(v, weights, bias, noise_precision, prefix: str = ""):
    """Check the parameters of binary sparse coding for a batch ``v`` (N, n_visible).

    Returns ``(v, weights, bias, beta)``, ``beta`` a float (chapter 4). ``prefix`` is put
    before the parameter names in messages (``"init_"`` for initial values).
    """
    v = as_float_array(v, "v", ndim=2)
    weights = as_float_array(weights, f"{prefix}weights", ndim=2)
    if weights.shape[0] != v.shape[1]:
        raise ValueError(f"{prefix}weights must have shape (n_visible, n_latent) with "
                         f"n_visible = {v.shape[1]}, got {weights.shape}")
    bias = as_float_array(bias, f"{prefix}bias", ndim=1)
    if bias.size != weights.shape[1]:
        raise ValueError(f"{prefix}bias must have length n_latent = {weights.shape[1]}, "
                         f"got {bias.size}")
    beta = check_positive(noise_precision, f"{prefix}noise_precision")
    return v, weights, bias, beta


def check_enumerable(bias, limit: int, name: str = "bias") -> None:
    """Refuse an enumeration over 2^n_latent binary codes when n_latent > ``limit``."""
    n = np.shape(bias)[0]
    if n > limit:
        raise ValueError(f"{name} has n_latent = {n} entries: enumeration over 2^n_latent "
                         f"codes needs n_latent <= {limit}")


def check_fit_controls(tol, reg_covar, max_iter) -> tuple[float, float, int]:
    """Check the stopping rule and covariance floor of an EM estimator (chapter 2).

    Returns ``(tol, reg_covar, max_iter)`` as float >= 0, float >= 0 and int >= 1.
    """
    return (check_nonnegative(tol, "tol"), check_nonnegative(reg_covar, "reg_covar"),
            check_positive_int(max_iter, "max_iter"))


def power_of_two_scale(x, axis=None, keepdims: bool = False):
    """A power of two to divide ``x`` by when its magnitude is extreme, else 1.

    Returns 2**(e - 1) with max|x| = f 2**e (f in [0.5, 1)) where max|x| (over ``axis``)
    lies outside [2**-100, 2**100], and 1 elsewhere (and where x is all zero). Dividing by
    a power of two is exact, so a homogeneous computation done on ``x / scale`` and scaled
    back gives bit for bit the unscaled answer wherever that one neither overflows nor
    underflows, and ordinary data are not touched at all (sparse coding and ZCA, chapter 3).
    """
    m = np.max(np.abs(as_float_array(x, "x")), axis=axis, keepdims=keepdims)
    _, e = np.frexp(m)
    extreme = (m > 2.0**100) | ((m < 2.0**-100) & (m > 0))
    out = np.where(extreme, np.ldexp(1.0, np.asarray(e) - 1), 1.0)
    return float(out) if np.ndim(out) == 0 else out


def check_finite_tensor(t, name: str):
    """Return the torch tensor ``t`` after checking that it holds only finite values.

    Raises
    ------
    ValueError
        If ``t`` holds NaN or inf (the message counts them).
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    finite = t.isfinite()
    if not bool(finite.all()):
        raise ValueError(f"{name} must contain only finite values (no NaN or inf), got "
                         f"{int((~finite).sum())} non-finite of {t.numel()}")
    return t

