"""Estimators of the evidence lower bound and of the evidence (chapters 1, 4, 5, 6, 7).

For any density q(z),

.. math::

    \\log p(x) = \\mathrm{ELBO}(q) + \\mathrm{KL}(q(z) \\,\\|\\, p(z \\mid x)),
    \\qquad \\mathrm{ELBO}(q) = \\mathbb{E}_q[\\log p(x, z)] - \\mathbb{E}_q[\\log q(z)].

Every estimator here takes a log-joint ``log_joint(z) = log p(x, z)`` and a q:

* :func:`monte_carlo_elbo` -- the Monte Carlo ELBO, differentiable through ``rsample``
  (the pathwise gradient); chapters 1, 5, 7;
* :func:`score_function_elbo_surrogate` -- a scalar whose gradient is the
  score-function ELBO gradient (black-box VI); chapter 5;
* :func:`importance_weighted_bound` -- IWAE_k from k log importance weights; chapter 6;
* :func:`importance_sampling_posterior` -- log p(x) and posterior moments by importance
  sampling from a Student-t proposal (the gold standard of chapter 5);
* :func:`gaussian_elbo_quadrature`, :func:`log_evidence_quadrature` -- a 1-D latent by
  quadrature (chapter 1); :func:`kl_on_grid` -- KL(q || p) on a 2-D grid (chapter 4).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Distribution

from elbo_lib._validation import (
    LOG_2PI,
    as_float_array,
    as_generator,
    as_numeric_array,
    check_int,
    check_positive,
    check_positive_int,
    check_spd,
)
from elbo_lib.gaussians import gaussian_entropy
from elbo_lib.gradients import apply_baseline, check_baseline

__all__ = [
    "ImportanceSamplingResult",
    "gaussian_elbo_quadrature",
    "importance_sampling_posterior",
    "importance_weighted_bound",
    "kl_on_grid",
    "log_evidence_quadrature",
    "monte_carlo_elbo",
    "score_function_elbo_surrogate",
]

DTYPE = torch.float64


def _log_joint_values(log_joint, z: torch.Tensor, num_samples: int) -> torch.Tensor:
    """log_joint(z), checked to be a tensor of shape (num_samples,)."""
    log_p = log_joint(z)
    if not isinstance(log_p, torch.Tensor) or log_p.shape != (num_samples,):
        shape = tuple(log_p.shape) if isinstance(log_p, torch.Tensor) else type(log_p).__name__
        raise ValueError(f"log_joint must return a tensor of shape ({num_samples},), got {shape}")
    return log_p


def _check_terms(terms: torch.Tensor) -> None:
    """log_joint(z) - log q(z) must be finite at every sample."""
    bad = ~torch.isfinite(terms)
    if bool(bad.any()):
        raise ValueError(f"log_joint(z) - q.log_prob(z) must be finite for every sample, got "
                         f"{int(bad.sum())} non-finite of {terms.numel()} (log_joint "
                         f"returned NaN or inf, or q puts mass where log_joint is -inf)")


def _check_single_q(q, log_joint) -> None:
    if not isinstance(q, Distribution):
        raise TypeError(f"q must be a torch.distributions.Distribution, got {type(q).__name__}")
    if not callable(log_joint):
        raise TypeError(f"log_joint must be callable, got {type(log_joint).__name__}")
    if q.batch_shape != torch.Size([]):
        raise ValueError(f"q must be a single distribution (empty batch_shape), "
                         f"got batch_shape {tuple(q.batch_shape)}; wrap it in Independent")


def monte_carlo_elbo(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    q: Distribution,
    num_samples: int,
    *,
    reparameterize: bool = True,
    return_std_error: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo estimate of ELBO(q) = E_q[log p(x, z) - log q(z)].

    Draws ``num_samples`` samples z_s from q and averages log p(x, z_s) - log q(z_s).
    The estimate is unbiased for the ELBO. With ``reparameterize=True`` the samples
    come from ``q.rsample`` so the estimate can be differentiated with respect to q's
    parameters (the pathwise gradient of chapter 5).

    Parameters
    ----------
    log_joint : callable
        Maps a tensor of samples of shape ``(S, *q.event_shape)`` to the log-joint
        log p(x, z) of each sample, shape ``(S,)``.
    q : torch.distributions.Distribution
        The approximate posterior; its ``batch_shape`` must be empty (one q).
    num_samples : int
        Number of samples S (>= 1).
    reparameterize : bool
        Sample with ``rsample`` (differentiable) rather than ``sample``.
    return_std_error : bool
        Also return the standard error of the estimate (needs S >= 2).

    Returns
    -------
    torch.Tensor or (torch.Tensor, torch.Tensor)
        The scalar estimate, and its standard error if asked for.

    Raises
    ------
    TypeError
        If ``q`` is not a torch Distribution or ``log_joint`` is not callable.
    ValueError
        If q has a batch shape, cannot be reparameterised when asked to, ``log_joint``
        returns the wrong shape or non-finite values, or S is too small.

    Examples
    --------
    >>> import torch
    >>> from torch.distributions import Normal
    >>> q = Normal(torch.tensor(0.0), torch.tensor(1.0))
    >>> log_joint = lambda z: Normal(0.0, 1.0).log_prob(z)   # p(x, z) = q(z): ELBO = 0
    >>> float(monte_carlo_elbo(log_joint, q, 10))
    0.0
    """
    _check_single_q(q, log_joint)
    num_samples = check_positive_int(num_samples, "num_samples", 2 if return_std_error else 1)
    if reparameterize and not q.has_rsample:
        raise ValueError(f"{type(q).__name__} has no rsample: use reparameterize=False "
                         "(score-function gradients, chapter 5)")
    z = q.rsample((num_samples,)) if reparameterize else q.sample((num_samples,))
    terms = _log_joint_values(log_joint, z, num_samples) - q.log_prob(z)
    _check_terms(terms)
    estimate = terms.mean()
    if return_std_error:
        return estimate, terms.detach().std(unbiased=True) / num_samples**0.5
    return estimate


