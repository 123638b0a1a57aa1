"""Expectation-maximisation for Gaussian mixtures, as coordinate ascent on the ELBO.

Chapter 2 of the book. For a mixture p(x, z | theta) = prod_i pi_{z_i} N(x_i | mu_{z_i},
Sigma_{z_i}) and any distribution q over the assignments z,

.. math::

    \\log p(x \\mid \\theta) = \\mathcal L(q, \\theta)
        + \\mathrm{KL}\\big(q(z) \\,\\|\\, p(z \\mid x, \\theta)\\big),
    \\qquad
    \\mathcal L(q, \\theta) = \\sum_{i,k} r_{ik}\\,[\\log \\pi_k + \\log \\mathcal N(x_i \\mid
        \\mu_k, \\Sigma_k)] - \\sum_{i,k} r_{ik} \\log r_{ik},

with r_{ik} = q(z_i = k). The E-step sets r to the exact posterior (the bound becomes
tight), the M-step maximises L over theta in closed form (Dempster, Laird and Rubin
1977; Neal and Hinton 1998; Bishop 2006, section 9.4).

The implementation follows scikit-learn's ``GaussianMixture(covariance_type="full")``
step for step (same covariance floor ``reg_covar``, same stopping rule on the change of
the per-sample mean log-likelihood, same ``max_iter``), so that both give the same answer
from the same initial parameters; it is faster because every component's log-density
comes from one BLAS matrix product per block of rows, and it records the ELBO after
every E-step and M-step for free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import gammaln, multigammaln

from elbo_lib._validation import (
    LOG_2PI,
    as_float_array,
    as_generator,
    check_fit_controls,
    check_nonnegative,
    check_positive_int,
    check_probability_rows,
    check_real,
    check_spd,
    check_symmetric,
    power_of_two_scale,
)
from elbo_lib.coordinate_ascent import AscentTrace, coordinate_ascent
from elbo_lib.gaussians import gaussian_log_density, precision_cholesky

__all__ = [
    "GaussianMixtureEM",
    "gmm_elbo",
    "gmm_log_likelihood",
    "gmm_responsibilities",
    "interpolate_parameters",
    "bound_along_path",
    "match_components",
    "random_start",
    "EMTrace",
    "incremental_em",
    "gmm_log_prior",
    "map_em",
    "weighted_gaussian_m_step",
    "em_map_jacobian",
]

#: Number of float64 entries of the (rows, K * d) block product held in memory at once.
_BLOCK_ELEMENTS = 2**19
#: scikit-learn adds this to every component's effective count so empty components
#: do not divide by zero; we do the same so both implementations agree bit for bit.
_COUNT_EPS = 10.0 * np.finfo(np.float64).eps


# ---------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------
def _check_data(X) -> np.ndarray:
    X = as_float_array(X, "X", ndim=2)
    return X


def _check_weights(weights, n_components: int, name: str = "weights") -> np.ndarray:
    return check_probability_rows(weights, name, (n_components,))


def _check_means(means, n_components: int, n_features: int, name: str = "means"
                 ) -> np.ndarray:
    m = as_float_array(means, name, ndim=2)
    if m.shape != (n_components, n_features):
        raise ValueError(f"{name} must have shape ({n_components}, {n_features}), "
                         f"got {m.shape}")
    return m


def _check_floor(floor, name: str = "covariance_floor") -> str:
    if not isinstance(floor, str) or floor not in _FLOORS:
        raise ValueError(f"{name} must be one of {_FLOORS}, got {floor!r}")
    return floor


def _check_theta(theta, name: str, like=None, n_features: int | None = None):
    """A mixture's (weights, means, covariances), checked; shapes as ``like``'s if given."""
    if not isinstance(theta, tuple | list) or len(theta) != 3:
        raise ValueError(f"{name} must be a tuple (weights, means, covariances), "
                         f"got {type(theta).__name__}")
    if like is None:
        k, d = as_float_array(theta[1], f"{name} means", ndim=2).shape
    else:
        k, d = like[1].shape
    d = d if n_features is None else n_features
    means = _check_means(theta[1], k, d, f"{name} means")
    weights = _check_weights(theta[0], k, f"{name} weights")
    cov, _ = check_spd(theta[2], f"{name} covariances", (k, d, d))
    return weights, means, cov


def _normalise(weighted_log_prob: np.ndarray, top=None):
    """Log-sum-exp over components: per-point log p(x_i), responsibilities, log r."""
    if top is None:
        top = weighted_log_prob.max(axis=1, keepdims=True)
    e = np.exp(weighted_log_prob - top)
    s = e.sum(axis=1, keepdims=True)
    log_norm = top + np.log(s)
    resp = e / s
    log_resp = weighted_log_prob - log_norm
    return log_norm[:, 0], resp, log_resp


_FLOORS = ("add", "clip")


def _floor_covariances(cov, counts, reg_covar, floor):
    """Apply the covariance floor in place; return the M-step's shortfall in Q (nats).

    ``"add"`` (scikit-learn's rule) returns S_k + eps I. That is not the maximiser of
    Q over Sigma_k (which is S_k itself), and it falls short of it by
    delta = sum_k N_k / 2 sum_j [log(1 + eps / l_kj) - eps / (l_kj + eps)] >= 0, with l_kj
    the eigenvalues of S_k (infinite if S_k is singular). ``"clip"`` raises every
    eigenvalue below eps to eps, which is the exact maximiser of Q over the set
    {Sigma_k >= eps I}, so its shortfall is 0 and EM stays exactly monotone.
    """
    d = cov.shape[1]
    eig, vecs = np.linalg.eigh(cov)
    if floor == "add":
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = reg_covar / eig
            per = np.where(eig > 0, np.log1p(ratio) - reg_covar / (eig + reg_covar), np.inf)
        per = np.where(reg_covar == 0, 0.0, per)
        shortfall = float((0.5 * counts * per.sum(axis=1)).sum())
        cov[:, np.arange(d), np.arange(d)] += reg_covar
    else:
        cov[...] = (vecs * np.maximum(eig, reg_covar)[:, None, :]) @ vecs.transpose(0, 2, 1)
        shortfall = 0.0
    return shortfall


def weighted_gaussian_m_step(X, resp, reg_covar: float, floor: str = "add"
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Closed-form argmax over theta of L(q, theta) for fixed responsibilities.

    The M-step of a Gaussian mixture (chapter 2) and of the Gaussian emissions of a
    hidden Markov model (:mod:`elbo_lib.hmm`, with the state marginals as ``resp``):
    weights N_k / n, weighted means and weighted covariances, floored by ``reg_covar``.

    Parameters
    ----------
    X : array_like, shape (n, d)
    resp : array_like, shape (n, K)
        Non-negative weights r_ik of point i for component k.
    reg_covar : float
        Covariance floor eps >= 0.
    floor : {"add", "clip"}
        ``"add"`` returns S_k + eps I (scikit-learn's rule); ``"clip"`` raises every
        eigenvalue of S_k below eps to eps (the exact maximiser over {Sigma >= eps I}).

    Returns
    -------
    weights : numpy.ndarray, shape (K,)
    means : numpy.ndarray, shape (K, d)
    covariances : numpy.ndarray, shape (K, d, d)
    shortfall : float
        How far the floored M-step falls short of the unconstrained maximum of Q (nats);
        ``inf`` with ``floor="add"`` when a weighted covariance S_k is singular (Q is then
        unbounded without the floor), 0 with ``"clip"``.

    Raises
    ------
    ValueError
        If the shapes do not match, ``resp`` has a negative entry, ``reg_covar`` < 0 or
        ``floor`` is unknown.
    """
    X = _check_data(X)
    resp = as_float_array(resp, "resp", ndim=2)
    if resp.shape[0] != X.shape[0]:
        raise ValueError(f"resp must have {X.shape[0]} rows (one per point of X), "
                         f"got shape {resp.shape}")
    if np.any(resp < 0):
        raise ValueError(f"resp must be >= 0, got minimum {resp.min()!r}")
    reg_covar = check_nonnegative(reg_covar, "reg_covar")
    floor = _check_floor(floor, "floor")
    n, d = X.shape
    n_components = resp.shape[1]
    counts = resp.sum(axis=0) + _COUNT_EPS
    weights = counts / counts.sum()
    means = (resp.T @ X) / counts[:, None]
    cov = np.zeros((n_components, d, d))
    sqrt_resp = np.sqrt(resp)
    rows = max(1024, _BLOCK_ELEMENTS // (4 * d))
    for start in range(0, n, rows):  # blocks of rows, then one BLAS product per component
        xs, srs = X[start:start + rows], sqrt_resp[start:start + rows]
        for k in range(n_components):
            diff = xs - means[k]
            diff *= srs[:, k, None]
            cov[k] += diff.T @ diff
    cov /= counts[:, None, None]
    shortfall = _floor_covariances(cov, counts, reg_covar, floor)
    return weights, means, cov, shortfall


def _weighted_log_prob(X, weights, means, prec_chol):
    with np.errstate(divide="ignore"):
        log_w = np.log(weights)
    return gaussian_log_density(X, means, prec_chol) + log_w


def _posterior(X, weights, means, prec_chol):
    """``_normalise`` of the weighted log-densities, also for far outliers.

    A point so far from every component that each Mahalanobis distance overflows
    (norm beyond ~1e154 for unit covariances) has log p(x) = -inf in float64, the
    correctly rounded value, and the limit of the responsibilities: the components at the
    smallest Mahalanobis distance, in proportion to pi_k |Sigma_k|^(-1/2) (distances
    compared after dividing x - mu_k by a power of two, which is exact). Ordinary points
    take the ordinary path, bit for bit.
    """
    wlp = _weighted_log_prob(X, weights, means, prec_chol)
    top = wlp.max(axis=1, keepdims=True)
    far = np.isneginf(top[:, 0])
    if not far.any():
        return _normalise(wlp, top)
    with np.errstate(invalid="ignore"):
        log_norm, resp, log_resp = _normalise(wlp)
    diff = X[far][:, None, :] - means[None, :, :]
    scale = power_of_two_scale(np.nan_to_num(diff), axis=(1, 2), keepdims=True)
    with np.errstate(over="ignore", invalid="ignore"):
        y = np.einsum("nkd,kde->nke", diff / scale, prec_chol)
        maha = (y * y).sum(axis=2)
    maha = np.where(weights > 0, maha, np.inf)
    nearest = maha == maha.min(axis=1, keepdims=True)
    log_det = np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)
    with np.errstate(divide="ignore"):
        logits = np.where(nearest, np.log(weights) + log_det, -np.inf)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    resp[far] = e / e.sum(axis=1, keepdims=True)
    log_norm[far] = -np.inf
    with np.errstate(divide="ignore"):
        log_resp[far] = np.log(resp[far])
    return log_norm, resp, log_resp


def _check_params(X, weights, means, covariances):
    X = _check_data(X)
    means = as_float_array(means, "means", ndim=2)
    n_components = means.shape[0]
    means = _check_means(means, n_components, X.shape[1])
    weights = _check_weights(weights, n_components)
    cov = check_symmetric(covariances, "covariances", (n_components, X.shape[1], X.shape[1]))
    return X, weights, means, cov


def gmm_log_likelihood(X, weights, means, covariances, per_sample: bool = False):
    """log p(x | theta) = sum_i log sum_k pi_k N(x_i | mu_k, Sigma_k), in nats.

    Parameters
    ----------
    X : array_like, shape (n, d)
    weights : array_like, shape (K,)
    means : array_like, shape (K, d)
    covariances : array_like, shape (K, d, d)
    per_sample : bool
        Return the n terms log p(x_i | theta) instead of their sum.

    Returns
    -------
    float or numpy.ndarray
    """
    X, weights, means, cov = _check_params(X, weights, means, covariances)
    log_norm, _, _ = _posterior(X, weights, means, precision_cholesky(cov))
    return log_norm if per_sample else float(log_norm.sum())


def gmm_responsibilities(X, weights, means, covariances) -> np.ndarray:
    """The exact posterior r_ik = p(z_i = k | x_i, theta) (the E-step), shape (n, K)."""
    X, weights, means, cov = _check_params(X, weights, means, covariances)
    _, resp, _ = _posterior(X, weights, means, precision_cholesky(cov))
    return resp


def gmm_elbo(X, resp, weights, means, covariances) -> float:
    """L(q, theta) = E_q[log p(x, z | theta)] + H[q] for a factorised q(z_i = k) = r_ik.

    Parameters
    ----------
    X : array_like, shape (n, d)
    resp : array_like, shape (n, K)
        Rows are distributions over the K components.
    weights, means, covariances
        theta, as in :func:`gmm_log_likelihood`.

    Returns
    -------
    float
        The ELBO in nats; equals :func:`gmm_log_likelihood` when ``resp`` is the exact
        posterior at the same theta, and is smaller otherwise.
    """
    X, weights, means, cov = _check_params(X, weights, means, covariances)
    resp = as_float_array(resp, "resp", ndim=2)
    if resp.shape != (X.shape[0], means.shape[0]):
        raise ValueError(f"resp must have shape {(X.shape[0], means.shape[0])}, "
                         f"got {resp.shape}")
    resp = check_probability_rows(resp, "resp")
    wlp = _weighted_log_prob(X, weights, means, precision_cholesky(cov))
    return _elbo_terms(resp, wlp)


def _entropy(resp, log_resp=None) -> float:
    """H[q] = -sum_ik r_ik log r_ik, with 0 log 0 = 0."""
    if log_resp is None:
        with np.errstate(divide="ignore"):
            log_resp = np.log(resp)
    value = float(np.einsum("nk,nk->", resp, log_resp))
    if not np.isfinite(value):  # only when some r_ik = 0 exactly
        terms = resp * np.where(resp > 0, log_resp, 0.0)
        value = float(terms.sum())
    return -value


def _elbo_terms(resp, wlp, entropy=None) -> float:
    """sum_ik r_ik log(pi_k N(x_i | mu_k, Sigma_k)) + H[q]."""
    energy = float(np.einsum("nk,nk->", resp, wlp))
    if not np.isfinite(energy):  # a zero weight: impossible assignments contribute 0
        energy = float((resp * np.where(resp > 0, wlp, 0.0)).sum())
    return energy + (_entropy(resp) if entropy is None else entropy)


# ---------------------------------------------------------------------------------------
# the state and stopping rule of the mixture EM loops
# ---------------------------------------------------------------------------------------
class _EMSettings(NamedTuple):
    """The constructor arguments of :class:`GaussianMixtureEM`, validated by ``fit``."""

    n_components: int
    tol: float
    reg_covar: float
    max_iter: int
    covariance_floor: str
    keep_history: bool
    chunk_size: int | None


@dataclass
class _EMState:
    """What the E-step and M-step of a mixture EM share while the loop runs."""

    theta: tuple | list
    prec_chol: np.ndarray
    wlp: np.ndarray | None = None
    resp: np.ndarray | None = None
    entropy: float = 0.0
    stats: list = field(default_factory=list)
    log_lik: list = field(default_factory=list)
    shortfalls: list = field(default_factory=list)
    lower_bound: float = -np.inf


def _mean_log_likelihood_rule(state: _EMState, n: int, tol: float):
    """scikit-learn's stopping rule: the per-point mean log-likelihood measured in the
    E-step changed by less than ``tol`` since the previous iteration."""
    def stop() -> bool:
        previous, state.lower_bound = state.lower_bound, state.log_lik[-1] / n
        return abs(state.lower_bound - previous) < tol
    return stop


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


def random_start(X, n_components: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random start for EM: uniform weights, K data points as means, the data covariance.

    The means are K distinct data points drawn with ``rng``; every component starts with
    the covariance of the whole data set (chapter 2).

    Pass the same start to :class:`GaussianMixtureEM` and to scikit-learn's
    ``GaussianMixture`` (as ``weights_init``, ``means_init``, ``precisions_init`` = the
    inverse covariances) to compare the two from identical initial parameters.

    Parameters
    ----------
    X : array_like, shape (n, d)
    n_components : int
        K <= n.
    rng : numpy.random.Generator or int

    Returns
    -------
    weights : numpy.ndarray, shape (K,)
    means : numpy.ndarray, shape (K, d)
    covariances : numpy.ndarray, shape (K, d, d)
    """
    X = _check_data(X)
    k = check_positive_int(n_components, "n_components")
    if k > X.shape[0]:
        raise ValueError(f"n_components={k} is larger than the number of points "
                         f"n={X.shape[0]}")
    rng = as_generator(rng)
    means = X[rng.choice(len(X), k, replace=False)]
    cov = np.repeat(np.atleast_2d(np.cov(X, rowvar=False, bias=True))[None], k, axis=0)
    return np.full(k, 1.0 / k), means, cov


def match_components(reference, estimate) -> np.ndarray:
    """Permutation ``perm`` minimising sum_k ||reference[k] - estimate[perm[k]]||^2.

    Mixture components and HMM states are identified only up to relabelling; this
    aligns an estimate (rows, e.g. means) with the truth (Hungarian algorithm).

    Parameters
    ----------
    reference, estimate : array_like, shape (K, d) or (K,)

    Returns
    -------
    numpy.ndarray of int, shape (K,)
    """
    ref = as_float_array(reference, "reference", ndim=(1, 2))
    est = as_float_array(estimate, "estimate", ndim=(1, 2))
    if ref.shape != est.shape:
        raise ValueError(f"reference and estimate must have the same shape, "
                         f"got {ref.shape} and {est.shape}")
    ref, est = ref.reshape(ref.shape[0], -1), est.reshape(est.shape[0], -1)
    cost = ((ref[:, None, :] - est[None, :, :]) ** 2).sum(axis=2)
    _, perm = linear_sum_assignment(cost)
    return perm


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


# ---------------------------------------------------------------------------------------
# incremental EM (Neal and Hinton 1998) and MAP-EM: the same E-step, other updates
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class EMTrace:
    """Result of :func:`incremental_em` or :func:`map_em`: the fitted theta and its record.

    Attributes
    ----------
    weights_, means_, covariances_ : numpy.ndarray
        The fitted theta.
    n_iter_ : int
        Sweeps over the data (incremental EM) or EM iterations (MAP-EM).
    log_likelihood_ : numpy.ndarray
        log p(x | theta) after every recorded step (index 0: the start).
    trace_ : AscentTrace
        The bound after every step of the coordinate ascent (one step per block for
        incremental EM; the E-step's tight bound log p(x | theta) + log p(theta) for
        MAP-EM, whose M-step does not evaluate it).
    steps_per_sweep : int
        Recorded steps per pass over the data (the number of blocks; 1 for MAP-EM).
    elbo_ : numpy.ndarray or None
        (incremental EM) L(q, theta) after every block step, with q the stored
        responsibilities of all blocks (index 0: after the first full EM iteration).
    log_prior_ : numpy.ndarray or None
        (MAP-EM) log p(theta) after every step; the monotone objective is
        ``log_likelihood_ + log_prior_``.
    """

    weights_: np.ndarray
    means_: np.ndarray
    covariances_: np.ndarray
    n_iter_: int
    log_likelihood_: np.ndarray
    trace_: AscentTrace
    steps_per_sweep: int
    elbo_: np.ndarray | None = None
    log_prior_: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"EMTrace(n_iter_={self.n_iter_})"


def _stats_from_resp(X, resp):
    """Sufficient statistics (N_k, sum_i r_ik x_i, sum_i r_ik x_i x_i^T) of a block."""
    return resp.sum(axis=0), resp.T @ X, np.einsum("nk,ni,nj->kij", resp, X, X)


def _theta_from_stats(counts, sum_x, sum_xx, reg_covar, floor):
    counts = counts + _COUNT_EPS
    weights = counts / counts.sum()
    means = sum_x / counts[:, None]
    cov = sum_xx / counts[:, None, None] - np.einsum("ki,kj->kij", means, means)
    cov = 0.5 * (cov + cov.transpose(0, 2, 1))
    _floor_covariances(cov, counts, reg_covar, floor)
    return weights, means, cov


def _well_conditioned(matrix) -> bool:
    """Whether a symmetric matrix is positive definite with a condition number below
    1 / (d eps): one whose inverse and Cholesky factor float64 computes."""
    eig = np.linalg.eigvalsh(matrix)
    return bool(eig[0] > matrix.shape[0] * np.finfo(np.float64).eps * eig[-1])


def _start(X, n_components, weights_init, means_init, covariances_init, rng, reg_covar):
    est = GaussianMixtureEM(n_components, weights_init=weights_init, means_init=means_init,
                            covariances_init=covariances_init, rng=rng, reg_covar=reg_covar)
    weights, means, cov, _ = est._initial_parameters(X, est._check_hyperparameters())
    return weights, means, cov


def incremental_em(X, n_components: int, *, num_blocks: int = 10, num_sweeps: int = 20,
                   weights_init=None, means_init=None, covariances_init=None, rng=None,
                   reg_covar: float = 1e-6) -> EMTrace:
    """Incremental EM for a Gaussian mixture: one block's E-step, then an M-step (chapter 2).

    Neal and Hinton's (1998) variant of EM. The data are split into ``num_blocks``
    contiguous blocks. A first full E-step stores every block's responsibilities and
    sufficient statistics; then, block after block, the E-step is redone for that block
    only (the exact posterior of its points at the current theta), its statistics are
    swapped into the totals, and theta is set to the exact maximiser of L(q, theta) for
    the stored q. Both moves maximise L(q, theta) over one coordinate, so L never
    decreases (the covariance floor is applied by clipping, the exact constrained
    maximiser); log p(x | theta) itself may dip. The first sweep costs about as much
    as one full EM iteration but moves theta ``num_blocks`` times.

    Parameters
    ----------
    X : array_like, shape (n, d)
    n_components : int
        K (at most the number of points).
    num_blocks : int
        Number of blocks (1 <= num_blocks <= n; 1 is ordinary EM).
    num_sweeps : int
        Passes over the data after the first full E-step and M-step.
    weights_init, means_init, covariances_init, rng, reg_covar
        As for :class:`GaussianMixtureEM`.

    Returns
    -------
    EMTrace
        ``log_likelihood_`` and ``elbo_`` of length ``1 + num_sweeps * num_blocks``: the value
        after the first full EM iteration, then after every block step.
    """
    X = _check_data(X)
    n, _ = X.shape
    n_components = check_positive_int(n_components, "n_components")
    num_blocks = check_positive_int(num_blocks, "num_blocks")
    num_sweeps = check_positive_int(num_sweeps, "num_sweeps")
    if n < n_components:
        raise ValueError(f"n_components={n_components} is larger than the number of "
                         f"points n={n}: need n >= n_components")
    if num_blocks > n:
        raise ValueError(f"num_blocks={num_blocks} is larger than the number of points n={n}")
    reg_covar = check_nonnegative(reg_covar, "reg_covar")
    theta = _start(X, n_components, weights_init, means_init, covariances_init, rng,
                   reg_covar)
    bounds = np.linspace(0, n, num_blocks + 1).astype(int)
    blocks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    wlp = _weighted_log_prob(X, *theta[:2], precision_cholesky(theta[2]))
    _, resp, log_resp = _normalise(wlp)
    block_stats = [_stats_from_resp(X[b], resp[b]) for b in blocks]
    totals = [sum(st[j] for st in block_stats) for j in range(3)]
    s = _EMState(theta=_theta_from_stats(*totals, reg_covar, "clip"), prec_chol=None,
                 stats=totals)

    def record() -> float:  # log p(x | theta) and L(q, theta) for the stored q
        wlp_now = _weighted_log_prob(X, *s.theta[:2], precision_cholesky(s.theta[2]))
        s.log_lik.append(float(_normalise(wlp_now)[0].sum()))
        return _elbo_terms(resp, wlp_now, _entropy(resp, log_resp))

    def block_step(j: int, b: slice):
        def step() -> float:
            # partial E-step: exact posterior of block b at the current theta
            wlp_b = _weighted_log_prob(X[b], *s.theta[:2], precision_cholesky(s.theta[2]))
            _, resp[b], log_resp[b] = _normalise(wlp_b)
            new = _stats_from_resp(X[b], resp[b])
            s.stats = [t - old + nw for t, old, nw in zip(s.stats, block_stats[j], new,
                                                          strict=True)]
            block_stats[j] = new
            # M-step from the running totals
            s.theta = _theta_from_stats(*s.stats, reg_covar, "clip")
            return record()
        return step

    first = record()
    trace = coordinate_ascent({f"block {j}": block_step(j, b) for j, b in enumerate(blocks)},
                              stop=lambda: False, max_iter=num_sweeps, initial_bound=first)
    return EMTrace(*s.theta, n_iter_=num_sweeps, log_likelihood_=np.asarray(s.log_lik),
                   trace_=trace, steps_per_sweep=num_blocks, elbo_=trace.half_steps)


def gmm_log_prior(weights, covariances, *, weight_concentration: float,
                  cov_prior_dof: float, cov_prior_scale) -> float:
    """log p(theta): a Dirichlet on the weights and an inverse-Wishart on each covariance.

    The prior of :func:`map_em` (chapter 2): pi ~ Dir(alpha, ..., alpha) and
    Sigma_k ~ IW(nu, Psi) independently, with a flat prior on the means.

    Parameters
    ----------
    weights : array_like, shape (K,)
    covariances : array_like, shape (K, d, d)
    weight_concentration : float
        alpha >= 1.
    cov_prior_dof : float
        nu > d - 1.
    cov_prior_scale : array_like, shape (d, d)
        Psi, symmetric positive definite.
    """
    weights = as_float_array(weights, "weights", ndim=1)
    k = weights.shape[0]
    weights = _check_weights(weights, k)
    cov = as_float_array(covariances, "covariances", ndim=3)
    d = cov.shape[1]
    cov, _ = check_spd(cov, "covariances", (k, d, d))
    alpha = check_nonnegative(weight_concentration, "weight_concentration")
    nu = check_nonnegative(cov_prior_dof, "cov_prior_dof")
    if alpha < 1 or nu <= d - 1:
        raise ValueError(f"need weight_concentration >= 1 and cov_prior_dof > d - 1 = "
                         f"{d - 1}, got {alpha} and {nu}")
    psi, _ = check_spd(cov_prior_scale, "cov_prior_scale", (d, d))
    with np.errstate(divide="ignore"):
        log_dir = (gammaln(k * alpha) - k * gammaln(alpha)
                   + (alpha - 1) * float(np.sum(np.log(weights))))
    if alpha == 1:
        log_dir = float(gammaln(k))
    _, logdet_psi = np.linalg.slogdet(psi)
    _, logdet_cov = np.linalg.slogdet(cov)
    try:
        inv = np.linalg.inv(cov)
    except np.linalg.LinAlgError:
        raise ValueError("covariances must be positive definite and invertible in float64, "
                         "got a numerically singular matrix") from None
    traces = np.einsum("ij,kji->k", psi, inv)
    log_iw = (0.5 * nu * logdet_psi - 0.5 * nu * d * np.log(2.0) - multigammaln(0.5 * nu, d)
              - 0.5 * (nu + d + 1) * logdet_cov - 0.5 * traces)
    return float(log_dir + log_iw.sum())


def map_em(X, n_components: int, *, weight_concentration: float = 1.0,
           cov_prior_dof: float | None = None, cov_prior_scale=None, tol: float = 1e-6,
           max_iter: int = 500, weights_init=None, means_init=None, covariances_init=None,
           rng=None) -> EMTrace:
    """MAP-EM for a Gaussian mixture: EM on log p(x | theta) + log p(theta) (chapter 2).

    The E-step is unchanged; the M-step maximises Q(theta) + log p(theta) with the
    conjugate prior of :func:`gmm_log_prior`, in closed form:

    .. math::

        \\pi_k = \\frac{N_k + \\alpha - 1}{n + K(\\alpha - 1)}, \\qquad
        \\mu_k = \\frac{1}{N_k}\\sum_i r_{ik} x_i, \\qquad
        \\Sigma_k = \\frac{N_k S_k + \\Psi}{N_k + \\nu + d + 1},

    with S_k the weighted covariance. No covariance floor is needed: every eigenvalue of
    Sigma_k is at least lambda_min(Psi) / (n + nu + d + 1), and for a small Psi this is
    the additive floor of scikit-learn, derived instead of imposed. The objective
    log p(x | theta) + log p(theta) never decreases. The start is the data covariance S
    (as :class:`GaussianMixtureEM`'s) or, where S is singular or nearly so (constant or
    collinear data, d > n), (n S + Psi) / (n + nu + d + 1): such data need no floor either.

    Parameters
    ----------
    X : array_like, shape (n, d)
    n_components : int
    weight_concentration : float
        alpha >= 1 (1: flat prior on the weights).
    cov_prior_dof : float, optional
        nu > d - 1 (default d + 2).
    cov_prior_scale : array_like (d, d), optional
        Psi (default 1e-3 times the identity).
    tol : float
        Stop when the objective per point changes by less than ``tol``.
    max_iter : int
    weights_init, means_init, covariances_init, rng
        As for :class:`GaussianMixtureEM`.

    Returns
    -------
    EMTrace
        With ``log_likelihood_`` and ``log_prior_`` for t = 0 .. n_iter_.
    """
    X = _check_data(X)
    n, d = X.shape
    n_components = check_positive_int(n_components, "n_components")
    if n < n_components:
        raise ValueError(f"n_components={n_components} is larger than the number of "
                         f"points n={n}: need n >= n_components")
    nu = float(d + 2) if cov_prior_dof is None else check_nonnegative(cov_prior_dof,
                                                                         "cov_prior_dof")
    psi = 1e-3 * np.eye(d) if cov_prior_scale is None else check_spd(
        cov_prior_scale, "cov_prior_scale", (d, d))[0]
    alpha = check_nonnegative(weight_concentration, "weight_concentration")
    if alpha < 1 or nu <= d - 1:
        raise ValueError(f"need weight_concentration >= 1 and cov_prior_dof > d - 1 = "
                         f"{d - 1}, got {alpha} and {nu}")
    tol = check_nonnegative(tol, "tol")
    max_iter = check_positive_int(max_iter, "max_iter")
    prior = dict(weight_concentration=alpha, cov_prior_dof=nu, cov_prior_scale=psi)
    if covariances_init is None:
        # the data covariance, as GaussianMixtureEM starts; where it is singular (constant
        # or collinear data, d > n) the MAP covariance of one component holding every
        # point, (n S + Psi) / (n + nu + d + 1), which the prior keeps positive definite
        data_cov = np.atleast_2d(np.cov(X, rowvar=False, bias=True))
        if not _well_conditioned(data_cov):
            start = (n * data_cov + psi) / (n + nu + d + 1)
            covariances_init = np.repeat(0.5 * (start + start.T)[None], n_components, axis=0)
    weights, means, cov = _start(X, n_components, weights_init, means_init,
                                 covariances_init, rng, 0.0)
    s = _EMState(theta=(weights, means, cov), prec_chol=None)
    log_prior = []

    def e_step() -> float:  # q_t = p(z | x, theta_{t-1}); the bound is the objective
        weights, means, cov = s.theta
        log_norm, s.resp, _ = _normalise(_weighted_log_prob(X, weights, means,
                                                            precision_cholesky(cov)))
        s.log_lik.append(float(log_norm.sum()))
        log_prior.append(gmm_log_prior(weights, cov, **prior))
        return s.log_lik[-1] + log_prior[-1]

    def m_step() -> None:  # the closed-form MAP update; its bound is not evaluated
        resp = s.resp
        counts = resp.sum(axis=0) + _COUNT_EPS
        weights = (counts + alpha - 1) / (n + n_components * (alpha - 1))
        weights = weights / weights.sum()
        means = (resp.T @ X) / counts[:, None]
        diff = X[None, :, :] - means[:, None, :]
        scatter = np.einsum("nk,kni,knj->kij", resp, diff, diff)
        s.theta = (weights, means, (scatter + psi) / (counts + nu + d + 1)[:, None, None])

    def stop() -> bool:
        return len(s.log_lik) > 1 and abs(s.log_lik[-1] + log_prior[-1] - s.log_lik[-2]
                                          - log_prior[-2]) < tol * n

    trace = coordinate_ascent({"E": e_step, "M": m_step}, stop=stop, max_iter=max_iter)
    weights, means, cov = s.theta
    s.log_lik.append(gmm_log_likelihood(X, weights, means, cov))
    log_prior.append(gmm_log_prior(weights, cov, **prior))
    return EMTrace(weights, means, cov, n_iter_=trace.n_iter,
                   log_likelihood_=np.asarray(s.log_lik), trace_=trace, steps_per_sweep=1,
                   log_prior_=np.asarray(log_prior))
