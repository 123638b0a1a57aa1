"""The lasso: MAP inference of the codes of the sparse coding model (chapter 3).

min_h 0.5 ||x - W h||^2 + lam ||h||_1 for a batch of signals (one per row of X): its
objective (:func:`lasso_objective`) and duality gap (:func:`lasso_duality_gap`), the
proximal operator of the penalty (:func:`soft_threshold`), the Lipschitz constant of the
fit's gradient (:func:`lipschitz_constant`) and scikit-learn's equivalent penalty
(:func:`sklearn_lasso_alpha`); the shared input checks of the package.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import numpy as np
from threadpoolctl import ThreadpoolController

from elbo_lib._validation import (
    as_float_array,
    as_generator,
    check_positive,
    check_positive_int,
    power_of_two_scale,
)

# --------------------------------------------------------------------------- helpers
#: Below this many multiply-adds per iteration, BLAS runs single-threaded: for these
#: products, thread start-up and (on a busy machine) oversubscription cost more than they
#: save (measured up to 10x slower with 2 threads on a loaded 2-core machine, and still
#: slower at 10^4 signals x 128 atoms). It also makes results independent of core count.
SINGLE_THREAD_FLOPS = 2**30


#: One ThreadpoolController for the package, made on first use (NumPy's BLAS, the one
#: these products run on, is loaded with NumPy, before): making one scans every loaded
#: library, 1-6 ms of CPU in a chapter's process (torch, SciPy and scikit-learn loaded)
#: and 30 times per dictionary learning, while limiting through it costs microseconds.
_CONTROLLER: list[ThreadpoolController] = []
#: How many single-threaded blocks are open: an inner one (FISTA inside dictionary
#: learning, L inside FISTA) finds BLAS limited already and changes nothing.
_DEPTH = [0]


def _blas_threads(flops_per_iteration: float) -> AbstractContextManager:
    if flops_per_iteration < SINGLE_THREAD_FLOPS:
        return _one_blas_thread()
    return nullcontext()


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    if _DEPTH[0]:
        yield
        return
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    _DEPTH[0] += 1
    try:
        with _CONTROLLER[0].limit(limits=1, user_api="blas"):
            yield
    finally:
        _DEPTH[0] -= 1


def _check_problem(X, W, lam) -> tuple[np.ndarray, np.ndarray, float]:
    """Validate a lasso problem (X, W, lam); a single signal X of shape (d,) becomes (1, d)."""
    X = as_float_array(X, "X", ndim=(1, 2))
    if X.ndim == 1:
        X = X[None, :]
    W = as_float_array(W, "W", ndim=2)
    if X.shape[1] != W.shape[0]:
        raise ValueError(
            f"shape mismatch: X has signals of length {X.shape[1]} (shape {X.shape}) but the "
            f"dictionary W has {W.shape[0]} rows (shape {W.shape}); expected X of shape (n, d) "
            "and W of shape (d, k)")
    lam = check_positive(lam, "lam")
    return X, W, lam


def _check_codes(H, n: int, k: int, name: str = "codes") -> np.ndarray:
    H = as_float_array(H, name, ndim=(1, 2))
    if H.ndim == 1:
        H = H[None, :]
    if H.shape != (n, k):
        raise ValueError(f"{name} must have shape (num_signals, num_atoms) = {(n, k)}, "
                         f"got {H.shape}")
    return H


def _finite_result(out: np.ndarray, what: str) -> np.ndarray:
    """Return ``out``, or say that squares of the data left float64's range."""
    if not np.all(np.isfinite(out)):
        raise ValueError(f"the {what} overflows float64: it is quadratic in X, W and H, "
                         "whose entries are too large; rescale X, H and lam together")
    return out