def importance_weighted_bound(log_weights, dim: int = 0):
    """The importance-weighted bound IWAE_k from k log importance weights.

    With z_1..z_k drawn independently from q and log weights
    log w_i = log p(x, z_i) - log q(z_i),

    .. math::

        \\mathrm{IWAE}_k = \\log \\frac1k \\sum_{i=1}^k w_i
        = \\operatorname{logsumexp}_i(\\log w_i) - \\log k .

    Its expectation is a lower bound on log p(x) that does not decrease with k, equals
    the ELBO for k = 1 and tends to log p(x) as k grows (Burda et al. 2016). Computed
    with a stable log-sum-exp. Works on NumPy arrays or torch tensors (differentiably).
    Used by chapter 6.

    Parameters
    ----------
    log_weights : numpy.ndarray or torch.Tensor
        Log importance weights, the k samples along ``dim``. ``-inf`` (a weight of zero)
        is allowed; NaN and ``+inf`` are not.
    dim : int
        The axis that holds the k samples.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        The bound, with ``dim`` reduced away.

    Raises
    ------
    TypeError
        If ``log_weights`` is not an array or tensor, or ``dim`` not an integer.
    ValueError
        If ``dim`` is out of range, there are no samples, or a weight is NaN or +inf.
    """
    dim = check_int(dim, "dim")
    if isinstance(log_weights, torch.Tensor):
        if log_weights.is_complex():
            raise TypeError(f"log_weights must be real, got a complex tensor "
                            f"({log_weights.dtype})")
        if not log_weights.is_floating_point():
            log_weights = log_weights.to(torch.float64)
    else:
        log_weights = as_numeric_array(log_weights, "log_weights",
                                       expected="a numeric array or tensor")
    ndim = log_weights.ndim
    if not -ndim <= dim < ndim:
        raise ValueError(f"dim={dim} is out of range for log_weights of shape "
                         f"{tuple(log_weights.shape)}")
    k = log_weights.shape[dim]
    if k == 0:
        raise ValueError("log_weights holds no samples (k = 0) along dim")
    if isinstance(log_weights, torch.Tensor):
        if bool(torch.isnan(log_weights).any() | torch.isposinf(log_weights).any()):
            raise ValueError("log_weights must not contain NaN or +inf")
        return torch.logsumexp(log_weights, dim=dim) - float(np.log(k))
    if np.any(np.isnan(log_weights) | np.isposinf(log_weights)):
        raise ValueError("log_weights must not contain NaN or +inf")
    top = np.max(log_weights, axis=dim, keepdims=True)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):  # all weights zero: the bound is -inf
        total = np.log(np.mean(np.exp(log_weights - safe), axis=dim))
    return np.squeeze(safe, axis=dim) + total


