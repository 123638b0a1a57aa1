"""Baum-Welch: EM for a Gaussian HMM, as coordinate ascent on the ELBO (chapter 2).

:class:`GaussianHMM`: its E-step is forward-backward, its M-step the weighted Gaussian
M-step of :mod:`elbo_lib.em`, and it records the bound after every half-step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from elbo_lib._validation import (
    as_float_array,
    as_generator,
    as_numeric_array,
    check_fit_controls,
    check_positive_int,
    check_probability_rows,
    check_spd,
)
from elbo_lib.coordinate_ascent import coordinate_ascent
from elbo_lib.em import weighted_gaussian_m_step
from elbo_lib.gaussians import gaussian_log_density, precision_cholesky
from elbo_lib.hmm.base import _check_lengths, _log
from elbo_lib.hmm.decoding import viterbi
from elbo_lib.hmm.posterior import _posterior, forward_backward


def _as_sequence(X) -> np.ndarray:
    X = as_float_array(X, "X", ndim=(1, 2))
    return X[:, None] if X.ndim == 1 else X



def _expected_complete_loglik(gamma_start, gamma, xi_sum, log_pi, log_A, log_B) -> float:
    """E_q[log p(x, z | theta)] from the marginals of q (0 log 0 = 0); ``gamma_start`` is
    the sum of q(z_1) over the sequences."""
    def dot(p, logv):
        return float(np.where(p > 0, p * np.where(p > 0, logv, 0.0), 0.0).sum())

    return dot(gamma_start, log_pi) + dot(xi_sum, log_A) + float((gamma * log_B).sum())



@dataclass
class _BaumWelchState:
    """What Baum-Welch's E-step and M-step share while the loop runs."""

    pi: np.ndarray
    A: np.ndarray
    means: np.ndarray
    cov: np.ndarray
    log_B: np.ndarray
    gamma: np.ndarray | None = None
    gamma_start: np.ndarray | None = None
    xi_sum: np.ndarray | None = None
    entropy: float = 0.0
    log_lik: list = field(default_factory=list)



