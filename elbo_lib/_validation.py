"""Input validation shared by the public functions of elbo_lib, and shared constants.

Every public function checks its inputs with these helpers so that bad input fails
early with a message that says what was given and what was expected. This module is
private to the package, but its names are the library's internal API: any module may
import them (and no module imports another module's private names).

The one randomness policy of the NumPy code is :func:`as_generator`: every function that
draws random numbers takes ``rng``, an int seed or a ``numpy.random.Generator``.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch

__all__ = [
    "LOG_2PI",
    "as_float_array",
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
    "check_positive_int",
    "check_probability_rows",
    "check_real",
    "check_spd",
    "check_symmetric",
    "power_of_two_scale",
]

#: log(2 pi), the constant of every Gaussian log-density.
LOG_2PI = float(np.log(2.0 * np.pi))


def as_float_array(x, name: str, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Convert ``x`` to a finite float64 array, checking its number of dimensions.

    Raises
    ------
    TypeError
        If ``x`` cannot be converted to a numeric array.
    ValueError
        If ``x`` has the wrong number of dimensions, is empty, or is not finite.
    """
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be numeric array-like, got {type(x).__name__}") from exc
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


def check_positive(value, name: str, allow_array: bool = False) -> float | np.ndarray:
    """Return ``value`` as float (or float array) after checking it is finite and > 0."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a positive number, got bool")
    if allow_array:
        arr = as_float_array(value, name)
        if np.any(arr <= 0):
            raise ValueError(f"{name} must be > 0 everywhere, got minimum {arr.min()!r}")
        return arr
    if not isinstance(value, Real | np.floating | np.integer):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """Return ``value`` as int after checking it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_nonnegative(value, name: str) -> float:
    """Return ``value`` as float after checking it is a finite real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, Real | np.floating | np.integer):
        raise TypeError(f"{name} must be a real number >= 0, got {type(value).__name__}")
    value = float(value)
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
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, Integral) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
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
        t = x if x.is_floating_point() else x.to(torch.float64)
        if dtype is not None:
            t = t.to(dtype)
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64),
                                dtype=torch.float64 if dtype is None else dtype)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a torch.Tensor or numeric array-like, got "
                            f"{type(x).__name__}") from exc
    if not bool(torch.isfinite(t.detach()).all()):
        raise ValueError(f"{name} must contain only finite values (no NaN or inf)")
    return t


def check_real(value, name: str) -> float:
    """Return ``value`` as float after checking it is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, Real | np.floating | np.integer):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
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

