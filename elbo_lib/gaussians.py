"""Closed forms of Gaussian densities, NumPy and torch: KL, entropy, log-densities.

Every chapter meets the Gaussian; its closed forms live here once:

* :func:`gaussian_kl`, :func:`gaussian_entropy` -- elementwise (diagonal) KL and entropy,
  NumPy or torch (differentiable); chapters 1, 4, 6.
* :func:`gaussian_kl_full` -- KL between full-covariance Gaussians via Cholesky; chapter 4.
* :func:`gaussian_renyi_divergence`, :func:`gaussian_chi2_divergence` -- Renyi's
  alpha-divergence and the chi^2 divergence between full-covariance Gaussians, with
  their conditions of existence; chapter 8.
* :func:`precision_cholesky`, :func:`gaussian_log_density` -- log N(x_i | mu_k, Sigma_k)
  for many points and components from precision-Cholesky factors; chapter 2 (mixtures and
  hidden Markov models).
* :func:`diagonal_gaussian_log_density` -- torch log N(z; mean, diag(exp(logvar))), the
  encoder density of chapter 6.
* :func:`diagonal_gaussian` -- the torch distribution N(mu, diag(sigma^2)); chapter 5.
* :func:`gaussian_quadratic_expectation`, :func:`gaussian_quadratic_gradient` -- the
  expectation of a quadratic under a diagonal Gaussian and its gradient; chapter 5.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import linalg
from scipy.linalg import solve_triangular
from torch.distributions import Distribution, Independent, Normal

from elbo_lib._validation import (
    LOG_2PI,
    as_float_array,
    as_tensor,
    check_broadcast,
    check_positive,
    check_real,
    check_spd,
    check_symmetric,
)

__all__ = [
    "diagonal_gaussian",
    "diagonal_gaussian_log_density",
    "gaussian_entropy",
    "gaussian_kl",
    "gaussian_chi2_divergence",
    "gaussian_kl_full",
    "gaussian_log_density",
    "gaussian_quadratic_expectation",
    "gaussian_quadratic_gradient",
    "gaussian_renyi_divergence",
    "precision_cholesky",
]

#: Number of float64 entries of the (rows, K * d) block product held in memory at once.
_BLOCK_ELEMENTS = 2**19


def _xp(*arrays):
    return torch if any(isinstance(a, torch.Tensor) for a in arrays) else np


def _elementwise_inputs(positive: tuple[str, ...], **named):
    """Named NumPy arrays (float64) or torch tensors, finite, broadcastable, with the
    ``positive`` ones > 0 everywhere. Torch is used when any input is a tensor; then
    the other inputs take the dtype of the first floating tensor."""
    xp = _xp(*named.values())
    if xp is np:
        out = {name: as_float_array(a, name) for name, a in named.items()}
    else:
        dtype = next((a.dtype for a in named.values()
                      if isinstance(a, torch.Tensor) and a.is_floating_point()), torch.float64)
        out = {name: as_tensor(a, name, dtype=None if isinstance(a, torch.Tensor) else dtype)
               for name, a in named.items()}
    for name in positive:
        if bool((out[name] <= 0).any()):
            low = out[name].min()
            low = float(low.detach() if isinstance(low, torch.Tensor) else low)
            raise ValueError(f"{name} must be > 0 everywhere, got minimum {low!r}")
    if len(out) > 1:
        check_broadcast(**out)
    return xp, out


# ---------------------------------------------------------------------------------------
# elementwise (diagonal) KL and entropy, NumPy or torch
# ---------------------------------------------------------------------------------------
def gaussian_kl(mean_q, var_q, mean_p, var_p):
    """KL(N(mean_q, var_q) || N(mean_p, var_p)), elementwise, in closed form.

    .. math::

        \\mathrm{KL} = \\tfrac12\\Big(\\log\\frac{v_p}{v_q}
        + \\frac{v_q + (m_q - m_p)^2}{v_p} - 1\\Big)

    Works on NumPy arrays or torch tensors (differentiably), broadcasting; sum over the
    last axis yourself for a diagonal multivariate Gaussian. Derived in chapter 6, used
    in chapters 1 and 6.

    Parameters
    ----------
    mean_q, var_q : array_like or torch.Tensor
        Mean and variance of q.
    mean_p, var_p : array_like or torch.Tensor
        Mean and variance of p.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        The KL of every element (broadcast shape), in nats.

    Raises
    ------
    ValueError
        If a variance is not strictly positive.
    """
    xp, a = _elementwise_inputs(("var_q", "var_p"), mean_q=mean_q, var_q=var_q,
                                mean_p=mean_p, var_p=var_p)
    mean_q, var_q, mean_p, var_p = a["mean_q"], a["var_q"], a["mean_p"], a["var_p"]
    # log(v_p) - log(v_q), not log(v_p / v_q): the ratio of 1e300 and 1e-300 overflows
    return 0.5 * (xp.log(var_p) - xp.log(var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p
                  - 1.0)


def gaussian_entropy(var):
    """Differential entropy of N(m, var): 0.5 * log(2 * pi * e * var), elementwise.

    Parameters
    ----------
    var : array_like or torch.Tensor
        Variances (> 0).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        The entropy of every element, in nats.

    Raises
    ------
    TypeError
        If ``var`` is not numeric.
    ValueError
        If a variance is not finite or not strictly positive.
    """
    xp, a = _elementwise_inputs(("var",), var=var)
    return 0.5 * (xp.log(a["var"]) + LOG_2PI + 1.0)


# ---------------------------------------------------------------------------------------
# full covariances
# ---------------------------------------------------------------------------------------
def gaussian_kl_full(mean_q, cov_q, mean_p, cov_p) -> float:
    """KL(N(mean_q, cov_q) || N(mean_p, cov_p)) for full covariances, via Cholesky.

    KL = (1/2) [tr(S_p^{-1} S_q) + (m_p - m_q)^T S_p^{-1} (m_p - m_q) - d + log|S_p| - log|S_q|].
    Chapter 4 (the two directions of the KL for a factorised approximation).

    Parameters
    ----------
    mean_q : array_like, shape (d,)
    cov_q : array_like, shape (d, d)
        Symmetric positive definite.
    mean_p : array_like, shape (d,)
    cov_p : array_like, shape (d, d)
        Symmetric positive definite.

    Returns
    -------
    float
        The KL in nats.

    Raises
    ------
    ValueError
        If a covariance is not symmetric positive definite or the shapes do not match.
    """
    mean_q, cov_q, lq = _check_mean_and_spd(mean_q, cov_q, "mean_q", "cov_q")
    mean_p, cov_p, lp = _check_mean_and_spd(mean_p, cov_p, "mean_p", "cov_p")
    if mean_q.shape != mean_p.shape:
        raise ValueError(f"mean_q and mean_p must have the same shape, got "
                         f"{mean_q.shape} and {mean_p.shape}")
    a = solve_triangular(lp, lq, lower=True)           # L_p^{-1} L_q
    r = solve_triangular(lp, mean_p - mean_q, lower=True)
    log_det_p = 2 * np.log(np.diag(lp)).sum()
    log_det_q = 2 * np.log(np.diag(lq)).sum()
    return float(0.5 * ((a**2).sum() + r @ r - mean_q.size + log_det_p - log_det_q))


def gaussian_renyi_divergence(alpha: float, mean_q, cov_q, mean_p, cov_p) -> float:
    r"""Renyi's alpha-divergence D_alpha(N(mean_q, cov_q) || N(mean_p, cov_p)).

    .. math::

        D_\alpha(q \,\|\, p) = \frac{1}{\alpha - 1} \log \int q(z)^\alpha
        p(z)^{1-\alpha}\, dz
        = \frac{\alpha}{2} \Delta^\top S_\alpha^{-1} \Delta
        + \frac{1}{2(1-\alpha)} \log \frac{|S_\alpha|}{|\Sigma_q|^{1-\alpha}
        |\Sigma_p|^{\alpha}},

    with :math:`\Delta = m_q - m_p` and :math:`S_\alpha = \alpha \Sigma_p +
    (1 - \alpha) \Sigma_q` (completing the square in the exponent of
    :math:`q^\alpha p^{1-\alpha}`; the univariate case is in Gil, Alajaji and Linder
    2013). The integral is finite exactly when :math:`\alpha \Sigma_q^{-1} +
    (1 - \alpha) \Sigma_p^{-1}` is positive definite, equivalently when
    :math:`S_\alpha` is: always for 0 <= alpha <= 1, and for alpha > 1 or alpha < 0 only
    if q is narrow (alpha > 1) or wide (alpha < 0) enough relative to p; outside that
    set D_alpha is +infinity and this function raises. alpha = 1 is the KL (the limit),
    alpha = 0 gives 0 (q and p have the same support). Chapter 8 (the variational Renyi
    bound, :class:`elbo_lib.objectives.RenyiBound`: L_alpha = log p(x) -
    D_alpha(q || p(z | x))).

    Parameters
    ----------
    alpha : float
        Real and finite.
    mean_q : array_like, shape (d,)
    cov_q : array_like, shape (d, d)
        Symmetric positive definite.
    mean_p : array_like, shape (d,)
    cov_p : array_like, shape (d, d)
        Symmetric positive definite.

    Returns
    -------
    float
        The divergence in nats (negative for alpha < 0, where D_alpha is Li and Turner's
        extension: -D_alpha(q || p) >= 0).

    Raises
    ------
    ValueError
        If alpha is not finite, a covariance is not symmetric positive definite, the
        shapes do not match, or the divergence is infinite (S_alpha not positive
        definite: the message gives its smallest eigenvalue).
    """
    alpha = check_real(alpha, "alpha")
    mean_q, cov_q, lq = _check_mean_and_spd(mean_q, cov_q, "mean_q", "cov_q")
    mean_p, cov_p, lp = _check_mean_and_spd(mean_p, cov_p, "mean_p", "cov_p")
    if mean_q.shape != mean_p.shape:
        raise ValueError(f"mean_q and mean_p must have the same shape, got "
                         f"{mean_q.shape} and {mean_p.shape}")
    if alpha == 1.0:
        return gaussian_kl_full(mean_q, cov_q, mean_p, cov_p)
    mixed = alpha * cov_p + (1.0 - alpha) * cov_q
    mixed = 0.5 * (mixed + mixed.T)
    try:
        lm = np.linalg.cholesky(mixed)
    except np.linalg.LinAlgError:
        lm = None
    if lm is None or not np.all(np.diag(lm) > 0):
        smallest = float(np.linalg.eigvalsh(mixed).min())
        raise ValueError(f"alpha = {alpha!r} gives an infinite divergence for these "
                         f"covariances: alpha * cov_p + (1 - alpha) * cov_q must be "
                         f"positive definite, got smallest eigenvalue {smallest:.3g} "
                         f"(for alpha > 1 q must be narrow enough, for alpha < 0 wide "
                         f"enough, relative to p)")
    r = solve_triangular(lm, mean_q - mean_p, lower=True)
    log_det_m = 2 * np.log(np.diag(lm)).sum()
    log_det_q = 2 * np.log(np.diag(lq)).sum()
    log_det_p = 2 * np.log(np.diag(lp)).sum()
    return float(0.5 * alpha * (r @ r) + (log_det_m - (1.0 - alpha) * log_det_q
                                          - alpha * log_det_p) / (2.0 * (1.0 - alpha)))


def gaussian_chi2_divergence(mean_q, cov_q, mean_p, cov_p) -> float:
    r"""The chi^2 divergence chi^2(N(mean_q, cov_q) || N(mean_p, cov_p)).

    .. math::

        \chi^2(q \,\|\, p) = \int \frac{q(z)^2}{p(z)}\, dz - 1
        = \exp\big(D_2(q \,\|\, p)\big) - 1,

    from :func:`gaussian_renyi_divergence` at alpha = 2 (computed as ``expm1``). It is
    finite exactly when 2 cov_p - cov_q is positive definite (p wider than q/2 in
    every direction), and this function raises otherwise. The chi^2 upper bound of
    chapter 8 is CUBO_2(q) = log p(x) + (1/2) log(1 + chi^2(p(z | x) || q)): there the
    posterior is the first argument (:class:`elbo_lib.objectives.ChiUpperBound`).

    Parameters
    ----------
    mean_q : array_like, shape (d,)
    cov_q : array_like, shape (d, d)
        The density squared in the numerator.
    mean_p : array_like, shape (d,)
    cov_p : array_like, shape (d, d)
        The density in the denominator.

    Returns
    -------
    float
        chi^2(q || p) >= 0 (``inf`` if it overflows float64).

    Raises
    ------
    ValueError
        As :func:`gaussian_renyi_divergence` with alpha = 2, and when 2 cov_p - cov_q
        is not positive definite (the divergence is infinite; the message names both).
    """
    mean_q, cov_q, _ = _check_mean_and_spd(mean_q, cov_q, "mean_q", "cov_q")
    mean_p, cov_p, _ = _check_mean_and_spd(mean_p, cov_p, "mean_p", "cov_p")
    if cov_q.shape == cov_p.shape:
        smallest = float(np.linalg.eigvalsh(2.0 * cov_p - cov_q).min())
        if smallest <= 0:
            raise ValueError(f"chi^2(q || p) is infinite for these covariances: "
                             f"2 cov_p - cov_q must be positive definite, got smallest "
                             f"eigenvalue {smallest:.3g}")
    with np.errstate(over="ignore"):
        return float(np.expm1(gaussian_renyi_divergence(2.0, mean_q, cov_q, mean_p, cov_p)))


def _check_mean_and_spd(mean, matrix, mean_name: str, name: str
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = as_float_array(mean, mean_name, ndim=1)
    d = mean.size
    matrix, chol = check_spd(matrix, name, shape=(d, d))
    return mean, matrix, chol


def precision_cholesky(covariances) -> np.ndarray:
    """Upper-triangular factors U_k with U_k U_k^T = Sigma_k^{-1}, one per component.

    If Sigma_k = L_k L_k^T (Cholesky), then U_k = L_k^{-T}; the Mahalanobis distance is
    ||(x - mu_k)^T U_k||^2 and log det Sigma_k^{-1} = 2 sum log diag(U_k). This is the
    representation scikit-learn stores as ``precisions_cholesky_``. Used in chapter 2.

    Parameters
    ----------
    covariances : array_like, shape (K, d, d)
        Symmetric positive-definite covariance matrices.

    Returns
    -------
    numpy.ndarray, shape (K, d, d)

    Raises
    ------
    ValueError
        If a matrix is not symmetric positive definite (the message names the first such
        component; in EM a collapsed component: raise ``reg_covar`` or use fewer
        components).
    """
    return _precision_cholesky(covariances, "covariances")


def _precision_cholesky(covariances, name: str) -> np.ndarray:
    cov = check_symmetric(as_float_array(covariances, name, ndim=3), name)
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        try:
            check_spd(cov, name)
        except ValueError as exc:
            raise ValueError(f"{exc} (in EM: a component collapsed onto too few points; "
                             f"increase reg_covar, use fewer components or rescale X)"
                             ) from None
        raise
    out = np.empty_like(chol)
    for k, c in enumerate(chol):  # LAPACK triangular inverse (dtrtri), one per component
        inv, info = linalg.lapack.dtrtri(c, lower=1)
        if info != 0:
            raise ValueError(f"{name}[{k}] is singular: increase reg_covar")
        out[k] = inv.T
    return out


def gaussian_log_density(X, means, prec_chol) -> np.ndarray:
    """log N(x_i | mu_k, Sigma_k) for every point i and component k, shape (n, K).

    All K Mahalanobis distances of a block of rows come from ONE matrix product
    X_block @ [U_1 ... U_K] of shape (rows, K d); rows are processed in blocks so the
    temporary stays small (cache-friendly, bounded memory). Used by chapter 2 for the
    mixture and for the Gaussian emissions of the hidden Markov model.

    Parameters
    ----------
    X : array_like, shape (n, d)
    means : array_like, shape (K, d)
    prec_chol : array_like, shape (K, d, d)
        Factors from :func:`precision_cholesky`.

    Returns
    -------
    numpy.ndarray, shape (n, K)

    Raises
    ------
    ValueError
        If an input is not finite or the shapes do not match.
    """
    X = as_float_array(X, "X", ndim=2)
    prec_chol = as_float_array(prec_chol, "prec_chol", ndim=3)
    n_components = prec_chol.shape[0]
    n, d = X.shape
    means = as_float_array(means, "means", ndim=2)
    if means.shape != (n_components, d):
        raise ValueError(f"means must have shape ({n_components}, {d}), got {means.shape}")
    if prec_chol.shape != (n_components, d, d):
        raise ValueError(f"prec_chol must have shape ({n_components}, {d}, {d}), "
                         f"got {prec_chol.shape}")
    diag = np.diagonal(prec_chol, axis1=1, axis2=2)
    if np.any(np.tril(prec_chol, -1) != 0) or np.any(diag <= 0):
        raise ValueError("prec_chol must be upper triangular with a positive diagonal "
                         "(the factors of precision_cholesky)")
    width = n_components * d
    stacked = np.ascontiguousarray(prec_chol.transpose(1, 0, 2).reshape(d, width))
    shift = np.einsum("kd,kde->ke", means, prec_chol).reshape(width)
    log_det = np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)
    out = np.empty((n, n_components))
    rows = max(256, _BLOCK_ELEMENTS // width)
    for start in range(0, n, rows):  # blocks of rows, not single points
        y = X[start:start + rows] @ stacked
        y -= shift
        np.square(y, out=y)
        out[start:start + rows] = y.reshape(-1, n_components, d).sum(axis=2)
    out *= -0.5
    out += log_det - 0.5 * d * LOG_2PI
    return out


# ---------------------------------------------------------------------------------------
# torch: diagonal Gaussians
# ---------------------------------------------------------------------------------------
def diagonal_gaussian_log_density(z: torch.Tensor, mean, logvar, *,
                                  validate: bool = True) -> torch.Tensor:
    """log N(z; mean, diag(exp(logvar))), summed over the last axis (broadcasting).

    The encoder density of the VAE (chapter 6), differentiable in all arguments.

    Parameters
    ----------
    z : torch.Tensor, shape (..., D)
    mean, logvar : torch.Tensor or array_like, broadcastable to ``z``
    validate : bool
        Check and convert the inputs (the default). ``False`` is for callers that have
        checked them already (tensors of one dtype, finite, broadcastable), such as a
        VAE's training step: the same arithmetic without the checks' cost.

    Returns
    -------
    torch.Tensor, shape (...)
        In the dtype of ``z`` (float32 or float64; array-like ``z`` becomes float64).

    Raises
    ------
    TypeError
        If an input is not a tensor or numeric array-like.
    ValueError
        If an input holds NaN or inf, or the shapes do not broadcast.
    """
    if validate:
        z = as_tensor(z, "z")
        mean = as_tensor(mean, "mean", dtype=z.dtype)
        logvar = as_tensor(logvar, "logvar", dtype=z.dtype)
        check_broadcast(z=z, mean=mean, logvar=logvar)
        if bool((logvar < _EXP_OVERFLOW.get(logvar.dtype, -math.inf)).any()):
            return _log_density_tiny_variance(z, mean, logvar)
    return -0.5 * (LOG_2PI + logvar + (z - mean) ** 2 * torch.exp(-logvar)).sum(-1)


#: logvar below which exp(-logvar) overflows, per floating dtype
_EXP_OVERFLOW = {dt: -math.log(torch.finfo(dt).max)
                 for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


def _log_density_tiny_variance(z, mean, logvar):
    """The diagonal log density where exp(-logvar) overflows (logvar below -709.8 in
    float64, -88.7 in float32): the quadratic term is exp(log (z - mean)^2 - logvar), 0
    where z = mean (not 0 * inf = NaN) and +inf only where it overflows; gradients stay
    finite where the density is."""
    diff = z - mean
    exact = diff == 0
    # 2 log|z - mean| (no underflow of the square), and logvar 0 where z = mean, so that
    # no branch torch.where discards holds inf (its gradient would be 0 * inf = NaN)
    log_sq = 2.0 * torch.log(torch.where(exact, torch.ones_like(diff), diff.abs()))
    safe_logvar = torch.where(exact, torch.zeros_like(log_sq), logvar)
    quad = torch.where(exact, torch.zeros_like(log_sq), torch.exp(log_sq - safe_logvar))
    return -0.5 * (LOG_2PI + logvar + quad).sum(-1)


def diagonal_gaussian(mu: torch.Tensor, sigma: torch.Tensor) -> Distribution:
    """q = N(mu, diag(sigma^2)) as ``Independent(Normal(mu, sigma), 1)``.

    A ``make_q`` for the gradient estimators of chapter 5 (:mod:`elbo_lib.gradients`):
    works with or without a leading batch axis.

    Parameters
    ----------
    mu, sigma : torch.Tensor, shape (..., D)
        Means and standard deviations.

    Returns
    -------
    torch.distributions.Distribution
        Batch shape ``(...)``, event shape ``(D,)``; in the dtype of ``mu``.

    Raises
    ------
    TypeError
        If ``mu`` or ``sigma`` is not a tensor or numeric array-like.
    ValueError
        If they hold NaN or inf, ``sigma`` is not > 0, or the shapes do not broadcast.
    """
    mu = as_tensor(mu, "mu")
    sigma = as_tensor(sigma, "sigma", dtype=mu.dtype)
    if bool((sigma <= 0).any()):
        low = float(sigma.detach().min())
        raise ValueError(f"sigma must be > 0 everywhere, got minimum {low!r}")
    check_broadcast(mu=mu, sigma=sigma)
    return Independent(Normal(mu, sigma), 1)


def _quadratic_inputs(a, b, mu, sigma):
    a = as_float_array(a, "a", ndim=2)
    mu = as_float_array(mu, "mu", ndim=1)
    b = as_float_array(b, "b", ndim=1)
    sigma = check_positive(sigma, "sigma", allow_array=True)
    d = mu.size
    for name, arr, want in (("a", a, (d, d)), ("b", b, (d,)), ("sigma", sigma, (d,))):
        if arr.shape != want:
            raise ValueError(f"{name} must have shape {want} to match mu, got {arr.shape}")
    return a, b, mu, sigma


def gaussian_quadratic_expectation(a, b, mu, sigma) -> float:
    """E[z^T A z + b^T z] for z ~ N(mu, diag(sigma^2)), in closed form.

    ``= mu^T A mu + sum_i A_ii sigma_i^2 + b^T mu``. The test function of chapter 5.

    Parameters
    ----------
    a : array_like, shape (D, D)
    b, mu, sigma : array_like, shape (D,)
        ``sigma`` > 0 (standard deviations).

    Returns
    -------
    float
    """
    a, b, mu, sigma = _quadratic_inputs(a, b, mu, sigma)
    return float(mu @ a @ mu + np.diag(a) @ sigma**2 + b @ mu)


def gaussian_quadratic_gradient(a, b, mu, sigma) -> dict[str, np.ndarray]:
    """Closed-form gradient of :func:`gaussian_quadratic_expectation`.

    ``d/dmu = (A + A^T) mu + b`` and ``d/dsigma_i = 2 A_ii sigma_i``: the exact answer
    against which chapter 5 checks both Monte Carlo estimators.

    Parameters
    ----------
    a : array_like, shape (D, D)
    b, mu, sigma : array_like, shape (D,)

    Returns
    -------
    dict
        ``{"mu": ndarray (D,), "sigma": ndarray (D,)}``.
    """
    a, b, mu, sigma = _quadratic_inputs(a, b, mu, sigma)
    return {"mu": (a + a.T) @ mu + b, "sigma": 2.0 * np.diag(a) * sigma}
