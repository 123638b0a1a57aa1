"""The importance-weighted bound IW_k and its gradient estimators (chapters 4, 6, 8).

:class:`ImportanceWeightedBound` (pathwise), :class:`PathDerivativeIWAE` (log q's
parameters held fixed, biased for k > 1) and :class:`DoublyReparameterisedIWAE`
(DReG, unbiased).
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, MultivariateNormal

from elbo_lib._validation import check_positive_int
from elbo_lib.bounds import importance_weighted_bound
from elbo_lib.objectives.base import (
    LogJoint,
    Surrogate,
    VariationalObjective,
    _check_q,
    _finite,
    _gaussian_parts,
    _log_joint_of,
    _reparameterised_log_weights,
)


class ImportanceWeightedBound(VariationalObjective):
    """The importance-weighted bound IW_k, pathwise (Burda, Grosse and Salakhutdinov 2016).

    IW_k = E[log (1/k) sum_j p(x, z_j) / q(z_j)], z_j ~ q: the ELBO at k = 1, and
    increasing to log p(x) as k grows. ``num_samples`` counts the independent k-sample
    estimates per step (S k model evaluations). Chapters 4 and 6.

    Parameters
    ----------
    num_importance : int
        k >= 1.
    """

    estimator = "pathwise"

    def __init__(self, num_importance: int) -> None:
        self.num_importance = check_positive_int(num_importance, "num_importance")

    def surrogate(self, log_joint: LogJoint, q: Distribution,
                  num_samples: int) -> Surrogate:
        """See :meth:`VariationalObjective.surrogate`."""
        q = _check_q(q)
        num_samples = check_positive_int(num_samples, "num_samples")
        log_w = _reparameterised_log_weights(log_joint, q, num_samples, self.num_importance)
        bound = importance_weighted_bound(log_w, dim=1).mean(0)
        return Surrogate(-bound.sum(), bound.detach())


def _gaussian_log_weights(log_joint: LogJoint, q: Distribution, num_samples: int,
                          num_importance: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z (S, k, *R, D) from q.rsample and log w = log p(x, z) - log q(z), with log q's
    parameters held fixed (detached): the gradient reaches q only through z."""
    q = _check_q(q)
    mean, low, _ = _gaussian_parts(q)
    num_samples = check_positive_int(num_samples, "num_samples")
    z = q.rsample((num_samples, num_importance))
    fixed = MultivariateNormal(mean.detach(), scale_tril=low.detach(), validate_args=False)
    log_w = _finite(_log_joint_of(log_joint, z) - fixed.log_prob(z),
                    "log_joint(z) - q.log_prob(z)")
    return z, log_w


class PathDerivativeIWAE(ImportanceWeightedBound):
    """IW_k with log q's parameters held fixed: "sticking the landing" for IWAE.

    The pathwise gradient of IW_k = log (1/k) sum_j w_j has two parts through q's
    parameters phi: through the samples z_j(phi) and through log q_phi(z_j) at fixed z
    (the score part, sum_j w~_j d log q_phi(z_j) / d phi with the normalised weights
    w~_j). Roeder, Wu and Duvenaud (2017) drop the score part, which has mean zero for
    k = 1 (the ELBO); for k > 1 it does not, and this estimator is **biased** (Tucker et
    al. 2019; chapter 8 measures the bias). At q = p(z | x) every weight is
    p(x) and each sample's gradient is zero. log_joint's own parameters, if any, get the
    IWAE gradient sum_j w~_j grad log p(x, z_j). Gaussian q only. Chapter 8.

    Parameters
    ----------
    num_importance : int
        k >= 1.
    """

    estimator = "path-derivative"

    def surrogate(self, log_joint: LogJoint, q: Distribution,
                  num_samples: int) -> Surrogate:
        """See :meth:`VariationalObjective.surrogate`."""
        _, log_w = _gaussian_log_weights(log_joint, q, num_samples, self.num_importance)
        bound = importance_weighted_bound(log_w, dim=1).mean(0)
        return Surrogate(-bound.sum(), bound.detach())


class DoublyReparameterisedIWAE(ImportanceWeightedBound):
    r"""IW_k with the doubly reparameterised gradient (DReG; Tucker et al. 2019).

    The score part of the IWAE gradient (see :class:`PathDerivativeIWAE`) is itself
    reparameterised: E[w~_j d log q(z_j) / d phi] = E[(w~_j - w~_j^2) (d log w_j / d z_j)
    (d z_j / d phi)] (the score-function identity for w~_j as a function of z_j; Tucker,
    Lawson, Gu and Maddison 2019), which leaves, for q's parameters,

    .. math::

        \nabla_\phi \mathrm{IW}_k \approx \sum_{j=1}^k \tilde w_j^2\,
        \frac{\partial \log w_j}{\partial z_j} \frac{\partial z_j}{\partial \phi},
        \qquad \tilde w_j = w_j / \textstyle\sum_i w_i,

    an **unbiased** estimator of the IWAE gradient whose signal-to-noise ratio does not
    fall with k as the plain one's does. log_joint's own parameters, if any, get the
    plain IWAE gradient sum_j w~_j grad log p(x, z_j): the loss is -sum_j w~_j log w_j
    (weights detached) and a hook on z scales the gradient reaching each z_j by w~_j.
    At k = 1 it equals :class:`PathDerivativeELBO`. Gaussian q only. Chapter 8.

    Parameters
    ----------
    num_importance : int
        k >= 1.
    """

    estimator = "doubly-reparameterised"

    def surrogate(self, log_joint: LogJoint, q: Distribution,
                  num_samples: int) -> Surrogate:
        """See :meth:`VariationalObjective.surrogate`."""
        z, log_w = _gaussian_log_weights(log_joint, q, num_samples, self.num_importance)
        weights = torch.softmax(log_w.detach(), dim=1)                     # (S, k, *R)
        if z.requires_grad:
            z.register_hook(lambda grad: grad * weights[..., None])
        loss = -(weights * log_w).sum(1).mean(0).sum()
        bound = importance_weighted_bound(log_w.detach(), dim=1).mean(0)
        return Surrogate(loss, bound)
