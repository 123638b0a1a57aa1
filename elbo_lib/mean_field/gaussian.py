"""A correlated Gaussian approximated by a factorised one (Bishop 2006, section 10.1.2; chapter 4).

The mean-field optimum in closed form (:func:`mean_field_gaussian`) and the coordinate
ascent that reaches it (:func:`cavi_gaussian`).
"""

from __future__ import annotations

import numpy as np

from elbo_lib._validation import as_float_array, check_positive_int, check_spd


def _check_gaussian(mean, precision) -> tuple[np.ndarray, np.ndarray]:
    mean = as_float_array(mean, "mean", ndim=1)
    precision, _ = check_spd(precision, "precision", (mean.size, mean.size))
    return mean, precision


def mean_field_gaussian(mean, precision) -> tuple[np.ndarray, np.ndarray]:
    """Optimal factorised q for p = N(mean, precision^{-1}) under KL(q || p) (chapter 4).

    The fixed point of the CAVI updates is q_j = N(mean_j, 1 / Lambda_jj)
    (Bishop 2006, section 10.1.2): exact means, variances 1 / Lambda_jj, which never
    exceed the true marginal variances Sigma_jj.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The means and variances of the factors.
    """
    mean, precision = _check_gaussian(mean, precision)
    return mean.copy(), 1.0 / np.diag(precision)


def cavi_gaussian(mean, precision, init_mean, num_sweeps: int = 10) -> np.ndarray:
    """Coordinate-ascent path of the factor means for p = N(mean, precision^{-1}).

    Updates one coordinate at a time, m_j <- mean_j - (1/Lambda_jj) sum_{k != j}
    Lambda_jk (m_k - mean_k) (Bishop 2006, section 10.1.2): Gauss-Seidel on Lambda m = Lambda mean.

    Returns
    -------
    numpy.ndarray, shape (num_sweeps * d + 1, d)
        The factor means after every single-coordinate update, starting with ``init_mean``.
    """
    mean, precision = _check_gaussian(mean, precision)
    m = as_float_array(init_mean, "init_mean", ndim=1).copy()
    if m.shape != mean.shape:
        raise ValueError(f"init_mean must have shape {mean.shape}, got {m.shape}")
    num_sweeps = check_positive_int(num_sweeps, "num_sweeps")
    path = [m.copy()]
    for _ in range(num_sweeps):
        for j in range(mean.size):  # over coordinates (factors), not data points
            others = precision[j] @ (m - mean) - precision[j, j] * (m[j] - mean[j])
            m[j] = mean[j] - others / precision[j, j]
            path.append(m.copy())
    return np.asarray(path)


