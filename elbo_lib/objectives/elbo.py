"""The ELBO under the book's gradient estimators (chapters 5, 7).

Pathwise (:class:`PathwiseELBO`), path derivative (:class:`PathDerivativeELBO`), score
function with a baseline (:class:`ScoreFunctionELBO`) and score function with control
variates and the exact Gaussian entropy (:class:`ScoreControlVariateELBO`).
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, MultivariateNormal

from elbo_lib._validation import check_positive_int
from elbo_lib.bounds import monte_carlo_elbo, score_function_elbo_surrogate
from elbo_lib.gradients import (
    apply_baseline,
    check_baseline,
    leave_one_out_control_variate,
)
from elbo_lib.objectives.base import (
    LogJoint,
    Surrogate,
    VariationalObjective,
    _batched_log_q,
    _check_q,
    _finite,
    _gaussian_parts,
    _log_joint_of,
)


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
