"""Variational families as objects, and the one stochastic-gradient VI loop (chapters 5, 7).

A *variational family* is a :class:`torch.nn.Module` whose parameters are the
variational parameters phi and whose :meth:`~VariationalFamily.distribution` returns
q_phi as a :class:`torch.distributions.Distribution` with event shape (D,) and an empty
batch shape, supporting ``rsample`` (for the pathwise gradient) and ``log_prob``. That
is all :func:`fit_vi` asks of a family, so a new family (a normalising flow, chapter 7)
is a new class and no edit of the loop. A flow returns a
:class:`~torch.distributions.TransformedDistribution` whose transforms cache their last
input (``cache_size=1``), so ``log_prob`` of its own samples needs no inverse.

:func:`fit_vi` maximises the ELBO (Blei, Kucukelbir and McAuliffe 2017, eq. 13)

.. math::

    \\mathcal L(\\phi) = \\mathbb E_{q_\\phi(z)}[\\log p(x, z) - \\log q_\\phi(z)]

with Adam (Kingma and Ba 2015) following either the pathwise (reparameterisation)
gradient of :func:`elbo_lib.bounds.monte_carlo_elbo` or the score-function gradient of
:func:`elbo_lib.bounds.score_function_elbo_surrogate` (Ranganath, Gerrish and Blei
2014): the same number of model evaluations per step for both.
:func:`fit_gaussian_vi_parallel` runs many Gaussian fits (a step-size sweep over seeds)
in one batched computation (chapter 5). A family built with ``num_runs = R > 1`` holds R
independent members (its distribution has batch shape (R,)), and :func:`fit_vi` trains
them as R independent runs in one computation: a trained result is a statement about
many runs, so chapter 7 fits every flow over several runs at the cost of about one.
:func:`best_gaussian_by_quadrature` finds the best full-covariance Gaussian of a
low-dimensional target deterministically, the independent answer that a Gaussian fit
by stochastic VI is checked against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal
from torch.nn.functional import softplus

from elbo_lib._validation import as_float_array, check_positive, check_positive_int
from elbo_lib.bounds import monte_carlo_elbo, score_function_elbo_surrogate
from elbo_lib.gradients import apply_baseline, check_baseline

__all__ = [
    "DiagonalGaussian",
    "FullRankGaussian",
    "ParallelVIResult",
    "QuadratureGaussianFit",
    "VIResult",
    "VariationalFamily",
    "best_gaussian_by_quadrature",
    "fit_gaussian_vi_parallel",
    "fit_vi",
]

DTYPE = torch.float64
ESTIMATORS = ("pathwise", "score")


def _inverse_softplus(value: float) -> float:
    """softplus^{-1}(value) = log(expm1(value)), stable for large values."""
    if value > 30.0:  # expm1 overflows near 710; softplus(y) = y to double precision here
        return value + math.log1p(-math.exp(-value))
    return math.log(math.expm1(value))


class VariationalFamily(nn.Module):
    """Base class of variational families: subclass it and implement :meth:`distribution`.

    Attributes
    ----------
    dim : int
        Dimension D of z.
    num_runs : int
        Number R of independent members the family holds (1 by default). With R > 1
        every parameter has a leading run dimension, :meth:`distribution` has batch
        shape (R,), and :func:`fit_vi` trains the members as R independent runs.
    """

    def __init__(self, dim: int, num_runs: int = 1) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.num_runs = check_positive_int(num_runs, "num_runs")

    def _run_shape(self) -> tuple[int, ...]:
        """() for one member, (R,) for R independent ones: the parameters' leading shape."""
        return () if self.num_runs == 1 else (self.num_runs,)

    def distribution(self) -> Distribution:
        """q with event shape (D,); batch shape () for one member, (R,) for R runs."""
        raise NotImplementedError(f"{type(self).__name__} must implement distribution()")

    def num_parameters(self) -> int:
        """Number of free (trainable) variational parameters of one member."""
        total = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return total // self.num_runs


