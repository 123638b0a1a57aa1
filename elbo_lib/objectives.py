"""Variational objectives as objects: what a VI loop maximises, and how (chapters 5, 7).

An *objective* is an object with one method, :meth:`VariationalObjective.surrogate`
``(log_joint, q, num_samples) -> Surrogate(loss, estimate)``: from ``num_samples``
samples of q it returns a scalar ``loss`` whose gradient is the objective's (negated)
gradient estimate, and the objective's ``estimate`` (detached, one value per member of
q's batch). The loop (:func:`elbo_lib.variational.fit_vi`) only minimises ``loss``, so
a new bound is a new class and no edit of the loop, as Pyro hands an ``ELBO`` object to
``SVI``. The book's estimators of the ELBO gradient are instances:

========================  =============================================================
``PathwiseELBO()``        reparameterisation through ``rsample`` (Kingma and Welling
                          2014; Rezende et al. 2014)
``PathDerivativeELBO()``  the path derivative, "sticking the landing" (Roeder, Wu and
                          Duvenaud 2017): log q's parameters held fixed
``ScoreFunctionELBO(b)``  the score function with a baseline b (Ranganath, Gerrish and
                          Blei 2014)
``ScoreControlVariateELBO()``  the score function of E_q[log p] with one control-variate
                          coefficient per coordinate and the Gaussian entropy's exact
                          gradient (Ranganath et al. 2014, section 3.2)
``ImportanceWeightedBound(k)``  the importance-weighted bound of Burda, Grosse and
                          Salakhutdinov (2016), pathwise
``PathDerivativeIWAE(k)``  the same bound, log q's parameters held fixed ("sticking the
                          landing" for IWAE; biased for k > 1, Tucker et al. 2019)
``DoublyReparameterisedIWAE(k)``  the same bound with the doubly reparameterised
                          gradient (DReG) of Tucker, Lawson, Gu and Maddison (2019)
``RenyiBound(alpha, k)``  the variational Renyi bound L_alpha of Li and Turner (2016):
                          the ELBO at alpha = 1, IWAE at alpha = 0, VR-max at -inf
``ChiUpperBound(n, k)``   the chi upper bound CUBO_n of Dieng et al. (2017) = L_(1-n),
                          an upper bound on log p(x), minimised (``is_upper_bound``)
``InclusiveKL(k)``        KL(p(z | x) || q) by reweighted wake-sleep's self-normalised
                          q-update (Bornschein and Bengio 2015), minimised
``MarkovianScoreClimbing(k)``  KL(p(z | x) || q) along a conditional importance sampling
                          chain (Naesseth, Lindsten and Blei 2020), minimised
========================  =============================================================

:func:`renyi_bound` is the K-sample estimate of L_alpha from log importance weights
(chapter 8).

Each object names its estimator by ``estimator``, a word of the book's one vocabulary
:data:`elbo_lib.gradients.ESTIMATORS`, which the gradient measurements of
:mod:`elbo_lib.gradients` share. The step-size sweep
(:func:`elbo_lib.variational.fit_gaussian_vi_parallel`) trains many Gaussians at once
and asks an objective for :meth:`VariationalObjective.gaussian_runs_loss`; the book's
objectives implement it in closed form, and any other objective gets it from
:meth:`~VariationalObjective.surrogate`, so a new bound runs in the sweep unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from elbo_lib._validation import check_int, check_positive_int, check_real
from elbo_lib.bounds import (
    importance_weighted_bound,
    monte_carlo_elbo,
    score_function_elbo_surrogate,
)
from elbo_lib.gradients import (
    ESTIMATORS,
    apply_baseline,
    check_baseline,
    leave_one_out_control_variate,
)

__all__ = [
    "ESTIMATORS",
    "ChiUpperBound",
    "DoublyReparameterisedIWAE",
    "ImportanceWeightedBound",
    "InclusiveKL",
    "MarkovianScoreClimbing",
    "PathDerivativeIWAE",
    "PathDerivativeELBO",
    "PathwiseELBO",
    "RenyiBound",
    "ScoreControlVariateELBO",
    "ScoreFunctionELBO",
    "Surrogate",
    "VariationalObjective",
    "renyi_bound",
]

LogJoint = Callable[[torch.Tensor], torch.Tensor]


class Surrogate(NamedTuple):
    """What an objective returns for one step.

    Attributes
    ----------
    loss : torch.Tensor
        Scalar to minimise: its gradient is minus the objective's gradient estimate
        (summed over the members of a q with batch shape (R,)); for an upper bound
        (``is_upper_bound``, which is minimised) it is plus the estimate's gradient.
    estimate : torch.Tensor
        The objective's Monte Carlo estimate, detached, of shape q.batch_shape.
    """

    loss: torch.Tensor
    estimate: torch.Tensor


def _check_q(q) -> Distribution:
    if not isinstance(q, Distribution):
        raise TypeError(f"q must be a torch.distributions.Distribution, got "
                        f"{type(q).__name__}")
    if len(q.batch_shape) > 1 or len(q.event_shape) != 1:
        raise ValueError(f"q must have event shape (D,) and batch shape () or (R,), got "
                         f"{tuple(q.event_shape)} and {tuple(q.batch_shape)}")
    return q


def _log_joint_of(log_joint: LogJoint, z: torch.Tensor) -> torch.Tensor:
    """log_joint at z of shape (*lead, D), the lead axes stacked for the call."""
    if not callable(log_joint):
        raise TypeError(f"log_joint must be callable, got {type(log_joint).__name__}")
    lead = z.shape[:-1]
    flat = z.reshape(-1, z.shape[-1])
    out = log_joint(flat)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (flat.shape[0],):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"log_joint must return a tensor of shape ({flat.shape[0]},) for "
                         f"samples of shape {tuple(flat.shape)}, got {shape}")
    return out.reshape(lead)


def _finite(terms: torch.Tensor, what: str) -> torch.Tensor:
    if not bool(torch.isfinite(terms).all()):
        raise ValueError(f"{what} must be finite for every sample")
    return terms


def _runs_of_q(mean: torch.Tensor, scale_tril: torch.Tensor) -> MultivariateNormal:
    return MultivariateNormal(mean, scale_tril=scale_tril, validate_args=False)


def _gaussian_parts(q: Distribution) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(mean, scale_tril, diagonal) of a Gaussian q, or a TypeError naming q."""
    if isinstance(q, MultivariateNormal):
        return q.loc, q.scale_tril, False
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal) \
            and q.reinterpreted_batch_ndims == 1:
        return q.base_dist.loc, torch.diag_embed(q.base_dist.scale), True
    raise TypeError(f"q must be a Gaussian (MultivariateNormal or Independent(Normal, 1)) "
                    f"for this objective, got {type(q).__name__}")


