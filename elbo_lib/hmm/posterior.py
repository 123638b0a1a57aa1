"""The exact posterior of an HMM's state sequence (chapter 2).

:func:`forward_backward`: the posterior marginals gamma and xi and log p(x) by the
scaled recursions, compiled as one loop over time steps (Numba), falling back to log
space near underflow; :func:`chain_entropy`: the entropy of the posterior chain from
its marginals.
"""

from __future__ import annotations

import numba
import numpy as np

from elbo_lib._validation import (
    as_float_array,
    check_probability_rows,
)
from elbo_lib.hmm.base import _as_log_probabilities, _check_lengths, _check_log_params


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
