"""Mean-field variational inference and coordinate ascent (CAVI): chapter 4.

Every routine here maximises the ELBO over a product family q(z) = prod_j q_j(z_j) by
setting one factor at a time to its optimum, log q_j*(z_j) = E_{-j}[log p(x, z)] + const
(Bishop 2006, section 10.1.1; Goodfellow et al. 2016, section 19.4), and each comes with an
exact answer to check it against (the oracles live in :mod:`elbo_lib.models`):

* :func:`cavi_normal_gamma` -- univariate Gaussian with unknown mean and precision and a
  Normal-Gamma prior (Bishop 2006, section 10.1.3); the exact posterior is Normal-Gamma
  (:func:`elbo_lib.models.normal_gamma_posterior`) and the exact evidence is
  :func:`elbo_lib.models.normal_gamma_log_evidence`.
* :func:`mean_field_gaussian`, :func:`cavi_gaussian` -- a correlated Gaussian approximated
  by a factorised one (Bishop 2006, section 10.1.2), with
  :func:`elbo_lib.gaussians.gaussian_kl_full`.
* :func:`cavi_gaussian_mixture` -- the Bayesian mixture of unit-variance Gaussians of
  Blei, Kucukelbir & McAuliffe (2017), section 3, with its ELBO
  :func:`gaussian_mixture_elbo`.
* :func:`bsc_mean_field` -- binary sparse coding with the fixed-point updates of
  Goodfellow et al. (2016), section 19.4.1, checked against exact enumeration
  (:func:`elbo_lib.models.bsc_exact_posterior`).
* :func:`cavi_dirichlet_mixture` -- the same mixture with learned weights (q(pi) Dirichlet),
  checked against its exact evidence over all set partitions
  (:func:`elbo_lib.models.dirichlet_mixture_log_evidence`) on small data.
* :func:`bsc_variational_em` -- learning W, b, beta of binary sparse coding with mean-field
  E-steps (Goodfellow et al. 2016, section 19.4.4), with the exact log-likelihood
  (:func:`elbo_lib.models.bsc_log_likelihood`) tracked by enumeration; its E-step can keep
  the best of many starts per input (:func:`bsc_mean_field_multistart`).
* :func:`svi_gaussian_mixture` -- stochastic variational inference with natural gradients
  (Hoffman et al. 2013) for the mixture of :func:`cavi_gaussian_mixture`, checked against
  full-batch CAVI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

import numpy as np
from scipy.special import digamma, expit, gammaln, log_expit, logsumexp, xlogy

from elbo_lib._validation import (
    LOG_2PI,
    as_float_array,
    as_generator,
    as_points,
    check_bsc_batch_inputs,
    check_bsc_inputs,
    check_enumerable,
    check_positive,
    check_positive_int,
    check_probability_rows,
    check_real,
    check_spd,
)
from elbo_lib.coordinate_ascent import AscentTrace, coordinate_ascent
from elbo_lib.models import (
    NormalGamma,
    NormalGammaMeanField,
    bsc_exact_posterior,
    bsc_log_joint_table,
    bsc_log_likelihood,
)

__all__ = [
    "BSCLearningResult",
    "BSCTrace",
    "DirichletMixtureCAVIResult",
    "MixtureCAVIResult",
    "NormalGammaCAVIResult",
    "bsc_elbo",
    "bsc_elbo_batch",
    "bsc_elbo_enumeration",
    "bsc_mean_field",
    "bsc_mean_field_batch",
    "bsc_mean_field_multistart",
    "bsc_variational_em",
    "cavi_dirichlet_mixture",
    "cavi_gaussian",
    "cavi_gaussian_mixture",
    "cavi_normal_gamma",
    "SVIMixtureResult",
    "svi_gaussian_mixture",
    "dirichlet_mixture_elbo",
    "gaussian_mixture_elbo",
    "mean_field_gaussian",
    "normal_gamma_elbo",
]



# ---------------------------------------------------------------------------------------
# 1. Univariate Gaussian, unknown mean and precision, Normal-Gamma prior (PRML 10.1.3)
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# 2. Factorised approximation of a correlated Gaussian (PRML 10.1.2)
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# 3. Bayesian mixture of unit-variance Gaussians (Blei, Kucukelbir & McAuliffe 2017, s. 3)
# ---------------------------------------------------------------------------------------
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

# ---------------------------------------------------------------------------------------
# 4. Binary sparse coding (Goodfellow et al. 2016, section 19.4.1)
# ---------------------------------------------------------------------------------------
def _check_h_hat(h_hat, n: int, name: str = "h_hat") -> np.ndarray:
    h_hat = as_float_array(h_hat, name, ndim=1)
    if h_hat.size != n or np.any(h_hat < 0) or np.any(h_hat > 1):
        raise ValueError(f"{name} must hold {n} probabilities in [0, 1], got shape "
                         f"{h_hat.shape}")
    return h_hat


def bsc_elbo(h_hat, v, weights, bias, noise_precision) -> float:
    """Closed-form ELBO of binary sparse coding for q(h) = prod_i Bernoulli(h_hat_i).

    Uses E_q[h_i h_j] = h_hat_i h_hat_j (i != j) and E_q[h_i^2] = h_hat_i
    (Goodfellow et al. 2016, section 19.4.1):

    ELBO = sum_i [h_hat_i log sigma(b_i) + (1 - h_hat_i) log sigma(-b_i) + H(h_hat_i)]
    + (1/2) sum_j log(beta_j / 2 pi)
    - (1/2) [(v - W h_hat)^T B (v - W h_hat) + sum_i (W^T B W)_ii h_hat_i (1 - h_hat_i)].
    """
    v, w, b, beta = check_bsc_inputs(v, weights, bias, noise_precision)
    h = _check_h_hat(h_hat, b.size)
    return _bsc_elbo(h, v, w, b, beta)


def _bsc_elbo(h, v, w, b, beta) -> float:
    entropy = -(xlogy(h, h) + xlogy(1 - h, 1 - h)).sum()
    log_prior = h @ log_expit(b) + (1 - h) @ log_expit(-b)
    resid = v - w @ h
    diag = (w**2).T @ beta                                  # (W^T B W)_ii
    quad = resid**2 @ beta + diag @ (h * (1 - h))
    return float(log_prior + entropy + 0.5 * (np.log(beta).sum() - v.size * LOG_2PI) - 0.5 * quad)


def bsc_elbo_enumeration(h_hat, v, weights, bias, noise_precision) -> float:
    """ELBO of q(h) = prod_i Bernoulli(h_hat_i) as the exact sum over all 2^n codes.

    sum_h q(h) [log p(v, h) - log q(h)]: the independent check of :func:`bsc_elbo`.
    """
    v, w, b, beta = check_bsc_inputs(v, weights, bias, noise_precision)
    h_hat = _check_h_hat(h_hat, b.size)
    exact = bsc_exact_posterior(v, w, b, beta)
    codes = exact["codes"]
    log_q = xlogy(codes, h_hat).sum(axis=1) + xlogy(1 - codes, 1 - h_hat).sum(axis=1)
    q = np.exp(log_q)
    log_joint = exact["log_posterior"] + exact["log_evidence"]
    mask = q > 0
    return float((q[mask] * (log_joint[mask] - log_q[mask])).sum())


@dataclass
class BSCTrace:
    """Output of :func:`bsc_mean_field`: ``h_hat`` (final), ``history`` (num_iter + 1, n)
    and ``elbo`` (num_iter + 1,) after every sweep, ``converged``, and ``trace``, the
    loop's :class:`elbo_lib.coordinate_ascent.AscentTrace` (one step per sweep)."""

    h_hat: np.ndarray
    history: np.ndarray
    elbo: np.ndarray
    converged: bool
    trace: AscentTrace | None = None


