"""One EM iteration examined (chapter 2): the line it moves theta on, and its rate.

:func:`bound_along_path` evaluates log p(x | theta(t)) and the two ELBOs touching it
at either end along the straight line (:func:`interpolate_parameters`) between two EM
iterates; :func:`em_map_jacobian` is the Jacobian of the EM map, whose largest
eigenvalue is EM's rate of linear convergence.
"""

from __future__ import annotations

import numpy as np

from elbo_lib._validation import as_float_array, check_real
from elbo_lib.em.estimator import GaussianMixtureEM
from elbo_lib.em.mixture import (
    _check_data,
    _check_params,
    _check_theta,
    _elbo_terms,
    _entropy,
    _normalise,
    _weighted_log_prob,
    gmm_responsibilities,
)
from elbo_lib.gaussians import precision_cholesky


def _unconstrained(weights, means, cov):
    chol = np.linalg.cholesky(cov)
    d = cov.shape[1]
    diag = np.arange(d)
    log_diag = np.log(chol[:, diag, diag])
    return np.log(weights), means, chol, log_diag


def interpolate_parameters(theta_0, theta_1, t: float):
    """A point on the straight line from theta_0 (t = 0) to theta_1 (t = 1).

    The line is drawn in unconstrained coordinates (log-weights, means, Cholesky factors
    with log-diagonals), so every t gives valid parameters: weights on the simplex and
    positive-definite covariances. Used for the one-step EM picture of chapter 2.

    A component with weight 0 at either end has weight 0 everywhere except at the end
    where it is positive: t = 0 and t = 1 return theta_0 and theta_1 exactly.

    Parameters
    ----------
    theta_0, theta_1 : tuple (weights, means, covariances)
        Valid mixtures of the same shapes.
    t : float

    Returns
    -------
    tuple (weights, means, covariances)

    Raises
    ------
    TypeError
        If ``t`` is not a real number.
    ValueError
        If ``t`` is not finite, a theta is malformed (weights off the simplex,
        covariances not positive definite, shapes that differ), or the two weight
        vectors share no component.
    """
    t = check_real(t, "t")
    theta_0 = _check_theta(theta_0, "theta_0")
    theta_1 = _check_theta(theta_1, "theta_1", like=theta_0)
    if t in (0.0, 1.0):
        return tuple(p.copy() for p in (theta_0 if t == 0.0 else theta_1))
    with np.errstate(divide="ignore"):
        a = _unconstrained(*theta_0)
        b = _unconstrained(*theta_1)
    both = np.isfinite(a[0]) & np.isfinite(b[0])
    if not both.any():
        raise ValueError("theta_0 weights and theta_1 weights share no component with "
                         "weight > 0: there is no mixture between them")
    log_w = np.where(both, (1 - t) * np.where(both, a[0], 0) + t * np.where(both, b[0], 0),
                     -np.inf)
    weights = np.exp(log_w - log_w.max())
    weights /= weights.sum()
    means = (1 - t) * a[1] + t * b[1]
    chol = np.tril((1 - t) * a[2] + t * b[2])
    d = chol.shape[1]
    diag = np.arange(d)
    chol[:, diag, diag] = np.exp((1 - t) * a[3] + t * b[3])
    return weights, means, chol @ chol.transpose(0, 2, 1)