def soft_threshold(v, threshold) -> np.ndarray:
    """Soft-thresholding, the proximal operator of ``threshold * ||.||_1`` (chapter 3).

    .. math::

        \\operatorname{prox}_{\\tau \\lVert\\cdot\\rVert_1}(v)
        = \\arg\\min_u \\tfrac12 \\lVert u - v \\rVert^2 + \\tau \\lVert u \\rVert_1
        = \\operatorname{sign}(v) \\max(\\lvert v \\rvert - \\tau, 0),

    elementwise.

    Parameters
    ----------
    v : array_like
        Points to shrink (finite).
    threshold : float or array_like
        tau >= 0, broadcastable against ``v``.

    Returns
    -------
    numpy.ndarray
        Same shape as ``v``.

    Raises
    ------
    ValueError
        If ``threshold`` is negative or anything is not finite.

    Examples
    --------
    >>> soft_threshold([-3.0, 0.5, 2.0], 1.0).tolist()
    [-2.0, 0.0, 1.0]
    """
    v = as_float_array(v, "v")
    tau = as_float_array(threshold, "threshold")
    if np.any(tau < 0):
        raise ValueError(f"threshold must be >= 0, got minimum {float(tau.min())!r}")
    try:
        shape = np.broadcast_shapes(v.shape, tau.shape)
    except ValueError:
        shape = None
    if shape != v.shape:
        raise ValueError(f"threshold must be broadcastable to the shape of v {v.shape}, "
                         f"got shape {tau.shape}")
    return np.maximum(v - tau, 0.0) + np.minimum(v + tau, 0.0)


def lipschitz_constant(W, method: str = "exact", *, max_iter: int = 1000, tol: float = 1e-10,
                       rng: np.random.Generator | int | None = None) -> float:
    """Largest eigenvalue of W^T W: the Lipschitz constant of the gradient of the lasso fit.

    The gradient of f(h) = 0.5 ||x - W h||^2 is W^T (W h - x), whose Lipschitz constant is
    L = lambda_max(W^T W) = ||W||_2^2; ISTA and FISTA take steps of size 1 / L
    (Beck & Teboulle 2009). Chapter 3.

    Parameters
    ----------
    W : array_like, shape (d, k)
        Dictionary.
    method : {"exact", "power"}
        ``"exact"``: symmetric eigenvalue decomposition of the smaller of W^T W and W W^T.
        ``"power"``: power iteration on W^T W, stopped when the Rayleigh quotient changes
        by less than ``tol`` (relative); it approaches L from below.
    max_iter : int
        Power-iteration cap.
    tol : float
        Relative tolerance of the power iteration (> 0).
    rng : numpy.random.Generator or int
        Source of the power iteration's start vector; required with ``method="power"``
        (unused by ``"exact"``).

    Returns
    -------
    float
        L > 0.

    Raises
    ------
    ValueError
        If W is not a finite non-zero matrix, ``method`` is unknown, or the power
        iteration does not converge within ``max_iter``.
    TypeError
        If ``method="power"`` and ``rng`` is not a Generator or an int seed.
    """
    W = as_float_array(W, "W", ndim=2)
    if not np.any(W):
        raise ValueError("W must not be all zeros (the Lipschitz constant would be 0)")
    if method not in ("exact", "power"):
        raise ValueError(f"method must be 'exact' or 'power', got {method!r}")
    scale = power_of_two_scale(W)       # exact; 1 unless W's entries are extreme
    with np.errstate(over="ignore"), _blas_threads(W.size * min(W.shape)):
        value = np.float64(scale) ** 2 * _lipschitz_scaled(W / scale, method, max_iter, tol,
                                                            rng)
    if not np.isfinite(value) or value < np.finfo(float).tiny:
        raise ValueError(f"the Lipschitz constant of W (largest |entry| {np.abs(W).max():.3g}) "
                         f"is {value!r}: it overflows float64 or is below its normal range; "
                         "rescale W")
    return float(value)


def _lipschitz_scaled(W, method, max_iter, tol, rng) -> float:
    if method == "exact":
        gram = W.T @ W if W.shape[1] <= W.shape[0] else W @ W.T
        return float(np.linalg.eigvalsh(gram)[-1])
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_positive(tol, "tol")
    rng = as_generator(rng)
    v = rng.standard_normal(W.shape[1])
    v /= np.linalg.norm(v)
    estimate = 0.0
    for _ in range(max_iter):
        u = W.T @ (W @ v)
        new = float(v @ u)             # Rayleigh quotient, <= L
        norm_u = np.linalg.norm(u)
        if norm_u == 0:                # start vector in the null space: restart
            v = rng.standard_normal(W.shape[1])
            v /= np.linalg.norm(v)
            continue
        v = u / norm_u
        if abs(new - estimate) <= tol * new:
            return new
        estimate = new
    raise ValueError(f"power iteration did not converge to relative tolerance {tol} "
                     f"in {max_iter} iterations; raise max_iter or use method='exact'")


