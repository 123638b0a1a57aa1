"""The variational Renyi bound L_alpha and the chi upper bound CUBO_n (chapter 8).

:func:`renyi_bound` (the k-sample estimate from log importance weights),
:class:`RenyiBound` (Li and Turner 2016) and :class:`ChiUpperBound` (Dieng et al.
2017), which is L_(1-n) and minimised.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.distributions import Distribution

from elbo_lib._validation import check_int, check_positive_int, check_real
from elbo_lib.objectives.base import (
    LogJoint,
    Surrogate,
    VariationalObjective,
    _check_q,
    _reparameterised_log_weights,
)


def _check_alpha(alpha, name: str = "alpha") -> float:
    """A real alpha, finite or +-inf (NaN refused)."""
    if isinstance(alpha, float | np.floating) and math.isinf(alpha):
        return float(alpha)
    return check_real(alpha, name)


def renyi_bound(log_weights: torch.Tensor, alpha: float, dim: int = 0) -> torch.Tensor:
    r"""The k-sample variational Renyi bound from k log importance weights.

    With log w_j = log p(x, z_j) - log q(z_j), z_j ~ q (Li and Turner 2016, eq. 9),

    .. math::

        \hat{\mathcal L}_{\alpha,k} = \frac{1}{1-\alpha}
        \log \frac1k \sum_{j=1}^k w_j^{1-\alpha},

    the log of an unbiased estimate of E_q[w^(1-alpha)], so that (Jensen) its mean is
    below L_alpha for alpha < 1 and above it for alpha > 1; it tends to L_alpha as k
    grows. alpha = 1 is the limit, the mean of log w (the ELBO's estimate); alpha = 0 is
    the IWAE bound (:func:`elbo_lib.bounds.importance_weighted_bound`); alpha = -inf is
    the largest log w ("VR-max") and alpha = +inf the smallest. At k = 1 every alpha
    gives log w. Differentiable. Chapter 8.

    Parameters
    ----------
    log_weights : torch.Tensor
        Real, the k samples along ``dim``; -inf allowed (a zero weight), NaN and +inf not.
    alpha : float
        Real, or +-inf.
    dim : int
        The axis of the k samples.

    Returns
    -------
    torch.Tensor
        The bound, ``dim`` reduced away.

    Raises
    ------
    TypeError
        If ``log_weights`` is not a real tensor, or ``alpha`` / ``dim`` of the wrong type.
    ValueError
        If ``alpha`` is NaN, ``dim`` out of range, k = 0, or a weight NaN or +inf.
    """
    if not isinstance(log_weights, torch.Tensor) or log_weights.is_complex() \
            or not log_weights.is_floating_point():
        kind = (str(log_weights.dtype) if isinstance(log_weights, torch.Tensor)
                else type(log_weights).__name__)
        raise TypeError(f"log_weights must be a real floating torch.Tensor, got {kind}")
    alpha = _check_alpha(alpha)
    dim = check_int(dim, "dim")
    if not -log_weights.ndim <= dim < log_weights.ndim:
        raise ValueError(f"dim={dim} is out of range for log_weights of shape "
                         f"{tuple(log_weights.shape)}")
    k = log_weights.shape[dim]
    if k == 0:
        raise ValueError("log_weights holds no samples (k = 0) along dim")
    if bool(torch.isnan(log_weights).any() | torch.isposinf(log_weights).any()):
        raise ValueError("log_weights must not contain NaN or +inf")
    if alpha == 1.0:
        return log_weights.mean(dim)
    if alpha == -math.inf:
        return log_weights.amax(dim)
    if alpha == math.inf:
        return log_weights.amin(dim)
    scaled = (1.0 - alpha) * log_weights
    return (torch.logsumexp(scaled, dim) - math.log(k)) / (1.0 - alpha)


class RenyiBound(VariationalObjective):
    """The variational Renyi bound L_alpha (Li and Turner 2016), pathwise.

    L_alpha(q) = 1/(1 - alpha) log E_q[(p(x, z) / q(z))^(1 - alpha)]
    = log p(x) - D_alpha(q || p(z | x)), estimated from k samples by
    :func:`renyi_bound` and differentiated through ``q.rsample`` (Li and Turner's
    reparameterised VR gradient, a weighted pathwise gradient with weights
    w_j^(1-alpha) normalised). alpha = 1: the ELBO; alpha = 0: the IWAE bound
    (:class:`ImportanceWeightedBound`); alpha = -inf: VR-max. For alpha < 0, L_alpha is an
    upper bound on log p(x), which a loop must minimise: then ``is_upper_bound`` is True
    and the surrogate's ``loss`` is plus the estimate (as :class:`ChiUpperBound`'s, which
    is ``RenyiBound(1 - n, k)``), so that a loop never maximises an upper bound; for
    alpha >= 0 the loss is minus the estimate. ``num_samples`` counts the independent
    k-sample estimates per step. Chapter 8.

    Parameters
    ----------
    alpha : float
        Real, or -inf / +inf.
    num_importance : int
        k >= 1 (at k = 1 every alpha gives the ELBO's estimate).
    """

    estimator = "pathwise"

    def __init__(self, alpha: float, num_importance: int) -> None:
        self.alpha = _check_alpha(alpha)
        self.num_importance = check_positive_int(num_importance, "num_importance")
        self.is_upper_bound = self.alpha < 0          # L_alpha >= log p(x): minimised

    def surrogate(self, log_joint: LogJoint, q: Distribution,
                  num_samples: int) -> Surrogate:
        """See :meth:`VariationalObjective.surrogate`."""
        # the same checks as every surrogate: each public method checks its own arguments
        q = _check_q(q)
        num_samples = check_positive_int(num_samples, "num_samples")
        log_w = _reparameterised_log_weights(log_joint, q, num_samples, self.num_importance)
        bound = renyi_bound(log_w, self.alpha, dim=1).mean(0)
        sign = 1.0 if self.is_upper_bound else -1.0
        return Surrogate(sign * bound.sum(), bound.detach())


class ChiUpperBound(VariationalObjective):
    """The chi upper bound CUBO_n (Dieng, Tran, Ranganath, Paisley and Blei 2017).

    CUBO_n(q) = (1/n) log E_q[(p(x, z) / q(z))^n] >= log p(x) for n >= 1, with equality at
    q = p(z | x); CUBO_n = L_(1-n) (:class:`RenyiBound`) and CUBO_2 = log p(x) +
    (1/2) log(1 + chi^2(p(z | x) || q)). An upper bound is **minimised**
    (``is_upper_bound = True``): the surrogate's ``loss`` is the k-sample estimate
    (1/n) log (1/k) sum_j w_j^n itself (summed over runs), differentiated through
    ``q.rsample``, and ``estimate`` is that estimate. (Dieng et al. differentiate
    exp(n CUBO_n) instead: the same minimiser, an unbiased gradient, a scale that
    overflows.) The estimate is biased **downwards** (Jensen) and heavy-tailed: at
    finite k it can fall below log p(x). Chapter 8.

    Parameters
    ----------
    n : float
        Order n >= 1 (real).
    num_importance : int
        k >= 1.
    """

    estimator = "pathwise"
    is_upper_bound = True

    def __init__(self, n: float, num_importance: int) -> None:
        n = check_real(n, "n")
        if n < 1:
            raise ValueError(f"n must be >= 1 (CUBO_n is an upper bound for n >= 1), "
                             f"got {n!r}")
        self.n = n
        self.num_importance = check_positive_int(num_importance, "num_importance")

    def surrogate(self, log_joint: LogJoint, q: Distribution,
                  num_samples: int) -> Surrogate:
        """See :meth:`VariationalObjective.surrogate`."""
        # the same checks as every surrogate: each public method checks its own arguments
        q = _check_q(q)
        num_samples = check_positive_int(num_samples, "num_samples")
        log_w = _reparameterised_log_weights(log_joint, q, num_samples, self.num_importance)
        bound = renyi_bound(log_w, 1.0 - self.n, dim=1).mean(0)
        return Surrogate(bound.sum(), bound.detach())