def bsc_mean_field(v, weights, bias, noise_precision, *, schedule: str = "sequential",
                   damping: float = 1.0, init=None, max_iter: int = 200,
                   tol: float = 1e-10) -> BSCTrace:
    """Mean-field fixed-point iteration for binary sparse coding (Goodfellow et al. 2016, 19.4.1).

    The optimal factor for h_i given the others is Bernoulli(h_hat_i) with

    h_hat_i = sigmoid(b_i + v^T B W_{:,i} - (1/2) W_{:,i}^T B W_{:,i}
                      - sum_{j != i} W_{:,j}^T B W_{:,i} h_hat_j).

    ``schedule="sequential"`` applies it to one unit at a time with the newest values of
    the others (coordinate ascent: the ELBO never decreases). ``schedule="parallel"``
    applies it to every unit at once from the old values, then moves a fraction
    ``damping`` of the way: h_hat <- (1 - damping) h_hat + damping * update. Undamped
    parallel updates (damping = 1) can oscillate.

    Parameters
    ----------
    v, weights, bias, noise_precision
        As in :func:`bsc_log_joint`.
    schedule : {"sequential", "parallel"}
    damping : float
        In (0, 1]; 1 means no damping. Used by both schedules.
    init : array_like, shape (n_latent,), optional
        Starting h_hat in [0, 1]; default sigmoid(b), the prior.
    max_iter : int
        Number of sweeps at most.
    tol : float
        Stop when max |change of h_hat| in a sweep is below ``tol``.

    Returns
    -------
    BSCTrace
    """
    v, w, b, beta = check_bsc_inputs(v, weights, bias, noise_precision)
    if schedule not in ("sequential", "parallel"):
        raise ValueError(f"schedule must be 'sequential' or 'parallel', got {schedule!r}")
    damping = check_positive(damping, "damping")
    if damping > 1:
        raise ValueError(f"damping must be in (0, 1], got {damping}")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_positive(tol, "tol")
    h = expit(b) if init is None else _check_h_hat(init, b.size, "init").copy()
    gram = w.T @ (beta[:, None] * w)                         # W^T B W
    drive = b + w.T @ (beta * v) - 0.5 * np.diag(gram)       # terms not involving h_hat
    off = gram - np.diag(np.diag(gram))
    history, elbos = [h.copy()], [_bsc_elbo(h, v, w, b, beta)]

    def sweep() -> float:  # every q(h_i) in turn (or all at once), damped
        if schedule == "parallel":
            history.append((1 - damping) * h + damping * expit(drive - off @ h))
            h[:] = history[-1]
        else:
            for i in range(b.size):  # over latent units (Gauss-Seidel), not data points
                h[i] = (1 - damping) * h[i] + damping * expit(drive[i] - off[i] @ h)
            history.append(h.copy())
        elbos.append(_bsc_elbo(h, v, w, b, beta))
        return elbos[-1]

    trace = coordinate_ascent({"h": sweep},
                              stop=lambda: np.max(np.abs(history[-1] - history[-2])) < tol,
                              max_iter=max_iter, initial_bound=elbos[0])
    return BSCTrace(h, np.asarray(history), np.asarray(elbos), trace.converged, trace)