class GaussianHMM:
    """Hidden Markov model with full-covariance Gaussian emissions, fitted by Baum-Welch.

    Baum-Welch is EM with q over whole state sequences: the E-step runs
    :func:`forward_backward` (q = exact posterior, bound tight), the M-step sets
    pi = gamma_1, A_ij proportional to sum_t xi_t(i, j), and the Gaussian means and
    covariances to gamma-weighted averages (with the ``"clip"`` covariance floor of
    :class:`elbo_lib.em.GaussianMixtureEM`). Used in chapter 2.

    Parameters
    ----------
    num_states : int
        K >= 1.
    tol : float
        Stop when log p(x | theta) (total, nats) improves by less than ``tol``.
    reg_covar : float
        Covariance floor: eigenvalues below it are raised to it after each M-step (the
        exact constrained maximiser, so Baum-Welch stays monotone).
    max_iter : int
        Maximum number of EM iterations.
    startprob_init, transmat_init, means_init, covariances_init : array_like, optional
        Initial pi (K,), A (K, K), mu (K, d), Sigma (K, d, d). Defaults: uniform pi,
        A with 1/2 on the diagonal and the rest spread evenly, means at K distinct
        random data points, covariances at the data covariance.
    rng : numpy.random.Generator or int, optional
        Used only for the default means.

    Attributes
    ----------
    startprob_, transmat_, means_, covariances_ : numpy.ndarray
    log_likelihood_ : numpy.ndarray, shape (n_iter_ + 1,)
        log p(x | theta_t), t = 0 .. n_iter_.
    elbo_after_e_step_, elbo_after_m_step_ : numpy.ndarray, shape (n_iter_,)
        L(q_t, theta_{t-1}) and L(q_t, theta_t) = E_{q_t}[log p(x, z | theta)] + H[q_t],
        the expectation from the marginals gamma and sum_t xi_t. q_t is the exact
        posterior under theta_{t-1}, so H[q_t] = log p(x | theta_{t-1}) -
        E_{q_t}[log p(x, z | theta_{t-1})], the value :func:`chain_entropy` gives from
        the per-step pairwise marginals, without that (T-1, K, K) array.
    trace_ : elbo_lib.coordinate_ascent.AscentTrace
        The bound after every E-step and M-step (the two arrays above are its columns).
    n_iter_ : int
    converged_ : bool
    """

    def __init__(self, num_states: int, *, tol: float = 1e-6, reg_covar: float = 1e-6,
                 max_iter: int = 200, startprob_init=None, transmat_init=None,
                 means_init=None, covariances_init=None, rng=None) -> None:
        self.num_states = num_states
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.startprob_init, self.transmat_init = startprob_init, transmat_init
        self.means_init, self.covariances_init = means_init, covariances_init
        self.rng = rng

    def _check_hyperparameters(self) -> tuple[int, float, float, int]:
        """The constructor arguments, validated and returned as ``(num_states, tol,
        reg_covar, max_iter)``; :meth:`fit` calls it and leaves the arguments as given
        (scikit-learn's rule)."""
        return (check_positive_int(self.num_states, "num_states"),
                *check_fit_controls(self.tol, self.reg_covar, self.max_iter))

    def _init_params(self, X, num_states: int, reg_covar: float):
        T, d = X.shape
        K = num_states
        pi = (np.full(K, 1.0 / K) if self.startprob_init is None
              else check_probability_rows(self.startprob_init, "startprob_init", (K,)))
        if self.transmat_init is None:
            A = np.full((K, K), 0.5 / max(K - 1, 1)) if K > 1 else np.ones((1, 1))
            if K > 1:
                np.fill_diagonal(A, 0.5)
        else:
            A = check_probability_rows(self.transmat_init, "transmat_init", (K, K))
        if self.means_init is None:
            means = X[as_generator(self.rng).choice(T, size=K, replace=False)].copy()
        else:
            means = as_float_array(self.means_init, "means_init", ndim=2)
            if means.shape != (K, d):
                raise ValueError(f"means_init must have shape ({K}, {d}), got {means.shape}")
        if self.covariances_init is None:
            c = np.atleast_2d(np.cov(X, rowvar=False, bias=True)) + reg_covar * np.eye(d)
            cov = np.repeat(c[None], K, axis=0)
        else:
            cov, _ = check_spd(self.covariances_init, "covariances_init", (K, d, d))
        return pi, A, means, cov

    def emission_log_prob(self, X, means=None, covariances=None) -> np.ndarray:
        """log N(x_t | mu_k, Sigma_k), shape (T, K) (fitted parameters by default)."""
        X = _as_sequence(X)
        if means is None or covariances is None:
            X = self._check_fitted(X)
        means = self.means_ if means is None else means
        cov = self.covariances_ if covariances is None else covariances
        return gaussian_log_density(X, as_numeric_array(means, "means"), precision_cholesky(cov))

    def fit(self, X, lengths=None) -> GaussianHMM:
        """Run Baum-Welch on X of shape (T, d) (or (T,)); return ``self``.

        Parameters
        ----------
        X : array_like, shape (T, d) or (T,)
            One sequence, or several stacked row-wise (see ``lengths``).
        lengths : array_like of int, optional
            The lengths of the independent sequences stacked in X (summing to T;
            hmmlearn's convention). pi is then fitted to the first step of every
            sequence and A to the transitions within sequences. Default: one sequence.

        Raises
        ------
        ValueError
            If X is not finite, has fewer than 2 steps or fewer steps than states,
            ``lengths`` does not split it, or an initial parameter is malformed.
        TypeError
            If ``lengths`` is not a 1-D sequence of integers.
        """
        num_states, tol, reg_covar, max_iter = self._check_hyperparameters()
        X = _as_sequence(X)
        T = X.shape[0]
        if T < max(2, num_states):
            raise ValueError(f"X must have at least max(2, num_states) = "
                             f"{max(2, num_states)} steps, got T={T}")
        bounds = _check_lengths(lengths, T)
        starts = bounds[:-1]
        pi, A, means, cov = self._init_params(X, num_states, reg_covar)
        s = _BaumWelchState(pi, A, means, cov, self.emission_log_prob(X, means, cov))

        def e_step() -> float:  # q_t = p(z | x, theta_{t-1}) by forward-backward
            log_pi, log_A = _log(s.pi), _log(s.A)
            ll, s.gamma, s.xi_sum, _ = _posterior(log_pi, log_A, s.log_B, False, bounds)
            s.gamma_start = s.gamma[starts].sum(axis=0)
            # q is the exact posterior under theta_{t-1}, so its entropy is
            # log p(x) - E_q[log p(x, z)] (equal to chain_entropy(gamma, xi) without the
            # (T-1, K, K) array of pairwise marginals; tests/test_hmm.py checks both)
            expected = _expected_complete_loglik(s.gamma_start, s.gamma, s.xi_sum, log_pi,
                                                 log_A, s.log_B)
            s.entropy = ll - expected
            s.log_lik.append(ll)
            return expected + s.entropy

        def m_step() -> float:  # theta_t = argmax_theta L(q_t, theta)
            s.pi = s.gamma_start / s.gamma_start.sum()
            # a state with no expected transitions out of it (it is occupied only at the
            # last step, e.g. T = 2) leaves its row of A free: keep the old row, which
            # maximises Q as well as any other
            out_mass = s.xi_sum.sum(axis=1, keepdims=True)
            s.A = np.where(out_mass > 0, s.xi_sum / np.where(out_mass > 0, out_mass, 1.0),
                           s.A)
            _, s.means, s.cov, _ = weighted_gaussian_m_step(X, s.gamma, reg_covar, "clip")
            s.log_B = self.emission_log_prob(X, s.means, s.cov)
            return (_expected_complete_loglik(s.gamma_start, s.gamma, s.xi_sum, _log(s.pi),
                                              _log(s.A), s.log_B) + s.entropy)

        def stop() -> bool:
            return len(s.log_lik) > 1 and abs(s.log_lik[-1] - s.log_lik[-2]) < tol

        trace = coordinate_ascent({"E": e_step, "M": m_step}, stop=stop, max_iter=max_iter)
        s.log_lik.append(_posterior(_log(s.pi), _log(s.A), s.log_B, False, bounds)[0])
        self.startprob_, self.transmat_, self.means_, self.covariances_ = (s.pi, s.A, s.means,
                                                                           s.cov)
        self.trace_ = trace
        self.log_likelihood_ = np.asarray(s.log_lik)
        self.elbo_after_e_step_ = trace.after("E")
        self.elbo_after_m_step_ = trace.after("M")
        self.n_iter_, self.converged_ = trace.n_iter, trace.converged
        return self

    def _check_fitted(self, X) -> np.ndarray:
        if not hasattr(self, "means_"):
            raise ValueError("this GaussianHMM is not fitted yet: call fit(X) first")
        X = _as_sequence(X)
        if X.shape[1] != self.means_.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features, the model has "
                             f"{self.means_.shape[1]}")
        return X

    def _fitted(self, X):
        X = self._check_fitted(X)
        return (_log(self.startprob_), _log(self.transmat_),
                self.emission_log_prob(X, self.means_, self.covariances_))

    def posterior(self, X, lengths=None) -> np.ndarray:
        """p(z_t = k | x_{1:T}), shape (T, K) (``lengths`` as in :meth:`fit`)."""
        return forward_backward(*self._fitted(X), lengths=lengths)[1]

    def score(self, X, lengths=None) -> float:
        """Mean log-likelihood per time step, log p(x_{1:T} | theta) / T, in nats.

        The convention of scikit-learn's ``score`` (and of
        :meth:`elbo_lib.em.GaussianMixtureEM.score`): the per-point mean, so sequences of
        different lengths compare. With ``lengths`` (as in :meth:`fit`), the sum of the
        sequences' log-likelihoods over the total number of steps.
        """
        log_pi, log_A, log_B = self._fitted(X)
        return forward_backward(log_pi, log_A, log_B, lengths=lengths)[0] / log_B.shape[0]

    def predict(self, X, lengths=None) -> np.ndarray:
        """The Viterbi path of every sequence (``lengths`` as in :meth:`fit`)."""
        log_pi, log_A, log_B = self._fitted(X)
        bounds = _check_lengths(lengths, log_B.shape[0])
        return np.concatenate([viterbi(log_pi, log_A, log_B[a:b])[0]
                               for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
