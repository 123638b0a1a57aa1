"""What the point mass throws away (chapter 3): the log-joint, the evidence and a Gaussian q.

The sparse coding model's log-joint (:func:`sparse_coding_log_joint`), its exact log
evidence for two latent dimensions (:func:`sparse_coding_log_evidence_2d`), the
closed-form ELBO of a Gaussian q (:func:`sparse_coding_gaussian_elbo`) and its
maximiser (:func:`fit_sparse_coding_gaussian_q`).
"""

from __future__ import annotations

import numpy as np

from elbo_lib._validation import as_float_array, check_positive
from elbo_lib.sparse_coding.lasso import _blas_threads


# ------------------------------------------- what the point mass throws away (chapter 3)
def sparse_coding_log_joint(X, W, H, sigma, b) -> np.ndarray:
    """Log-joint log p(x, h) of the sparse coding model, with every constant (chapter 3).

    p(h) = prod_j exp(-|h_j| / b) / (2 b) and p(x | h) = N(x | W h, sigma^2 I), so

        log p(x, h) = -||x - W h||^2 / (2 sigma^2) - (d / 2) log(2 pi sigma^2)
                      - ||h||_1 / b - k log(2 b).

    Parameters
    ----------
    X : array_like, shape (n, d) or (d,)
        Signals (one per row), or one signal evaluated at every row of ``H``.
    W : array_like, shape (d, k)
    H : array_like, shape (m, k) or (k,)
        Codes. With one signal and m codes (for example a grid), every code is
        evaluated against that signal.
    sigma, b : float
        Noise standard deviation and Laplace scale (> 0).

    Returns
    -------
    numpy.ndarray, shape (max(n, m),)
    """
    X = as_float_array(X, "X", ndim=(1, 2))
    X = X[None, :] if X.ndim == 1 else X
    W = as_float_array(W, "W", ndim=2)
    H = as_float_array(H, "H", ndim=(1, 2))
    H = H[None, :] if H.ndim == 1 else H
    d, k = W.shape
    if X.shape[1] != d or H.shape[1] != k:
        raise ValueError(f"shape mismatch: X {X.shape}, W {W.shape}, H {H.shape}; expected "
                         "X (n, d), W (d, k), H (m, k)")
    if X.shape[0] != H.shape[0] and 1 not in (X.shape[0], H.shape[0]):
        raise ValueError(f"X has {X.shape[0]} rows and H {H.shape[0]}: they must be equal "
                         "or one of them must be a single row")
    sigma = check_positive(sigma, "sigma")
    b = check_positive(b, "b")
    with _blas_threads(H.size * d):
        residual = (X - H @ W.T) / sigma      # log sigma, not log sigma^2: no under/overflow
    return (-0.5 * np.einsum("ij,ij->i", residual, residual)
            - d * (0.5 * np.log(2 * np.pi) + np.log(sigma))
            - np.abs(H).sum(axis=1) / b - k * (np.log(2.0) + np.log(b)))


def _positive_quadrant_probability(mean: np.ndarray, cov: np.ndarray) -> float:
    """P(Y_1 > 0, Y_2 > 0) for Y ~ N(mean, cov) in 2-D, by one adaptive 1-D integral."""
    from scipy import integrate, stats

    s1 = np.sqrt(cov[0, 0])
    slope = cov[0, 1] / cov[0, 0]
    s2_given_1 = np.sqrt(cov[1, 1] - cov[0, 1] ** 2 / cov[0, 0])

    def integrand(y1: float) -> float:
        mean2 = mean[1] + slope * (y1 - mean[0])
        return stats.norm.pdf(y1, mean[0], s1) * stats.norm.cdf(mean2 / s2_given_1)

    lo = max(0.0, mean[0] - 12 * s1)
    if lo >= mean[0] + 12 * s1:
        return 0.0
    value, _ = integrate.quad(integrand, lo, mean[0] + 12 * s1, epsabs=1e-14, epsrel=1e-11,
                              limit=200)
    return float(value)


