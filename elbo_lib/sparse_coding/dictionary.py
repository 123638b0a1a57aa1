"""Dictionary learning by alternating minimisation of the lasso objective (chapter 3).

Codes by FISTA for the dictionary, then the dictionary by block coordinate descent on
its atoms (:func:`update_dictionary`) for the codes; atoms of unit norm
(:func:`normalize_columns`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from elbo_lib._validation import (
    as_float_array,
    as_generator,
    check_positive,
    check_positive_int,
    power_of_two_scale,
)
from elbo_lib.sparse_coding.lasso import _blas_threads, _check_codes, _finite_result, _objective
from elbo_lib.sparse_coding.proximal_gradient import fista


# ---------------------------------------------------------------- dictionary learning
def normalize_columns(W, *, project: bool = False) -> np.ndarray:
    """Scale the atoms (columns) of a dictionary to unit Euclidean norm (chapter 3).

    Parameters
    ----------
    W : array_like, shape (d, k)
    project : bool
        If True, project onto the constraint set {||w_j|| <= 1}: only columns longer than
        1 are shrunk. If False (default), every column is scaled to norm exactly 1.

    Raises
    ------
    ValueError
        If W is not a finite 2-D array, or (``project=False``) a column is zero.
    """
    return _normalize_columns(W, "W", project=project)


def _normalize_columns(W, name: str, *, project: bool = False) -> np.ndarray:
    W = as_float_array(W, name, ndim=2)
    scale = power_of_two_scale(W, axis=0)   # per column; exact, so 1e200 and 1e-200 work
    norms = np.linalg.norm(W / scale, axis=0) * scale
    if project:
        return W / np.maximum(norms, 1.0)
    if np.any(norms == 0):
        raise ValueError(f"{name} has zero columns {np.flatnonzero(norms == 0).tolist()}: "
                         "they cannot be normalised")
    return W / norms


def update_dictionary(X, H, W, *, num_sweeps: int = 1) -> np.ndarray:
    """Dictionary update: block coordinate descent over atoms with ||w_j|| <= 1 (chapter 3).

    Minimises 0.5 ||X - H W^T||_F^2 over W subject to ||w_j||_2 <= 1, one column at a time,
    exactly (Mairal et al. 2010, algorithm 2): with A = H^T H and B = X^T H,

        u_j = w_j + (b_j - W a_j) / A_jj,   w_j <- u_j / max(||u_j||, 1).

    Each column step solves its sub-problem exactly, so the objective never increases.
    Atoms that no code uses (A_jj = 0) are left unchanged. The loop runs over atoms, not
    data points; the data enter only through A and B.

    Parameters
    ----------
    X : array_like, shape (n, d)
    H : array_like, shape (n, k)
    W : array_like, shape (d, k)
        Current dictionary.
    num_sweeps : int
        Passes over all atoms.

    Returns
    -------
    numpy.ndarray, shape (d, k)
        The new dictionary (a copy).
    """
    X = as_float_array(X, "X", ndim=2)
    W = as_float_array(W, "W", ndim=2).copy()
    if X.shape[1] != W.shape[0]:
        raise ValueError(f"shape mismatch: X has shape {X.shape}, W has shape {W.shape}; "
                         "expected (n, d) and (d, k)")
    H = _check_codes(H, X.shape[0], W.shape[1], "H")
    num_sweeps = check_positive_int(num_sweeps, "num_sweeps")
    s = power_of_two_scale(np.abs(X).max() + np.abs(H).max())  # (X, H) / s: same W, exact
    with _blas_threads(H.size * max(H.shape[1], X.shape[1])):
        A = (H / s).T @ (H / s)
        B = (X / s).T @ (H / s)
    for _ in range(num_sweeps):
        for j in range(W.shape[1]):
            if A[j, j] <= 0:
                continue
            u = W[:, j] + (B[:, j] - W @ A[:, j]) / A[j, j]
            W[:, j] = u / max(np.linalg.norm(u), 1.0)
    return W


@dataclass
class DictionaryLearningResult:
    """Output of :func:`learn_dictionary`.

    Attributes
    ----------
    dictionary : numpy.ndarray, shape (d, k)
        Learned atoms, one per column, each of norm <= 1.
    codes : numpy.ndarray, shape (n, k)
        MAP codes of the training signals under the final dictionary's last code step.
    objectives : numpy.ndarray, shape (num_iter + 1,)
        Mean training objective (1/n) sum_i [0.5 ||x_i - W h_i||^2 + lam ||h_i||_1],
        at the start and after each outer iteration.
    num_replaced : int
        Number of unused atoms re-initialised from data.
    """

    dictionary: np.ndarray
    codes: np.ndarray
    objectives: np.ndarray
    num_replaced: int


def learn_dictionary(X, num_atoms: int, lam, *, num_iter: int = 30, code_iter: int = 50,
                     rng: np.random.Generator | int, W_init=None) -> DictionaryLearningResult:
    """Sparse coding dictionary learning by alternating MAP steps (chapter 3).

    Alternates (1) MAP inference of all codes with :func:`fista`, warm-started from the
    previous codes, keeping for each signal whichever of the old and new codes has the
    lower objective, and (2) :func:`update_dictionary`. Both steps can only lower the
    objective, so the training objective is non-increasing (Olshausen & Field 1996;
    Mairal et al. 2010). Atoms that no code uses after a code step are replaced by
    random normalised training signals; their codes are zero, so this leaves the
    objective unchanged.

    Parameters
    ----------
    X : array_like, shape (n, d)
        Training signals, one per row.
    num_atoms : int
        k, number of atoms.
    lam : float
        L1 penalty (> 0).
    num_iter : int
        Outer iterations.
    code_iter : int
        FISTA iterations per code step.
    rng : numpy.random.Generator or int
        Source of the initial dictionary (random training signals) and replacements.
    W_init : array_like, shape (d, k), optional
        Initial dictionary (columns are normalised).

    Returns
    -------
    DictionaryLearningResult
    """
    X = as_float_array(X, "X", ndim=2)
    n, d = X.shape
    k = check_positive_int(num_atoms, "num_atoms")
    lam = check_positive(lam, "lam")
    num_iter = check_positive_int(num_iter, "num_iter")
    code_iter = check_positive_int(code_iter, "code_iter")
    rng = as_generator(rng)
    if k > n:
        raise ValueError(f"num_atoms must be <= the number of signals {n}, got {k}")
    if W_init is None:
        nonzero = np.flatnonzero(np.any(X != 0, axis=1))
        if nonzero.size < k:
            raise ValueError(f"X must have at least num_atoms = {k} non-zero rows, got "
                             f"{nonzero.size} (the initial atoms are random non-zero rows)")
        W = _normalize_columns(X[rng.choice(nonzero, size=k, replace=False)].T, "W_init")
    else:
        W = _normalize_columns(W_init, "W_init")
        if W.shape != (d, k):
            raise ValueError(f"W_init must have shape {(d, k)}, got {W.shape}")
    s = power_of_two_scale(X)    # exact; (X, lam) / s has the same dictionary, codes H / s
    with _blas_threads(n * k * max(k, d)):
        result = _alternate(X / s, W, lam / s, num_iter, code_iter, rng)
    if s != 1.0:
        result.codes *= s
        result.objectives = _finite_result(result.objectives * s**2, "training objective")
    return result


def _alternate(X, W, lam, num_iter, code_iter, rng) -> DictionaryLearningResult:
    n, k = X.shape[0], W.shape[1]
    H = np.zeros((n, k))
    per_signal = _objective(X, W, H, lam)
    objectives = [float(per_signal.mean())]
    num_replaced = 0
    for _ in range(num_iter):
        result = fista(X, W, lam, max_iter=code_iter, tol=0.0, codes_init=H)
        new = _objective(X, W, result.codes, lam)
        better = new < per_signal
        H[better] = result.codes[better]
        W = update_dictionary(X, H, W)
        unused = np.flatnonzero(~np.any(H, axis=0))
        if unused.size:
            picks = rng.choice(n, size=unused.size, replace=False)
            norms = np.linalg.norm(X[picks], axis=1)
            ok = norms > 0
            W[:, unused[ok]] = (X[picks[ok]] / norms[ok, None]).T
            num_replaced += int(ok.sum())
        per_signal = _objective(X, W, H, lam)
        objectives.append(float(per_signal.mean()))
    return DictionaryLearningResult(dictionary=W, codes=H, objectives=np.asarray(objectives),
                                    num_replaced=num_replaced)