class DiagonalGaussian(VariationalFamily):
    """q(z) = N(mean, diag(std^2)), the mean-field Gaussian (chapter 5).

    Unconstrained parameters: ``mean`` and ``raw_std`` with std = softplus(raw_std).

    Parameters
    ----------
    dim : int
        Dimension D of z.
    init_scale : float
        Initial standard deviation of every coordinate (> 0); the mean starts at 0.
    num_runs : int
        Independent members R (parameters of shape (R, D) when R > 1).
    """

    def __init__(self, dim: int, init_scale: float = 0.1, num_runs: int = 1) -> None:
        super().__init__(dim, num_runs)
        init_scale = check_positive(init_scale, "init_scale")
        shape = (*self._run_shape(), self.dim)
        self.mean = nn.Parameter(torch.zeros(shape, dtype=DTYPE))
        self.raw_std = nn.Parameter(
            torch.full(shape, _inverse_softplus(init_scale), dtype=DTYPE))

    def std(self) -> torch.Tensor:
        """Standard deviations, shape (D,) (or (R, D))."""
        return softplus(self.raw_std)

    def scale_tril(self) -> torch.Tensor:
        """The Cholesky factor of the covariance: diag(std), shape (D, D) (or (R, D, D))."""
        return torch.diag_embed(self.std())

    def distribution(self) -> Distribution:
        """``Independent(Normal(mean, std), 1)``."""
        return Independent(Normal(self.mean, self.std()), 1)

    def covariance(self) -> np.ndarray:
        """diag(std^2) as a NumPy array, shape (D, D) (or (R, D, D))."""
        return torch.diag_embed(self.std().detach() ** 2).numpy()


class FullRankGaussian(VariationalFamily):
    """q(z) = N(mean, L L^T) with a full lower-triangular Cholesky factor L (chapter 5).

    Unconstrained parameters: ``mean`` and ``raw_scale_tril``, whose strictly lower
    triangle and softplus-ed diagonal form L.

    Parameters
    ----------
    dim : int
        Dimension D of z.
    init_scale : float
        Initial standard deviation of every coordinate (> 0): L = init_scale I at the
        start, and the mean starts at 0.
    num_runs : int
        Independent members R (``mean`` of shape (R, D), ``raw_scale_tril`` (R, D, D)
        when R > 1). Restarts from different means: set ``mean`` before fitting.
    """

    def __init__(self, dim: int, init_scale: float = 0.1, num_runs: int = 1) -> None:
        super().__init__(dim, num_runs)
        init_scale = check_positive(init_scale, "init_scale")
        runs = self._run_shape()
        self.mean = nn.Parameter(torch.zeros((*runs, self.dim), dtype=DTYPE))
        self.raw_scale_tril = nn.Parameter(torch.diag_embed(
            torch.full((*runs, self.dim), _inverse_softplus(init_scale), dtype=DTYPE)))

    def scale_tril(self) -> torch.Tensor:
        """The Cholesky factor L of the covariance, shape (D, D) (or (R, D, D))."""
        raw = self.raw_scale_tril
        return torch.tril(raw, -1) + torch.diag_embed(
            softplus(torch.diagonal(raw, dim1=-2, dim2=-1)))

    def std(self) -> torch.Tensor:
        """Marginal standard deviations sqrt(diag(L L^T)), shape (D,) (or (R, D))."""
        return self.scale_tril().pow(2).sum(-1).sqrt()

    def distribution(self) -> Distribution:
        """``MultivariateNormal(mean, scale_tril=L)``."""
        return MultivariateNormal(self.mean, scale_tril=self.scale_tril())

    def covariance(self) -> np.ndarray:
        """L L^T as a NumPy array, shape (D, D) (or (R, D, D))."""
        low = self.scale_tril().detach()
        return (low @ low.transpose(-1, -2)).numpy()

    def num_parameters(self) -> int:
        """D + D(D+1)/2: the strict upper triangle of ``raw_scale_tril`` is unused."""
        return self.dim + self.dim * (self.dim + 1) // 2


@dataclass
class VIResult:
    """Output of :func:`fit_vi`.

    Attributes
    ----------
    q : VariationalFamily
        The fitted family (the object passed in, trained in place).
    steps : ndarray
        Steps at which the ELBO was evaluated (0, every ``eval_every``, the last).
    elbo : ndarray, shape (T,) or (T, R)
        ELBO estimates at those steps (``eval_samples`` fresh samples each), one column
        per run for a family with ``num_runs = R > 1``.
    model_evaluations : int
        log-joint evaluations spent on gradients by each run (num_steps x num_samples).
    info : dict
        The estimator and the number of samples per step.
    """

    q: VariationalFamily
    steps: np.ndarray
    elbo: np.ndarray
    model_evaluations: int
    info: dict = field(default_factory=dict)