def gaussian_elbo_quadrature(log_joint: Callable[[np.ndarray], np.ndarray], mean, std,
                             num_nodes: int = 60):
    """ELBO of q = N(mean, std^2) for a 1-D latent, by Gauss-Hermite quadrature.

    .. math::

        \\mathrm{ELBO}(q) = \\mathbb{E}_q[\\log p(x, z)] + H[q]
        \\approx \\sum_j w_j \\log p(x, m + s\\,t_j) + \\tfrac12 \\log(2\\pi e s^2),

    with the probabilists' Gauss-Hermite nodes t_j and weights w_j (normalised to sum
    to 1). The rule is exact when log p(x, z) is a polynomial of degree below
    ``2 * num_nodes``. Used by chapter 1 as the deterministic oracle next to Monte Carlo
    estimates of a non-conjugate model's ELBO.

    Parameters
    ----------
    log_joint : callable
        Maps a NumPy array of z values (any shape) to log p(x, z) elementwise.
    mean, std : float or array_like
        Parameters of q (broadcast together); ``std`` > 0.
    num_nodes : int
        Number of quadrature nodes (>= 1).

    Returns
    -------
    float or numpy.ndarray
        The ELBO for every (mean, std) pair, in nats.

    Raises
    ------
    TypeError
        If ``log_joint`` is not callable.
    ValueError
        If ``std`` is not positive or ``log_joint`` returns a wrong shape or NaN.
    """
    from numpy.polynomial.hermite_e import hermegauss

    if not callable(log_joint):
        raise TypeError(f"log_joint must be callable, got {type(log_joint).__name__}")
    num_nodes = check_positive_int(num_nodes, "num_nodes")
    mean = as_float_array(mean, "mean")
    std = check_positive(std, "std", allow_array=True)
    try:
        mean, std = np.broadcast_arrays(mean, std)
    except ValueError as exc:
        raise ValueError(f"mean and std must broadcast together, got shapes {mean.shape} "
                         f"and {std.shape}") from exc
    nodes, weights = hermegauss(num_nodes)
    weights = weights / weights.sum()
    z = mean[..., None] + std[..., None] * nodes
    values = np.asarray(log_joint(z), dtype=np.float64)
    if values.shape != z.shape:
        raise ValueError(f"log_joint must return an array of the shape of its input "
                         f"{z.shape}, got {values.shape}")
    if np.any(np.isnan(values)):
        raise ValueError("log_joint returned NaN")
    if np.any(np.isposinf(values)):
        raise ValueError("log_joint returned +inf (a log-density must be finite or -inf)")
    var = std**2
    if np.all((var > 0) & np.isfinite(var)):
        entropy = gaussian_entropy(var)
    else:  # std**2 under- or overflows (std beyond 1e+-154): the entropy in log(std)
        entropy = np.log(std) + 0.5 * (LOG_2PI + 1.0)
    out = values @ weights + entropy
    return float(out) if out.ndim == 0 else out


def log_evidence_quadrature(log_joint: Callable[[np.ndarray], np.ndarray], grid):
    """log p(x) = log of the integral of p(x, z) over a 1-D latent, on a uniform grid.

    Computes the trapezoidal rule in log space (a stable log-sum-exp) and also returns
    the normalised posterior density on the grid. Used by chapter 1 as the exact
    evidence of a non-conjugate model; the grid must cover the posterior's mass (the
    density at both ends should be negligible, which is checked).

    Parameters
    ----------
    log_joint : callable
        Maps a NumPy array of z values to log p(x, z) elementwise.
    grid : array_like, shape (m,)
        Uniformly spaced, increasing z values (m >= 3).

    Returns
    -------
    log_evidence : float
    posterior : numpy.ndarray, shape (m,)
        p(z | x) at the grid points.

    Raises
    ------
    ValueError
        If the grid is not uniform and increasing, or the posterior has more than
        1e-12 of its peak density at an end of the grid.
    """
    if not callable(log_joint):
        raise TypeError(f"log_joint must be callable, got {type(log_joint).__name__}")
    grid = as_float_array(grid, "grid", ndim=1)
    if grid.size < 3:
        raise ValueError(f"grid needs at least 3 points, got {grid.size}")
    steps = np.diff(grid)
    if np.any(steps <= 0) or np.ptp(steps) > 1e-9 * steps.mean():
        raise ValueError("grid must be uniformly spaced and increasing")
    values = np.asarray(log_joint(grid), dtype=np.float64)
    if values.shape != grid.shape:
        raise ValueError(f"log_joint must return shape {grid.shape}, got {values.shape}")
    if np.any(np.isnan(values) | np.isposinf(values)):
        raise ValueError(f"log_joint returned NaN or +inf at "
                         f"{int(np.sum(np.isnan(values) | np.isposinf(values)))} grid points")
    top = values.max()
    if not np.isfinite(top):
        raise ValueError("log_joint must be finite somewhere on the grid")
    if max(values[0], values[-1]) > top + np.log(1e-12):
        raise ValueError("the grid does not cover the posterior: widen it")
    dens = np.exp(values - top)
    integral = steps.mean() * (dens.sum() - 0.5 * (dens[0] + dens[-1]))
    log_evidence = float(top + np.log(integral))
    return log_evidence, np.exp(values - log_evidence)


