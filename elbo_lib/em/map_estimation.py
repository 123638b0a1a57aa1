"""MAP-EM for a Gaussian mixture (chapter 2): EM on log p(x | theta) + log p(theta).

The prior (:func:`gmm_log_prior`) is a Dirichlet on the weights and an inverse-Wishart
on each covariance; :func:`map_em` keeps the E-step and replaces the M-step by its
closed-form MAP update.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, multigammaln

from elbo_lib._validation import as_float_array, check_nonnegative, check_positive_int, check_spd
from elbo_lib.coordinate_ascent import coordinate_ascent
from elbo_lib.em.estimator import _start
from elbo_lib.em.mixture import (
    _COUNT_EPS,
    _check_data,
    _check_weights,
    _normalise,
    _weighted_log_prob,
    gmm_log_likelihood,
)
from elbo_lib.em.state import EMTrace, _EMState
from elbo_lib.gaussians import precision_cholesky


def _well_conditioned(matrix) -> bool:
    """Whether a symmetric matrix is positive definite with a condition number below
    1 / (d eps): one whose inverse and Cholesky factor float64 computes."""
    eig = np.linalg.eigvalsh(matrix)
    return bool(eig[0] > matrix.shape[0] * np.finfo(np.float64).eps * eig[-1])


def gmm_log_prior(weights, covariances, *, weight_concentration: float,
                  cov_prior_dof: float, cov_prior_scale) -> float:
    """log p(theta): a Dirichlet on the weights and an inverse-Wishart on each covariance.

    The prior of :func:`map_em` (chapter 2): pi ~ Dir(alpha, ..., alpha) and
    Sigma_k ~ IW(nu, Psi) independently, with a flat prior on the means.

    Parameters
    ----------
    weights : array_like, shape (K,)
    covariances : array_like, shape (K, d, d)
    weight_concentration : float
        alpha >= 1.
    cov_prior_dof : float
        nu > d - 1.
    cov_prior_scale : array_like, shape (d, d)
        Psi, symmetric positive definite.
    """
    weights = as_float_array(weights, "weights", ndim=1)
    k = weights.shape[0]
    weights = _check_weights(weights, k)
    cov = as_float_array(covariances, "covariances", ndim=3)
    d = cov.shape[1]
    cov, _ = check_spd(cov, "covariances", (k, d, d))
    alpha = check_nonnegative(weight_concentration, "weight_concentration")
    nu = check_nonnegative(cov_prior_dof, "cov_prior_dof")
    if alpha < 1 or nu <= d - 1:
        raise ValueError(f"need weight_concentration >= 1 and cov_prior_dof > d - 1 = "
                         f"{d - 1}, got {alpha} and {nu}")
    psi, _ = check_spd(cov_prior_scale, "cov_prior_scale", (d, d))
    with np.errstate(divide="ignore"):
        log_dir = (gammaln(k * alpha) - k * gammaln(alpha)
                   + (alpha - 1) * float(np.sum(np.log(weights))))
    if alpha == 1:
        log_dir = float(gammaln(k))
    _, logdet_psi = np.linalg.slogdet(psi)
    _, logdet_cov = np.linalg.slogdet(cov)
    try:
        inv = np.linalg.inv(cov)
    except np.linalg.LinAlgError:
        raise ValueError("covariances must be positive definite and invertible in float64, "
                         "got a numerically singular matrix") from None
    traces = np.einsum("ij,kji->k", psi, inv)
    log_iw = (0.5 * nu * logdet_psi - 0.5 * nu * d * np.log(2.0) - multigammaln(0.5 * nu, d)
              - 0.5 * (nu + d + 1) * logdet_cov - 0.5 * traces)
    return float(log_dir + log_iw.sum())


def map_em(X, n_components: int, *, weight_concentration: float = 1.0,
           cov_prior_dof: float | None = None, cov_prior_scale=None, tol: float = 1e-6,
           max_iter: int = 500, weights_init=None, means_init=None, covariances_init=None,
           rng=None) -> EMTrace:
    """MAP-EM for a Gaussian mixture: EM on log p(x | theta) + log p(theta) (chapter 2).

    The E-step is unchanged; the M-step maximises Q(theta) + log p(theta) with the
    conjugate prior of :func:`gmm_log_prior`, in closed form:

    .. math::

        \\pi_k = \\frac{N_k + \\alpha - 1}{n + K(\\alpha - 1)}, \\qquad
        \\mu_k = \\frac{1}{N_k}\\sum_i r_{ik} x_i, \\qquad
        \\Sigma_k = \\frac{N_k S_k + \\Psi}{N_k + \\nu + d + 1},

    with S_k the weighted covariance. No covariance floor is needed: every eigenvalue of
    Sigma_k is at least lambda_min(Psi) / (n + nu + d + 1), and for a small Psi this is
    the additive floor of scikit-learn, derived instead of imposed. The objective
    log p(x | theta) + log p(theta) never decreases. The start is the data covariance S
    (as :class:`GaussianMixtureEM`'s) or, where S is singular or nearly so (constant or
    collinear data, d > n), (n S + Psi) / (n + nu + d + 1): such data need no floor either.

    Parameters
    ----------
    X : array_like, shape (n, d)
    n_components : int
    weight_concentration : float
        alpha >= 1 (1: flat prior on the weights).
    cov_prior_dof : float, optional
        nu > d - 1 (default d + 2).
    cov_prior_scale : array_like (d, d), optional
        Psi (default 1e-3 times the identity).
    tol : float
        Stop when the objective per point changes by less than ``tol``.
    max_iter : int
    weights_init, means_init, covariances_init, rng
        As for :class:`GaussianMixtureEM`.

    Returns
    -------
    EMTrace
        With ``log_likelihood_`` and ``log_prior_`` for t = 0 .. n_iter_.
    """
    X = _check_data(X)
    n, d = X.shape
    n_components = check_positive_int(n_components, "n_components")
    if n < n_components:
        raise ValueError(f"n_components={n_components} is larger than the number of "
                         f"points n={n}: need n >= n_components")
    nu = float(d + 2) if cov_prior_dof is None else check_nonnegative(cov_prior_dof,
                                                                         "cov_prior_dof")
    psi = 1e-3 * np.eye(d) if cov_prior_scale is None else check_spd(
        cov_prior_scale, "cov_prior_scale", (d, d))[0]
    alpha = check_nonnegative(weight_concentration, "weight_concentration")
    if alpha < 1 or nu <= d - 1:
        raise ValueError(f"need weight_concentration >= 1 and cov_prior_dof > d - 1 = "
                         f"{d - 1}, got {alpha} and {nu}")
    tol = check_nonnegative(tol, "tol")
    max_iter = check_positive_int(max_iter, "max_iter")
    prior = dict(weight_concentration=alpha, cov_prior_dof=nu, cov_prior_scale=psi)
    if covariances_init is None:
        # the data covariance, as GaussianMixtureEM starts; where it is singular (constant
        # or collinear data, d > n) the MAP covariance of one component holding every
        # point, (n S + Psi) / (n + nu + d + 1), which the prior keeps positive definite
        data_cov = np.atleast_2d(np.cov(X, rowvar=False, bias=True))
        if not _well_conditioned(data_cov):
            start = (n * data_cov + psi) / (n + nu + d + 1)
            covariances_init = np.repeat(0.5 * (start + start.T)[None], n_components, axis=0)
    weights, means, cov = _start(X, n_components, weights_init, means_init,
                                 covariances_init, rng, 0.0)
    s = _EMState(theta=(weights, means, cov), prec_chol=None)
    log_prior = []

    def e_step() -> float:  # q_t = p(z | x, theta_{t-1}); the bound is the objective
        weights, means, cov = s.theta
        log_norm, s.resp, _ = _normalise(_weighted_log_prob(X, weights, means,
                                                            precision_cholesky(cov)))
        s.log_lik.append(float(log_norm.sum()))
        log_prior.append(gmm_log_prior(weights, cov, **prior))
        return s.log_lik[-1] + log_prior[-1]

    def m_step() -> None:  # the closed-form MAP update; its bound is not evaluated
        resp = s.resp
        counts = resp.sum(axis=0) + _COUNT_EPS
        weights = (counts + alpha - 1) / (n + n_components * (alpha - 1))
        weights = weights / weights.sum()
        means = (resp.T @ X) / counts[:, None]
        diff = X[None, :, :] - means[:, None, :]
        scatter = np.einsum("nk,kni,knj->kij", resp, diff, diff)
        s.theta = (weights, means, (scatter + psi) / (counts + nu + d + 1)[:, None, None])

    def stop() -> bool:
        return len(s.log_lik) > 1 and abs(s.log_lik[-1] + log_prior[-1] - s.log_lik[-2]
                                          - log_prior[-2]) < tol * n

    trace = coordinate_ascent({"E": e_step, "M": m_step}, stop=stop, max_iter=max_iter)
    weights, means, cov = s.theta
    s.log_lik.append(gmm_log_likelihood(X, weights, means, cov))
    log_prior.append(gmm_log_prior(weights, cov, **prior))
    return EMTrace(weights, means, cov, n_iter_=trace.n_iter,
                   log_likelihood_=np.asarray(s.log_lik), trace_=trace, steps_per_sweep=1,
                   log_prior_=np.asarray(log_prior))
