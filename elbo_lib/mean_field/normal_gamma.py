"""CAVI for a univariate Gaussian with unknown mean and precision (chapter 4).

A Normal-Gamma prior and q(mu, tau) = q(mu) q(tau) (Bishop 2006, section 10.1.3): the
ELBO (:func:`normal_gamma_elbo`) and the two-factor coordinate ascent
(:func:`cavi_normal_gamma`); the exact posterior and evidence are in
:mod:`elbo_lib.models`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, gammaln

from elbo_lib._validation import LOG_2PI, as_float_array, check_positive, check_positive_int
from elbo_lib.coordinate_ascent import AscentTrace, coordinate_ascent
from elbo_lib.models import NormalGamma, NormalGammaMeanField


def normal_gamma_elbo(x, prior: NormalGamma, q: NormalGammaMeanField) -> float:
    """Closed-form ELBO(q) of the Normal-Gamma model for q = N(mu) Gam(tau) (chapter 4).

    ELBO = E[log p(x | mu, tau)] + E[log p(mu | tau)] + E[log p(tau)] + H[q(mu)] + H[q(tau)],
    with E[tau] = a/b, E[log tau] = psi(a) - log b, E[(x_i - mu)^2] = (x_i - m)^2 + 1/l.
    """
    x = as_float_array(x, "x", ndim=1)
    if not isinstance(q, NormalGammaMeanField):
        raise TypeError(f"q must be a NormalGammaMeanField, got {type(q).__name__}")
    NormalGammaMeanField.from_prior(prior)  # checks prior (models is its one home)
    n = x.size
    e_tau = q.shape / q.rate
    e_log_tau = digamma(q.shape) - np.log(q.rate)
    e_sq_data = float(((x - q.mean) ** 2).sum()) + n / q.precision
    e_sq_prior = (q.mean - prior.mean) ** 2 + 1.0 / q.precision
    e_log_lik = 0.5 * n * (e_log_tau - LOG_2PI) - 0.5 * e_tau * e_sq_data
    e_log_p_mu = (0.5 * (np.log(prior.lam) + e_log_tau - LOG_2PI)
                  - 0.5 * prior.lam * e_tau * e_sq_prior)
    e_log_p_tau = (prior.shape * np.log(prior.rate) - gammaln(prior.shape)
                   + (prior.shape - 1) * e_log_tau - prior.rate * e_tau)
    h_mu = 0.5 * (1.0 + LOG_2PI - np.log(q.precision))
    h_tau = q.shape - np.log(q.rate) + gammaln(q.shape) + (1 - q.shape) * digamma(q.shape)
    return float(e_log_lik + e_log_p_mu + e_log_p_tau + h_mu + h_tau)


@dataclass
class NormalGammaCAVIResult:
    """Output of :func:`cavi_normal_gamma`.

    Attributes
    ----------
    q : NormalGammaMeanField
        The final factors.
    history : list of NormalGammaMeanField
        q before any update, then after every single-factor update (mu, tau, mu, ...).
    elbo : numpy.ndarray
        ELBO of every entry of ``history``.
    updated : list of str
        Which factor each entry of ``history`` updated ("init", "mu" or "tau").
    converged : bool
        Whether the ELBO gain of a full sweep fell below ``tol``.
    trace : elbo_lib.coordinate_ascent.AscentTrace
        The loop's record: steps ("mu", "tau"); ``elbo`` is its ``half_steps``.
    """

    q: NormalGammaMeanField
    history: list[NormalGammaMeanField]
    elbo: np.ndarray
    updated: list[str]
    converged: bool
    trace: AscentTrace


def cavi_normal_gamma(x, prior: NormalGamma, init: NormalGammaMeanField | None = None, *,
                      max_iter: int = 100, tol: float = 1e-12) -> NormalGammaCAVIResult:
    """CAVI for the Normal-Gamma model of Bishop (2006), section 10.1.3 (chapter 4).

    Alternates the two optimal-factor updates

    * q(mu) = N(m, 1/l):  m = (lam0 m0 + n xbar) / (lam0 + n),  l = (lam0 + n) E[tau];
    * q(tau) = Gam(a, b): a = a0 + (n + 1)/2,
      b = b0 + (1/2) E_mu[sum_i (x_i - mu)^2 + lam0 (mu - m0)^2].

    Parameters
    ----------
    x : array_like, shape (n,)
        Observations.
    prior : NormalGamma
        NG(m0, lam0, a0, b0).
    init : NormalGammaMeanField, optional
        Starting factors; default q(mu) = N(m0, 1/(lam0 a0/b0)), q(tau) = Gam(a0, b0).
    max_iter : int
        Maximum number of sweeps (one sweep updates q(mu) then q(tau)).
    tol : float
        Stop when a sweep raises the ELBO by less than ``tol`` (> 0).

    Returns
    -------
    NormalGammaCAVIResult
    """
    x = as_float_array(x, "x", ndim=1)
    at_prior = NormalGammaMeanField.from_prior(prior)  # checks prior
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_positive(tol, "tol")
    if init is None:
        init = at_prior
    elif not isinstance(init, NormalGammaMeanField):
        raise TypeError(f"init must be a NormalGammaMeanField or None, got {type(init).__name__}")
    n, xbar = x.size, float(x.mean())
    history, elbos = [init], [normal_gamma_elbo(x, prior, init)]
    m = (prior.lam * prior.mean + n * xbar) / (prior.lam + n)
    a = prior.shape + 0.5 * (n + 1)

    def update_mu() -> float:
        q = history[-1]
        history.append(NormalGammaMeanField(m, (prior.lam + n) * q.mean_tau, q.shape, q.rate))
        elbos.append(normal_gamma_elbo(x, prior, history[-1]))
        return elbos[-1]

    def update_tau() -> float:
        q = history[-1]
        e_sq = (float(((x - q.mean) ** 2).sum()) + n / q.precision
                + prior.lam * ((q.mean - prior.mean) ** 2 + 1.0 / q.precision))
        history.append(NormalGammaMeanField(q.mean, q.precision, a, prior.rate + 0.5 * e_sq))
        elbos.append(normal_gamma_elbo(x, prior, history[-1]))
        return elbos[-1]

    trace = coordinate_ascent({"mu": update_mu, "tau": update_tau},
                              stop=lambda: elbos[-1] - elbos[-3] < tol, max_iter=max_iter,
                              initial_bound=elbos[0])
    updated = ["init"] + list(trace.step_names) * trace.n_iter
    return NormalGammaCAVIResult(history[-1], history, trace.half_steps, updated,
                                 trace.converged, trace)