def score_function_elbo_surrogate(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    q: Distribution,
    num_samples: int,
    *,
    baseline: None | float | str = "leave-one-out",
) -> tuple[torch.Tensor, torch.Tensor]:
    """A scalar whose gradient is the score-function (black-box VI) ELBO gradient.

    With w_s = log p(x, z_s) - log q(z_s), z_s ~ q (not differentiated),

    .. math::

        \\widehat{\\nabla} = \\frac1S \\sum_s (w_s - b_s)\\, \\nabla_\\phi \\log q_\\phi(z_s),

    the estimator of Ranganath et al. (2014); the term E_q[grad log q] = 0 coming from
    the phi inside log q is dropped, as its expectation is zero. Chapters 5 and 7
    (:func:`elbo_lib.variational.fit_vi` with
    ``objective=elbo_lib.objectives.ScoreFunctionELBO()``).

    Parameters
    ----------
    log_joint : callable
        Maps samples (S, D) to log p(x, z), shape (S,).
    q : torch.distributions.Distribution
        Empty batch shape; needs ``sample`` and a differentiable ``log_prob``.
    num_samples : int
        S (>= 2 for the leave-one-out baseline).
    baseline : None, float or "leave-one-out"
        See :func:`elbo_lib.gradients.check_baseline`.

    Returns
    -------
    (surrogate, elbo_estimate) : (torch.Tensor, torch.Tensor)
        Differentiate ``surrogate``; ``elbo_estimate`` is the detached mean of w_s.
    """
    _check_single_q(q, log_joint)
    num_samples = check_positive_int(num_samples, "num_samples")
    baseline = check_baseline(baseline, num_samples)
    z = q.sample((num_samples,))
    log_q = q.log_prob(z)
    with torch.no_grad():
        w = _log_joint_values(log_joint, z, num_samples) - log_q
        _check_terms(w)
        centred = apply_baseline(w.unsqueeze(0), baseline).squeeze(0)
    return (centred * log_q).mean(), w.mean()


@dataclass(frozen=True)
class ImportanceSamplingResult:
    """Output of :func:`importance_sampling_posterior`.

    Attributes
    ----------
    log_evidence : float
        log of the importance-sampling estimate of p(x) (unbiased for p(x)).
    log_evidence_se : float
        Its delta-method standard error, sqrt((mean w^2 / (mean w)^2 - 1) / N).
    ess : float
        Effective sample size (sum w)^2 / sum w^2.
    mean, sd, skewness : ndarray (D,)
        Self-normalised estimates of the posterior marginals' mean, standard deviation
        and standardised third moment.
    num_samples : int
    """

    log_evidence: float
    log_evidence_se: float
    ess: float
    mean: np.ndarray
    sd: np.ndarray
    skewness: np.ndarray
    num_samples: int