def fit_vi(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    family: VariationalFamily,
    *,
    estimator: str = "pathwise",
    num_samples: int = 8,
    num_steps: int = 1000,
    lr: float = 0.05,
    baseline: None | float | str = "leave-one-out",
    eval_every: int = 50,
    eval_samples: int = 256,
) -> VIResult:
    """Stochastic-gradient (black-box) VI: maximise the ELBO of ``family`` with Adam.

    Each step draws ``num_samples`` samples of q (that many evaluations of the model)
    and follows the pathwise gradient of :func:`~elbo_lib.bounds.monte_carlo_elbo` or
    the score-function gradient of
    :func:`~elbo_lib.bounds.score_function_elbo_surrogate`. Chapters 5 and 7.

    Parameters
    ----------
    log_joint : callable
        Maps samples of shape (S, D) to log p(x, z), shape (S,); differentiable in z for
        the pathwise estimator.
    family : VariationalFamily
        The family to fit; its parameters are trained in place. With ``num_runs = R >
        1`` its R members are R independent runs: each draws its own samples, and the
        loss is the sum of their negative ELBOs, so each member's gradient (and Adam,
        elementwise, its step) is exactly what it would be alone. ``log_joint`` then
        sees the R runs' samples stacked, shape (S * R, D).
    estimator : {"pathwise", "score"}
        The pathwise estimator needs ``rsample``; the score-function estimator needs
        ``log_prob`` at arbitrary points (not available for flows without an inverse),
        and one run (``num_runs = 1``).
    num_samples, num_steps : int
        S per step (>= 2 for the leave-one-out baseline) and number of Adam steps.
    lr : float
        Adam learning rate.
    baseline : None, float or "leave-one-out"
        Score-function baseline (ignored by the pathwise estimator).
    eval_every, eval_samples : int
        ELBO trace: every ``eval_every`` steps, with ``eval_samples`` samples.

    Returns
    -------
    VIResult

    Raises
    ------
    TypeError
        If ``family`` is not a :class:`VariationalFamily` or ``log_joint`` not callable.
    ValueError
        For a bad estimator or size; for a ``log_joint`` that carries no gradient with
        respect to z under the pathwise estimator (a detached or NumPy computation), or
        a loss that no gradient connects to the parameters; and when the fit diverges
        (the ELBO estimate or a parameter becomes non-finite). The message names the
        step, and the family's parameters are restored to their values at the start of
        the fit (its Adam state is discarded).
    """
    if not isinstance(family, VariationalFamily):
        raise TypeError(f"family must be an elbo_lib.variational.VariationalFamily, "
                        f"got {type(family).__name__}")
    if not callable(log_joint):
        raise TypeError(f"log_joint must be callable, got {type(log_joint).__name__}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    runs = family.num_runs
    if runs > 1 and estimator != "pathwise":
        raise ValueError(f"a family with num_runs = {runs} is fitted with the pathwise "
                         f"estimator only, got estimator={estimator!r}")
    loo = estimator == "score" and baseline == "leave-one-out"
    num_samples = check_positive_int(num_samples, "num_samples", 2 if loo else 1)
    num_steps = check_positive_int(num_steps, "num_steps")
    eval_every = check_positive_int(eval_every, "eval_every")
    eval_samples = check_positive_int(eval_samples, "eval_samples")
    lr = check_positive(lr, "lr")
    params = [p for p in family.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"family {type(family).__name__} has no trainable parameters")
    opt = torch.optim.Adam(params, lr=lr)
    steps, trace = [], []
    start = [p.detach().clone() for p in params]

    def stopped(step: int, err: ValueError) -> ValueError:
        # a stopped fit leaves the family where it started, not at a diverged iterate
        with torch.no_grad():
            for p, p0 in zip(params, start, strict=True):
                p.copy_(p0)
        hint = f" (a smaller lr than {lr} may help)" if "finite" in str(err) else ""
        return ValueError(f"fit_vi stopped at step {step} of {num_steps}: {err}{hint}; "
                          f"the family's parameters are restored to their values at "
                          f"the start of the fit")

    def differentiable_log_joint(z: torch.Tensor) -> torch.Tensor:
        out = log_joint(z)
        if (estimator == "pathwise" and z.requires_grad
                and isinstance(out, torch.Tensor) and not out.requires_grad):
            raise ValueError(
                "log_joint(z) carries no gradient with respect to z (detached, or "
                "computed outside torch?): the pathwise estimator differentiates "
                "log_joint through the samples, and without that gradient the fit "
                "would only follow the entropy; pass a log_joint differentiable in z, "
                "or use estimator='score' for a black-box log_joint")
        return out

    def elbo(num: int) -> torch.Tensor:
        q = family.distribution()
        if runs == 1:
            return monte_carlo_elbo(differentiable_log_joint, q, num)
        return _elbo_of_runs(differentiable_log_joint, q, num)

    def record(step: int) -> None:
        try:
            with torch.no_grad():
                value = elbo(eval_samples).numpy().copy()
        except ValueError as err:
            raise stopped(step, err) from err
        steps.append(step)
        trace.append(float(value) if runs == 1 else value)

    record(0)
    for step in range(1, num_steps + 1):
        opt.zero_grad()
        try:
            if estimator == "pathwise":
                loss = -elbo(num_samples).sum()      # the sum of R independent runs
            else:
                surrogate, _ = score_function_elbo_surrogate(
                    log_joint, family.distribution(), num_samples, baseline=baseline)
                loss = -surrogate
            if not torch.isfinite(loss):
                raise ValueError("the loss is not finite")
            if not loss.requires_grad:
                raise ValueError("no gradient reaches the family's parameters (the "
                                 "loss does not depend on them)")
        except ValueError as err:
            raise stopped(step, err) from err
        loss.backward()
        if all(p.grad is None for p in params):
            raise stopped(step, ValueError("no gradient reaches the family's parameters "
                                           "(the loss does not depend on them)"))
        opt.step()
        if step % eval_every == 0 or step == num_steps:
            record(step)
    return VIResult(family, np.asarray(steps), np.asarray(trace), num_steps * num_samples,
                    {"family": type(family).__name__, "estimator": estimator,
                     "num_samples": num_samples, "num_runs": runs})


def _elbo_of_runs(log_joint: Callable[[torch.Tensor], torch.Tensor], q: Distribution,
                  num_samples: int) -> torch.Tensor:
    """Pathwise Monte Carlo ELBO of each member of a q with batch shape (R,), shape (R,).

    The R members' samples (S, R, D) go to ``log_joint`` stacked as (S * R, D), so a
    log-joint written for one q serves every run.
    """
    if len(q.batch_shape) != 1:
        raise ValueError(f"q must have batch shape (R,) for R runs, got "
                         f"{tuple(q.batch_shape)}")
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


# --------------------------------------------------------------------------------------
# many Gaussian black-box VI runs at once: step-size sweeps over several seeds
# --------------------------------------------------------------------------------------
PARALLEL_ESTIMATORS = ("pathwise", "path-derivative", "score", "score-cv")
FAMILIES = ("diagonal", "full")


@dataclass
class ParallelVIResult:
    """Output of :func:`fit_gaussian_vi_parallel`: R independent runs.

    Attributes
    ----------
    lrs : ndarray (R,)
        Adam step size of each run.
    mean, scale_tril : ndarray (R, D) and (R, D, D)
        Final q = N(mean, L L^T) of each run (NaN where a run's parameters overflowed).
    steps : ndarray (T,)
        Steps at which the ELBO trace was recorded.
    elbo : ndarray (R, T)
        ELBO estimates (``eval_samples`` fresh samples, closed-form entropy).
    final_elbo : ndarray (R,)
        ELBO of the final q from ``final_samples`` samples.
    diverged : ndarray of bool (R,)
        The run's final ELBO is non-finite or below the ELBO of its starting point.
    model_evaluations : int
        log-joint evaluations spent on gradients by each run (steps x S).
    """

    lrs: np.ndarray
    mean: np.ndarray
    scale_tril: np.ndarray
    steps: np.ndarray
    elbo: np.ndarray
    final_elbo: np.ndarray
    diverged: np.ndarray
    model_evaluations: int


def _batched_log_q(z: torch.Tensor, mu: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """log N(z; mu_r, L_r L_r^T) for z (R, S, D), mu (R, D), low (R, D, D) -> (R, S)."""
    diff = (z - mu[:, None, :]).transpose(1, 2)
    white = torch.linalg.solve_triangular(low, diff, upper=False)
    log_det = torch.log(torch.diagonal(low, dim1=1, dim2=2)).sum(-1, keepdim=True)
    return -0.5 * (white**2).sum(1) - log_det - 0.5 * mu.shape[-1] * math.log(2 * math.pi)


def _score_cv_gradients(log_p: Callable[[torch.Tensor], torch.Tensor], mu: torch.Tensor,
                        raw: torch.Tensor, low: torch.Tensor, eps: torch.Tensor,
                        family: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative ELBO gradients (for descent) of the ``"score-cv"`` estimator.

    With z = mu + L eps the scores at fixed z are d log q / d mu = L^{-T} eps and
    d log q / d L = tril(L^{-T} eps eps^T) - diag(1 / L_ii) (the diagonal of L is
    softplus(raw), hence the factor sigmoid(raw_ii)); the entropy sum_i log L_ii + const
    contributes sigmoid(raw_ii) / L_ii. Shapes: mu (R, D), raw (R, D) or (R, D, D),
    low (R, D, D), eps (R, S, D).
    """
    with torch.no_grad():
        z = mu[:, None, :] + eps @ low.transpose(1, 2)
        f = log_p(z)                                                   # (R, S)
        diag = torch.diagonal(low, dim1=1, dim2=2)                     # (R, D)
        v = torch.linalg.solve_triangular(low.transpose(1, 2), eps.transpose(1, 2),
                                          upper=True).transpose(1, 2)  # L^{-T} eps
        if family == "diagonal":
            slope = torch.sigmoid(raw)                                 # dL_ii / draw_i
            h_raw = (eps**2 - 1) / diag[:, None, :] * slope[:, None, :]
            ent_raw = slope / diag
        else:
            slope = torch.sigmoid(torch.diagonal(raw, dim1=1, dim2=2))
            h_low = (torch.tril(v[..., :, None] * eps[..., None, :])
                     - torch.diag_embed(1 / diag)[:, None])
            chain = torch.tril(torch.ones_like(low), -1) + torch.diag_embed(slope)
            h_raw = h_low * chain[:, None]
            ent_raw = torch.diag_embed(slope / diag)

        return -_loo_controlled(f, v), -(_loo_controlled(f, h_raw) + ent_raw)


def _loo_controlled(f: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Mean over axis 1 of f h - a h, a = Cov(f h, h) / Var(h) per coordinate.

    f (R, S), h (R, S, ...). Each sample's coefficient comes from the other S - 1
    samples (leave one out), independent of its own h, so that E[a h] = E[a] E[h] = 0:
    unbiased.
    """
    shape = (*f.shape, *([1] * (h.ndim - 2)))
    fh = f.reshape(shape) * h
    n = h.shape[1] - 1
    sum_h, sum_fh = h.sum(1, keepdim=True) - h, fh.sum(1, keepdim=True) - fh
    sum_hh = (h * h).sum(1, keepdim=True) - h * h
    sum_fhh = (fh * h).sum(1, keepdim=True) - fh * h
    var_h = sum_hh - sum_h**2 / n
    cov = sum_fhh - sum_fh * sum_h / n
    a = torch.where(var_h > 0, cov / torch.where(var_h > 0, var_h, 1.0), 0.0)
    return (fh - a * h).mean(1)


SCORE_ESTIMATORS = ("score", "score-cv")


def gaussian_score_gradient_estimates(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    mu,
    scale_tril,
    num_samples: int,
    num_repeats: int = 1,
    *,
    estimator: str = "score",
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """R independent S-sample score-function estimates of the ELBO gradient.

    For q = N(mu, L L^T), in the coordinates (mu, L) (L lower triangular), the two
    score-function estimators of :func:`fit_gaussian_vi_parallel`:

    ``"score"``
        (1/S) sum_s (f_s - b_s) grad log q(z_s), f = log p(x, z) - log q(z), with the
        leave-one-out baseline b_s (Monte Carlo entropy).
    ``"score-cv"``
        the score function of E_q[log p(x, z)] with one control-variate coefficient per
        coordinate from the other S - 1 samples (f = log p), plus the entropy's
        gradient in closed form, diag(1 / L_ii) for L.

    The scores at fixed z are grad_mu log q = L^{-T} eps and
    grad_L log q = tril(L^{-T} eps eps^T) - diag(1 / L_ii).

    Returns
    -------
    dict
        ``{"mu": tensor (R, D), "scale_tril": tensor (R, D, D)}``: the estimates.
        Chapter 5.
    """
    if estimator not in SCORE_ESTIMATORS:
        raise ValueError(f"estimator must be one of {SCORE_ESTIMATORS}, got {estimator!r}")
    if not callable(log_joint):
        raise TypeError(f"log_joint must be callable, got {type(log_joint).__name__}")
    mu_t = torch.as_tensor(as_float_array(mu, "mu", ndim=1), dtype=DTYPE)
    low = torch.as_tensor(as_float_array(scale_tril, "scale_tril", ndim=2), dtype=DTYPE)
    d = mu_t.shape[0]
    if tuple(low.shape) != (d, d) or not bool(torch.all(torch.diagonal(low) > 0)):
        raise ValueError(f"scale_tril must be ({d}, {d}) with a positive diagonal")
    low = torch.tril(low)
    s = check_positive_int(num_samples, "num_samples", 3 if estimator == "score-cv" else 2)
    r = check_positive_int(num_repeats, "num_repeats")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, "
                        f"got {type(generator).__name__}")
    with torch.no_grad():
        eps = torch.randn(r, s, d, dtype=DTYPE, generator=generator)
        z = mu_t + eps @ low.T
        log_p = log_joint(z.reshape(-1, d))
        if not isinstance(log_p, torch.Tensor) or tuple(log_p.shape) != (r * s,):
            raise ValueError(f"log_joint must map samples of shape (N, {d}) to shape (N,)")
        log_p = log_p.reshape(r, s)
        v = torch.linalg.solve_triangular(low.T, eps.transpose(1, 2),
                                          upper=True).transpose(1, 2)
        inv_diag = torch.diag_embed(1 / torch.diagonal(low))
        h_low = torch.tril(v[..., :, None] * eps[..., None, :]) - inv_diag
        if estimator == "score":
            log_q = (-0.5 * (eps**2).sum(-1) - torch.log(torch.diagonal(low)).sum()
                     - 0.5 * d * math.log(2 * math.pi))
            f = log_p - log_q
            w = f - (f.sum(1, keepdim=True) - f) / (s - 1)
            return {"mu": (w[..., None] * v).mean(1),
                    "scale_tril": (w[..., None, None] * h_low).mean(1)}
        return {"mu": _loo_controlled(log_p, v),
                "scale_tril": _loo_controlled(log_p, h_low) + inv_diag}


def fit_gaussian_vi_parallel(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    lrs,
    *,
    family: str = "diagonal",
    estimator: str = "pathwise",
    num_samples: int = 8,
    num_steps: int = 1000,
    baseline: None | float | str = "leave-one-out",
    eval_every: int = 100,
    eval_samples: int = 256,
    final_samples: int = 4096,
    init_scale: float = 0.1,
    seed: int = 0,
) -> ParallelVIResult:
    """Run ``len(lrs)`` independent Gaussian black-box VI runs in parallel.

    The same algorithm as :func:`fit_vi` with :class:`DiagonalGaussian` or
    :class:`FullRankGaussian` (q = N(mean, L L^T), softplus diagonal, mean = 0 and
    L = init_scale I at the start, Adam), but
    every run has its own step size and its own noise, and all runs advance in one
    batched computation. Repeating a step size in ``lrs`` gives independent replicates
    (seeds) of that setting. Chapter 5 uses it for a step-size sweep of the estimators.

    Parameters
    ----------
    log_joint : callable
        Maps samples (N, D) to log p(x, z) of shape (N,).
    dim : int
    lrs : array_like of float > 0, shape (R,)
    family : {"diagonal", "full"}
    estimator : {"pathwise", "path-derivative", "score", "score-cv"}
        Pathwise with closed-form entropy (the gradient of ``monte_carlo_elbo`` through
        ``rsample``), the path-derivative estimator of Roeder et al. (2017), the
        score-function estimator of Ranganath et al. (2014) with ``baseline`` and the
        Monte Carlo entropy (f = log p - log q inside the expectation), or
        ``"score-cv"``: the score function applied to E_q[log p] only, the Gaussian
        entropy's gradient in closed form, and the score itself as a control variate
        with one coefficient per parameter coordinate p,
        a_p = Cov(f h_p, h_p) / Var(h_p) (h_p the score coordinate, f = log p;
        Ranganath et al. 2014, section 3.2), estimated for each sample from the
        other S - 1 samples of the step so that the estimator stays unbiased (needs
        S >= 3).
        ``baseline`` is ignored by every estimator but ``"score"``.
    num_samples, num_steps : int
        S samples of q per step (S model evaluations per run and step) and steps.
    baseline : None, float or "leave-one-out"
        Score function only.
    eval_every, eval_samples, final_samples : int
        ELBO trace every ``eval_every`` steps; final ELBO from ``final_samples``.
    init_scale : float
    seed : int
        Seed of the private torch generator that draws every run's noise (so that a
        sweep's runs do not depend on what ran before it).

    Returns
    -------
    ParallelVIResult

    Raises
    ------
    ValueError
        For a bad size, step size, family, estimator or baseline.
    """
    if not callable(log_joint):
        raise TypeError(f"log_joint must be callable, got {type(log_joint).__name__}")
    dim = check_positive_int(dim, "dim")
    lrs_np = np.atleast_1d(as_float_array(lrs, "lrs", ndim=1))
    if np.any(lrs_np <= 0):
        raise ValueError(f"lrs must be > 0 (every step size), got minimum {lrs_np.min()!r}")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if estimator not in PARALLEL_ESTIMATORS:
        raise ValueError(f"estimator must be one of {PARALLEL_ESTIMATORS}, "
                         f"got {estimator!r}")
    if estimator != "score":
        baseline = None
    num_samples = check_positive_int(num_samples, "num_samples",
                                     3 if estimator == "score-cv" else 1)
    baseline = check_baseline(baseline, num_samples)
    num_steps = check_positive_int(num_steps, "num_steps")
    eval_every = check_positive_int(eval_every, "eval_every")
    eval_samples = check_positive_int(eval_samples, "eval_samples")
    final_samples = check_positive_int(final_samples, "final_samples")
    init_scale = check_positive(init_scale, "init_scale")
    gen = torch.Generator().manual_seed(check_positive_int(seed, "seed", minimum=0))
    r, d, s = lrs_np.size, dim, num_samples
    raw0 = _inverse_softplus(init_scale)
    mu = torch.zeros(r, d, dtype=DTYPE, requires_grad=True)
    if family == "diagonal":
        raw = torch.full((r, d), raw0, dtype=DTYPE, requires_grad=True)
    else:
        raw = torch.diag_embed(torch.full((r, d), raw0, dtype=DTYPE)).requires_grad_(True)
    entropy_const = 0.5 * d * (1.0 + math.log(2 * math.pi))

    def tril_of(raw_t: torch.Tensor) -> torch.Tensor:
        if family == "diagonal":
            return torch.diag_embed(softplus(raw_t))
        return (torch.tril(raw_t, -1)
                + torch.diag_embed(softplus(torch.diagonal(raw_t, dim1=1, dim2=2))))

    def log_p(z: torch.Tensor) -> torch.Tensor:
        flat = given = z.reshape(-1, d)
        # a diverged run's samples are NaN or inf: log_joint sees zeros in their place
        # (it may reject non-finite input); the run's values and gradients are NaN, as
        # they would be from NaN samples
        bad = ~torch.isfinite(flat).all(-1)
        if bool(bad.any()):
            flat = torch.where(bad[:, None], torch.zeros_like(flat), flat)
        out = log_joint(flat)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (flat.shape[0],):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"log_joint must map samples of shape (N, {d}) to shape (N,), "
                             f"got {got} for N = {flat.shape[0]}")
        if bool(bad.any()):
            out = out.clone()
            out[bad] = given[bad].sum(-1) * float("nan")
        return out.reshape(z.shape[0], z.shape[1])

    def elbo_of(mu_t, low, num) -> np.ndarray:
        with torch.no_grad():
            eps = torch.randn(r, num, d, dtype=DTYPE, generator=gen)
            z = mu_t[:, None, :] + eps @ low.transpose(1, 2)
            ent = torch.log(torch.diagonal(low, dim1=1, dim2=2)).sum(-1) + entropy_const
            return (log_p(z).mean(1) + ent).numpy()

    lr_t = torch.as_tensor(lrs_np, dtype=DTYPE)
    beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
    state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in (mu, raw)]
    steps, trace = [0], [elbo_of(mu.detach(), tril_of(raw.detach()), eval_samples)]
    if not np.all(np.isfinite(trace[0])):
        raise ValueError(f"log_joint is not finite at the starting point q = N(0, "
                         f"{init_scale:g}^2 I) (step 0): every run would start diverged")
    for step in range(1, num_steps + 1):
        low = tril_of(raw)
        eps = torch.randn(r, s, d, dtype=DTYPE, generator=gen)
        if estimator == "score-cv":
            grads = _score_cv_gradients(log_p, mu.detach(), raw.detach(), low.detach(),
                                        eps, family)
        elif estimator == "score":
            with torch.no_grad():
                z = mu[:, None, :] + eps @ low.transpose(1, 2)
            log_q = _batched_log_q(z, mu, low)
            with torch.no_grad():
                w = apply_baseline(log_p(z) - log_q, baseline, allow_nonfinite=True)
            objective = (w * log_q).mean(1)
        else:
            z = mu[:, None, :] + eps @ low.transpose(1, 2)
            if estimator == "pathwise":
                ent = torch.log(torch.diagonal(low, dim1=1, dim2=2)).sum(-1)
                objective = log_p(z).mean(1) + ent
            else:
                objective = (log_p(z) - _batched_log_q(z, mu.detach(),
                                                       low.detach())).mean(1)
        if estimator != "score-cv":
            grads = torch.autograd.grad(-objective.sum(), (mu, raw))
        with torch.no_grad():
            for p, g, (m1, m2) in zip((mu, raw), grads, state, strict=True):
                m1.mul_(beta1).add_(g, alpha=1 - beta1)
                m2.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (m2 / (1 - beta2**step)).sqrt_().add_(adam_eps)
                lr_b = lr_t.reshape(-1, *([1] * (p.ndim - 1)))
                p.sub_(lr_b * (m1 / (1 - beta1**step)) / denom)
        if step % eval_every == 0 or step == num_steps:
            steps.append(step)
            trace.append(elbo_of(mu.detach(), tril_of(raw.detach()), eval_samples))
    low = tril_of(raw.detach())
    final = elbo_of(mu.detach(), low, final_samples)
    elbo = np.stack(trace, axis=1)
    diverged = ~np.isfinite(final) | (final < elbo[:, 0])
    return ParallelVIResult(lrs_np, mu.detach().numpy(), low.numpy(), np.asarray(steps),
                            elbo, final, diverged, num_steps * num_samples)


@dataclass
class QuadratureGaussianFit:
    """Output of :func:`best_gaussian_by_quadrature`: one local optimum per start.

    Attributes
    ----------
    mean : ndarray (N, D)
    scale_tril : ndarray (N, D, D)
        The optimum q = N(mean, L L^T) reached from each of the N starts.
    elbo : ndarray (N,)
        Its ELBO by Gauss-Hermite quadrature.
    best : int
        The start whose optimum has the largest ELBO.
    """

    mean: np.ndarray
    scale_tril: np.ndarray
    elbo: np.ndarray
    best: int


def best_gaussian_by_quadrature(log_density: Callable[[torch.Tensor], torch.Tensor],
                                starts, *, num_nodes: int = 40,
                                max_iter: int = 500) -> QuadratureGaussianFit:
    r"""The best full-covariance Gaussian q of a low-dimensional target, without sampling.

    Maximises

    .. math::

        \mathcal L(m, L) = \sum_j w_j \log \tilde p(m + L t_j) + \log|\det L|
        + \tfrac D2 \log(2\pi e)

    over the mean m and the Cholesky factor L (positive diagonal), the ELBO of
    q = N(m, L L^T) with E_q computed by the tensor-product Gauss-Hermite rule
    (probabilists' nodes t_j, normalised weights w_j; ``num_nodes`` per dimension), by
    L-BFGS (SciPy) with exact gradients (autograd), from each start's mean with L = I.
    A deterministic, independent answer for a Gaussian fitted by stochastic VI: the
    reverse KL has local optima (on a target with two modes a Gaussian can sit on
    either or between them), so give many starts and take ``best``. Chapter 7.

    Parameters
    ----------
    log_density : callable
        Maps points (N, D) (float64 tensor) to the unnormalised log target, shape (N,),
        differentiable.
    starts : array_like, shape (num_starts, D)
        Starting means; D <= 3 (the rule has ``num_nodes ** D`` points).
    num_nodes : int
        Gauss-Hermite nodes per dimension (>= 2).
    max_iter : int
        L-BFGS iterations per start.

    Returns
    -------
    QuadratureGaussianFit
    """
    from numpy.polynomial.hermite_e import hermegauss
    from scipy.optimize import minimize

    if not callable(log_density):
        raise TypeError(f"log_density must be callable, got {type(log_density).__name__}")
    starts = np.atleast_2d(as_float_array(starts, "starts"))
    if starts.ndim != 2 or not 1 <= starts.shape[1] <= 3 or starts.shape[0] < 1:
        raise ValueError(f"starts must have shape (num_starts, D) with 1 <= D <= 3, got "
                         f"{starts.shape}")
    num_nodes = check_positive_int(num_nodes, "num_nodes", 2)
    max_iter = check_positive_int(max_iter, "max_iter")
    d = starts.shape[1]
    nodes_1d, weights_1d = hermegauss(num_nodes)
    grids = np.meshgrid(*[nodes_1d] * d, indexing="ij")
    nodes = torch.as_tensor(np.stack([g.ravel() for g in grids], -1), dtype=DTYPE)
    weights = torch.as_tensor(np.prod(np.meshgrid(*[weights_1d / weights_1d.sum()] * d,
                                                  indexing="ij"), 0).ravel(), dtype=DTYPE)
    rows, cols = np.tril_indices(d, -1)
    const = 0.5 * d * (1.0 + math.log(2 * math.pi))

    def unpack(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = torch.diag_embed(torch.exp(theta[d:2 * d]))
        if rows.size:
            low = low.index_put((torch.as_tensor(rows), torch.as_tensor(cols)),
                                theta[2 * d:])
        return theta[:d], low

    def negative_elbo(theta_np: np.ndarray) -> tuple[float, np.ndarray]:
        theta = torch.as_tensor(theta_np, dtype=DTYPE).requires_grad_(True)
        mean, low = unpack(theta)
        values = log_density(mean + nodes @ low.T)
        elbo = values @ weights + theta[d:2 * d].sum() + const
        (grad,) = torch.autograd.grad(-elbo, theta)
        return -float(elbo.detach()), grad.numpy()

    means, lows, elbos = [], [], []
    for start in starts:
        theta0 = np.concatenate([start, np.zeros(d), np.zeros(rows.size)])
        result = minimize(negative_elbo, theta0, jac=True, method="L-BFGS-B",
                          options={"maxiter": max_iter})
        if not np.isfinite(result.fun):
            raise ValueError(f"the quadrature ELBO is not finite at the optimum from "
                             f"start {start.tolist()}")
        mean, low = unpack(torch.as_tensor(result.x, dtype=DTYPE))
        means.append(mean.numpy())
        lows.append(low.numpy())
        elbos.append(-result.fun)
    elbos = np.asarray(elbos)
    return QuadratureGaussianFit(np.stack(means), np.stack(lows), elbos,
                                 int(np.argmax(elbos)))
