"""Input validation shared by the public functions of elbo_lib.

Every public function checks its inputs with these helpers so that bad input fails
early with a message that says what was given and what was expected.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np


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
