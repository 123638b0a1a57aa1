"""EM for a Gaussian mixture as a scikit-learn-like estimator (chapter 2).

:class:`GaussianMixtureEM` runs EM as coordinate ascent on L(q, theta), on the whole
data at once or in chunks of rows (``chunk_size``), and reproduces scikit-learn's
``GaussianMixture(covariance_type="full")`` from the same initial parameters.
"""

from __future__ import annotations

import numpy as np

from elbo_lib._validation import (
    LOG_2PI,
    as_generator,
    check_fit_controls,
    check_positive_int,
    check_spd,
    check_symmetric,
)
from elbo_lib.coordinate_ascent import AscentTrace, coordinate_ascent
from elbo_lib.em.mixture import (
    _COUNT_EPS,
    _check_data,
    _check_floor,
    _check_means,
    _check_weights,
    _elbo_terms,
    _entropy,
    _floor_covariances,
    _normalise,
    _posterior,
    _weighted_log_prob,
    weighted_gaussian_m_step,
)
from elbo_lib.em.state import _EMSettings, _EMState, _mean_log_likelihood_rule
from elbo_lib.gaussians import gaussian_log_density, precision_cholesky


# ---------------------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------------------
class GaussianMixtureEM:
    """Gaussian mixture with full covariances fitted by EM (chapter 2).

    A scikit-learn-like estimator: parameters in the constructor, :meth:`fit` returns
    ``self``, learned attributes end in ``_``. Given the same initial parameters,
    ``tol``, ``reg_covar`` and ``max_iter`` it reproduces
    ``sklearn.mixture.GaussianMixture(covariance_type="full")``.

    Parameters
    ----------
    n_components : int
        Number of mixture components K (>= 1, at most the number of points).
    tol : float
        Stop when the per-sample mean log-likelihood (measured in the E-step) changes by
        less than ``tol`` between two iterations (scikit-learn's rule; default 1e-3).
    reg_covar : float
        The covariance floor eps: every covariance has all eigenvalues >= eps after each
        M-step. It keeps a component that collapses onto one point (where the
        likelihood is unbounded) from producing a singular matrix (default 1e-6, as
        scikit-learn).
    covariance_floor : {"add", "clip"}
        How the floor is applied. ``"add"`` (default) adds eps I to the weighted
        covariance, exactly as scikit-learn does; the M-step is then not an exact
        maximiser and the log-likelihood can dip by at most ``floor_shortfall_[t]``.
        ``"clip"`` raises eigenvalues below eps to eps, the exact maximiser of the bound
        over {Sigma >= eps I}, so the log-likelihood never decreases (given a start
        that satisfies the floor).
    max_iter : int
        Maximum number of EM iterations (default 100).
    weights_init, means_init : array_like, optional
        Initial pi (K,) and mu (K, d).
    covariances_init, precisions_init : array_like, optional
        Initial Sigma or Sigma^{-1} (K, d, d); at most one of them.
    rng : numpy.random.Generator or int, optional
        Used only for parameters that are not given: means start at K distinct data
        points, weights uniform, covariances at the data covariance plus the floor.
    keep_history : bool
        Also store the parameters after every iteration in ``history_`` (for figures).
    chunk_size : int, optional
        If given, run the E-step over blocks of this many rows and accumulate the
        M-step's sufficient statistics (counts, sums and scatter matrices of the
        responsibility-weighted points) instead of holding the (n, K) responsibilities:
        memory beyond X is then O(chunk_size * K + K d^2), whatever n (the default
        initial covariance, the data covariance, takes one copy of X). Same iterations
        and answers as the default to round-off (the scatter is accumulated about the
        data mean). ``L(q_t, theta_t)`` is computed from the same statistics in closed
        form. Not with ``keep_history``. Used by the benchmarks (n = 1e6).

    Attributes
    ----------
    weights_, means_, covariances_, precisions_cholesky_ : numpy.ndarray
        The fitted theta.
    n_iter_ : int
        EM iterations run (one E-step and one M-step each).
    converged_ : bool
        Whether the ``tol`` rule stopped the run before ``max_iter``.
    lower_bound_ : float
        Per-sample mean log-likelihood measured at the last E-step (scikit-learn's
        ``lower_bound_``: it is the bound, which is tight there).
    log_likelihood_ : numpy.ndarray, shape (n_iter_ + 1,)
        log p(x | theta_t) in nats for t = 0 (initial) .. n_iter_ (final).
    elbo_after_e_step_, elbo_after_m_step_ : numpy.ndarray, shape (n_iter_,)
        L(q_t, theta_{t-1}) right after E-step t and L(q_t, theta_t) right after M-step t.
    trace_ : elbo_lib.coordinate_ascent.AscentTrace
        The record of :func:`elbo_lib.coordinate_ascent.coordinate_ascent`: the bound
        after every E-step and M-step (the two arrays above are its columns).
    floor_shortfall_ : numpy.ndarray, shape (n_iter_,)
        How far each M-step fell short of the exact maximum of L(q_t, .) because of the
        floor (0 with ``"clip"``); log p(x | theta_t) >= log p(x | theta_{t-1}) minus it.
        ``inf`` (with ``"add"``) at a step where a component collapsed (its weighted
        covariance S_k is singular, e.g. on at most d points): L is then unbounded above
        without the floor, so that step's log-likelihood has no bound on its dip.
    history_ : list of (weights, means, covariances), length n_iter_ + 1
        Only if ``keep_history``.

    References
    ----------
    Dempster, Laird and Rubin (1977); Neal and Hinton (1998); Bishop (2006), ch. 9;
    Pedregosa et al. (2011), scikit-learn.
    """

    def __init__(self, n_components: int, *, tol: float = 1e-3, reg_covar: float = 1e-6,
                 max_iter: int = 100, weights_init=None, means_init=None,
                 covariances_init=None, precisions_init=None, rng=None,
                 keep_history: bool = False, covariance_floor: str = "add",
                 chunk_size: int | None = None) -> None:
        # scikit-learn's convention: __init__ stores every argument as given; fit checks them
        self.n_components = n_components
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.covariance_floor = covariance_floor
        self.weights_init = weights_init
        self.means_init = means_init
        self.covariances_init = covariances_init
        self.precisions_init = precisions_init
        self.rng = rng
        self.keep_history = keep_history
        self.chunk_size = chunk_size

    def _check_hyperparameters(self) -> _EMSettings:
        """The constructor arguments, validated into a new object (called by :meth:`fit`).

        The arguments themselves are left as given (scikit-learn's rule: ``__init__``
        stores, ``fit`` validates into what it uses), so ``get``-ting a parameter returns
        what the caller passed.
        """
        if self.covariances_init is not None and self.precisions_init is not None:
            raise ValueError("give covariances_init or precisions_init, not both")
        tol, reg_covar, max_iter = check_fit_controls(self.tol, self.reg_covar, self.max_iter)
        chunk_size = (None if self.chunk_size is None
                      else check_positive_int(self.chunk_size, "chunk_size"))
        keep_history = bool(self.keep_history)
        if chunk_size is not None and keep_history:
            raise ValueError("chunk_size and keep_history cannot be combined")
        return _EMSettings(check_positive_int(self.n_components, "n_components"), tol,
                           reg_covar, max_iter, _check_floor(self.covariance_floor),
                           keep_history, chunk_size)

    # -- initialisation -------------------------------------------------------------
    def _initial_parameters(self, X, settings: _EMSettings):
        n, d = X.shape
        k = settings.n_components
        if self.means_init is None:
            idx = as_generator(self.rng).choice(n, size=k, replace=False)
            means = X[idx].copy()
        else:
            means = _check_means(self.means_init, k, d, "means_init")
        weights = (np.full(k, 1.0 / k) if self.weights_init is None
                   else _check_weights(self.weights_init, k, "weights_init"))
        if self.precisions_init is not None:
            prec = check_symmetric(self.precisions_init, "precisions_init", (k, d, d))
            try:
                cov = np.linalg.inv(prec)
                prec_chol = precision_cholesky(cov)
            except (ValueError, np.linalg.LinAlgError) as exc:
                raise ValueError("precisions_init must be positive definite") from exc
            cov = 0.5 * (cov + cov.transpose(0, 2, 1))
        else:
            if self.covariances_init is None:
                data_cov = np.atleast_2d(np.cov(X, rowvar=False, bias=True))
                cov = np.repeat((data_cov + settings.reg_covar * np.eye(d))[None], k, axis=0)
            else:
                cov, _ = check_spd(self.covariances_init, "covariances_init", (k, d, d))
            prec_chol = precision_cholesky(cov)
        return weights, means, cov, prec_chol

    # -- fitting ----------------------------------------------------------------------
    def fit(self, X) -> GaussianMixtureEM:
        """Run EM on ``X`` (shape (n, d)) and return ``self``.

        The E-step and M-step are the two steps of :func:`elbo_lib.coordinate_ascent.
        coordinate_ascent`, which records L(q, theta) after each in ``trace_``.

        Raises
        ------
        ValueError
            If X is not a finite 2-D array, has fewer points than components, a
            hyperparameter is out of range, or an initial parameter has the wrong shape
            or is not a valid distribution / positive-definite matrix.
        """
        settings = self._check_hyperparameters()
        X = _check_data(X)
        n, _ = X.shape
        if n < settings.n_components:
            raise ValueError(f"n_components={settings.n_components} is larger than the "
                             f"number of points n={n}: need n >= n_components")
        if settings.chunk_size is not None:
            return self._fit_chunked(X, settings)
        weights, means, cov, prec_chol = self._initial_parameters(X, settings)
        s = _EMState(theta=(weights, means, cov), prec_chol=prec_chol,
                     wlp=_weighted_log_prob(X, weights, means, prec_chol))
        history = [s.theta] if settings.keep_history else None

        def e_step() -> float:  # q_t = p(z | x, theta_{t-1}): the bound becomes tight
            log_norm, s.resp, log_resp = _normalise(s.wlp)
            s.entropy = _entropy(s.resp, log_resp)
            s.log_lik.append(float(log_norm.sum()))
            return _elbo_terms(s.resp, s.wlp, s.entropy)

        def m_step() -> float:  # theta_t = argmax_theta L(q_t, theta)
            *s.theta, shortfall = weighted_gaussian_m_step(X, s.resp, settings.reg_covar,
                                                           settings.covariance_floor)
            s.shortfalls.append(shortfall)
            s.prec_chol = precision_cholesky(s.theta[2])
            s.wlp = _weighted_log_prob(X, s.theta[0], s.theta[1], s.prec_chol)
            if history is not None:
                history.append(tuple(s.theta))
            return _elbo_terms(s.resp, s.wlp, s.entropy)

        trace = coordinate_ascent({"E": e_step, "M": m_step},
                                  stop=_mean_log_likelihood_rule(s, n, settings.tol),
                                  max_iter=settings.max_iter)
        s.log_lik.append(float(_normalise(s.wlp)[0].sum()))
        self._store(s, trace, history, X.shape[1])
        return self

    def _store(self, s: _EMState, trace: AscentTrace, history, n_features: int) -> None:
        self.weights_, self.means_, self.covariances_ = s.theta
        self.precisions_cholesky_ = s.prec_chol
        self.n_iter_, self.converged_, self.lower_bound_ = (trace.n_iter, trace.converged,
                                                            s.lower_bound)
        self.trace_ = trace
        self.log_likelihood_ = np.asarray(s.log_lik)
        self.elbo_after_e_step_ = trace.after("E")
        self.elbo_after_m_step_ = trace.after("M")
        self.floor_shortfall_ = np.asarray(s.shortfalls)
        self.history_ = history
        self.n_features_in_ = n_features

    # -- chunked fitting (bounded memory) ----------------------------------------------
    def _chunk_pass(self, X, center, weights, means, prec_chol, stats: bool,
                    chunk_size: int):
        """One pass over blocks of rows: log p(x), and the E-step's statistics if asked.

        Returns (log p(x), E_q[log p(x, z)], H[q], N_k, sum_i r_ik y_i, sum_i r_ik y_i
        y_i^T) with y_i = x_i - center and q the posterior at the given theta.
        """
        n, d = X.shape
        k = means.shape[0]
        with np.errstate(divide="ignore"):
            log_w = np.log(weights)
        shifted_means = means - center
        log_lik = energy = entropy = 0.0
        counts, sx, sxx = np.zeros(k), np.zeros((k, d)), np.zeros((k, d, d))
        for start in range(0, n, chunk_size):
            ys = X[start:start + chunk_size] - center
            wlp = gaussian_log_density(ys, shifted_means, prec_chol) + log_w
            log_norm, resp, log_resp = _normalise(wlp)
            log_lik += float(log_norm.sum())
            if not stats:
                continue
            entropy += _entropy(resp, log_resp)
            energy += _elbo_terms(resp, wlp, 0.0)
            counts += resp.sum(axis=0)
            sx += resp.T @ ys
            sqrt_resp = np.sqrt(resp)
            for j in range(k):
                diff = ys * sqrt_resp[:, j, None]
                sxx[j] += diff.T @ diff
        return log_lik, energy, entropy, counts, sx, sxx

    def _fit_chunked(self, X, settings: _EMSettings) -> GaussianMixtureEM:
        n, d = X.shape
        weights, means, cov, prec_chol = self._initial_parameters(X, settings)
        center = X.mean(axis=0)
        s = _EMState(theta=(weights, means, cov), prec_chol=prec_chol)

        def e_step() -> float:  # the posterior's statistics, block by block
            ll, energy, s.entropy, *s.stats = self._chunk_pass(
                X, center, *s.theta[:2], s.prec_chol, True, settings.chunk_size)
            s.log_lik.append(ll)
            return energy + s.entropy

        def m_step() -> float:
            # from the statistics, as weighted_gaussian_m_step (same count offset and floor)
            n_raw, sx, sxx = s.stats
            counts = n_raw + _COUNT_EPS
            weights = counts / counts.sum()
            m = sx / counts[:, None]
            outer = m[:, :, None] * sx[:, None, :]
            scatter = (sxx - outer - outer.transpose(0, 2, 1)
                       + n_raw[:, None, None] * m[:, :, None] * m[:, None, :])
            cov = scatter / counts[:, None, None]
            s.shortfalls.append(_floor_covariances(cov, counts, settings.reg_covar,
                                                   settings.covariance_floor))
            s.theta = (weights, m + center, cov)
            s.prec_chol = prec_chol = precision_cholesky(cov)
            # L(q_t, theta_t) in closed form: sum_k N_k [log pi_k + log N(. | theta_k)]
            # with sum_i r_ik (x_i - mu_k)^T P_k (x_i - mu_k) = tr(P_k scatter_k)
            with np.errstate(divide="ignore"):
                log_w = np.log(weights)
            log_det = np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)
            maha = np.einsum("kij,kil,klj->k", prec_chol, scatter, prec_chol)
            terms = n_raw * (log_w + log_det - 0.5 * d * LOG_2PI) - 0.5 * maha
            return float(np.where(n_raw > 0, terms, 0.0).sum()) + s.entropy

        trace = coordinate_ascent({"E": e_step, "M": m_step},
                                  stop=_mean_log_likelihood_rule(s, n, settings.tol),
                                  max_iter=settings.max_iter)
        s.log_lik.append(self._chunk_pass(X, center, *s.theta[:2], s.prec_chol, False,
                                          settings.chunk_size)[0])
        self._store(s, trace, None, d)
        return self

    # -- prediction ---------------------------------------------------------------------
    def _check_fitted(self, X) -> np.ndarray:
        if not hasattr(self, "weights_"):
            raise ValueError("this GaussianMixtureEM is not fitted yet: call fit(X) first")
        X = _check_data(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the model was fitted with "
                             f"{self.n_features_in_}")
        return X

    def score_samples(self, X) -> np.ndarray:
        """log p(x_i | theta) for every row of X."""
        X = self._check_fitted(X)
        return _posterior(X, self.weights_, self.means_, self.precisions_cholesky_)[0]

    def score(self, X) -> float:
        """Per-sample mean log-likelihood (scikit-learn's ``score``)."""
        return float(self.score_samples(X).mean())

    def predict_proba(self, X) -> np.ndarray:
        """Responsibilities p(z_i = k | x_i, theta), shape (n, K)."""
        X = self._check_fitted(X)
        return _posterior(X, self.weights_, self.means_, self.precisions_cholesky_)[1]

    def predict(self, X) -> np.ndarray:
        """Most probable component of every row."""
        return self.predict_proba(X).argmax(axis=1)


def _start(X, n_components, weights_init, means_init, covariances_init, rng, reg_covar):
    est = GaussianMixtureEM(n_components, weights_init=weights_init, means_init=means_init,
                            covariances_init=covariances_init, rng=rng, reg_covar=reg_covar)
    weights, means, cov, _ = est._initial_parameters(X, est._check_hyperparameters())
    return weights, means, cov


