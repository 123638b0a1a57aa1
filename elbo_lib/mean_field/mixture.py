"""CAVI for the Bayesian mixture of unit-variance Gaussians (chapter 4).

The model of Blei, Kucukelbir & McAuliffe (2017), section 3: its ELBO
(:func:`gaussian_mixture_elbo`) and coordinate ascent with restarts
(:func:`cavi_gaussian_mixture`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp, xlogy

from elbo_lib._validation import (
    LOG_2PI,
    as_float_array,
    as_generator,
    as_points,
    check_positive,
    check_positive_int,
    check_probability_rows,
)
from elbo_lib.coordinate_ascent import AscentTrace, coordinate_ascent


def gaussian_mixture_elbo(x, means, variances, resp, prior_var: float) -> float:
    """ELBO of the Bayesian mixture of unit-variance Gaussians (Blei et al. 2017, section 3).

    Model: mu_k ~ N(0, sigma^2 I), c_i ~ Uniform{1..K}, x_i | c_i, mu ~ N(mu_{c_i}, I).
    Family: q(mu_k) = N(m_k, s_k^2 I), q(c_i) = Categorical(phi_i).

    ELBO = sum_k E[log p(mu_k)] + sum_i (E[log p(c_i)] + E[log p(x_i | c_i, mu)])
           - sum_i E[log q(c_i)] - sum_k E[log q(mu_k)].

    Parameters
    ----------
    x : array_like, shape (n, d) or (n,)
    means : array_like, shape (K, d) or (K,)
        m_k.
    variances : array_like, shape (K,)
        s_k^2 > 0.
    resp : array_like, shape (n, K)
        phi_ik, rows on the simplex.
    prior_var : float
        sigma^2 > 0.
    """
    x = as_points(x)
    prior_var = check_positive(prior_var, "prior_var")
    means = as_float_array(means, "means", ndim=(1, 2))
    means = means[:, None] if means.ndim == 1 else means
    k, d = means.shape
    variances = check_positive(variances, "variances", allow_array=True)
    resp = as_float_array(resp, "resp", ndim=2)
    for name, got, want in (("means", means.shape, (k, x.shape[1])),
                            ("variances", variances.shape, (k,)),
                            ("resp", resp.shape, (x.shape[0], k))):
        if got != want:
            raise ValueError(f"{name} must have shape {want} to match x {x.shape} and "
                             f"means (K = {k}), got {got}")
    resp = check_probability_rows(resp, "resp")
    return _mixture_elbo(x, means, variances, resp, prior_var)


def _mixture_elbo(x, m, s2, phi, sigma2) -> float:
    n, d = x.shape
    k = m.shape[0]
    e_mu_sq = (m**2).sum(axis=1) + d * s2                     # E[mu_k^T mu_k], (K,)
    e_log_prior_mu = -0.5 * d * np.log(2 * np.pi * sigma2) - 0.5 * e_mu_sq / sigma2
    sq = (x**2).sum(axis=1)[:, None] - 2 * x @ m.T + e_mu_sq[None, :]   # E||x_i - mu_k||^2
    e_log_lik = (phi * (-0.5 * d * LOG_2PI - 0.5 * sq)).sum()
    entropy_mu = 0.5 * d * (np.log(2 * np.pi * s2) + 1.0)
    return float(e_log_prior_mu.sum() - n * np.log(k) + e_log_lik
                 - xlogy(phi, phi).sum() + entropy_mu.sum())


@dataclass
class MixtureCAVIResult:
    """Output of :func:`cavi_gaussian_mixture`.

    Attributes
    ----------
    means : numpy.ndarray, shape (K, d)
        m_k, the posterior means of the component means.
    variances : numpy.ndarray, shape (K,)
        s_k^2 (each q(mu_k) is isotropic).
    resp : numpy.ndarray, shape (n, K)
        phi_ik = q(c_i = k).
    elbo : numpy.ndarray
        ELBO after initialisation and after every iteration.
    mean_history : numpy.ndarray, shape (num_iter + 1, K, d)
        m_k after initialisation and after every iteration.
    num_iter : int
    converged : bool
    restart_elbos : numpy.ndarray
        Final ELBO of every initialisation tried (the result is the best one).
    trace : elbo_lib.coordinate_ascent.AscentTrace
        The loop's record of this run: the bound after each sweep's last step (``elbo``
        is ``initial_bound`` followed by it).
    labels : numpy.ndarray, shape (n,)
        argmax_k phi_ik, the hard clustering.
    """

    means: np.ndarray
    variances: np.ndarray
    resp: np.ndarray
    elbo: np.ndarray
    mean_history: np.ndarray
    num_iter: int
    converged: bool
    restart_elbos: np.ndarray = field(default_factory=lambda: np.empty(0))
    trace: AscentTrace | None = None
    labels: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.labels = self.resp.argmax(axis=1)


def _check_mixture_problem(x, n_components, prior_var, max_iter, tol, num_init):
    x = as_points(x)
    k = check_positive_int(n_components, "n_components")
    if k > x.shape[0]:
        raise ValueError(f"n_components={k} is larger than the number of points "
                         f"n={x.shape[0]}")
    return (x, k, check_positive(prior_var, "prior_var"),
            check_positive_int(max_iter, "max_iter"), check_positive(tol, "tol"),
            check_positive_int(num_init, "num_init"))


def _initial_means(x, k: int, init_means, rng, num_init: int) -> list[np.ndarray]:
    """The starting means: ``init_means`` (one start), or ``num_init`` draws of k points."""
    n, d = x.shape
    if init_means is not None:
        m = as_float_array(init_means, "init_means", ndim=(1, 2))
        m = (m[:, None] if m.ndim == 1 else m).copy()
        if m.shape != (k, d):
            raise ValueError(f"init_means must have shape {(k, d)}, got {m.shape}")
        return [m]
    rng = as_generator(rng)
    return [x[rng.choice(n, size=k, replace=False)].copy() for _ in range(num_init)]


def cavi_gaussian_mixture(x, n_components: int, prior_var: float = 10.0, *,
                          rng: np.random.Generator | int | None = None, init_means=None,
                          num_init: int = 1, max_iter: int = 200,
                          tol: float = 1e-8) -> MixtureCAVIResult:
    """CAVI for the Bayesian mixture of unit-variance Gaussians (Blei et al. 2017, section 3).

    Each iteration sets every q(c_i) and then every q(mu_k) to its optimum:

    * phi_ik proportional to exp{ x_i^T m_k - (d s_k^2 + m_k^T m_k) / 2 },
    * m_k = sum_i phi_ik x_i / (1/sigma^2 + sum_i phi_ik),
      s_k^2 = 1 / (1/sigma^2 + sum_i phi_ik),

    vectorised over data points and components (log-sum-exp for the softmax). With one
    dimension these are exactly Blei et al.'s equations; in d dimensions they hold
    coordinate-wise.

    Parameters
    ----------
    x : array_like, shape (n, d) or (n,)
        Data, n >= n_components.
    n_components : int
        K >= 1.
    prior_var : float
        sigma^2 > 0, the prior variance of each component mean.
    rng : numpy.random.Generator or int, optional
        Used to pick K distinct data points as the initial m_k (when ``init_means`` is None).
    init_means : array_like, shape (K, d), optional
        Initial m_k (then ``num_init`` is ignored); the initial s_k^2 are 1 and phi uniform.
    num_init : int
        Number of random initialisations; the run with the highest final ELBO is
        returned (the ELBO of this model has several local optima).
    max_iter : int
        Maximum number of iterations.
    tol : float
        Stop when an iteration raises the ELBO by less than ``tol`` times |ELBO|.

    Returns
    -------
    MixtureCAVIResult
    """
    x, k, sigma2, max_iter, tol, num_init = _check_mixture_problem(
        x, n_components, prior_var, max_iter, tol, num_init)
    starts = _initial_means(x, k, init_means, rng, num_init)
    if init_means is not None:
        result = _cavi_mixture_once(x, starts[0], sigma2, max_iter, tol)
        result.restart_elbos = result.elbo[-1:].copy()
        return result
    results = [_cavi_mixture_once(x, m, sigma2, max_iter, tol) for m in starts]
    finals = np.array([r.elbo[-1] for r in results])
    best = results[int(np.argmax(finals))]
    best.restart_elbos = finals
    return best


def _check_elbo_finite(value: float, x: np.ndarray, iteration: int) -> None:
    """A mixture ELBO that overflows float64 is a scale problem of ``x``: say so."""
    if not np.isfinite(value):
        raise ValueError(f"the ELBO is not finite in float64 at iteration {iteration}: x "
                         f"(max |x| = {np.abs(x).max():.3g}) is too large for a mixture of "
                         f"unit-variance Gaussians, whose ELBO is about -sum ||x_i||^2 / 2; "
                         f"rescale x (and prior_var with it)")


def _cavi_mixture_once(x, m, sigma2, max_iter, tol) -> MixtureCAVIResult:
    n, d = x.shape
    k = m.shape[0]
    s = {"m": np.array(m, dtype=np.float64), "s2": np.ones(k),
         "phi": np.full((n, k), 1.0 / k)}
    elbos = [_mixture_elbo(x, s["m"], s["s2"], s["phi"], sigma2)]
    _check_elbo_finite(elbos[0], x, 0)
    history = [s["m"].copy()]

    def update_assignments() -> None:  # every q(c_i); the bound is evaluated after q(mu)
        m = s["m"]
        logits = x @ m.T - 0.5 * ((m**2).sum(axis=1) + d * s["s2"])[None, :]
        s["phi"] = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))

    def update_means() -> float:  # every q(mu_k)
        phi = s["phi"]
        s["s2"] = s2 = 1.0 / (1.0 / sigma2 + phi.sum(axis=0))
        s["m"] = (phi.T @ x) * s2[:, None]
        elbos.append(_mixture_elbo(x, s["m"], s2, phi, sigma2))
        _check_elbo_finite(elbos[-1], x, len(elbos) - 1)
        history.append(s["m"].copy())
        return elbos[-1]

    trace = coordinate_ascent({"c": update_assignments, "mu": update_means},
                              stop=lambda: abs(elbos[-1] - elbos[-2]) < tol * abs(elbos[-1]),
                              max_iter=max_iter, initial_bound=elbos[0])
    return MixtureCAVIResult(s["m"], s["s2"], s["phi"], np.asarray(elbos),
                             np.asarray(history), trace.n_iter, trace.converged, trace=trace)


