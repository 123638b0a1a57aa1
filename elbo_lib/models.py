"""Models whose evidence and posterior are known exactly: the book's oracles.

Whatever q an algorithm finds, log p(x) = ELBO(q) + KL(q || p(z | x)) can be checked
against these exact answers:

* :class:`ConjugateGaussianMean` -- the running example of chapter 1 and the check of
  every estimator in later chapters; :class:`SquaredMeanModel` -- its non-conjugate
  twin (chapter 1).
* :class:`NormalGamma`, :func:`normal_gamma_posterior`, :func:`normal_gamma_log_evidence`
  -- univariate Gaussian with unknown mean and precision (Bishop 2006, section 10.1.3;
  chapter 4).
* :func:`bsc_log_joint`, :func:`bsc_exact_posterior`, :func:`bsc_log_joint_table`,
  :func:`bsc_log_likelihood`, :func:`bsc_exact_moments` -- binary sparse coding
  (Goodfellow et al. 2016, section 19.4.1) by enumerating all binary codes (chapter 4).
* :func:`set_partitions`, :func:`dirichlet_mixture_log_evidence` -- the Bayesian mixture
  with Dirichlet weights, by summing over set partitions (chapter 4).
* :class:`BayesianLogisticRegression` -- no closed form, but an exact MAP (Newton) and
  its Laplace approximation (chapter 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

import numpy as np
import torch
from scipy.special import gammaln, log_expit, logsumexp
from torch.distributions import Normal

from elbo_lib._validation import (
    LOG_2PI,
    as_float_array,
    as_points,
    as_tensor,
    check_broadcast,
    check_bsc_batch_inputs,
    check_bsc_inputs,
    check_enumerable,
    check_finite_tensor,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_real,
)
from elbo_lib.gaussians import gaussian_entropy, gaussian_kl

__all__ = [
    "BayesianLogisticRegression",
    "ConjugateGaussianMean",
    "NormalGamma",
    "NormalGammaMeanField",
    "SquaredMeanModel",
    "bsc_exact_moments",
    "bsc_exact_posterior",
    "bsc_log_joint",
    "bsc_log_joint_table",
    "bsc_log_likelihood",
    "dirichlet_mixture_log_evidence",
    "normal_gamma_log_evidence",
    "normal_gamma_posterior",
    "set_partitions",
]



def _gaussian_data(model, x, noise_std, prior_mean, prior_std) -> None:
    """Set the data and hyperparameters shared by the two chapter 1 models, checked.

    The sums the likelihood needs are kept in units of the noise standard deviation
    (``_z_sum`` = sum_i x_i / sigma, ``_z_sum_sq`` = sum_i (x_i / sigma)^2), so data and
    scales of 1e150 (or 1e-150) give finite, exact answers.
    """
    model.x = as_float_array(x, "x", ndim=1)
    model.n = model.x.size
    for name, std in (("noise_std", noise_std), ("prior_std", prior_std)):
        std = check_positive(std, name)
        var = std * std
        if not 0 < var < np.inf:
            raise ValueError(f"{name}**2 must be a positive finite float64 number, got "
                             f"{name} = {std!r}: rescale the data and the scales together")
        setattr(model, name.replace("_std", "_var"), var)
    model.noise_std = float(np.sqrt(model.noise_var))
    model.prior_mean = check_real(prior_mean, "prior_mean")
    z = model.x / model.noise_std
    with np.errstate(over="ignore"):  # an overflow is reported just below
        model._z_sum, model._z_sum_sq = float(z.sum()), float(z @ z)
    if not np.isfinite(model._z_sum_sq):
        raise ValueError(f"x is too large relative to noise_std: sum((x / noise_std)^2) "
                         f"overflows float64 (max |x| / noise_std = "
                         f"{np.abs(z).max():.3g}); rescale x, noise_std, prior_mean and "
                         f"prior_std together")


def _scaled_squares(model, mean_over_std, var_over_var):
    """sum_i E[(x_i - z)^2] / sigma^2 for z with mean m and variance v, given m / sigma
    and v / sigma^2 (works on NumPy arrays and torch tensors)."""
    return (model._z_sum_sq - 2 * mean_over_std * model._z_sum
            + model.n * (mean_over_std**2 + var_over_var))


class ConjugateGaussianMean:
    """Gaussian observations with unknown mean and a Gaussian prior on the mean.

    .. math::

        z \\sim \\mathcal N(m_0, s_0^2), \\qquad x_i \\mid z \\sim \\mathcal N(z, \\sigma^2),
        \\quad i = 1..n .

    The posterior is Gaussian, p(z | x) = N(m_n, s_n^2) with
    1/s_n^2 = 1/s_0^2 + n/sigma^2 and m_n = s_n^2 (m_0/s_0^2 + sum_i x_i / sigma^2),
    and the evidence is the Gaussian x ~ N(m_0 1, sigma^2 I + s_0^2 1 1^T)
    (Bishop 2006, section 2.3.6; Murphy 2007).

    Parameters
    ----------
    x : array_like, shape (n,)
        Observations (finite, at least one).
    noise_std : float
        Known observation noise sigma > 0.
    prior_mean : float
        Prior mean m_0.
    prior_std : float
        Prior standard deviation s_0 > 0.

    Attributes
    ----------
    posterior_mean, posterior_var : float
        m_n and s_n^2.
    """

    def __init__(self, x, noise_std: float = 1.0, prior_mean: float = 0.0,
                 prior_std: float = 1.0) -> None:
        _gaussian_data(self, x, noise_std, prior_mean, prior_std)
        precision = 1.0 / self.prior_var + self.n / self.noise_var
        self.posterior_var = 1.0 / precision
        self.posterior_mean = self.posterior_var * (
            self.prior_mean / self.prior_var + self._z_sum / self.noise_std)

    # -- closed forms ------------------------------------------------------------------
    def log_evidence(self) -> float:
        """Exact log p(x), from the Gaussian marginal of x (not via the posterior).

        Uses the matrix determinant lemma and Sherman-Morrison for
        Sigma = sigma^2 I + s_0^2 1 1^T, so it costs O(n); residuals are measured in
        units of sigma (rho = s_0^2 / sigma^2), so no intermediate overflows.
        """
        n, rho = self.n, self.prior_var / self.noise_var
        r = (self.x - self.prior_mean) / self.noise_std
        log_det = n * np.log(self.noise_var) + np.log1p(n * rho)
        quad = r @ r - rho * r.sum() ** 2 / (1 + n * rho)
        return float(-0.5 * (n * LOG_2PI + log_det + quad))

    def _check_q(self, mean_q, var_q):
        mean_q = as_float_array(mean_q, "mean_q")
        var_q = check_positive(var_q, "var_q", allow_array=True)
        check_broadcast(mean_q=mean_q, var_q=var_q)
        return np.broadcast_arrays(mean_q, var_q)

    def expected_log_likelihood(self, mean_q, var_q):
        """E_q[log p(x | z)] for q = N(mean_q, var_q), elementwise over arrays of q."""
        m, v = self._check_q(mean_q, var_q)
        sq = _scaled_squares(self, m / self.noise_std, v / self.noise_var)
        return -0.5 * self.n * (LOG_2PI + np.log(self.noise_var)) - 0.5 * sq

    def kl_to_prior(self, mean_q, var_q):
        """KL(q || p(z)) for q = N(mean_q, var_q)."""
        m, v = self._check_q(mean_q, var_q)
        return gaussian_kl(m, v, self.prior_mean, self.prior_var)

    def elbo(self, mean_q, var_q):
        """Exact ELBO(q) = E_q[log p(x | z)] - KL(q || p(z)) for q = N(mean_q, var_q).

        Equivalently E_q[log p(x, z)] + H[q]; :meth:`elbo_from_entropy` computes it that
        way and the tests check the two readings agree.
        """
        return self.expected_log_likelihood(mean_q, var_q) - self.kl_to_prior(mean_q, var_q)

    def elbo_from_entropy(self, mean_q, var_q):
        """ELBO as expected log-joint plus entropy: E_q[log p(x|z)] + E_q[log p(z)] + H[q]."""
        m, v = self._check_q(mean_q, var_q)
        e_log_prior = -0.5 * (LOG_2PI + np.log(self.prior_var)) - 0.5 * (
            (m - self.prior_mean) ** 2 + v) / self.prior_var
        return self.expected_log_likelihood(m, v) + e_log_prior + gaussian_entropy(v)

    def kl_to_posterior(self, mean_q, var_q):
        """KL(q || p(z | x)) for q = N(mean_q, var_q): the gap log p(x) - ELBO(q)."""
        m, v = self._check_q(mean_q, var_q)
        return gaussian_kl(m, v, self.posterior_mean, self.posterior_var)

    # -- torch densities, for Monte Carlo estimators ----------------------------------
    def prior(self) -> Normal:
        """p(z) as a float64 torch Normal."""
        return Normal(torch.tensor(self.prior_mean, dtype=torch.float64),
                      torch.tensor(self.prior_var**0.5, dtype=torch.float64))

    def posterior(self) -> Normal:
        """p(z | x) as a float64 torch Normal."""
        return Normal(torch.tensor(self.posterior_mean, dtype=torch.float64),
                      torch.tensor(self.posterior_var**0.5, dtype=torch.float64))

    def log_likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) for a tensor of z values (any shape), differentiable in z (float64)."""
        z = as_tensor(z, "z", dtype=torch.float64)
        sq = _scaled_squares(self, z / self.noise_std, 0.0)
        return -0.5 * self.n * (LOG_2PI + np.log(self.noise_var)) - 0.5 * sq

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log p(x | z) + log p(z), elementwise over a tensor of z values."""
        z = as_tensor(z, "z", dtype=torch.float64)
        return self.log_likelihood(z) + self.prior().log_prob(z)


class SquaredMeanModel:
    """A non-conjugate model with a two-mode posterior: the data see only z squared.

    .. math::

        z \\sim \\mathcal N(m_0, s_0^2), \\qquad
        x_i \\mid z \\sim \\mathcal N(z^2, \\sigma^2), \\quad i = 1..n .

    With ``prior_mean = 0`` the posterior is symmetric under z -> -z and, when the data
    are well above zero, has two separated modes near +-sqrt(mean(x)). No Gaussian q can
    cover both, so the best Gaussian leaves a gap of about log 2 (chapter 1). Nothing is
    in closed form: the evidence comes from 1-D quadrature
    (:func:`elbo_lib.bounds.log_evidence_quadrature`) and the ELBO of a Gaussian q from
    Gauss-Hermite quadrature, exact here because log p(x, z) is a polynomial of degree 4.

    Parameters
    ----------
    x : array_like, shape (n,)
        Observations (finite, at least one).
    noise_std : float
        Known observation noise sigma > 0.
    prior_mean : float
        Prior mean m_0.
    prior_std : float
        Prior standard deviation s_0 > 0.
    """

    def __init__(self, x, noise_std: float = 0.5, prior_mean: float = 0.0,
                 prior_std: float = 1.0) -> None:
        _gaussian_data(self, x, noise_std, prior_mean, prior_std)

    def log_joint(self, z):
        """log p(x, z) elementwise for a NumPy array or a (differentiable) torch tensor."""
        z = as_tensor(z, "z") if isinstance(z, torch.Tensor) else as_float_array(z, "z")
        sq = _scaled_squares(self, z * z / self.noise_std, 0.0)
        log_lik = -0.5 * self.n * (LOG_2PI + np.log(self.noise_var)) - 0.5 * sq
        log_prior = (-0.5 * (LOG_2PI + np.log(self.prior_var))
                     - 0.5 * (z - self.prior_mean) ** 2 / self.prior_var)
        return log_lik + log_prior


# ---------------------------------------------------------------------------------------
# Normal-Gamma: univariate Gaussian, unknown mean and precision (chapter 4)
# ---------------------------------------------------------------------------------------
def _check_fields(density, precision_name: str) -> None:
    """Check (and store as floats) a frozen Normal-Gamma-shaped density's parameters: a
    real ``mean`` and positive ``precision_name``, ``shape`` and ``rate``."""
    object.__setattr__(density, "mean", check_real(density.mean, "mean"))
    for name in (precision_name, "shape", "rate"):
        object.__setattr__(density, name, check_positive(getattr(density, name), name))


def _gamma_log_pdf(density, log_tau, tau):
    """log Gam(tau | shape, rate) of ``density``, from log tau and tau."""
    return (density.shape * np.log(density.rate) - gammaln(density.shape)
            + (density.shape - 1) * log_tau - density.rate * tau)


@dataclass(frozen=True)
class NormalGamma:
    """Normal-Gamma density NG(mu, tau | m, lam, a, b) = N(mu | m, 1/(lam tau)) Gam(tau | a, b).

    Used as the prior and as the exact posterior of the chapter 4 model (Bishop 2006,
    sections 2.3.6 and 10.1.3). ``b`` is a rate: E[tau] = a / b.

    Parameters
    ----------
    mean : float
        m, the location of mu.
    lam : float
        lam > 0, the precision of mu in units of tau.
    shape, rate : float
        a > 0 and b > 0 of the Gamma density of tau.
    """

    mean: float
    lam: float
    shape: float
    rate: float

    def __post_init__(self) -> None:
        _check_fields(self, "lam")

    def log_pdf(self, mu, tau) -> np.ndarray:
        """log NG(mu, tau), elementwise and broadcasting; -inf where tau <= 0."""
        mu, tau = as_float_array(mu, "mu"), as_float_array(tau, "tau")
        check_broadcast(mu=mu, tau=tau)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_tau = np.where(tau > 0, np.log(np.where(tau > 0, tau, 1.0)), -np.inf)
            lp = (_gamma_log_pdf(self, log_tau, tau)
                  + 0.5 * (np.log(self.lam) + log_tau - LOG_2PI)
                  - 0.5 * self.lam * tau * (mu - self.mean) ** 2)
        return np.where(tau > 0, lp, -np.inf)

    @property
    def mean_tau(self) -> float:
        """E[tau] = a / b."""
        return self.shape / self.rate

    @property
    def var_mu(self) -> float:
        """Marginal variance of mu (a Student t): b / (lam (a - 1)), inf when a <= 1."""
        return self.rate / (self.lam * (self.shape - 1)) if self.shape > 1 else np.inf


@dataclass(frozen=True)
class NormalGammaMeanField:
    """q(mu, tau) = N(mu | mean, 1/precision) Gam(tau | shape, rate): the chapter 4 factors.

    The mean-field family of the Normal-Gamma model (Bishop 2006, section 10.1.3), fitted
    by :func:`elbo_lib.mean_field.cavi_normal_gamma`; it lives beside :class:`NormalGamma`
    (the prior and exact posterior), whose checks and Gamma density it shares.

    Parameters
    ----------
    mean : float
        The mean of q(mu).
    precision : float
        > 0, the precision of q(mu) (a number, not in units of tau).
    shape, rate : float
        > 0, the Gamma factor q(tau).
    """

    mean: float
    precision: float
    shape: float
    rate: float

    def __post_init__(self) -> None:
        _check_fields(self, "precision")

    @classmethod
    def from_prior(cls, prior: NormalGamma) -> NormalGammaMeanField:
        """The factors at the prior: q(mu) = N(m0, 1/(lam0 a0/b0)), q(tau) = Gam(a0, b0).

        Raises
        ------
        TypeError
            If ``prior`` is not a :class:`NormalGamma`.
        """
        prior = _check_prior(prior)
        return cls(prior.mean, prior.lam * prior.mean_tau, prior.shape, prior.rate)

    @property
    def mean_tau(self) -> float:
        """E_q[tau] = shape / rate."""
        return self.shape / self.rate

    def log_pdf(self, mu, tau) -> np.ndarray:
        """log q(mu) + log q(tau), elementwise and broadcasting; -inf where tau <= 0."""
        mu, tau = as_float_array(mu, "mu"), as_float_array(tau, "tau")
        check_broadcast(mu=mu, tau=tau)
        log_q_mu = 0.5 * (np.log(self.precision) - LOG_2PI) - 0.5 * self.precision * (
            mu - self.mean) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            safe = np.where(tau > 0, tau, 1.0)
            log_q_tau = _gamma_log_pdf(self, np.log(safe), safe)
        return np.where(tau > 0, log_q_mu + log_q_tau, -np.inf)


def _check_data_1d(x) -> np.ndarray:
    return as_float_array(x, "x", ndim=1)


def _check_prior(prior) -> NormalGamma:
    if not isinstance(prior, NormalGamma):
        raise TypeError(f"prior must be a NormalGamma, got {type(prior).__name__}")
    return prior


def normal_gamma_posterior(x, prior: NormalGamma) -> NormalGamma:
    """Exact posterior p(mu, tau | x) of the chapter 4 Normal-Gamma model.

    With x_i ~ N(mu, 1/tau) and (mu, tau) ~ NG(m0, lam0, a0, b0) the posterior is
    NG(m_n, lam_n, a_n, b_n) with lam_n = lam0 + n, m_n = (lam0 m0 + n xbar) / lam_n,
    a_n = a0 + n/2 and b_n = b0 + S/2 + lam0 n (xbar - m0)^2 / (2 lam_n), where
    S = sum_i (x_i - xbar)^2 (Murphy 2007; Bishop 2006, section 2.3.6).

    Raises
    ------
    ValueError
        If x is empty, not one-dimensional or not finite.
    TypeError
        If prior is not a :class:`NormalGamma`.
    """
    x = _check_data_1d(x)
    prior = _check_prior(prior)
    n, xbar = x.size, float(x.mean())
    scatter = float(((x - xbar) ** 2).sum())
    lam_n = prior.lam + n
    return NormalGamma(
        mean=(prior.lam * prior.mean + n * xbar) / lam_n,
        lam=lam_n,
        shape=prior.shape + 0.5 * n,
        rate=prior.rate + 0.5 * scatter + 0.5 * prior.lam * n * (xbar - prior.mean) ** 2 / lam_n,
    )


def normal_gamma_log_evidence(x, prior: NormalGamma) -> float:
    """Exact log p(x) of the Normal-Gamma model (Murphy 2007).

    log p(x) = lgamma(a_n) - lgamma(a0) + a0 log b0 - a_n log b_n
    + (1/2) log(lam0 / lam_n) - (n/2) log(2 pi).
    """
    post = normal_gamma_posterior(x, prior)
    n = _check_data_1d(x).size
    return float(gammaln(post.shape) - gammaln(prior.shape)
                 + prior.shape * np.log(prior.rate) - post.shape * np.log(post.rate)
                 + 0.5 * np.log(prior.lam / post.lam) - 0.5 * n * LOG_2PI)


# ---------------------------------------------------------------------------------------
# binary sparse coding by enumeration (chapter 4)
# ---------------------------------------------------------------------------------------
def bsc_log_joint(h, v, weights, bias, noise_precision) -> np.ndarray:
    """log p(v, h) of binary sparse coding for one or many binary codes h (chapter 4).

    p(h_i = 1) = sigmoid(b_i), p(v | h) = N(v | W h, diag(beta)^{-1})
    (Goodfellow et al. 2016, section 19.4.1).

    Parameters
    ----------
    h : array_like, shape (n_latent,) or (num_codes, n_latent)
        Binary codes (0/1).
    v : array_like, shape (n_visible,)
    weights : array_like, shape (n_visible, n_latent)
    bias : array_like, shape (n_latent,)
    noise_precision : float or array_like, shape (n_visible,)
        beta > 0.
    """
    v, w, b, beta = check_bsc_inputs(v, weights, bias, noise_precision)
    h = as_float_array(h, "h", ndim=(1, 2))
    h2 = h[None] if h.ndim == 1 else h
    if h2.shape[1] != b.size or np.any((h2 != 0) & (h2 != 1)):
        raise ValueError(f"h must be binary with {b.size} columns, got shape {h.shape}")
    log_prior = h2 @ log_expit(b) + (1 - h2) @ log_expit(-b)
    resid = v[None, :] - h2 @ w.T
    log_lik = 0.5 * (np.log(beta).sum() - v.size * LOG_2PI) - 0.5 * (resid**2) @ beta
    out = log_prior + log_lik
    return out[0] if h.ndim == 1 else out


def bsc_exact_posterior(v, weights, bias, noise_precision) -> dict:
    """Exact posterior of binary sparse coding by enumerating all 2^n codes (n <= 20).

    Returns
    -------
    dict
        ``codes`` (2^n, n), ``log_posterior`` (2^n,), ``log_evidence`` (float) and
        ``marginals`` (n,), the exact p(h_i = 1 | v).
    """
    v, w, b, beta = check_bsc_inputs(v, weights, bias, noise_precision)
    check_enumerable(b, 20)
    n = b.size
    codes = np.array(list(product((0.0, 1.0), repeat=n)))
    log_joint = bsc_log_joint(codes, v, w, b, beta)
    log_evidence = float(logsumexp(log_joint))
    log_post = log_joint - log_evidence
    return {"codes": codes, "log_posterior": log_post, "log_evidence": log_evidence,
            "marginals": np.exp(log_post) @ codes}


def bsc_log_joint_table(v, weights, bias, noise_precision: float
                        ) -> tuple[np.ndarray, np.ndarray]:
    """log p(v_n, h) of binary sparse coding for every row v_n and every code h (ch. 4).

    The enumeration behind :func:`bsc_log_likelihood`, :func:`bsc_exact_moments` and the
    exact E-step of :func:`elbo_lib.mean_field.bsc_variational_em`; n_latent <= 16.

    Parameters
    ----------
    v : array_like, shape (N, n_visible)
    weights : array_like, shape (n_visible, n_latent)
    bias : array_like, shape (n_latent,)
    noise_precision : float
        beta > 0.

    Returns
    -------
    codes : numpy.ndarray, shape (2^n_latent, n_latent)
        All binary codes.
    log_joint : numpy.ndarray, shape (N, 2^n_latent)
    """
    v, w, b, beta = check_bsc_batch_inputs(v, weights, bias, noise_precision)
    check_enumerable(b, 16)
    codes = np.array(list(product((0.0, 1.0), repeat=b.size)))
    log_prior = codes @ log_expit(b) + (1 - codes) @ log_expit(-b)
    means = codes @ w.T                                          # (C, n_v)
    sq = ((v**2).sum(axis=1)[:, None] - 2 * v @ means.T + (means**2).sum(axis=1)[None, :])
    return codes, (log_prior[None, :] + 0.5 * v.shape[1] * (np.log(beta) - LOG_2PI)
            - 0.5 * beta * np.maximum(sq, 0.0))


def bsc_log_likelihood(v, weights, bias, noise_precision: float) -> np.ndarray:
    """Exact log p(v_n) of binary sparse coding for every row, by enumerating 2^n codes.

    Returns shape (N,). n_latent <= 16. Chapter 4's oracle for variational EM.
    """
    _, log_joint = bsc_log_joint_table(v, weights, bias, noise_precision)
    return logsumexp(log_joint, axis=1)


def bsc_exact_moments(v, weights, bias, noise_precision: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact posterior moments of binary sparse coding for every row, by enumeration (ch. 4).

    Returns
    -------
    mean : numpy.ndarray, shape (N, n_latent)
        E[h_n | v_n].
    second : numpy.ndarray, shape (N, n_latent, n_latent)
        E[h_n h_n^T | v_n]; the exact posterior covariance is second - mean mean^T.
    """
    codes, log_joint = bsc_log_joint_table(v, weights, bias, noise_precision)
    post = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
    return post @ codes, np.einsum("nc,ci,cj->nij", post, codes, codes)


