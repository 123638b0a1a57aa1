"""Score-function and pathwise gradients of E_q[f(z)] for any torch family (chapter 5).

Per-sample gradients in one backward pass (:func:`per_sample_gradients`), their means
(:func:`score_function_gradient`, :func:`pathwise_gradient`) and their statistics over
repeats (:func:`gradient_stats`, :class:`GradientStats`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Distribution

from elbo_lib._validation import (
    check_positive_int,
)
from elbo_lib.gradients.base import _build_q, _check_estimator, _check_params, _evaluate
from elbo_lib.gradients.baselines import apply_baseline, check_baseline


def per_sample_gradients(
    f: Callable[[torch.Tensor], torch.Tensor],
    make_q: Callable[..., Distribution],
    params: Mapping[str, torch.Tensor],
    num_samples: int,
    *,
    estimator: str,
    baseline: None | float | str = None,
    num_repeats: int = 1,
) -> dict[str, torch.Tensor]:
    """Per-sample terms of a Monte Carlo estimator of grad_phi E_{q_phi}[f(z)].

    Draws ``num_repeats`` independent groups of ``num_samples`` samples. The S-sample
    estimate of group r is the mean over its S rows. Each sample gets its own copy of
    the parameters, so a single backward pass returns every per-sample term.

    Parameters
    ----------
    f : callable
        Maps samples of shape ``(N, *event_shape)`` to values of shape ``(N,)``.
        It must not depend on the parameters (for the ELBO, whose integrand does, see
        :func:`score_function_elbo_surrogate` and :func:`~elbo_lib.bounds.monte_carlo_elbo`).
    make_q : callable
        ``make_q(**params)`` builds q. Called with every parameter given a leading batch
        axis of length N, it must return a distribution with ``batch_shape == (N,)``
        (for example ``Independent(Normal(mu, sigma), 1)``; see :func:`diagonal_gaussian`).
    params : mapping of str to tensor
        The point phi at which the gradient is estimated.
    num_samples : int
        Samples S per estimate (>= 1; >= 2 for the leave-one-out baseline).
    estimator : {"score", "pathwise"}
        Score-function (REINFORCE) or pathwise (reparameterisation) estimator.
    baseline : None, float or "leave-one-out"
        Score-function only: subtract a constant, or the mean of f over the other S - 1
        samples of the same group (unbiased because those samples are independent of
        z_s). Passing a baseline with ``estimator="pathwise"`` is an error.
    num_repeats : int
        Number R of independent groups.

    Returns
    -------
    dict of str to torch.Tensor
        For each parameter, a tensor of shape ``(R, S, *param.shape)``.

    Raises
    ------
    TypeError, ValueError
        Bad parameters, sizes, estimator or baseline; q without ``rsample`` for the
        pathwise estimator (discrete latents); f returning the wrong shape.

    Notes
    -----
    Chapter 5 derives both estimators; Mohamed et al. (2020) review them.
    """
    params = _check_params(params)
    estimator = _check_estimator(estimator)
    num_samples = check_positive_int(num_samples, "num_samples")
    num_repeats = check_positive_int(num_repeats, "num_repeats")
    if estimator == "pathwise" and baseline is not None:
        raise ValueError("a baseline applies to the score-function estimator only; "
                         f"got baseline={baseline!r} with estimator='pathwise'")
    baseline = check_baseline(baseline, num_samples)
    n = num_repeats * num_samples
    reps = {k: v.unsqueeze(0).expand(n, *v.shape).clone().requires_grad_(True)
            for k, v in params.items()}
    q = _build_q(make_q, reps, n)
    if estimator == "pathwise":
        if not q.has_rsample:
            raise ValueError(f"{type(q).__name__} has no rsample (discrete or not "
                             "reparameterisable): use estimator='score' or a continuous "
                             "relaxation such as RelaxedOneHotCategorical")
        surrogate = _evaluate(f, q.rsample(), n).sum()
    else:
        z = q.sample()
        with torch.no_grad():
            fz = _evaluate(f, z, n).reshape(num_repeats, num_samples)
            weights = apply_baseline(fz, baseline).reshape(n)
        surrogate = (weights * q.log_prob(z)).sum()
    grads = torch.autograd.grad(surrogate, list(reps.values()), allow_unused=True)
    out = {}
    for (name, rep), g in zip(reps.items(), grads, strict=True):
        g = torch.zeros_like(rep) if g is None else g
        out[name] = g.detach().reshape(num_repeats, num_samples, *params[name].shape)
    return out



def score_function_gradient(f, make_q, params, num_samples: int, *,
                            baseline: None | float | str = None) -> dict[str, torch.Tensor]:
    """Score-function estimate of grad_phi E_q[f(z)] from ``num_samples`` samples.

    ``(1/S) sum_s (f(z_s) - b_s) grad_phi log q_phi(z_s)``, z_s ~ q_phi
    (Williams 1992). See :func:`per_sample_gradients` for the arguments. Chapter 5.

    Returns
    -------
    dict of str to torch.Tensor
        The estimate, one tensor of each parameter's shape.
    """
    g = per_sample_gradients(f, make_q, params, num_samples, estimator="score",
                             baseline=baseline)
    return {k: v[0].mean(dim=0) for k, v in g.items()}



def pathwise_gradient(f, make_q, params, num_samples: int) -> dict[str, torch.Tensor]:
    """Pathwise (reparameterisation) estimate of grad_phi E_q[f(z)].

    ``(1/S) sum_s grad_phi f(g(eps_s, phi))``, eps_s from q's base distribution
    (Kingma and Welling 2014; Rezende et al. 2014). Needs ``q.has_rsample``.
    See :func:`per_sample_gradients` for the arguments. Chapter 5.
    """
    g = per_sample_gradients(f, make_q, params, num_samples, estimator="pathwise")
    return {k: v[0].mean(dim=0) for k, v in g.items()}



@dataclass(frozen=True)
class GradientStats:
    """Mean, variance and standard error of an S-sample gradient estimator.

    Attributes
    ----------
    mean : dict of str to ndarray
        Mean of the R estimates (each the average of S per-sample terms).
    variance : dict of str to ndarray
        Sample variance (ddof=1) across the R estimates: the variance of the S-sample
        estimator, per component.
    std_error : dict of str to ndarray
        Standard error of ``mean``: sqrt(variance / R).
    num_samples, num_repeats : int
        S and R.
    """

    mean: dict[str, np.ndarray]
    variance: dict[str, np.ndarray]
    std_error: dict[str, np.ndarray]
    num_samples: int
    num_repeats: int

    def total_variance(self) -> float:
        """Trace of the estimator's covariance: the sum of every component's variance."""
        return float(sum(v.sum() for v in self.variance.values()))



def gradient_stats(f, make_q, params, num_samples: int, num_repeats: int, *,
                   estimator: str, baseline: None | float | str = None) -> GradientStats:
    """Measure an estimator's mean and variance over ``num_repeats`` independent runs.

    Used by chapter 5 to test unbiasedness (mean within a few standard errors of the
    closed-form gradient) and to compare variances. Needs ``num_repeats >= 2``.
    Other arguments as in :func:`per_sample_gradients`.
    """
    num_repeats = check_positive_int(num_repeats, "num_repeats", minimum=2)
    g = per_sample_gradients(f, make_q, params, num_samples, estimator=estimator,
                             baseline=baseline, num_repeats=num_repeats)
    means = {k: v.mean(dim=1).numpy() for k, v in g.items()}
    mean = {k: m.mean(axis=0) for k, m in means.items()}
    var = {k: m.var(axis=0, ddof=1) for k, m in means.items()}
    se = {k: np.sqrt(v / num_repeats) for k, v in var.items()}
    return GradientStats(mean, var, se, int(num_samples), num_repeats)
