"""Hidden Markov models: forward-backward, Baum-Welch (EM) and Viterbi.

Chapter 2 of the book. The latent variable is the whole state sequence z_{1:T}, and

.. math::

    \\log p(x_{1:T} \\mid \\theta) = \\mathcal L(q, \\theta)
        + \\mathrm{KL}\\big(q(z_{1:T}) \\,\\|\\, p(z_{1:T} \\mid x_{1:T}, \\theta)\\big).

The E-step needs only the posterior marginals gamma_t(k) = p(z_t = k | x) and the pairwise
marginals xi_t(i, j) = p(z_t = i, z_{t+1} = j | x), which the forward-backward recursions
compute exactly in O(T K^2) instead of the K^T terms of the sum over sequences
(Baum et al. 1970; Rabiner 1989; Bishop 2006, section 13.2). Everything here works with
logarithms (each step shifted by its maximum), so long sequences and extreme emission
densities neither underflow nor overflow. :func:`enumerate_posterior` is the brute-force
oracle the chapter and the tests compare against.

The recursions are sequential in t: they run as one compiled loop over time steps
(Numba), and everything else is vectorised over t with NumPy. The Performance page of the
book measures this against a NumPy loop over t, the associative (parallel-prefix) form of
the recursions and hmmlearn's compiled C++.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numba
import numpy as np

from elbo_lib._validation import (
    as_float_array,
    as_generator,
    as_numeric_array,
    check_fit_controls,
    check_positive_int,
    check_probability_rows,
    check_spd,
)
from elbo_lib.coordinate_ascent import coordinate_ascent
from elbo_lib.em import weighted_gaussian_m_step
from elbo_lib.gaussians import gaussian_log_density, precision_cholesky

__all__ = [
    "GaussianHMM",
    "chain_entropy",
    "enumerate_posterior",
    "forward_backward",
    "sample_gaussian_hmm",
    "viterbi",
]

#: Brute-force enumeration refuses more than this many state sequences.
MAX_ENUMERATED_SEQUENCES = 2**20


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# exact inference
# ---------------------------------------------------------------------------------------
def forward_backward(log_pi, log_A, log_B, return_pairwise: bool = False, lengths=None):
    """Exact posterior marginals of an HMM by the forward-backward recursions, in log space.

    .. math::

        \\log\\alpha_t(j) = \\log B_t(j) + \\log\\sum_i \\alpha_{t-1}(i) A_{ij}, \\qquad
        \\log\\beta_t(i) = \\log\\sum_j A_{ij} B_{t+1}(j) \\beta_{t+1}(j),

    with both messages renormalised at every step by c_t = p(x_t | x_{1:t-1})
    (Rabiner's scaling), so that log p(x) = sum_t log c_t and no quantity grows with T.
    Emission densities enter shifted by their per-step maximum in log space; if a
    scaled message still comes near underflow, the recursions are redone entirely in
    log space (per-step log-sum-exp), so extreme inputs give finite, exact answers.
    Used in chapter 2.

    Parameters
    ----------
    log_pi : array_like, shape (K,)
        Log initial-state probabilities (-inf allowed).
    log_A : array_like, shape (K, K)
        Log transition matrix, rows = from-state (-inf allowed).
    log_B : array_like, shape (T, K)
        Log emission densities log p(x_t | z_t = k) (finite).
    return_pairwise : bool
        Also return the per-step pairwise marginals xi_t (shape (T-1, K, K)).
    lengths : array_like of int, optional
        Several independent sequences stacked row-wise in ``log_B``, of these lengths
        (summing to T; hmmlearn's convention). Default: one sequence.

    Returns
    -------
    log_likelihood : float
        log p(x_{1:T}) (with ``lengths``: the sum over the sequences).
    gamma : numpy.ndarray, shape (T, K)
        p(z_t = k | x).
    xi_sum : numpy.ndarray, shape (K, K)
        sum_t p(z_t = i, z_{t+1} = j | x) (over the pairs within each sequence).
    xi : numpy.ndarray, shape (T-1, K, K)
        Only if ``return_pairwise``; with ``lengths``, shape (T - len(lengths), K, K):
        the pairs within each sequence, in order.
    """
    log_pi, log_A, log_B = _check_log_params(log_pi, log_A, log_B)
    bounds = _check_lengths(lengths, log_B.shape[0])
    log_lik, gamma, xi_sum, xi = _posterior(log_pi, log_A, log_B, bool(return_pairwise),
                                            bounds)
    if return_pairwise:
        return log_lik, gamma, xi_sum, xi
    return log_lik, gamma, xi_sum


def _posterior(log_pi, log_A, log_B, pairwise: bool, bounds=None):
    """:func:`forward_backward` on checked inputs: the scaled path, else log space.

    ``bounds`` are the sequence boundaries of :func:`_check_lengths` (None: one).
    """
    if bounds is None:
        bounds = np.array([0, log_B.shape[0]], dtype=np.int64)
    out = _forward_backward_scaled(log_pi, log_A, log_B, pairwise, bounds)
    if out is not None:
        return out
    # a scaled message underflowed: redo the recursions of every sequence, in log space
    # where the scaled path fails
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        one = np.array([0, b - a], dtype=np.int64)
        part = (None if len(bounds) == 2  # the one sequence just failed
                else _forward_backward_scaled(log_pi, log_A, log_B[a:b], pairwise, one))
        if part is None:
            ll, g, x = _forward_backward_log(log_pi, log_A, log_B[a:b])
            part = ll, g, x.sum(axis=0), (x if pairwise else None)
        parts.append(part)
    return (float(sum(p[0] for p in parts)), np.concatenate([p[1] for p in parts]),
            sum(p[2] for p in parts),
            np.concatenate([p[3] for p in parts]) if pairwise else None)


#: Below this, a scaling constant is too close to underflow to trust: use log space.
_SCALED_MIN = 1e-250


@numba.njit(cache=True, nogil=True)
def _scaled_recursions(pi, A, log_B, bounds, alpha, gamma, right, c, shift,
                       scaled_min):  # pragma: no cover - compiled; tested through callers
    """Compiled kernel: Rabiner's scaled forward and backward recursions, in place.

    For each sequence (rows ``bounds[n]`` to ``bounds[n + 1] - 1``), fills ``shift``
    (max_k log_B[t, k]), ``alpha`` (normalised forward messages p(z_t | x_{1:t})),
    ``c`` (c_t = p(x_t | x_{1:t-1}) / exp(shift_t), so log p(x) = sum_t log c_t +
    shift_t), ``gamma`` (alpha_t beta_t, with beta the
    backward messages scaled by the same constants) and ``right`` (right_t =
    B_t beta_t / c_t with B_t = exp(log_B[t] - shift_t), so that the pairwise marginal
    is xi_t(i, j) = alpha_t(i) A_ij right_{t+1}(j)); ``right`` holds B_t until the
    backward pass reaches t. Every inner loop updates independent accumulators over
    contiguous memory (no reordered sums). Returns False as soon as a scaling constant
    falls below ``scaled_min`` or a backward message is not finite (the caller then
    redoes the sequence in log space). O(T K^2) in one pass each way.
    """
    K = log_B.shape[1]
    AT = np.ascontiguousarray(A.T)
    v = np.empty(K)
    for n in range(len(bounds) - 1):
        if not _one_sequence(pi, A, AT, log_B, bounds[n], bounds[n + 1], alpha, gamma,
                             right, c, shift, v, scaled_min):
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _one_sequence(pi, A, AT, log_B, start, stop, alpha, gamma, right, c, shift, v,
                  scaled_min):  # pragma: no cover - compiled; tested through callers
    """The recursions of :func:`_scaled_recursions` over rows start .. stop - 1."""
    K = log_B.shape[1]
    for t in range(start, stop):  # forward, sequential in t
        top = log_B[t, 0]
        for k in range(1, K):
            top = max(top, log_B[t, k])
        shift[t] = top
        for k in range(K):
            right[t, k] = np.exp(log_B[t, k] - top)  # B_t, largest entry 1
        if t == start:
            for k in range(K):
                v[k] = pi[k] * right[t, k]
        else:
            for j in range(K):
                v[j] = 0.0
            for i in range(K):  # v = alpha[t-1] @ A, row by row of A
                a = alpha[t - 1, i]
                for j in range(K):
                    v[j] += a * A[i, j]
            for j in range(K):
                v[j] *= right[t, j]
        s = 0.0
        for j in range(K):
            s += v[j]
        c[t] = s
        if not s > scaled_min:
            return False
        inv = 1.0 / s
        for j in range(K):
            alpha[t, j] = v[j] * inv
    last = stop - 1
    for k in range(K):  # beta at the last step = 1
        right[last, k] /= c[last]
        gamma[last, k] = alpha[last, k]
    for t in range(last - 1, start - 1, -1):  # backward
        for i in range(K):
            v[i] = 0.0
        for j in range(K):  # beta_t = A @ right_{t+1}, column by column of A
            r = right[t + 1, j]
            for i in range(K):
                v[i] += AT[j, i] * r
        inv = 1.0 / c[t]  # known before the step: not on the chain of dependencies
        for i in range(K):
            if not np.isfinite(v[i]):
                return False
            right[t, i] = right[t, i] * inv * v[i]
            gamma[t, i] = alpha[t, i] * v[i]
    return True


def _forward_backward_scaled(log_pi, log_A, log_B, pairwise: bool, bounds=None):
    """Fast path: Rabiner's scaled recursions in probability space, compiled.

    Returns (log p(x), gamma, xi_sum, xi), with xi None unless ``pairwise``: the sum over
    t of the pairwise marginals is one (K, T) x (T, K) matrix product, so the
    (T-1, K, K) array is built only when asked for.

    Emissions enter as exp(log_B[t] - max_k log_B[t, k]) (largest entry 1), so only a
    state sequence the model finds astronomically unlikely can underflow; then this
    returns None and the caller falls back to :func:`_forward_backward_log`. The
    recursions run in :func:`_scaled_recursions`, compiled by Numba: the arithmetic of
    a NumPy loop over t without the interpreter's cost per step, which dominated at
    small K (the Performance page has the measurements). ``bounds``: as in
    :func:`_posterior`; all the sequences run in one call.
    """
    T, K = log_B.shape
    A = np.ascontiguousarray(np.exp(log_A))
    if not (log_B.flags.c_contiguous and log_B.flags.writeable):
        log_B = np.array(log_B, order="C")  # one compiled signature: C-ordered, writeable
    alpha, gamma, right = np.empty((T, K)), np.empty((T, K)), np.empty((T, K))
    c, shift = np.empty(T), np.empty(T)
    if bounds is None:
        bounds = np.array([0, T], dtype=np.int64)
    if not _scaled_recursions(np.exp(log_pi), A, log_B, bounds, alpha, gamma, right, c,
                              shift, _SCALED_MIN):
        return None
    log_lik = float(np.log(c).sum() + shift.sum())
    # pairs (t, t + 1) within a sequence: drop the last step of every sequence but the
    # final one from the left factor (the final one is not in alpha[:-1])
    ends = bounds[1:-1] - 1
    left = alpha[:-1]
    if ends.size:
        left = left.copy()
        left[ends] = 0.0
    xi_sum = A * (left.T @ right[1:])
    if not pairwise:
        return log_lik, gamma, xi_sum, None
    keep = np.ones(T - 1, dtype=bool)
    keep[ends] = False
    return (log_lik, gamma, xi_sum,
            alpha[:-1][keep, :, None] * A[None] * right[1:][keep, None, :])


def _forward_backward_log(log_pi, log_A, log_B):
    """Robust path: the same normalised recursions with every message kept in logs."""
    T, K = log_B.shape
    A = np.exp(log_A)
    # normalised forward messages: log_alpha[t] = log p(z_t | x_{1:t}),
    # log_c[t] = log p(x_t | x_{1:t-1}), so that log p(x) = sum_t log_c[t]
    log_alpha = np.empty((T, K))
    log_c = np.empty(T)
    v = log_pi + log_B[0]
    for t in range(T):  # sequential in t, vectorised over states
        if t > 0:
            prev = log_alpha[t - 1]
            top = prev.max()
            with np.errstate(divide="ignore"):
                v = top + np.log(np.exp(prev - top) @ A) + log_B[t]
        top = v.max()
        if not np.isfinite(top):
            raise ValueError(f"the observations have probability 0 under the model at t={t}")
        log_c[t] = top + np.log(np.exp(v - top).sum())
        log_alpha[t] = v - log_c[t]
    # backward messages scaled by the same constants: log_beta[t] = log p(x_{t+1:T} | z_t)
    # - sum_{s>t} log_c[s]
    log_beta = np.zeros((T, K))
    for t in range(T - 2, -1, -1):
        w = log_B[t + 1] + log_beta[t + 1]
        top = w.max()
        with np.errstate(divide="ignore"):
            log_beta[t] = top + np.log(A @ np.exp(w - top)) - log_c[t + 1]
    gamma = np.exp(log_alpha + log_beta)
    log_xi = (log_alpha[:-1, :, None] + log_A[None]
              + (log_B[1:] + log_beta[1:] - log_c[1:, None])[:, None, :])
    return float(log_c.sum()), gamma, np.exp(log_xi)


def enumerate_posterior(log_pi, log_A, log_B):
    """Brute force: log p(x), marginals and the MAP path by summing over all K^T sequences.

    The independent check of :func:`forward_backward` and :func:`viterbi` in chapter 2
    and its tests (only for short sequences: K^T <= 2^20).

    Returns
    -------
    dict
        ``log_likelihood`` (float), ``gamma`` (T, K), ``xi`` (T-1, K, K), ``entropy``
        (H of the posterior over sequences, float), ``map_path`` (T,), ``map_log_joint``.
    """
    log_pi, log_A, log_B = _check_log_params(log_pi, log_A, log_B)
    T, K = log_B.shape
    if K**T > MAX_ENUMERATED_SEQUENCES:
        raise ValueError(f"log_B has T={T} steps: enumeration over K^T = {K}^{T} sequences "
                         f"is too large (limit {MAX_ENUMERATED_SEQUENCES}); use a shorter "
                         f"sequence")
    seqs = np.array(list(itertools.product(range(K), repeat=T)), dtype=np.intp)
    log_joint = log_pi[seqs[:, 0]] + log_B[np.arange(T), seqs].sum(axis=1)
    if T > 1:
        log_joint = log_joint + log_A[seqs[:, :-1], seqs[:, 1:]].sum(axis=1)
    top = log_joint.max()
    log_lik = float(top + np.log(np.exp(log_joint - top).sum()))
    post = np.exp(log_joint - log_lik)
    gamma = np.stack([np.bincount(seqs[:, t], weights=post, minlength=K) for t in range(T)])
    xi = np.stack([np.bincount(seqs[:, t] * K + seqs[:, t + 1], weights=post,
                               minlength=K * K).reshape(K, K) for t in range(T - 1)]
                  ) if T > 1 else np.zeros((0, K, K))
    positive = post > 0
    entropy = float(-(post[positive] * (log_joint[positive] - log_lik)).sum())
    best = int(np.argmax(log_joint))
    return {"log_likelihood": log_lik, "gamma": gamma, "xi": xi, "entropy": entropy,
            "map_path": seqs[best].copy(), "map_log_joint": float(log_joint[best])}


def chain_entropy(gamma, xi) -> float:
    """Entropy of a Markov-chain distribution over sequences from its marginals.

    For q(z) = q(z_1) prod_t q(z_{t+1} | z_t),
    H[q] = -sum_k gamma_1(k) log gamma_1(k) - sum_t sum_ij xi_t(i, j) log(xi_t(i, j) / gamma_t(i)).
    The exact posterior of an HMM is such a chain; chapter 2 uses this to evaluate the
    ELBO of Baum-Welch directly.

    Parameters
    ----------
    gamma : array_like, shape (T, K)
    xi : array_like, shape (T-1, K, K)

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``gamma`` does not hold distributions, ``xi`` does not hold joint
        distributions of consecutive steps, or their marginals disagree with ``gamma``.
    """
    gamma = check_probability_rows(as_float_array(gamma, "gamma", ndim=2), "gamma")
    T, K = gamma.shape
    xi = _as_log_probabilities(xi, "xi")
    if xi.shape != (T - 1, K, K):
        raise ValueError(f"xi must have shape ({T - 1}, {K}, {K}), got {xi.shape}")
    if not np.all(np.isfinite(xi)):
        raise ValueError("xi must contain only finite values (no NaN or inf)")
    sums = xi.sum(axis=(1, 2))
    if np.any(xi < 0) or not np.allclose(sums, 1.0, rtol=0.0, atol=1e-8):
        raise ValueError(f"xi must be >= 0 with every xi_t summing to 1, got minimum "
                         f"{xi.min() if xi.size else 0.0!r} and sums in "
                         f"[{sums.min() if T > 1 else 1.0!r}, {sums.max() if T > 1 else 1.0!r}]")
    if not (np.allclose(xi.sum(axis=2), gamma[:-1], rtol=0.0, atol=1e-6)
            and np.allclose(xi.sum(axis=1), gamma[1:], rtol=0.0, atol=1e-6)):
        raise ValueError("xi must be consistent with gamma: sum_j xi_t(i, j) = gamma_t(i) "
                         "and sum_i xi_t(i, j) = gamma_{t+1}(j)")
    g0 = gamma[0][gamma[0] > 0]
    h = -float((g0 * np.log(g0)).sum())
    cond = np.divide(xi, gamma[:-1, :, None], out=np.zeros_like(xi),
                     where=gamma[:-1, :, None] > 0)
    pos = xi > 0
    return h - float((xi[pos] * np.log(cond[pos])).sum())


def viterbi(log_pi, log_A, log_B):
    """Most probable state sequence argmax_z p(z | x), by max-product in log space.

    Parameters
    ----------
    log_pi, log_A, log_B
        As in :func:`forward_backward`.

    Returns
    -------
    path : numpy.ndarray of int, shape (T,)
    log_joint : float
        log p(x, path), the maximum over all K^T sequences (Viterbi 1967).
    """
    log_pi, log_A, log_B = _check_log_params(log_pi, log_A, log_B)
    T, K = log_B.shape
    delta = log_pi + log_B[0]
    back = np.empty((T, K), dtype=np.intp)
    for t in range(1, T):  # sequential in t, vectorised over states
        scores = delta[:, None] + log_A
        back[t] = scores.argmax(axis=0)
        delta = scores[back[t], np.arange(K)] + log_B[t]
    path = np.empty(T, dtype=np.intp)
    path[-1] = int(delta.argmax())
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path, float(delta.max())


# ---------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------
def sample_gaussian_hmm(startprob, transmat, means, covariances, num_steps: int, rng):
    """Draw (x_{1:T}, z_{1:T}) from an HMM with Gaussian emissions (chapter 2).

    Parameters
    ----------
    startprob : array_like, shape (K,)
    transmat : array_like, shape (K, K)
    means : array_like, shape (K, d)
    covariances : array_like, shape (K, d, d)
    num_steps : int
        T >= 1.
    rng : numpy.random.Generator or int

    Returns
    -------
    X : numpy.ndarray, shape (T, d)
    z : numpy.ndarray of int, shape (T,)
    """
    means = as_float_array(means, "means", ndim=2)
    K, d = means.shape
    startprob = check_probability_rows(startprob, "startprob", (K,))
    transmat = check_probability_rows(transmat, "transmat", (K, K))
    _, chol = check_spd(covariances, "covariances", (K, d, d))
    T = check_positive_int(num_steps, "num_steps")
    rng = as_generator(rng)
    u = rng.random(T)
    cum_start, cum_trans = np.cumsum(startprob), np.cumsum(transmat, axis=1)
    z = np.empty(T, dtype=np.intp)
    z[0] = min(np.searchsorted(cum_start, u[0], side="right"), K - 1)
    for t in range(1, T):  # a Markov chain is sequential
        z[t] = min(np.searchsorted(cum_trans[z[t - 1]], u[t], side="right"), K - 1)
    eps = rng.standard_normal((T, d))
    X = means[z] + np.einsum("tij,tj->ti", chol[z], eps)
    return X, z


# ---------------------------------------------------------------------------------------
# Baum-Welch
# ---------------------------------------------------------------------------------------
def _as_sequence(X) -> np.ndarray:
    X = as_float_array(X, "X", ndim=(1, 2))
    return X[:, None] if X.ndim == 1 else X


def _expected_complete_loglik(gamma_start, gamma, xi_sum, log_pi, log_A, log_B) -> float:
    """E_q[log p(x, z | theta)] from the marginals of q (0 log 0 = 0); ``gamma_start`` is
    the sum of q(z_1) over the sequences."""
    def dot(p, logv):
        return float(np.where(p > 0, p * np.where(p > 0, logv, 0.0), 0.0).sum())

    return dot(gamma_start, log_pi) + dot(xi_sum, log_A) + float((gamma * log_B).sum())


@dataclass
class _BaumWelchState:
    """What Baum-Welch's E-step and M-step share while the loop runs."""

    pi: np.ndarray
    A: np.ndarray
    means: np.ndarray
    cov: np.ndarray
    log_B: np.ndarray
    gamma: np.ndarray | None = None
    gamma_start: np.ndarray | None = None
    xi_sum: np.ndarray | None = None
    entropy: float = 0.0
    log_lik: list = field(default_factory=list)


class GaussianHMM:
    """Hidden Markov model with full-covariance Gaussian emissions, fitted by Baum-Welch.

    Baum-Welch is EM with q over whole state sequences: the E-step runs
    :func:`forward_backward` (q = exact posterior, bound tight), the M-step sets
    pi = gamma_1, A_ij proportional to sum_t xi_t(i, j), and the Gaussian means and
    covariances to gamma-weighted averages (with the ``"clip"`` covariance floor of
    :class:`elbo_lib.em.GaussianMixtureEM`). Used in chapter 2.

    Parameters
    ----------
    num_states : int
        K >= 1.
    tol : float
        Stop when log p(x | theta) (total, nats) improves by less than ``tol``.
    reg_covar : float
        Covariance floor: eigenvalues below it are raised to it after each M-step (the
        exact constrained maximiser, so Baum-Welch stays monotone).
    max_iter : int
        Maximum number of EM iterations.
    startprob_init, transmat_init, means_init, covariances_init : array_like, optional
        Initial pi (K,), A (K, K), mu (K, d), Sigma (K, d, d). Defaults: uniform pi,
        A with 1/2 on the diagonal and the rest spread evenly, means at K distinct
        random data points, covariances at the data covariance.
    rng : numpy.random.Generator or int, optional
        Used only for the default means.

    Attributes
    ----------
    startprob_, transmat_, means_, covariances_ : numpy.ndarray
    log_likelihood_ : numpy.ndarray, shape (n_iter_ + 1,)
        log p(x | theta_t), t = 0 .. n_iter_.
    elbo_after_e_step_, elbo_after_m_step_ : numpy.ndarray, shape (n_iter_,)
        L(q_t, theta_{t-1}) and L(q_t, theta_t) = E_{q_t}[log p(x, z | theta)] + H[q_t],
        the expectation from the marginals gamma and sum_t xi_t. q_t is the exact
        posterior under theta_{t-1}, so H[q_t] = log p(x | theta_{t-1}) -
        E_{q_t}[log p(x, z | theta_{t-1})], the value :func:`chain_entropy` gives from
        the per-step pairwise marginals, without that (T-1, K, K) array.
    trace_ : elbo_lib.coordinate_ascent.AscentTrace
        The bound after every E-step and M-step (the two arrays above are its columns).
    n_iter_ : int
    converged_ : bool
    """

    def __init__(self, num_states: int, *, tol: float = 1e-6, reg_covar: float = 1e-6,
                 max_iter: int = 200, startprob_init=None, transmat_init=None,
                 means_init=None, covariances_init=None, rng=None) -> None:
        self.num_states = num_states
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.startprob_init, self.transmat_init = startprob_init, transmat_init
        self.means_init, self.covariances_init = means_init, covariances_init
        self.rng = rng

    def _check_hyperparameters(self) -> tuple[int, float, float, int]:
        """The constructor arguments, validated and returned as ``(num_states, tol,
        reg_covar, max_iter)``; :meth:`fit` calls it and leaves the arguments as given
        (scikit-learn's rule)."""
        return (check_positive_int(self.num_states, "num_states"),
                *check_fit_controls(self.tol, self.reg_covar, self.max_iter))

    def _init_params(self, X, num_states: int, reg_covar: float):
        T, d = X.shape
        K = num_states
        pi = (np.full(K, 1.0 / K) if self.startprob_init is None
              else check_probability_rows(self.startprob_init, "startprob_init", (K,)))
        if self.transmat_init is None:
            A = np.full((K, K), 0.5 / max(K - 1, 1)) if K > 1 else np.ones((1, 1))
            if K > 1:
                np.fill_diagonal(A, 0.5)
        else:
            A = check_probability_rows(self.transmat_init, "transmat_init", (K, K))
        if self.means_init is None:
            means = X[as_generator(self.rng).choice(T, size=K, replace=False)].copy()
        else:
            means = as_float_array(self.means_init, "means_init", ndim=2)
            if means.shape != (K, d):
                raise ValueError(f"means_init must have shape ({K}, {d}), got {means.shape}")
        if self.covariances_init is None:
            c = np.atleast_2d(np.cov(X, rowvar=False, bias=True)) + reg_covar * np.eye(d)
            cov = np.repeat(c[None], K, axis=0)
        else:
            cov, _ = check_spd(self.covariances_init, "covariances_init", (K, d, d))
        return pi, A, means, cov

    def emission_log_prob(self, X, means=None, covariances=None) -> np.ndarray:
        """log N(x_t | mu_k, Sigma_k), shape (T, K) (fitted parameters by default)."""
        X = _as_sequence(X)
        if means is None or covariances is None:
            X = self._check_fitted(X)
        means = self.means_ if means is None else means
        cov = self.covariances_ if covariances is None else covariances
        return gaussian_log_density(X, as_numeric_array(means, "means"), precision_cholesky(cov))

    def fit(self, X, lengths=None) -> GaussianHMM:
        """Run Baum-Welch on X of shape (T, d) (or (T,)); return ``self``.

        Parameters
        ----------
        X : array_like, shape (T, d) or (T,)
            One sequence, or several stacked row-wise (see ``lengths``).
        lengths : array_like of int, optional
            The lengths of the independent sequences stacked in X (summing to T;
            hmmlearn's convention). pi is then fitted to the first step of every
            sequence and A to the transitions within sequences. Default: one sequence.

        Raises
        ------
        ValueError
            If X is not finite, has fewer than 2 steps or fewer steps than states,
            ``lengths`` does not split it, or an initial parameter is malformed.
        TypeError
            If ``lengths`` is not a 1-D sequence of integers.
        """
        num_states, tol, reg_covar, max_iter = self._check_hyperparameters()
        X = _as_sequence(X)
        T = X.shape[0]
        if T < max(2, num_states):
            raise ValueError(f"X must have at least max(2, num_states) = "
                             f"{max(2, num_states)} steps, got T={T}")
        bounds = _check_lengths(lengths, T)
        starts = bounds[:-1]
        pi, A, means, cov = self._init_params(X, num_states, reg_covar)
        s = _BaumWelchState(pi, A, means, cov, self.emission_log_prob(X, means, cov))

        def e_step() -> float:  # q_t = p(z | x, theta_{t-1}) by forward-backward
            log_pi, log_A = _log(s.pi), _log(s.A)
            ll, s.gamma, s.xi_sum, _ = _posterior(log_pi, log_A, s.log_B, False, bounds)
            s.gamma_start = s.gamma[starts].sum(axis=0)
            # q is the exact posterior under theta_{t-1}, so its entropy is
            # log p(x) - E_q[log p(x, z)] (equal to chain_entropy(gamma, xi) without the
            # (T-1, K, K) array of pairwise marginals; tests/test_hmm.py checks both)
            expected = _expected_complete_loglik(s.gamma_start, s.gamma, s.xi_sum, log_pi,
                                                 log_A, s.log_B)
            s.entropy = ll - expected
            s.log_lik.append(ll)
            return expected + s.entropy

        def m_step() -> float:  # theta_t = argmax_theta L(q_t, theta)
            s.pi = s.gamma_start / s.gamma_start.sum()
            # a state with no expected transitions out of it (it is occupied only at the
            # last step, e.g. T = 2) leaves its row of A free: keep the old row, which
            # maximises Q as well as any other
            out_mass = s.xi_sum.sum(axis=1, keepdims=True)
            s.A = np.where(out_mass > 0, s.xi_sum / np.where(out_mass > 0, out_mass, 1.0),
                           s.A)
            _, s.means, s.cov, _ = weighted_gaussian_m_step(X, s.gamma, reg_covar, "clip")
            s.log_B = self.emission_log_prob(X, s.means, s.cov)
            return (_expected_complete_loglik(s.gamma_start, s.gamma, s.xi_sum, _log(s.pi),
                                              _log(s.A), s.log_B) + s.entropy)

        def stop() -> bool:
            return len(s.log_lik) > 1 and abs(s.log_lik[-1] - s.log_lik[-2]) < tol

        trace = coordinate_ascent({"E": e_step, "M": m_step}, stop=stop, max_iter=max_iter)
        s.log_lik.append(_posterior(_log(s.pi), _log(s.A), s.log_B, False, bounds)[0])
        self.startprob_, self.transmat_, self.means_, self.covariances_ = (s.pi, s.A, s.means,
                                                                           s.cov)
        self.trace_ = trace
        self.log_likelihood_ = np.asarray(s.log_lik)
        self.elbo_after_e_step_ = trace.after("E")
        self.elbo_after_m_step_ = trace.after("M")
        self.n_iter_, self.converged_ = trace.n_iter, trace.converged
        return self

    def _check_fitted(self, X) -> np.ndarray:
        if not hasattr(self, "means_"):
            raise ValueError("this GaussianHMM is not fitted yet: call fit(X) first")
        X = _as_sequence(X)
        if X.shape[1] != self.means_.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features, the model has "
                             f"{self.means_.shape[1]}")
        return X

    def _fitted(self, X):
        X = self._check_fitted(X)
        return (_log(self.startprob_), _log(self.transmat_),
                self.emission_log_prob(X, self.means_, self.covariances_))

    def posterior(self, X, lengths=None) -> np.ndarray:
        """p(z_t = k | x_{1:T}), shape (T, K) (``lengths`` as in :meth:`fit`)."""
        return forward_backward(*self._fitted(X), lengths=lengths)[1]

    def score(self, X, lengths=None) -> float:
        """Mean log-likelihood per time step, log p(x_{1:T} | theta) / T, in nats.

        The convention of scikit-learn's ``score`` (and of
        :meth:`elbo_lib.em.GaussianMixtureEM.score`): the per-point mean, so sequences of
        different lengths compare. With ``lengths`` (as in :meth:`fit`), the sum of the
        sequences' log-likelihoods over the total number of steps.
        """
        log_pi, log_A, log_B = self._fitted(X)
        return forward_backward(log_pi, log_A, log_B, lengths=lengths)[0] / log_B.shape[0]

    def predict(self, X, lengths=None) -> np.ndarray:
        """The Viterbi path of every sequence (``lengths`` as in :meth:`fit`)."""
        log_pi, log_A, log_B = self._fitted(X)
        bounds = _check_lengths(lengths, log_B.shape[0])
        return np.concatenate([viterbi(log_pi, log_A, log_B[a:b])[0]
                               for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
