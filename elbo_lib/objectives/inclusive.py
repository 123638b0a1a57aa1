"""The inclusive KL, KL(p(z | x) || q), as a minimised upper bound (chapter 8).

:class:`InclusiveKL` (reweighted wake-sleep's self-normalised q-update) and
:class:`MarkovianScoreClimbing` (the same objective along a conditional importance
sampling chain).
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution

from elbo_lib._validation import check_positive_int
from elbo_lib.objectives.base import (
    LogJoint,
    Surrogate,
    VariationalObjective,
    _check_q,
    _finite,
    _log_joint_of,
)


def _log_weights_no_grad(log_joint: LogJoint, q: Distribution, z: torch.Tensor,
                         what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(x, z), log w = log p(x, z) - log q(z)), both without gradient."""
    with torch.no_grad():
        log_p = _log_joint_of(log_joint, z)
        log_w = _finite(log_p - q.log_prob(z), what)
    return log_p, log_w


class InclusiveKL(VariationalObjective):
    r"""KL(p(z | x) || q) by reweighted wake-sleep's q-update (Bornschein and Bengio 2015).

    From w = p(x, z) / q(z) = p(x) p(z | x) / q(z),

    .. math::

        \mathbb E_{p(z \mid x)}[\log w] = \log p(x) + \mathrm{KL}(p(z \mid x) \,\Vert\, q)
        \;\ge\; \log p(x),

    an upper bound on log p(x) whose gradient in q's parameters phi is that of the
    inclusive KL, -E_p[grad log q_phi(z)]; so it is **minimised** (``is_upper_bound``).
    Expectations under p(z | x) = w q / p(x) are estimated by self-normalised importance
    sampling from k samples of q, E_p[f] ~ sum_j w~_j f(z_j), w~_j = w_j / sum_i w_i:
    ``estimate`` is sum_j w~_j log w_j and ``loss`` is sum_j w~_j (log p(x, z_j) -
    log q_phi(z_j)) with the samples and weights held fixed, whose gradient is the RWS
    (wake-phase) update -sum_j w~_j grad log q_phi(z_j). Self-normalisation makes both
    **biased** at finite k and consistent as k grows; at k = 1 (w~_1 = 1) the gradient is
    the score of one sample of q, whose mean is zero, and the estimate is log w, whose
    mean is the ELBO. Needs only ``sample`` and ``log_prob`` of q, not a differentiable
    log_joint; log_joint's own parameters, if any, get no gradient (RWS's model update
    is the IWAE gradient, :class:`ImportanceWeightedBound`). ``num_samples`` counts the
    independent k-sample estimates per step. Chapter 8.

    Parameters
    ----------
    num_importance : int
        k >= 1.
    """

    estimator = "self-normalised-score"
    differentiates_log_joint = False
    is_upper_bound = True

    def __init__(self, num_importance: int) -> None:
        self.num_importance = check_positive_int(num_importance, "num_importance")

    def surrogate(self, log_joint: LogJoint, q: Distribution,
                  num_samples: int) -> Surrogate:
        """See :meth:`VariationalObjective.surrogate`."""
        # the same checks as every surrogate: each public method checks its own arguments
        q = _check_q(q)
        num_samples = check_positive_int(num_samples, "num_samples")
        with torch.no_grad():
            z = q.sample((num_samples, self.num_importance))             # (S, k, *R, D)
            log_p = _log_joint_of(log_joint, z)
        log_q = q.log_prob(z)                      # one pass: the weights use it detached
        log_w = _finite(log_p - log_q.detach(), "log_joint(z) - q.log_prob(z)")
        weights = torch.softmax(log_w, dim=1)
        estimate = (weights * log_w).sum(1).mean(0)
        loss = (weights * (log_p - log_q)).sum(1).mean(0).sum()
        return Surrogate(loss, estimate)


class MarkovianScoreClimbing(VariationalObjective):
    r"""KL(p(z | x) || q) by Markovian score climbing (Naesseth, Lindsten and Blei 2020).

    The objective of :class:`InclusiveKL` (E_p[log w] = log p(x) + KL(p || q), an upper
    bound, minimised), with p's expectation taken along a Markov chain instead of by
    self-normalisation. Each call moves every chain one step of the conditional
    importance sampling (CIS) kernel: the chain's state z' and k - 1 fresh samples of
    the current q form k candidates, and the new state is candidate j with probability
    w~_j (w_j = p(x, z_j) / q(z_j)). For any fixed q this kernel leaves p(z | x)
    invariant, so the gradient -grad log q_phi(z_new) (``loss`` = log p(x, z_new) -
    log q_phi(z_new), z_new held fixed) is unbiased for the inclusive KL's gradient once
    the chain has mixed. Along a fit q, and so the kernel, changes at every step;
    Naesseth et al. (2020) prove that score climbing with Robbins-Monro step sizes
    (decreasing, sum infinite, sum of squares finite) still converges to a local
    optimum of KL(p || q). The step sizes are the loop's: ``fit_vi``'s are constant.
    ``estimate`` is log w(z_new).
    The object **keeps the chains' states** between calls (one chain per estimate and
    run, initialised from q at the first call or when q's shape or ``num_samples``
    changes; :meth:`reset` forgets them): one object serves one fit. k = 1 would never
    move the chain and is refused. Chapter 8.

    Parameters
    ----------
    num_importance : int
        k >= 2 candidates per step (the state and k - 1 fresh samples).
    """

    estimator = "self-normalised-score"
    differentiates_log_joint = False
    is_upper_bound = True

    def __init__(self, num_importance: int) -> None:
        self.num_importance = check_positive_int(num_importance, "num_importance", 2)
        self._state: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the chains' states (the next call starts new chains from q)."""
        self._state = None

    def surrogate(self, log_joint: LogJoint, q: Distribution,
                  num_samples: int) -> Surrogate:
        """See :meth:`VariationalObjective.surrogate`; moves the chains one step."""
        q = _check_q(q)
        num_samples = check_positive_int(num_samples, "num_samples")
        shape = (num_samples, *q.batch_shape, *q.event_shape)
        with torch.no_grad():
            if self._state is None or tuple(self._state.shape) != shape \
                    or self._state.dtype != q.mean.dtype:
                state = q.sample((num_samples,))
            else:
                state = self._state
            fresh = q.sample((num_samples, self.num_importance - 1))      # (S, k-1, *R, D)
            z = torch.cat([state[:, None], fresh], dim=1)                  # (S, k, *R, D)
        log_p, log_w = _log_weights_no_grad(log_joint, q, z,
                                            "log_joint(z) - q.log_prob(z)")
        with torch.no_grad():
            moved = torch.movedim(log_w, 1, -1)                            # (S, *R, k)
            pick = torch.distributions.Categorical(logits=moved).sample()  # (S, *R)
            index = pick[:, None, ..., None].expand(num_samples, 1, *z.shape[2:])
            new = torch.gather(z, 1, index)[:, 0]                          # (S, *R, D)
            log_p_new = torch.gather(log_p, 1, pick[:, None])[:, 0]
            estimate = torch.gather(log_w, 1, pick[:, None])[:, 0].mean(0)
        self._state = new
        loss = (log_p_new - q.log_prob(new)).mean(0).sum()
        return Surrogate(loss, estimate)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_importance={self.num_importance!r})"