def bound_along_path(X, theta_old, theta_new, ts):
    """log p(x | theta(t)) and two ELBOs along the line theta(t) between two EM iterates.

    ``q_old`` is the posterior at ``theta_old`` (the E-step before the M-step) and
    ``q_new`` the posterior at ``theta_new``. The first bound touches the log-likelihood
    at t = 0, the second at t = 1; the M-step moved theta to the maximiser of the first.

    Parameters
    ----------
    X : array_like, shape (n, d)
    theta_old, theta_new : tuple (weights, means, covariances)
    ts : array_like, shape (m,)

    Returns
    -------
    dict of numpy.ndarray, each of shape (m,)
        ``log_likelihood``, ``elbo_q_old``, ``elbo_q_new`` (nats).
    """
    X = _check_data(X)
    ts = as_float_array(ts, "ts", ndim=1)
    theta_old = _check_theta(theta_old, "theta_old", n_features=X.shape[1])
    theta_new = _check_theta(theta_new, "theta_new", like=theta_old)
    q_old = gmm_responsibilities(X, *theta_old)
    q_new = gmm_responsibilities(X, *theta_new)
    h_old, h_new = _entropy(q_old), _entropy(q_new)
    out = {"log_likelihood": [], "elbo_q_old": [], "elbo_q_new": []}
    for t in ts:  # a few dozen parameter values, each fully vectorised over the data
        w, m, c = interpolate_parameters(theta_old, theta_new, float(t))
        wlp = _weighted_log_prob(X, w, m, precision_cholesky(c))
        out["log_likelihood"].append(float(_normalise(wlp)[0].sum()))
        out["elbo_q_old"].append(_elbo_terms(q_old, wlp, h_old))
        out["elbo_q_new"].append(_elbo_terms(q_new, wlp, h_new))
    return {key: np.asarray(val) for key, val in out.items()}


def _theta_to_vector(weights, means, cov) -> np.ndarray:
    """(pi_1..pi_{K-1}, means, upper triangles of the covariances) as one vector."""
    rows, cols = np.triu_indices(means.shape[1])
    return np.concatenate([weights[:-1], means.ravel(), cov[:, rows, cols].ravel()])


def _vector_to_theta(v, k, d):
    rows, cols = np.triu_indices(d)
    weights = np.append(v[:k - 1], 1.0 - v[:k - 1].sum())
    means = v[k - 1:k - 1 + k * d].reshape(k, d)
    cov = np.zeros((k, d, d))
    cov[:, rows, cols] = v[k - 1 + k * d:].reshape(k, -1)
    return weights, means, cov + np.triu(cov, 1).transpose(0, 2, 1)


def em_map_jacobian(X, weights, means, covariances, *, step: float = 1e-6,
                    reg_covar: float = 1e-6, covariance_floor: str = "clip"):
    """Jacobian of one EM iteration theta -> M(theta), by central finite differences.

    Near a fixed point theta* of EM, theta_{t+1} - theta* ~ J (theta_t - theta*): EM
    converges linearly with rate the largest eigenvalue of J, which Dempster, Laird and
    Rubin (1977) showed to be the fraction of missing information
    I - (d^2 Q)^{-1} d^2 log p(x | theta) (chapter 2). theta is the vector of the first
    K - 1 weights (the last is 1 minus their sum), the means, and the upper triangles
    of the covariances; one EM iteration is one :class:`GaussianMixtureEM` step with
    ``max_iter=1``. The map must be smooth at theta: no covariance on its floor.

    Parameters
    ----------
    X : array_like, shape (n, d)
    weights, means, covariances : array_like
        The point theta: (K,), (K, d), (K, d, d).
    step : float
        Finite-difference step in every coordinate (> 0).
    reg_covar, covariance_floor
        As for :class:`GaussianMixtureEM`.

    Returns
    -------
    numpy.ndarray, shape (P, P)
        J with P = K - 1 + K d + K d (d + 1) / 2.
    """
    X, weights, means, cov = _check_params(X, weights, means, covariances)
    step = check_real(step, "step")
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step}")
    k, d = means.shape

    def em_step(v):
        w, mu, c = _vector_to_theta(v, k, d)
        fit = GaussianMixtureEM(k, weights_init=w, means_init=mu, covariances_init=c,
                                tol=0.0, max_iter=1, reg_covar=reg_covar,
                                covariance_floor=covariance_floor).fit(X)
        return _theta_to_vector(fit.weights_, fit.means_, fit.covariances_)

    v0 = _theta_to_vector(weights, means, cov)
    eye = np.eye(len(v0)) * step
    return np.column_stack([(em_step(v0 + e) - em_step(v0 - e)) / (2 * step)
                            for e in eye])


