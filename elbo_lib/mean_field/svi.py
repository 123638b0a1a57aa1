"""Stochastic variational inference for the Bayesian mixture (Hoffman et al. 2013; chapter 4).

Natural-gradient steps on the global factors from minibatches
(:func:`svi_gaussian_mixture`), checked against full-batch CAVI
(:func:`elbo_lib.mean_field.cavi_gaussian_mixture`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from elbo_lib._validation import as_generator, check_positive_int, check_real
from elbo_lib.mean_field.mixture import (
    _check_elbo_finite,
    _check_mixture_problem,
    _initial_means,
    _mixture_elbo,
)


@dataclass
class SVIMixtureResult:
    """Output of :func:`svi_gaussian_mixture`.

    Attributes
    ----------
    means, variances : numpy.ndarray
        m_k (K, d) and s_k^2 (K,) of the final q(mu_k).
    elbo : numpy.ndarray
        Full-data ELBO, with every q(c_i) at its optimum given q(mu), at the start and
        after every ``record_every`` steps.
    steps : numpy.ndarray of int
        The step count at which each entry of ``elbo`` was recorded.
    """

    means: np.ndarray
    variances: np.ndarray
    elbo: np.ndarray
    steps: np.ndarray


def _optimal_resp(x, m, s2):
    d = x.shape[1]
    logits = x @ m.T - 0.5 * ((m**2).sum(axis=1) + d * s2)[None, :]
    return np.exp(logits - logsumexp(logits, axis=1, keepdims=True))


def svi_gaussian_mixture(x, n_components: int, prior_var: float = 10.0, *, init_means,
                         rng: np.random.Generator | int, batch_size: int, num_steps: int,
                         step_offset: float = 1.0, step_power: float = 0.7,
                         record_every: int = 10) -> SVIMixtureResult:
    """Stochastic variational inference (Hoffman et al. 2013) for the mixture of ch. 4.

    The model and family of :func:`cavi_gaussian_mixture`. Each q(mu_k) = N(m_k, s_k^2 I)
    is kept by its natural parameters lambda_k = (m_k / s_k^2, 1 / s_k^2). A step draws
    ``batch_size`` points without replacement, sets their q(c_i) to the optimum given
    q(mu) (the local step of CAVI), forms the CAVI update as if the minibatch, scaled
    by n / batch_size, were the whole data set,

        lambda_hat_k = (n / S) sum_{i in batch} phi_ik (x_i, 1) + (0, 1 / sigma^2),

    and moves lambda <- (1 - rho_t) lambda + rho_t lambda_hat with
    rho_t = (t + step_offset)^(-step_power), t = 1, 2, .... lambda_hat - lambda is an
    unbiased estimate of the natural gradient of the ELBO (maximised over the local
    factors) with respect to lambda; with ``batch_size = n`` and rho = 1 a step is one
    CAVI iteration.

    Parameters
    ----------
    x : array_like, shape (n, d) or (n,)
    n_components : int
    prior_var : float
        sigma^2 > 0.
    init_means : array_like, shape (K, d)
        Initial m_k; the initial s_k^2 are 1 (as in :func:`cavi_gaussian_mixture`).
    rng : numpy.random.Generator or int
        Draws the minibatches.
    batch_size : int
        S, 1 <= S <= n.
    num_steps : int
    step_offset, step_power : float
        tau >= 0 and kappa in [0, 1] of the step sizes (Robbins-Monro for kappa in
        (0.5, 1]; kappa = 0 gives rho = 1).
    record_every : int
        Steps between two evaluations of the full-data ELBO.

    Returns
    -------
    SVIMixtureResult
    """
    x, k, sigma2, _, _, _ = _check_mixture_problem(x, n_components, prior_var, 1, 1.0, 1)
    num_steps = check_positive_int(num_steps, "num_steps")
    n, d = x.shape
    batch_size = check_positive_int(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(f"batch_size must be <= n = {n}, got {batch_size}")
    record_every = check_positive_int(record_every, "record_every")
    tau = float(check_real(step_offset, "step_offset"))
    if tau < 0:
        raise ValueError(f"step_offset must be >= 0, got {tau}")
    kappa = float(check_real(step_power, "step_power"))
    if not 0.0 <= kappa <= 1.0:
        raise ValueError(f"step_power must lie in [0, 1], got {kappa}")
    rng = as_generator(rng)
    m = _initial_means(x, k, init_means, None, 1)[0]
    lam2 = np.ones(k)                                          # 1 / s_k^2
    lam1 = m * lam2[:, None]                                   # m_k / s_k^2

    def full_elbo():
        s2 = 1.0 / lam2
        mean = lam1 * s2[:, None]
        value = _mixture_elbo(x, mean, s2, _optimal_resp(x, mean, s2), sigma2)
        _check_elbo_finite(value, x, len(elbos))
        return value

    elbos, steps = [], []
    elbos.append(full_elbo())
    steps.append(0)
    for t in range(1, num_steps + 1):
        batch = x[rng.choice(n, size=batch_size, replace=False)]
        s2 = 1.0 / lam2
        phi = _optimal_resp(batch, lam1 * s2[:, None], s2)
        scale = n / batch_size
        hat2 = 1.0 / sigma2 + scale * phi.sum(axis=0)
        hat1 = scale * phi.T @ batch
        rho = (t + tau) ** (-kappa)
        lam1 = (1 - rho) * lam1 + rho * hat1
        lam2 = (1 - rho) * lam2 + rho * hat2
        if t % record_every == 0 or t == num_steps:
            elbos.append(full_elbo())
            steps.append(t)
    s2 = 1.0 / lam2
    return SVIMixtureResult(lam1 * s2[:, None], s2, np.asarray(elbos), np.asarray(steps))

