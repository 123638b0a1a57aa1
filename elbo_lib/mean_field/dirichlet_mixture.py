"""CAVI for the Bayesian mixture with learned weights, q(pi) Dirichlet (chapter 4).

Its ELBO (:func:`dirichlet_mixture_elbo`) and coordinate ascent
(:func:`cavi_dirichlet_mixture`), checked against the exact evidence over all set
partitions (:func:`elbo_lib.models.dirichlet_mixture_log_evidence`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import digamma, gammaln

from elbo_lib._validation import as_float_array, as_points, check_positive
from elbo_lib.coordinate_ascent import coordinate_ascent
from elbo_lib.mean_field.mixture import (
    MixtureCAVIResult,
    _check_elbo_finite,
    _check_mixture_problem,
    _initial_means,
    _mixture_elbo,
    gaussian_mixture_elbo,
)


@dataclass
class DirichletMixtureCAVIResult(MixtureCAVIResult):
    """Output of :func:`cavi_dirichlet_mixture`: the fields of :class:`MixtureCAVIResult`
    and ``concentration`` (K,), the parameters alpha_k of q(pi) = Dirichlet(alpha)."""

    concentration: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def weights(self) -> np.ndarray:
        """E_q[pi_k] = alpha_k / sum_l alpha_l."""
        return self.concentration / self.concentration.sum()


def dirichlet_mixture_elbo(x, means, variances, resp, concentration, prior_var: float,
                           alpha0: float) -> float:
    """ELBO of the Bayesian mixture of unit-variance Gaussians with Dirichlet weights (ch. 4).

    Model: pi ~ Dirichlet(alpha0, ..., alpha0), mu_k ~ N(0, sigma^2 I),
    c_i | pi ~ Categorical(pi), x_i | c_i, mu ~ N(mu_{c_i}, I).
    Family: q(pi) = Dirichlet(alpha), q(mu_k) = N(m_k, s_k^2 I), q(c_i) = Categorical(phi_i).

    Parameters
    ----------
    x : array_like, shape (n, d) or (n,)
    means : array_like, shape (K, d) or (K,)
    variances : array_like, shape (K,)
    resp : array_like, shape (n, K)
        Rows on the simplex.
    concentration : array_like, shape (K,)
        alpha_k > 0.
    prior_var, alpha0 : float
        sigma^2 > 0 and the symmetric Dirichlet parameter alpha0 > 0.
    """
    x = as_points(x)
    alpha = check_positive(concentration, "concentration", allow_array=True)
    alpha0 = check_positive(alpha0, "alpha0")
    means = as_float_array(means, "means", ndim=(1, 2))
    means = means[:, None] if means.ndim == 1 else means
    if alpha.shape != (means.shape[0],):
        raise ValueError(f"concentration must have shape ({means.shape[0]},), got {alpha.shape}")
    base = gaussian_mixture_elbo(x, means, variances, resp, prior_var)
    return base + _weights_elbo_terms(np.asarray(resp, dtype=np.float64), alpha, alpha0)


def _weights_elbo_terms(phi, alpha, alpha0) -> float:
    """ELBO terms that the Dirichlet weights add to the fixed-weight mixture ELBO.

    The fixed-weight ELBO contains E[log p(c_i)] = -log K for every point; here it is
    sum_k phi_ik E[log pi_k], and E[log p(pi)] - E[log q(pi)] is added.
    """
    n, k = phi.shape
    e_log_pi = digamma(alpha) - digamma(alpha.sum())
    e_log_p_c = (phi @ e_log_pi).sum() + n * np.log(k)       # replaces -n log K
    e_log_p_pi = gammaln(k * alpha0) - k * gammaln(alpha0) + (alpha0 - 1) * e_log_pi.sum()
    e_log_q_pi = (gammaln(alpha.sum()) - gammaln(alpha).sum()
                  + ((alpha - 1) * e_log_pi).sum())
    return float(e_log_p_c + e_log_p_pi - e_log_q_pi)


def cavi_dirichlet_mixture(x, n_components: int, prior_var: float = 10.0,
                           alpha0: float = 1.0, *, rng: np.random.Generator | int | None = None,
                           init_means=None, num_init: int = 1, max_iter: int = 500,
                           tol: float = 1e-10) -> DirichletMixtureCAVIResult:
    """CAVI for the Bayesian mixture of unit-variance Gaussians with learned weights (ch. 4).

    The model of :func:`cavi_gaussian_mixture` with pi ~ Dirichlet(alpha0 1_K) and
    c_i ~ Categorical(pi) (Bishop 2006, section 10.2; chapter 4, exercise 3). Each
    iteration sets every q(c_i), then q(pi), then every q(mu_k) to its optimum:

    * phi_ik proportional to exp{ E[log pi_k] + x_i^T m_k - (d s_k^2 + m_k^T m_k) / 2 },
      E[log pi_k] = psi(alpha_k) - psi(sum_l alpha_l),
    * alpha_k = alpha0 + sum_i phi_ik,
    * m_k = sum_i phi_ik x_i / (1/sigma^2 + sum_i phi_ik),
      s_k^2 = 1 / (1/sigma^2 + sum_i phi_ik).

    Parameters
    ----------
    x : array_like, shape (n, d) or (n,)
        Data, n >= n_components.
    n_components : int
        K >= 1.
    prior_var : float
        sigma^2 > 0.
    alpha0 : float
        alpha0 > 0; below 1 the prior favours few occupied components.
    rng, init_means, num_init, max_iter, tol
        As in :func:`cavi_gaussian_mixture` (initial q(pi) is Dirichlet(alpha0 + n/K)).

    Returns
    -------
    DirichletMixtureCAVIResult
        The run with the highest final ELBO; ``restart_elbos`` holds every run's.
    """
    x, k, sigma2, max_iter, tol, num_init = _check_mixture_problem(
        x, n_components, prior_var, max_iter, tol, num_init)
    alpha0 = check_positive(alpha0, "alpha0")
    starts = _initial_means(x, k, init_means, rng, num_init)
    results = [_cavi_dirichlet_once(x, m, sigma2, alpha0, max_iter, tol) for m in starts]
    finals = np.array([r.elbo[-1] for r in results])
    best = results[int(np.argmax(finals))]
    best.restart_elbos = finals
    return best


def _cavi_dirichlet_once(x, m, sigma2, alpha0, max_iter, tol) -> DirichletMixtureCAVIResult:
    n, d = x.shape
    k = m.shape[0]
    s = {"m": np.array(m, dtype=np.float64), "s2": np.ones(k),
         "phi": np.full((n, k), 1.0 / k), "alpha": np.full(k, alpha0 + n / k)}

    def elbo():
        return (_mixture_elbo(x, s["m"], s["s2"], s["phi"], sigma2)
                + _weights_elbo_terms(s["phi"], s["alpha"], alpha0))

    elbos, history = [elbo()], [s["m"].copy()]
    _check_elbo_finite(elbos[0], x, 0)

    def update_assignments() -> None:  # every q(c_i); the bound is evaluated after q(mu)
        m, alpha = s["m"], s["alpha"]
        e_log_pi = digamma(alpha) - digamma(alpha.sum())
        logits = e_log_pi[None, :] + x @ m.T - 0.5 * ((m**2).sum(axis=1) + d * s["s2"])[None, :]
        phi = np.exp(logits - logits.max(axis=1, keepdims=True))  # stable softmax
        phi /= phi.sum(axis=1, keepdims=True)
        s["phi"] = phi

    def update_weights() -> None:  # q(pi)
        s["alpha"] = alpha0 + s["phi"].sum(axis=0)

    def update_means() -> float:  # every q(mu_k)
        phi = s["phi"]
        s["s2"] = s2 = 1.0 / (1.0 / sigma2 + phi.sum(axis=0))
        s["m"] = (phi.T @ x) * s2[:, None]
        elbos.append(elbo())
        _check_elbo_finite(elbos[-1], x, len(elbos) - 1)
        history.append(s["m"].copy())
        return elbos[-1]

    trace = coordinate_ascent({"c": update_assignments, "pi": update_weights,
                               "mu": update_means},
                              stop=lambda: abs(elbos[-1] - elbos[-2]) < tol * abs(elbos[-1]),
                              max_iter=max_iter, initial_bound=elbos[0])
    return DirichletMixtureCAVIResult(s["m"], s["s2"], s["phi"], np.asarray(elbos),
                                      np.asarray(history), trace.n_iter, trace.converged,
                                      trace=trace, concentration=s["alpha"])