def sparse_coding_log_evidence_2d(x, W, sigma, b) -> tuple[float, np.ndarray]:
    """Exact log p(x) of the sparse coding model with two codes, by orthants (chapter 3).

    Inside each orthant of R^2 (signs s in {-1, 1}^2) the Laplace prior is
    exp(-s^T h / b), so the log-joint is a quadratic with precision P = W^T W / sigma^2
    and mean m_s = P^{-1} (W^T x / sigma^2 - s / b). Its integral over the orthant is the
    Gaussian normaliser times the probability that N(m_s, P^{-1}) falls in the orthant,
    a 1-D integral of a normal pdf times a normal cdf. Summing the four orthants gives
    p(x) without any grid: the oracle for the quadrature of the chapter.

    Parameters
    ----------
    x : array_like, shape (d,)
    W : array_like, shape (d, 2)
        Two linearly independent atoms.
    sigma, b : float
        Noise standard deviation and Laplace scale (> 0).

    Returns
    -------
    log_evidence : float
    orthant_probabilities : numpy.ndarray, shape (2, 2)
        Posterior mass of each orthant: entry [i, j] is P(sign h_1 = (-1, 1)[i],
        sign h_2 = (-1, 1)[j] | x).
    """
    x = as_float_array(x, "x", ndim=1)
    W = as_float_array(W, "W", ndim=2)
    if W.shape != (x.size, 2):
        raise ValueError(f"W must have shape (d, 2) = {(x.size, 2)}, got {W.shape}")
    sigma = check_positive(sigma, "sigma")
    b = check_positive(b, "b")
    z, V = x / sigma, W / sigma           # in units of sigma: no sigma**2 to under/overflow
    precision = V.T @ V
    if np.linalg.matrix_rank(precision) < 2:
        raise ValueError("the two atoms of W must be linearly independent")
    cov = np.linalg.inv(precision)
    const = (-0.5 * z @ z - x.size * (0.5 * np.log(2 * np.pi) + np.log(sigma))
             - 2 * (np.log(2.0) + np.log(b)) + np.log(2 * np.pi)
             + 0.5 * np.linalg.slogdet(cov)[1])
    logs = np.empty((2, 2))
    for i, s1 in enumerate((-1.0, 1.0)):
        for j, s2 in enumerate((-1.0, 1.0)):
            flip = np.array([s1, s2])
            mean = cov @ (V.T @ z - flip / b)
            mass = _positive_quadrant_probability(flip * mean, cov * np.outer(flip, flip))
            logs[i, j] = const + 0.5 * mean @ precision @ mean + np.log(max(mass, 1e-300))
    if not np.all(np.isfinite(logs)):
        raise ValueError(f"log p(x) is not representable in float64: x / sigma has norm "
                         f"{np.linalg.norm(x / np.abs(x).max()) * np.abs(x).max() / sigma:.3g} "
                         "(its square overflows) or W / sigma is too large; rescale x, W "
                         "and sigma together (log p shifts by -d log c)")
    top = logs.max()
    log_evidence = float(top + np.log(np.exp(logs - top).sum()))
    return log_evidence, np.exp(logs - log_evidence)


def _gaussian_elbo_and_gradient(x, W, mean_q, chol, sigma, b):
    """ELBO of N(mean_q, chol chol^T) and its gradient in (mean_q, chol); see below."""
    from scipy.special import ndtr

    d, k = W.shape
    std = np.sqrt(np.einsum("ij,ij->i", chol, chol))      # marginal standard deviations
    u = mean_q / std
    pdf = np.exp(-0.5 * u**2) / np.sqrt(2 * np.pi)
    expected_abs = 2 * std * pdf + mean_q * (2 * ndtr(u) - 1)
    V = W / sigma
    residual = x / sigma - V @ mean_q
    gram = V.T @ V
    elbo = (-0.5 * residual @ residual - 0.5 * np.einsum("ij,ij->", gram @ chol, chol)
            - d * (0.5 * np.log(2 * np.pi) + np.log(sigma))
            - expected_abs.sum() / b - k * (np.log(2.0) + np.log(b))
            + 0.5 * k * (np.log(2 * np.pi) + 1) + np.log(np.abs(np.diag(chol))).sum())
    grad_mean = V.T @ residual - (2 * ndtr(u) - 1) / b
    grad_chol = -gram @ chol - (2 * pdf / std / b)[:, None] * chol + np.diag(1 / np.diag(chol))
    return float(elbo), grad_mean, np.tril(grad_chol)


