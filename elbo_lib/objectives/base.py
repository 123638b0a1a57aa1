"""The protocol of a variational objective and what its instances share (chapters 5, 7, 8).

:class:`VariationalObjective` (one method, ``surrogate``, and the Gaussian sweep's
``gaussian_runs_loss``), its return type :class:`Surrogate`, and the package's private
helpers: checks of q and of ``log_joint``'s output, the parts of a Gaussian q, and
log q of a batch of Gaussian runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from elbo_lib._validation import check_positive_int

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


def _reparameterised_log_weights(log_joint: LogJoint, q: Distribution, num_samples: int,
                                 num_importance: int) -> torch.Tensor:
    """log w = log p(x, z) - log q(z), shape (S, k, *R), of z = q.rsample((S, k)): the
    importance-weighted family's one sampling step (q and S already checked)."""
    z = q.rsample((num_samples, num_importance))                    # (S, k, *R, D)
    return _finite(_log_joint_of(log_joint, z) - q.log_prob(z),
                   "log_joint(z) - q.log_prob(z)")


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
