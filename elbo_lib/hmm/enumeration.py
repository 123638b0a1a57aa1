"""The brute-force oracle: the HMM posterior by enumerating every state sequence (chapter 2).

:func:`enumerate_posterior`, which the chapter and the tests compare forward-backward
against; it refuses more than :data:`MAX_ENUMERATED_SEQUENCES` sequences.
"""

from __future__ import annotations

import itertools

import numpy as np

from elbo_lib.hmm.base import _check_log_params

#: Brute-force enumeration refuses more than this many state sequences.
MAX_ENUMERATED_SEQUENCES = 2**20



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
