"""The Gaussian mixture of chapter 2 and the two halves of EM on its ELBO.

p(x, z | theta) = prod_i pi_{z_i} N(x_i | mu_{z_i}, Sigma_{z_i}): its log-likelihood
(:func:`gmm_log_likelihood`), the exact posterior over the assignments, which is the
E-step (:func:`gmm_responsibilities`), the ELBO of any factorised q (:func:`gmm_elbo`),
the closed-form M-step for fixed responsibilities (:func:`weighted_gaussian_m_step`,
shared with :mod:`elbo_lib.hmm`), a random start (:func:`random_start`) and the
relabelling of components (:func:`match_components`).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from elbo_lib._validation import (
    as_float_array,
    as_generator,
    check_nonnegative,
    check_positive_int,
    check_probability_rows,
    check_spd,
    check_symmetric,
    power_of_two_scale,
)
from elbo_lib.gaussians import gaussian_log_density, precision_cholesky

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
        # An eigenvalue within eigh's round-off of 0 (d * eps * the largest) is 0: its sign
        # is the rounding's (a singular S_k gave +6.5e-45 on one BLAS thread count and
        # -9.3e-46 on another, next to 1.5e-28), and a tiny positive one would turn the
        # infinite shortfall into a finite number of about 100 nats.
        tiny = d * np.finfo(eig.dtype).eps * np.abs(eig).max(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = reg_covar / eig
            per = np.where(eig > tiny, np.log1p(ratio) - reg_covar / (eig + reg_covar),
                           np.inf)
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