def importance_sampling_posterior(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    mean,
    cov,
    num_samples: int,
    *,
    rng: int | np.random.Generator,
    df: float = 10.0,
    chunk_size: int = 20_000,
) -> ImportanceSamplingResult:
    """Posterior moments and log evidence by importance sampling from a Student-t.

    The proposal is a multivariate Student-t with ``df`` degrees of freedom, location
    ``mean`` and shape ``cov`` (for example the Laplace approximation): heavier tails
    than the posterior keep the weights w = p(x, z) / r(z) bounded. The log weights are
    combined with log-sum-exp. Chapter 5 uses it as the gold standard for Bayesian
    logistic regression.

    Parameters
    ----------
    log_joint : callable
        Maps samples (N, D) to log p(x, z), shape (N,): finite, or -inf where the joint
        density is zero (those samples get weight zero). D = 1 is allowed.
    mean : array_like (D,)
    cov : array_like (D, D), symmetric positive definite
    num_samples : int
    rng : int or numpy.random.Generator
        Source of the proposal's samples (an int is a seed).
    df : float
        Degrees of freedom (> 0) of the proposal.
    chunk_size : int
        Samples per call of ``log_joint``.

    Returns
    -------
    ImportanceSamplingResult
    """
    from scipy.special import logsumexp
    from scipy.stats import multivariate_t

    if not callable(log_joint):
        raise TypeError(f"log_joint must be callable, got {type(log_joint).__name__}")
    mean = as_float_array(mean, "mean", ndim=1)
    cov = as_float_array(cov, "cov", ndim=2)
    if cov.shape != (mean.size, mean.size):
        raise ValueError(f"cov must have shape ({mean.size}, {mean.size}), got {cov.shape}")
    check_spd(cov, "cov")
    num_samples = check_positive_int(num_samples, "num_samples", minimum=2)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    df = check_positive(df, "df")
    rng = as_generator(rng)
    proposal = multivariate_t(loc=mean, shape=cov, df=df)
    # (num_samples, D) also for D = 1, where scipy returns a vector of num_samples draws
    z = proposal.rvs(size=num_samples, random_state=rng).reshape(num_samples, mean.size)
    log_w = np.empty(num_samples)
    with torch.no_grad():
        for start in range(0, num_samples, chunk_size):
            block = torch.as_tensor(z[start:start + chunk_size], dtype=DTYPE)
            log_w[start:start + chunk_size] = _log_joint_values(log_joint, block,
                                                                len(block)).numpy()
    bad = np.isnan(log_w) | np.isposinf(log_w)
    if bad.any():
        raise ValueError(f"log_joint must return finite values or -inf (a zero density), "
                         f"got NaN or +inf at {int(bad.sum())} of {num_samples} samples")
    if np.all(np.isneginf(log_w)):
        raise ValueError(f"log_joint is -inf at all {num_samples} samples: the proposal "
                         f"puts no mass where p(x, z) > 0 (move mean or widen cov)")
    log_w -= proposal.logpdf(z)
    if not np.all(np.isfinite(log_w) | np.isneginf(log_w)):
        raise ValueError("the proposal's log density is not finite at its samples (cov is "
                         "too close to singular)")
    log_sum = logsumexp(log_w)
    w = np.exp(log_w - log_sum)  # normalised weights, sum 1
    ess = 1.0 / float(np.sum(w**2))
    post_mean = w @ z
    centred = z - post_mean
    var = w @ centred**2
    skew = (w @ centred**3) / var**1.5
    log_evidence = float(log_sum - math.log(num_samples))
    rel_var = max(num_samples / ess - 1.0, 0.0) / num_samples
    return ImportanceSamplingResult(log_evidence, math.sqrt(rel_var), ess, post_mean,
                                    np.sqrt(var), skew, num_samples)


def kl_on_grid(log_q, log_p, grid_0, grid_1) -> float:
    """KL(q || p) = integral of q (log q - log p) by the trapezoid rule on a 2-D grid.

    Chapter 4 uses it as a check of log p(x) - ELBO(q) that shares no formula with
    the closed forms. ``log_q`` and ``log_p`` are the two log densities evaluated on
    ``np.meshgrid(grid_0, grid_1, indexing="ij")``; where q underflows to 0 the
    integrand is 0.

    Parameters
    ----------
    log_q, log_p : array_like, shape (len(grid_0), len(grid_1))
        Log densities on the grid (-inf allowed; NaN and +inf are not).
    grid_0, grid_1 : array_like, 1-D, strictly increasing
        The grid axes (>= 2 points each).

    Returns
    -------
    float
        The trapezoid-rule KL in nats.

    Raises
    ------
    ValueError
        If the shapes do not match the grids, the grids are not increasing, or a log
        density is NaN or +inf.
    """
    g0 = as_float_array(grid_0, "grid_0", ndim=1)
    g1 = as_float_array(grid_1, "grid_1", ndim=1)
    for name, g in (("grid_0", g0), ("grid_1", g1)):
        if g.size < 2 or np.any(np.diff(g) <= 0):
            raise ValueError(f"{name} must be strictly increasing with >= 2 points")
    log_q, log_p = (as_numeric_array(log_q, "log_q"), as_numeric_array(log_p, "log_p"))
    if log_q.shape != (g0.size, g1.size) or log_p.shape != log_q.shape:
        raise ValueError(f"log_q and log_p must have shape {(g0.size, g1.size)}, "
                         f"got {log_q.shape} and {log_p.shape}")
    for name, values in (("log_q", log_q), ("log_p", log_p)):
        if np.any(np.isnan(values) | np.isposinf(values)):
            raise ValueError(f"{name} must not contain NaN or +inf (-inf, a zero density, "
                             "is allowed)")
    q = np.exp(log_q)
    with np.errstate(invalid="ignore"):
        integrand = np.where(q > 0, q * (log_q - log_p), 0.0)
    return float(np.trapezoid(np.trapezoid(integrand, g1, axis=1), g0))