def sklearn_lasso_alpha(lam, signal_dim: int) -> float:
    """Penalty for ``sklearn.linear_model.Lasso`` that gives our lasso problem (chapter 3).

    scikit-learn's Lasso minimises (1 / (2 n_samples)) ||y - A w||^2 + alpha ||w||_1. Coding
    one signal x of length d against W is the regression y = x, A = W with n_samples = d,
    so multiplying our objective 0.5 ||x - W h||^2 + lam ||h||_1 by 1 / d gives
    alpha = lam / d. (``sparse_encode`` with ``lasso_lars`` / ``lasso_cd`` does this
    division itself: pass ``alpha=lam`` there.)

    Parameters
    ----------
    lam : float
        Our penalty (> 0).
    signal_dim : int
        d, the length of each signal (number of rows of W).
    """
    return check_positive(lam, "lam") / check_positive_int(signal_dim, "signal_dim")


def lasso_objective(X, W, H, lam) -> np.ndarray:
    """Per-signal lasso objective 0.5 ||x_i - W h_i||^2 + lam ||h_i||_1 (chapter 3).

    Parameters
    ----------
    X : array_like, shape (n, d) or (d,)
        Signals, one per row.
    W : array_like, shape (d, k)
        Dictionary, one atom per column.
    H : array_like, shape (n, k) or (k,)
        Codes, one row per signal.
    lam : float
        Penalty lam > 0.

    Returns
    -------
    numpy.ndarray, shape (n,)
        The objective of every signal (computed from the residual, not the expanded
        quadratic, so that differences near the optimum keep their precision).
    """
    X, W, lam = _check_problem(X, W, lam)
    H = _check_codes(H, X.shape[0], W.shape[1], "H")
    with _blas_threads(H.size * W.shape[0]):
        return _finite_result(_objective(X, W, H, lam), "lasso objective")


def _objective(X: np.ndarray, W: np.ndarray, H: np.ndarray, lam: float) -> np.ndarray:
    residual = X - H @ W.T
    return 0.5 * np.einsum("ij,ij->i", residual, residual) + lam * np.abs(H).sum(axis=1)


def lasso_duality_gap(X, W, H, lam) -> np.ndarray:
    """Per-signal duality gap of the lasso: a certified bound on objective - optimum.

    The dual of min_h 0.5 ||x - W h||^2 + lam ||h||_1 is
    max_theta 0.5 ||x||^2 - 0.5 ||x - theta||^2 subject to ||W^T theta||_inf <= lam.
    From the residual r = x - W h we build the feasible point
    theta = r * min(1, lam / ||W^T r||_inf); the gap P(h) - D(theta) >= P(h) - P(h*) >= 0
    and it is zero exactly at the optimum. Chapter 3 uses it to certify the optimum
    against which ISTA and FISTA are compared.

    Returns
    -------
    numpy.ndarray, shape (n,)
        Non-negative gaps (up to rounding).
    """
    X, W, lam = _check_problem(X, W, lam)
    H = _check_codes(H, X.shape[0], W.shape[1], "H")
    with _blas_threads(H.size * W.shape[0]):
        residual = X - H @ W.T
        corr = np.abs(residual @ W).max(axis=1)
    primal = 0.5 * np.einsum("ij,ij->i", residual, residual) + lam * np.abs(H).sum(axis=1)
    scale = np.minimum(1.0, lam / np.maximum(corr, np.finfo(float).tiny))
    theta = residual * scale[:, None]
    diff = X - theta
    dual = 0.5 * (np.einsum("ij,ij->i", X, X) - np.einsum("ij,ij->i", diff, diff))
    return _finite_result(primal - dual, "duality gap")