# ---------------------------------------------------------------------------------------
# Bayesian mixture with Dirichlet weights: exact evidence over set partitions (chapter 4)
# ---------------------------------------------------------------------------------------
def set_partitions(n: int) -> np.ndarray:
    """Every partition of {0, ..., n-1} as a restricted growth string (chapter 4).

    Row r gives the block of each element; element 0 is in block 0 and each element's
    block is at most 1 + the largest block before it. There are Bell(n) rows
    (Bell(10) = 115975); n <= 12.
    """
    n = check_positive_int(n, "n")
    if n > 12:
        raise ValueError(f"n must be <= 12 (Bell(13) = 27644437 partitions), got {n}")
    rgs = np.zeros((1, 1), dtype=np.int8)
    for _ in range(1, n):
        top = rgs.max(axis=1)
        reps = top.astype(np.int64) + 2                       # labels 0 .. top + 1
        rows = np.repeat(rgs, reps, axis=0)
        offsets = np.repeat(np.cumsum(reps) - reps, reps)
        labels = (np.arange(reps.sum()) - offsets).astype(np.int8)
        rgs = np.hstack([rows, labels[:, None]])
    return rgs


def dirichlet_mixture_log_evidence(x, n_components: int, prior_var: float,
                                   alpha0: float) -> float:
    """Exact log p(x) of the Dirichlet-weight mixture, by summing over set partitions (ch. 4).

    Given the assignments, the means and the weights integrate out in closed form:
    each block b of n_b points with sum S_b contributes the Gaussian marginal likelihood
    -(n_b d / 2) log 2 pi - (d / 2) log(1 + n_b sigma^2) - ||x||^2 / 2
    + sigma^2 ||S_b||^2 / (2 (1 + n_b sigma^2)), and the labels the Dirichlet-multinomial
    log Gamma(K alpha0) - log Gamma(n + K alpha0) + sum_b [log Gamma(n_b + alpha0)
    - log Gamma(alpha0)]. A partition into B <= K blocks stands for K! / (K - B)! labelled
    assignments with the same probability. The sum runs over all Bell(n) partitions:
    n <= 12.

    Parameters
    ----------
    x : array_like, shape (n, d) or (n,)
        n <= 12 points.
    n_components : int
        K >= 1.
    prior_var, alpha0 : float
        sigma^2 > 0 and the symmetric Dirichlet parameter.
    """
    x = as_points(x)
    n, d = x.shape
    if n > 12:
        raise ValueError(f"x must have at most 12 points for exact enumeration over set "
                         f"partitions, got {n}")
    k = check_positive_int(n_components, "n_components")
    sigma2 = check_positive(prior_var, "prior_var")
    alpha0 = check_positive(alpha0, "alpha0")
    parts = set_partitions(n)
    n_blocks = parts.max(axis=1).astype(np.int64) + 1
    parts = parts[n_blocks <= k]
    n_blocks = n_blocks[n_blocks <= k]
    onehot = (parts[:, :, None] == np.arange(min(k, n))[None, None, :]).astype(np.float64)
    sizes = onehot.sum(axis=1)                                # (P, B)
    sums = np.einsum("pib,id->pbd", onehot, x)                # (P, B, d)
    used = sizes > 0
    log_ml = np.where(used, -0.5 * d * np.log1p(sizes * sigma2)
                      + 0.5 * sigma2 * (sums**2).sum(axis=2) / (1 + sizes * sigma2), 0.0)
    log_labels = np.where(used, gammaln(sizes + alpha0) - gammaln(alpha0), 0.0)
    log_terms = (log_ml.sum(axis=1) + log_labels.sum(axis=1)
                 + gammaln(k + 1) - gammaln(k - n_blocks + 1))
    const = (gammaln(k * alpha0) - gammaln(n + k * alpha0)
             - 0.5 * n * d * LOG_2PI - 0.5 * (x**2).sum())
    return float(logsumexp(log_terms) + const)