def sparse_coding_gaussian_elbo(x, W, mean_q, cov_q, sigma, b) -> float:
    """Closed-form ELBO of a Gaussian q(h) = N(mean_q, cov_q) in sparse coding (chapter 3).

    With p(h) = prod_j exp(-|h_j| / b) / (2 b) and p(x | h) = N(x | W h, sigma^2 I),
    every term of ELBO = E_q[log p(x | h)] + E_q[log p(h)] + H[q] is a closed form
    (Challis & Barber 2013):

    * E_q ||x - W h||^2 = ||x - W m||^2 + tr(W^T W S);
    * E_q |h_j| = 2 s_j phi(m_j / s_j) + m_j (2 Phi(m_j / s_j) - 1), the mean of a folded
      normal, with s_j^2 = S_jj;
    * H[q] = (k / 2) log(2 pi e) + (1 / 2) log det S.

    Parameters
    ----------
    x : array_like, shape (d,)
        One signal.
    W : array_like, shape (d, k)
    mean_q : array_like, shape (k,)
    cov_q : array_like, shape (k, k)
        Symmetric positive definite.
    sigma, b : float
        Noise standard deviation and Laplace scale (> 0).

    Returns
    -------
    float
        The ELBO, a lower bound on log p(x) (compare
        :func:`sparse_coding_log_evidence_2d`).
    """
    x = as_float_array(x, "x", ndim=1)
    W = as_float_array(W, "W", ndim=2)
    mean_q = as_float_array(mean_q, "mean_q", ndim=1)
    cov_q = as_float_array(cov_q, "cov_q", ndim=2)
    d, k = W.shape
    if x.size != d or mean_q.size != k or cov_q.shape != (k, k):
        raise ValueError(f"shape mismatch: x {x.shape}, W {W.shape}, mean_q {mean_q.shape}, "
                         f"cov_q {cov_q.shape}; expected x (d,), W (d, k), mean_q (k,), "
                         "cov_q (k, k)")
    sigma = check_positive(sigma, "sigma")
    b = check_positive(b, "b")
    if not np.allclose(cov_q, cov_q.T, rtol=1e-10, atol=0):
        raise ValueError("cov_q must be symmetric")
    try:
        chol = np.linalg.cholesky(cov_q)
    except np.linalg.LinAlgError:
        raise ValueError("cov_q must be positive definite") from None
    return _gaussian_elbo_and_gradient(x, W, mean_q, chol, sigma, b)[0]


def fit_sparse_coding_gaussian_q(x, W, sigma, b, *, mean_init=None, cov_init=None,
                                 gtol: float = 1e-10) -> tuple[np.ndarray, np.ndarray, float]:
    """The Gaussian q(h) of highest ELBO for one signal of sparse coding (chapter 3).

    Maximises :func:`sparse_coding_gaussian_elbo` over the mean and a lower-triangular
    factor C of the covariance (positive diagonal) with L-BFGS and the analytic gradient.
    For a log-concave posterior such as this one the ELBO is concave in (mean, C)
    (Challis & Barber 2013), so the maximum found is the global one.

    Parameters
    ----------
    x : array_like, shape (d,)
    W : array_like, shape (d, k)
    sigma, b : float
        Noise standard deviation and Laplace scale (> 0).
    mean_init, cov_init : array_like, optional
        Start (default: zero mean, identity covariance).
    gtol : float
        L-BFGS gradient tolerance (> 0).

    Returns
    -------
    mean_q : numpy.ndarray, shape (k,)
    cov_q : numpy.ndarray, shape (k, k)
    elbo : float
    """
    from scipy.optimize import minimize

    x = as_float_array(x, "x", ndim=1)
    W = as_float_array(W, "W", ndim=2)
    d, k = W.shape
    if x.size != d:
        raise ValueError(f"x must have shape ({d},), got {x.shape}")
    sigma = check_positive(sigma, "sigma")
    b = check_positive(b, "b")
    gtol = check_positive(gtol, "gtol")
    mean0 = np.zeros(k) if mean_init is None else as_float_array(mean_init, "mean_init",
                                                                    ndim=1)
    cov0 = np.eye(k) if cov_init is None else as_float_array(cov_init, "cov_init", ndim=2)
    if mean0.shape != (k,) or cov0.shape != (k, k):
        raise ValueError(f"mean_init must have shape ({k},) and cov_init ({k}, {k})")
    rows, cols = np.tril_indices(k)
    diagonal = rows == cols
    try:
        chol0 = np.linalg.cholesky(cov0)
    except np.linalg.LinAlgError:
        raise ValueError("cov_init must be positive definite") from None
    entries0 = chol0[rows, cols]
    entries0[diagonal] = np.log(entries0[diagonal])
    theta0 = np.concatenate([mean0, entries0])

    def unpack(theta):
        chol = np.zeros((k, k))
        entries = theta[k:]
        chol[rows, cols] = np.where(diagonal, np.exp(entries), entries)
        return theta[:k], chol

    def negative(theta):
        mean, chol = unpack(theta)
        value, g_mean, g_chol = _gaussian_elbo_and_gradient(x, W, mean, chol, sigma, b)
        g_entries = g_chol[rows, cols] * np.where(diagonal, chol[rows, cols], 1.0)
        return -value, -np.concatenate([g_mean, g_entries])

    result = minimize(negative, theta0, jac=True, method="L-BFGS-B",
                      options={"gtol": gtol, "ftol": 1e-15, "maxiter": 10000})
    mean, chol = unpack(result.x)
    return mean, chol @ chol.T, float(-result.fun)