# ---------------------------------------------------------------------------------------
# 5. Mixture with learned weights: q(pi) Dirichlet (chapter 4, exercise 3 run for real)
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# 6. Learning theta: variational EM for binary sparse coding (Goodfellow et al. 19.4.4)
# ---------------------------------------------------------------------------------------
def bsc_mean_field_batch(v, weights, bias, noise_precision: float, *, init=None,
                         max_iter: int = 200, tol: float = 1e-8) -> np.ndarray:
    """Sequential mean-field updates of binary sparse coding for many inputs at once (ch. 4).

    The update of :func:`bsc_mean_field` (``schedule="sequential"``, scalar precision
    beta), applied to unit 1, then unit 2, ... with the newest values, vectorised over
    the rows of ``v``: coordinate ascent on every row's ELBO.

    Parameters
    ----------
    v : array_like, shape (N, n_visible)
    weights : array_like, shape (n_visible, n_latent)
    bias : array_like, shape (n_latent,)
    noise_precision : float
        beta > 0 (isotropic noise).
    init : array_like, shape (N, n_latent), optional
        Starting h_hat (for warm starts in variational EM); default sigmoid(b).
    max_iter : int
        Sweeps at most.
    tol : float
        Stop when no h_hat changes by more than ``tol`` in a sweep.

    Returns
    -------
    numpy.ndarray, shape (N, n_latent)
        h_hat, the Bernoulli means of q(h) for every row.
    """
    v, w, b, beta = check_bsc_batch_inputs(v, weights, bias, noise_precision)
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_positive(tol, "tol")
    n_h = b.size
    if init is None:
        h = np.tile(expit(b), (v.shape[0], 1))
    else:
        h = as_float_array(init, "init", ndim=2).copy()
        if h.shape != (v.shape[0], n_h) or np.any(h < 0) or np.any(h > 1):
            raise ValueError(f"init must hold probabilities of shape {(v.shape[0], n_h)}, "
                             f"got shape {h.shape}")
    gram = beta * w.T @ w
    drive = b[None, :] + beta * v @ w - 0.5 * np.diag(gram)[None, :]
    off = gram - np.diag(np.diag(gram))
    for _ in range(max_iter):
        old = h.copy()
        for i in range(n_h):  # over latent units (Gauss-Seidel); vectorised over rows
            h[:, i] = expit(drive[:, i] - h @ off[:, i])
        if np.max(np.abs(h - old)) < tol:
            break
    return h