# --------------------------------------------------------------------------------------
# Bayesian logistic regression (chapter 5): exact MAP and Laplace approximation
# --------------------------------------------------------------------------------------

class BayesianLogisticRegression:
    """Bayesian logistic regression: w ~ N(0, s^2 I), y_i ~ Bernoulli(sigmoid(x_i^T w)).

    The non-conjugate model of chapter 5's black-box VI section. Include a column of
    ones in X for an intercept (it then gets the same prior).

    Parameters
    ----------
    x : array_like, shape (n, D)
    y : array_like of 0/1, shape (n,)
    prior_std : float
        Prior standard deviation s of every weight.
    """

    def __init__(self, x, y, prior_std: float = 1.0) -> None:
        self.x = as_float_array(x, "x", ndim=2)
        y = as_float_array(y, "y", ndim=1)
        if y.shape[0] != self.x.shape[0]:
            raise ValueError(f"x and y must have the same number of rows, got "
                             f"{self.x.shape[0]} and {y.shape[0]}")
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("y must contain only 0 and 1")
        self.y = y
        self.prior_std = check_positive(prior_std, "prior_std")
        self.dim = self.x.shape[1]
        self._xt = torch.as_tensor(self.x, dtype=torch.float64)
        self._yt = torch.as_tensor(self.y, dtype=torch.float64)

    def log_joint(self, w: torch.Tensor) -> torch.Tensor:
        """log p(y, w | X) for weights of shape (S, D), returning shape (S,).

        Stable form: log sigmoid(a) y + log sigmoid(-a) (1 - y) = y a - softplus(a).
        """
        try:
            w = torch.as_tensor(w, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"w must be a torch.Tensor or numeric array-like, "
                            f"got {type(w).__name__}") from exc
        if w.ndim != 2 or w.shape[1] != self.dim:
            raise ValueError(f"w must have shape (S, {self.dim}), got {tuple(w.shape)}")
        check_finite_tensor(w, "w")
        logits = w @ self._xt.T
        log_lik = (self._yt * logits - torch.nn.functional.softplus(logits)).sum(dim=1)
        log_prior = (-0.5 * (w / self.prior_std) ** 2).sum(dim=1) - self.dim * (
            math.log(self.prior_std) + 0.5 * LOG_2PI)
        return log_lik + log_prior

    def _grad_hess(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = 1.0 / (1.0 + np.exp(-(self.x @ w)))
        grad = self.x.T @ (self.y - p) - w / self.prior_std**2
        hess = -(self.x.T * (p * (1 - p))) @ self.x - np.eye(self.dim) / self.prior_std**2
        return grad, hess

    def map_estimate(self, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
        """Maximum a posteriori w by Newton's method (the log posterior is concave).

        Raises
        ------
        RuntimeError
            If Newton's method has not converged after ``max_iter`` steps.
        """
        tol = check_nonnegative(tol, "tol")
        w = np.zeros(self.dim)
        for _ in range(check_positive_int(max_iter, "max_iter")):
            grad, hess = self._grad_hess(w)
            step = np.linalg.solve(hess, grad)
            w = w - step
            if np.max(np.abs(step)) < tol:
                return w
        raise RuntimeError(f"Newton's method did not converge in {max_iter} iterations")

    def laplace(self) -> tuple[np.ndarray, np.ndarray]:
        """Laplace approximation N(w_MAP, (-Hessian of log posterior at w_MAP)^{-1})."""
        w = self.map_estimate()
        _, hess = self._grad_hess(w)
        chol = np.linalg.cholesky(-hess)
        inv_chol = np.linalg.solve(chol, np.eye(self.dim))
        return w, inv_chol.T @ inv_chol

    @staticmethod
    def predictive_proba(x, weights) -> np.ndarray:
        """Monte Carlo posterior predictive P(y = 1 | x) averaged over weight samples.

        Parameters
        ----------
        x : array_like, shape (m, D)
        weights : array_like, shape (S, D) (or (D,) for a point estimate)
        """
        x = as_float_array(x, "x", ndim=2)
        weights = np.atleast_2d(as_float_array(weights, "weights", ndim=(1, 2)))
        if weights.shape[1] != x.shape[1]:
            raise ValueError(f"weights must have {x.shape[1]} columns, got {weights.shape}")
        logits = x @ weights.T
        return (0.5 * (1 + np.tanh(0.5 * logits))).mean(axis=1)
