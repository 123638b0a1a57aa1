"""The most probable state sequence of an HMM (chapter 2).

:func:`viterbi`: the max-product recursions in log space.
"""

from __future__ import annotations

import numpy as np

from elbo_lib.hmm.base import _check_log_params


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
