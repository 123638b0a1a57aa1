"""Checks of an HMM's inputs, shared by the package (chapter 2).

Log-probabilities of the initial distribution, the transition matrix and the
emissions, and the lengths of stacked sequences.
"""

from __future__ import annotations

import numpy as np

from elbo_lib._validation import (
    as_float_array,
    as_numeric_array,
)


def _check_log_params(log_pi, log_A, log_B):
    """Validate log start probabilities (K,), log transitions (K, K), log emissions (T, K)."""
    log_pi, log_A = _as_log_probabilities(log_pi, "log_pi"), _as_log_probabilities(log_A, "log_A")
    log_B = as_float_array(log_B, "log_B", ndim=2)
    k = log_B.shape[1]
    if log_pi.shape != (k,):
        raise ValueError(f"log_pi must have shape ({k},) to match log_B {log_B.shape}, "
                         f"got {log_pi.shape}")
    if log_A.shape != (k, k):
        raise ValueError(f"log_A must have shape ({k}, {k}), got {log_A.shape}")
    for name, arr in (("log_pi", log_pi), ("log_A", log_A)):
        if np.any(np.isnan(arr)) or np.any(arr == np.inf):
            raise ValueError(f"{name} must be log-probabilities (-inf allowed), got NaN or +inf")
    if not np.isclose(np.logaddexp.reduce(log_pi), 0.0, atol=1e-8):
        raise ValueError("exp(log_pi) must sum to 1")
    if not np.allclose(np.logaddexp.reduce(log_A, axis=1), 0.0, atol=1e-8):
        raise ValueError("every row of exp(log_A) must sum to 1")
    return log_pi, log_A, log_B



def _as_log_probabilities(x, name: str) -> np.ndarray:
    """A float array that may hold -inf (log 0), unlike :func:`as_float_array`: the
    library's one conversion (:func:`~elbo_lib._validation.as_numeric_array`: tensors
    detached; complex values, strings, bools and ints beyond float range refused)."""
    return as_numeric_array(x, name, expected="numeric array-like of log-probabilities")



def _log(p):
    with np.errstate(divide="ignore"):
        return np.log(p)



def _check_lengths(lengths, num_steps: int) -> np.ndarray:
    """Sequence boundaries [0, l_1, l_1 + l_2, ..., T] from ``lengths`` (hmmlearn's
    convention: the sequences are stacked row-wise, each of length >= 1); None is one
    sequence."""
    if lengths is None:
        return np.array([0, num_steps], dtype=np.int64)
    try:
        arr = np.asarray(lengths)
    except (TypeError, ValueError) as exc:  # ragged nesting
        raise TypeError(f"lengths must be a 1-D sequence of integers, got "
                        f"{type(lengths).__name__}") from exc
    if arr.ndim != 1 or arr.size == 0 or not (np.issubdtype(arr.dtype, np.integer)
                                              and not np.issubdtype(arr.dtype, np.bool_)):
        raise TypeError(f"lengths must be a non-empty 1-D sequence of integers, got "
                        f"{arr.dtype} of shape {arr.shape}")
    if np.any(arr < 1):
        raise ValueError(f"lengths must be >= 1 each, got minimum {int(arr.min())}")
    if int(arr.sum()) != num_steps:
        raise ValueError(f"lengths must sum to the number of steps T={num_steps}, got "
                         f"{int(arr.sum())}")
    return np.concatenate([[0], np.cumsum(arr)]).astype(np.int64)