def bsc_mean_field_multistart(v, weights, bias, noise_precision: float, *, starts=None,
                              init=None, max_iter: int = 500,
                              tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """The best of many sequential mean-field runs per input of binary sparse coding (ch. 4).

    The ELBO of binary sparse coding is not concave in h_hat jointly: the sequential
    updates of :func:`bsc_mean_field_batch` stop at the local optimum nearest their
    start (from the prior, often a low one). This runs them from every row of
    ``starts`` (the same starts for every input; default all 2^n_latent binary codes,
    which begin the search in every explanation of the input) and from ``init`` if
    given, and keeps, for each input, the run with the highest ELBO. With ``init``
    among the starts the result's ELBO is never below that of the run from ``init``
    alone, so variational EM with this E-step stays monotone.

    Parameters
    ----------
    v : array_like, shape (N, n_visible)
    weights : array_like, shape (n_visible, n_latent)
    bias : array_like, shape (n_latent,)
    noise_precision : float
        beta > 0.
    starts : array_like, shape (S, n_latent), optional
        Starting h_hat shared by every input; default every binary code (n_latent <= 10).
    init : array_like, shape (N, n_latent), optional
        One more start per input (the previous E-step's result in variational EM).
    max_iter, tol
        As in :func:`bsc_mean_field_batch`.

    Returns
    -------
    h_hat : numpy.ndarray, shape (N, n_latent)
        The highest-ELBO optimum found for each input.
    elbo : numpy.ndarray, shape (N,)
        Its ELBO (:func:`bsc_elbo_batch`).
    """
    v, w, b, beta = check_bsc_batch_inputs(v, weights, bias, noise_precision)
    n, n_h = v.shape[0], b.size
    if starts is None:
        check_enumerable(b, 10)
        starts = np.array(list(product((0.0, 1.0), repeat=n_h)))
    starts = as_float_array(starts, "starts", ndim=2)
    if starts.shape[1] != n_h or np.any(starts < 0) or np.any(starts > 1):
        raise ValueError(f"starts must hold probabilities of shape (S, {n_h}), "
                         f"got shape {starts.shape}")
    cand = np.repeat(starts[None, :, :], n, axis=0)            # (N, S, n_h)
    if init is not None:
        init = as_float_array(init, "init", ndim=2)
        if init.shape != (n, n_h) or np.any(init < 0) or np.any(init > 1):
            raise ValueError(f"init must hold probabilities of shape {(n, n_h)}, "
                             f"got shape {init.shape}")
        cand = np.concatenate([init[:, None, :], cand], axis=1)
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_positive(tol, "tol")
    num_starts = cand.shape[1]
    v_rep = np.repeat(v, num_starts, axis=0)
    h = cand.reshape(-1, n_h).copy()
    gram = beta * w.T @ w
    drive = b[None, :] + beta * v_rep @ w - 0.5 * np.diag(gram)[None, :]
    off = gram - np.diag(np.diag(gram))
    active = np.arange(h.shape[0])
    for _ in range(max_iter):       # the sweeps of bsc_mean_field_batch, on unsettled rows
        h_a, old = h[active], h[active].copy()
        for i in range(n_h):
            h_a[:, i] = expit(drive[active, i] - h_a @ off[:, i])
        h[active] = h_a
        active = active[np.max(np.abs(h_a - old), axis=1) >= tol]
        if active.size == 0:
            break
    elbo = bsc_elbo_batch(h, v_rep, w, b, beta).reshape(n, num_starts)
    best = np.argmax(elbo, axis=1)                              # ties: the first (init)
    h = h.reshape(n, num_starts, n_h)[np.arange(n), best]
    return h, elbo[np.arange(n), best]


def bsc_elbo_batch(h_hat, v, weights, bias, noise_precision: float) -> np.ndarray:
    """Closed-form ELBO of :func:`bsc_elbo` for every row of ``v`` (chapter 4), shape (N,)."""
    v, w, b, beta = check_bsc_batch_inputs(v, weights, bias, noise_precision)
    h = as_float_array(h_hat, "h_hat", ndim=2)
    if h.shape != (v.shape[0], b.size):
        raise ValueError(f"h_hat must have shape {(v.shape[0], b.size)}, got {h.shape}")
    if np.any(h < 0) or np.any(h > 1):
        raise ValueError(f"h_hat must hold probabilities in [0, 1], got range "
                         f"[{h.min()!r}, {h.max()!r}]")
    entropy = -(xlogy(h, h) + xlogy(1 - h, 1 - h)).sum(axis=1)
    log_prior = h @ log_expit(b) + (1 - h) @ log_expit(-b)
    resid = v - h @ w.T
    quad = beta * ((resid**2).sum(axis=1) + (h * (1 - h)) @ (w**2).sum(axis=0))
    return log_prior + entropy + 0.5 * v.shape[1] * (np.log(beta) - LOG_2PI) - 0.5 * quad


@dataclass
class BSCLearningResult:
    """Output of :func:`bsc_variational_em`.

    Attributes
    ----------
    weights, bias, noise_precision
        Final W, b and beta.
    elbo : numpy.ndarray
        Sum over the data of the ELBO after every E-step (the bound the run maximises).
    log_likelihood : numpy.ndarray
        Exact sum_n log p(v_n | theta) by enumeration, at the same theta.
    weights_history : numpy.ndarray, shape (num_iter, n_visible, n_latent)
        W at which each entry of ``elbo`` was evaluated.
    h_hat : numpy.ndarray, shape (N, n_latent)
        The last E-step's q (or exact marginals when ``exact=True``).
    """

    weights: np.ndarray
    bias: np.ndarray
    noise_precision: float
    elbo: np.ndarray
    log_likelihood: np.ndarray
    weights_history: np.ndarray
    h_hat: np.ndarray


def bsc_variational_em(v, init_weights, init_bias, init_noise_precision: float, *,
                       num_iter: int = 50, exact: bool = False,
                       starts=None) -> BSCLearningResult:
    """Learn theta = (W, b, beta) of binary sparse coding by (variational) EM (chapter 4).

    E-step: q(h_n) = prod_i Bernoulli(h_hat_ni) by sequential mean-field updates
    (:func:`bsc_mean_field_batch`, warm-started), or with ``exact=True`` the exact
    posterior by enumeration (ordinary EM, for comparison). M-step: the maximiser of
    sum_n E_q[log p(v_n, h_n | theta)] in closed form (Goodfellow et al. 2016, 19.4.4):

    * W = (sum_n v_n E[h_n]^T) (sum_n E[h_n h_n^T])^{-1},
    * sigmoid(b_i) = mean_n E[h_ni],
    * 1 / beta = sum_n E||v_n - W h_n||^2 / (N n_visible),

    where under mean-field E[h h^T] = h_hat h_hat^T + diag(h_hat (1 - h_hat)).
    Every E-step and M-step raises the ELBO (variational EM) or log p(V) (exact EM).

    Parameters
    ----------
    v : array_like, shape (N, n_visible)
    init_weights : array_like, shape (n_visible, n_latent)
    init_bias : array_like, shape (n_latent,)
    init_noise_precision : float
    num_iter : int
        Number of E-step / M-step pairs.
    exact : bool
        Exact posterior in the E-step (n_latent <= 16).
    starts : None, "codes" or array_like of shape (S, n_latent)
        None: the E-step runs the sequential updates from the previous E-step's q only
        (from the prior at the first). Otherwise it also restarts them from every row of
        ``starts`` ("codes": all 2^n_latent binary codes) and keeps the best per input
        (:func:`bsc_mean_field_multistart`).

    Returns
    -------
    BSCLearningResult
        ``elbo`` and ``log_likelihood`` have num_iter + 1 entries: before the first M-step
        and after every one (each evaluated after the following E-step).
    """
    v, w, b, beta = check_bsc_batch_inputs(v, init_weights, init_bias, init_noise_precision,
                                           prefix="init_")
    w, b = w.copy(), b.copy()
    num_iter = check_positive_int(num_iter, "num_iter")
    if exact:
        check_enumerable(b, 16, "init_bias")
    if isinstance(starts, str) and starts != "codes":
        raise ValueError(f"starts must be None, 'codes' or an array, got {starts!r}")
    n, n_v = v.shape
    codes = np.array(list(product((0.0, 1.0), repeat=b.size)))
    h = None
    elbos, logliks, w_hist = [], [], []

    def e_step(h_prev):
        if exact:
            _, log_joint = bsc_log_joint_table(v, w, b, beta)
            post = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
            e_h = post @ codes
            e_hh = np.einsum("nc,ci,cj->ij", post, codes, codes)
            return e_h, e_hh, float(logsumexp(log_joint, axis=1).sum())
        if starts is None:
            h_new = bsc_mean_field_batch(v, w, b, beta, init=h_prev, tol=1e-10,
                                         max_iter=500)
        else:
            h_new, _ = bsc_mean_field_multistart(
                v, w, b, beta, starts=None if isinstance(starts, str) else starts,
                init=h_prev if h_prev is not None else np.tile(expit(b), (n, 1)))
        e_hh = h_new.T @ h_new + np.diag((h_new * (1 - h_new)).sum(axis=0))
        return h_new, e_hh, float(bsc_elbo_batch(h_new, v, w, b, beta).sum())

    for it in range(num_iter + 1):
        h, e_hh, bound = e_step(h)
        elbos.append(bound)
        logliks.append(float(bsc_log_likelihood(v, w, b, beta).sum()))
        w_hist.append(w.copy())
        if it == num_iter:
            break
        w = np.linalg.solve(e_hh, h.T @ v).T                   # e_hh is symmetric
        mean_h = np.clip(h.mean(axis=0), 1e-12, 1 - 1e-12)
        b = np.log(mean_h) - np.log1p(-mean_h)
        sq = ((v - h @ w.T) ** 2).sum() + np.trace(w @ (e_hh - h.T @ h) @ w.T)
        beta = n * n_v / sq
    return BSCLearningResult(w, b, float(beta), np.asarray(elbos), np.asarray(logliks),
                             np.asarray(w_hist), h)
