"""Sampling from an HMM with Gaussian emissions (chapter 2).

:func:`sample_gaussian_hmm`.
"""

from __future__ import annotations

import numpy as np

from elbo_lib._validation import (
    as_float_array,
    as_generator,
    check_positive_int,
    check_probability_rows,
    check_spd,
)


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