def _batched_log_q(z: torch.Tensor, mu: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """log N(z; mu_r, L_r L_r^T) for z (R, S, D), mu (R, D), low (R, D, D) -> (R, S)."""
    diff = (z - mu[:, None, :]).transpose(1, 2)
    white = torch.linalg.solve_triangular(low, diff, upper=False)
    log_det = torch.log(torch.diagonal(low, dim1=1, dim2=2)).sum(-1, keepdim=True)
    return -0.5 * (white**2).sum(1) - log_det - 0.5 * mu.shape[-1] * math.log(2 * math.pi)


def _check_runs_arguments(log_p, mean, raw, scale_tril, eps) -> None:
    """Shapes of :meth:`VariationalObjective.gaussian_runs_loss`'s arguments (no pass
    over the values: the sweep calls it every step)."""
    if not callable(log_p):
        raise TypeError(f"log_p must be callable, got {type(log_p).__name__}")
    for name, value in (("mean", mean), ("raw", raw), ("scale_tril", scale_tril),
                        ("eps", eps)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise TypeError(f"{name} must be a real floating torch.Tensor, got "
                            f"{type(value).__name__}")
    if mean.ndim != 2:
        raise ValueError(f"mean must have shape (R, D), got {tuple(mean.shape)}")
    r, d = mean.shape
    if tuple(raw.shape) not in ((r, d), (r, d, d)):
        raise ValueError(f"raw must have shape ({r}, {d}) or ({r}, {d}, {d}), got "
                         f"{tuple(raw.shape)}")
    if tuple(scale_tril.shape) != (r, d, d):
        raise ValueError(f"scale_tril must have shape ({r}, {d}, {d}), got "
                         f"{tuple(scale_tril.shape)}")
    if eps.ndim != 3 or eps.shape[0] != r or eps.shape[2] != d or eps.shape[1] < 1:
        raise ValueError(f"eps must have shape ({r}, S, {d}) with S >= 1, got "
                         f"{tuple(eps.shape)}")


class VariationalObjective:
    """Base class of variational objectives: subclass it and implement :meth:`surrogate`.

    Attributes
    ----------
    estimator : str
        How the gradient is formed, a word of :data:`elbo_lib.gradients.ESTIMATORS`.
    differentiates_log_joint : bool
        True when the gradient flows through ``log_joint`` (pathwise estimators): a loop
        then refuses a ``log_joint`` that carries no gradient with respect to z.
    supports_runs : bool
        True when :meth:`surrogate` accepts a q with batch shape (R,) (R runs).
    is_upper_bound : bool
        True for an upper bound on log p(x) (:class:`ChiUpperBound`, :class:`RenyiBound`
        with alpha < 0): the loop minimises
        the bound, so the surrogate's ``loss`` is plus its estimate, not minus.
    """

    estimator: str = "pathwise"
    differentiates_log_joint: bool = True
    supports_runs: bool = True
    is_upper_bound: bool = False

    def min_samples(self) -> int:
        """The fewest samples per step the objective needs (1 unless a baseline needs 2)."""
        return 1

    def surrogate(self, log_joint: LogJoint, q: Distribution,
                  num_samples: int) -> Surrogate:
        """One step's loss and estimate from ``num_samples`` samples of q.

        Parameters
        ----------
        log_joint : callable
            Maps samples (N, D) to log p(x, z), shape (N,).
        q : torch.distributions.Distribution
            Event shape (D,), batch shape () or (R,) (R independent runs, whose samples
            reach ``log_joint`` stacked).
        num_samples : int
            Samples S of q per member.

        Returns
        -------
        Surrogate
        """
        if not callable(log_joint):
            raise TypeError(f"log_joint must be callable, got {type(log_joint).__name__}")
        _check_q(q)
        check_positive_int(num_samples, "num_samples", self.min_samples())
        raise NotImplementedError(f"{type(self).__name__} must implement surrogate()")

    def gaussian_runs_loss(self, log_p: Callable[[torch.Tensor], torch.Tensor],
                           mean: torch.Tensor, raw: torch.Tensor, scale_tril: torch.Tensor,
                           eps: torch.Tensor) -> torch.Tensor:
        """The loss of R Gaussian runs q_r = N(mean_r, L_r L_r^T) from given noise.

        What :func:`elbo_lib.variational.fit_gaussian_vi_parallel` calls each step. It
        checks the shapes and calls the hook ``_gaussian_runs_loss``, whose default
        builds q with batch shape (R,) and calls :meth:`surrogate`, which draws its own
        samples from torch's global generator (``eps`` gives only S); the book's
        objectives override the hook with the sweep's closed forms on ``eps``.

        Parameters
        ----------
        log_p : callable
            Maps z (R, S, D) to log p(x, z), shape (R, S) (non-finite runs tolerated).
        mean : torch.Tensor (R, D)
        raw : torch.Tensor (R, D) or (R, D, D)
            The unconstrained scale parameter (diagonal or full family).
        scale_tril : torch.Tensor (R, D, D)
            L, a differentiable function of ``raw``.
        eps : torch.Tensor (R, S, D)
            Standard normal noise of this step: z = mean + L eps.

        Returns
        -------
        torch.Tensor
            A scalar whose gradient with respect to ``mean`` and ``raw`` is minus the
            sum over runs of the objective's gradient estimates.

        Raises
        ------
        TypeError, ValueError
            If ``log_p`` is not callable, or an argument is not a real floating tensor
            of its shape.
        """
        _check_runs_arguments(log_p, mean, raw, scale_tril, eps)
        return self._gaussian_runs_loss(log_p, mean, raw, scale_tril, eps)

    def _gaussian_runs_loss(self, log_p, mean, raw, scale_tril, eps) -> torch.Tensor:
        """The hook of :meth:`gaussian_runs_loss`: by default through :meth:`surrogate`."""
        def stacked(z: torch.Tensor) -> torch.Tensor:   # (N, D) -> (N,)
            return log_p(z[None]).reshape(-1)

        return self.surrogate(stacked, _runs_of_q(mean, scale_tril), eps.shape[1]).loss

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class PathwiseELBO(VariationalObjective):
    """The ELBO with its pathwise (reparameterisation) gradient.

    E_q[log p(x, z) - log q(z)] by :func:`elbo_lib.bounds.monte_carlo_elbo`,
    differentiated through ``q.rsample`` (Kingma and Welling 2014; Rezende et al. 2014).
    In the Gaussian sweep the entropy is in closed form (sum_i log L_ii + const), whose
    gradient is, sample by sample, the same. Chapters 5 and 7.
    """

    estimator = "pathwise"

    def surrogate(self, log_joint: LogJoint, q: Distribution,
                  num_samples: int) -> Surrogate:
        """See :meth:`VariationalObjective.surrogate`."""
        q = _check_q(q)
        num_samples = check_positive_int(num_samples, "num_samples")
        if q.batch_shape == ():
            elbo = monte_carlo_elbo(log_joint, q, num_samples)
        else:
            elbo = _elbo_of_runs(log_joint, q, num_samples)
        return Surrogate(-elbo.sum(), elbo.detach())

    def _gaussian_runs_loss(self, log_p, mean, raw, scale_tril, eps) -> torch.Tensor:
        """The closed form on ``eps`` (see :meth:`VariationalObjective.gaussian_runs_loss`)."""
        z = mean[:, None, :] + eps @ scale_tril.transpose(1, 2)
        ent = torch.log(torch.diagonal(scale_tril, dim1=1, dim2=2)).sum(-1)
        return -(log_p(z).mean(1) + ent).sum()


def _elbo_of_runs(log_joint: LogJoint, q: Distribution, num_samples: int) -> torch.Tensor:
    """Pathwise Monte Carlo ELBO of each member of a q with batch shape (R,), shape (R,).

    The R members' samples (S, R, D) go to ``log_joint`` stacked as (S * R, D), so a
    log-joint written for one q serves every run.
    """
    z = q.rsample((num_samples,))
    s, r = z.shape[:2]
    log_p = log_joint(z.reshape(s * r, *z.shape[2:]))
    if not isinstance(log_p, torch.Tensor) or log_p.shape != (s * r,):
        shape = tuple(log_p.shape) if isinstance(log_p, torch.Tensor) else type(log_p).__name__
        raise ValueError(f"log_joint must return a tensor of shape ({s * r},) for the "
                         f"{r} runs' samples stacked, got {shape}")
    terms = log_p.reshape(s, r) - q.log_prob(z)
    if not bool(torch.isfinite(terms).all()):
        raise ValueError("log_joint(z) - q.log_prob(z) must be finite for every sample "
                         "of every run")
    return terms.mean(0)


class PathDerivativeELBO(VariationalObjective):
    """The ELBO with the path-derivative gradient (Roeder, Wu and Duvenaud 2017).

    Only the path through z: log q's parameters are held fixed, so the score term, of
    mean zero, is dropped; at q = p(z | x) every sample's gradient is zero. Needs a
    Gaussian q (its parameters are rebuilt detached). Chapter 5.
    """

    estimator = "path-derivative"

    def surrogate(self, log_joint: LogJoint, q: Distribution,
                  num_samples: int) -> Surrogate:
        """See :meth:`VariationalObjective.surrogate`."""
        q = _check_q(q)
        mean, low, _ = _gaussian_parts(q)
        num_samples = check_positive_int(num_samples, "num_samples")
        z = q.rsample((num_samples,))                                   # (S, *R, D)
        fixed = MultivariateNormal(mean.detach(), scale_tril=low.detach(),
                                   validate_args=False)
        terms = _finite(_log_joint_of(log_joint, z) - fixed.log_prob(z),
                        "log_joint(z) - q.log_prob(z)")
        elbo = terms.mean(0)
        return Surrogate(-elbo.sum(), elbo.detach())

    def _gaussian_runs_loss(self, log_p, mean, raw, scale_tril, eps) -> torch.Tensor:
        """The closed form on ``eps`` (see :meth:`VariationalObjective.gaussian_runs_loss`)."""
        z = mean[:, None, :] + eps @ scale_tril.transpose(1, 2)
        log_q = _batched_log_q(z, mean.detach(), scale_tril.detach())
        return -(log_p(z) - log_q).mean(1).sum()


class ScoreFunctionELBO(VariationalObjective):
    """The ELBO with the score-function gradient (Ranganath, Gerrish and Blei 2014).

    (1/S) sum_s (w_s - b_s) grad log q(z_s), w = log p - log q, by
    :func:`elbo_lib.bounds.score_function_elbo_surrogate`: needs only ``sample`` and
    ``log_prob``, not a differentiable log_joint. One run (batch shape ()) in
    :func:`~elbo_lib.variational.fit_vi`. Chapter 5.

    Parameters
    ----------
    baseline : None, float or "leave-one-out"
        See :func:`elbo_lib.gradients.check_baseline`.
    """

    estimator = "score"
    differentiates_log_joint = False
    supports_runs = False

    def __init__(self, baseline: None | float | str = "leave-one-out") -> None:
        self.baseline = check_baseline(baseline, 2)

    def min_samples(self) -> int:
        """2 for the leave-one-out baseline, else 1."""
        return 2 if self.baseline == "leave-one-out" else 1

    def surrogate(self, log_joint: LogJoint, q: Distribution,
                  num_samples: int) -> Surrogate:
        """See :meth:`VariationalObjective.surrogate`."""
        q = _check_q(q)
        if q.batch_shape != ():
            raise ValueError(f"{type(self).__name__} fits one run (q with batch shape ()), "
                             f"got batch shape {tuple(q.batch_shape)}")
        surrogate, estimate = score_function_elbo_surrogate(
            log_joint, q, num_samples, baseline=self.baseline)
        return Surrogate(-surrogate, estimate)

    def _gaussian_runs_loss(self, log_p, mean, raw, scale_tril, eps) -> torch.Tensor:
        """The closed form on ``eps`` (see :meth:`VariationalObjective.gaussian_runs_loss`)."""
        with torch.no_grad():
            z = mean[:, None, :] + eps @ scale_tril.transpose(1, 2)
        log_q = _batched_log_q(z, mean, scale_tril)
        with torch.no_grad():
            w = apply_baseline(log_p(z) - log_q, self.baseline, allow_nonfinite=True)
        return -(w * log_q).mean(1).sum()


class ScoreControlVariateELBO(VariationalObjective):
    """Score function of E_q[log p] with control variates, exact Gaussian entropy.

    For q = N(mu, L L^T) in the coordinates (mu, L): the score function applied to
    E_q[log p(x, z)] only, with the score itself as a control variate, one coefficient
    per coordinate p, a_p = Cov(f h_p, h_p) / Var(h_p) (h_p the score coordinate,
    f = log p), estimated for each sample from the other S - 1 (unbiased; needs
    S >= 3), plus the entropy's gradient in closed form, diag(1 / L_ii) (Ranganath et
    al. 2014, section 3.2). The scores at fixed z = mu + L eps are L^{-T} eps and
    tril(L^{-T} eps eps^T) - diag(1 / L_ii). Gaussian q only. Chapter 5.
    """

    estimator = "score-cv"
    differentiates_log_joint = False

    def min_samples(self) -> int:
        """3: each coefficient is estimated from the other S - 1 >= 2 samples."""
        return 3

    def surrogate(self, log_joint: LogJoint, q: Distribution,
                  num_samples: int) -> Surrogate:
        """See :meth:`VariationalObjective.surrogate`."""
        q = _check_q(q)
        mean, low, _ = _gaussian_parts(q)
        s = check_positive_int(num_samples, "num_samples", 3)
        single = q.batch_shape == ()
        mu_b = mean.reshape(-1, mean.shape[-1])
        low_b = low.reshape(-1, *low.shape[-2:])
        r, d = mu_b.shape
        with torch.no_grad():
            eps = torch.randn(r, s, d, dtype=mu_b.dtype)
            z = mu_b.detach()[:, None, :] + eps @ low_b.detach().transpose(1, 2)
            f = _finite(_log_joint_of(log_joint, z), "log_joint(z)")          # (R, S)
            v = torch.linalg.solve_triangular(low_b.detach().transpose(1, 2),
                                              eps.transpose(1, 2), upper=True).transpose(1, 2)
            inv_diag = torch.diag_embed(1 / torch.diagonal(low_b.detach(), dim1=1, dim2=2))
            h_low = torch.tril(v[..., :, None] * eps[..., None, :]) - inv_diag[:, None]
            g_mu = leave_one_out_control_variate(f, v)
            g_low = leave_one_out_control_variate(f, h_low) + inv_diag
            log_q = _batched_log_q(z, mu_b.detach(), low_b.detach())
            estimate = (f - log_q).mean(1)
        loss = -((g_mu * mu_b).sum() + (g_low * low_b).sum())
        return Surrogate(loss, estimate.reshape(()) if single else estimate)

    def _gaussian_runs_loss(self, log_p, mean, raw, scale_tril, eps) -> torch.Tensor:
        """The closed form on ``eps`` (see :meth:`VariationalObjective.gaussian_runs_loss`)."""
        with torch.no_grad():
            low = scale_tril.detach()
            z = mean.detach()[:, None, :] + eps @ low.transpose(1, 2)
            f = log_p(z)                                                   # (R, S)
            diag = torch.diagonal(low, dim1=1, dim2=2)                     # (R, D)
            v = torch.linalg.solve_triangular(low.transpose(1, 2), eps.transpose(1, 2),
                                              upper=True).transpose(1, 2)  # L^{-T} eps
            if raw.ndim == 2:                                              # diagonal
                slope = torch.sigmoid(raw.detach())                        # dL_ii / draw_i
                h_raw = (eps**2 - 1) / diag[:, None, :] * slope[:, None, :]
                ent_raw = slope / diag
            else:
                slope = torch.sigmoid(torch.diagonal(raw.detach(), dim1=1, dim2=2))
                h_low = (torch.tril(v[..., :, None] * eps[..., None, :])
                         - torch.diag_embed(1 / diag)[:, None])
                chain = torch.tril(torch.ones_like(low), -1) + torch.diag_embed(slope)
                h_raw = h_low * chain[:, None]
                ent_raw = torch.diag_embed(slope / diag)
            g_mu = -leave_one_out_control_variate(f, v)
            g_raw = -(leave_one_out_control_variate(f, h_raw) + ent_raw)
        # a scalar whose gradient is exactly (g_mu, g_raw)
        return (g_mu * mean).sum() + (g_raw * raw).sum()


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
        z = q.rsample((num_samples, self.num_importance))               # (S, k, *R, D)
        log_w = _finite(_log_joint_of(log_joint, z) - q.log_prob(z),
                        "log_joint(z) - q.log_prob(z)")
        bound = importance_weighted_bound(log_w, dim=1).mean(0)
        return Surrogate(-bound.sum(), bound.detach())


# --------------------------------------------------------------------------------------
# chapter 8: the importance-weighted family's gradient estimators, Renyi and chi bounds
# --------------------------------------------------------------------------------------
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
        q = _check_q(q)
        num_samples = check_positive_int(num_samples, "num_samples")
        z = q.rsample((num_samples, self.num_importance))               # (S, k, *R, D)
        log_w = _finite(_log_joint_of(log_joint, z) - q.log_prob(z),
                        "log_joint(z) - q.log_prob(z)")
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
        q = _check_q(q)
        num_samples = check_positive_int(num_samples, "num_samples")
        z = q.rsample((num_samples, self.num_importance))
        log_w = _finite(_log_joint_of(log_joint, z) - q.log_prob(z),
                        "log_joint(z) - q.log_prob(z)")
        bound = renyi_bound(log_w, 1.0 - self.n, dim=1).mean(0)
        return Surrogate(bound.sum(), bound.detach())



# --------------------------------------------------------------------------------------
# chapter 8: the inclusive KL, KL(p(z | x) || q)
# --------------------------------------------------------------------------------------
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
