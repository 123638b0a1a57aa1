"""Models whose evidence and posterior are known in closed form: the book's oracles.

:class:`ConjugateGaussianMean` is the running example of chapter 1 and the check of
every estimator in later chapters: whatever q we try, log p(x) = ELBO(q) + KL(q || p(z|x))
can be verified exactly. :class:`BayesianLogisticRegression` (chapter 5) has no closed
form, but an exact MAP (Newton) and its Laplace approximation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.distributions import Normal

from elbo_lib._validation import LOG_2PI, as_float_array, check_positive, check_positive_int
from elbo_lib.gaussians import gaussian_entropy, gaussian_kl

__all__ = ["BayesianLogisticRegression", "ConjugateGaussianMean", "SquaredMeanModel"]



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
        self.x = as_float_array(x, "x", ndim=1)
        self.n = self.x.size
        self.noise_var = check_positive(noise_std, "noise_std") ** 2
        self.prior_mean = float(as_float_array(prior_mean, "prior_mean", ndim=0))
        self.prior_var = check_positive(prior_std, "prior_std") ** 2
        self._sum = float(self.x.sum())
        self._sum_sq = float((self.x**2).sum())
        precision = 1.0 / self.prior_var + self.n / self.noise_var
        self.posterior_var = 1.0 / precision
        self.posterior_mean = self.posterior_var * (
            self.prior_mean / self.prior_var + self._sum / self.noise_var)

    # -- closed forms ------------------------------------------------------------------
    def log_evidence(self) -> float:
        """Exact log p(x), from the Gaussian marginal of x (not via the posterior).

        Uses the matrix determinant lemma and Sherman-Morrison for
        Sigma = sigma^2 I + s_0^2 1 1^T, so it costs O(n).
        """
        n, v, s0 = self.n, self.noise_var, self.prior_var
        r = self.x - self.prior_mean
        log_det = (n - 1) * np.log(v) + np.log(v + n * s0)
        quad = (r @ r) / v - s0 * r.sum() ** 2 / (v * (v + n * s0))
        return float(-0.5 * (n * LOG_2PI + log_det + quad))

    def _check_q(self, q_mean, q_var):
        q_mean = as_float_array(q_mean, "q_mean")
        q_var = check_positive(q_var, "q_var", allow_array=True)
        return np.broadcast_arrays(q_mean, q_var)

    def expected_log_likelihood(self, q_mean, q_var):
        """E_q[log p(x | z)] for q = N(q_mean, q_var), elementwise over arrays of q."""
        m, v = self._check_q(q_mean, q_var)
        sq = self._sum_sq - 2 * m * self._sum + self.n * (m**2 + v)
        return -0.5 * self.n * (LOG_2PI + np.log(self.noise_var)) - 0.5 * sq / self.noise_var

    def kl_to_prior(self, q_mean, q_var):
        """KL(q || p(z)) for q = N(q_mean, q_var)."""
        m, v = self._check_q(q_mean, q_var)
        return gaussian_kl(m, v, self.prior_mean, self.prior_var)

    def elbo(self, q_mean, q_var):
        """Exact ELBO(q) = E_q[log p(x | z)] - KL(q || p(z)) for q = N(q_mean, q_var).

        Equivalently E_q[log p(x, z)] + H[q]; :meth:`elbo_from_entropy` computes it that
        way and the tests check the two readings agree.
        """
        return self.expected_log_likelihood(q_mean, q_var) - self.kl_to_prior(q_mean, q_var)

    def elbo_from_entropy(self, q_mean, q_var):
        """ELBO as expected log-joint plus entropy: E_q[log p(x|z)] + E_q[log p(z)] + H[q]."""
        m, v = self._check_q(q_mean, q_var)
        e_log_prior = -0.5 * (LOG_2PI + np.log(self.prior_var)) - 0.5 * (
            (m - self.prior_mean) ** 2 + v) / self.prior_var
        return self.expected_log_likelihood(m, v) + e_log_prior + gaussian_entropy(v)

    def kl_to_posterior(self, q_mean, q_var):
        """KL(q || p(z | x)) for q = N(q_mean, q_var): the gap log p(x) - ELBO(q)."""
        m, v = self._check_q(q_mean, q_var)
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
        """log p(x | z) for a tensor of z values (any shape), differentiable in z."""
        z = torch.as_tensor(z, dtype=torch.float64)
        sq = self._sum_sq - 2 * z * self._sum + self.n * z**2
        return -0.5 * self.n * (LOG_2PI + np.log(self.noise_var)) - 0.5 * sq / self.noise_var

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log p(x | z) + log p(z), elementwise over a tensor of z values."""
        z = torch.as_tensor(z, dtype=torch.float64)
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
        self.x = as_float_array(x, "x", ndim=1)
        self.n = self.x.size
        self.noise_var = check_positive(noise_std, "noise_std") ** 2
        self.prior_mean = float(as_float_array(prior_mean, "prior_mean", ndim=0))
        self.prior_var = check_positive(prior_std, "prior_std") ** 2
        self._sum = float(self.x.sum())
        self._sum_sq = float((self.x**2).sum())

    def log_joint(self, z):
        """log p(x, z) elementwise for a NumPy array or a (differentiable) torch tensor."""
        lib = torch if isinstance(z, torch.Tensor) else np
        if lib is np:
            z = np.asarray(z, dtype=np.float64)
        u = z * z
        sq = self._sum_sq - 2.0 * u * self._sum + self.n * u * u
        log_lik = -0.5 * self.n * (LOG_2PI + np.log(self.noise_var)) - 0.5 * sq / self.noise_var
        log_prior = (-0.5 * (LOG_2PI + np.log(self.prior_var))
                     - 0.5 * (z - self.prior_mean) ** 2 / self.prior_var)
        return log_lik + log_prior


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
        w = torch.as_tensor(w, dtype=torch.float64)
        if w.ndim != 2 or w.shape[1] != self.dim:
            raise ValueError(f"w must have shape (S, {self.dim}), got {tuple(w.shape)}")
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
