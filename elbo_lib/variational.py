"""Variational families as objects, and the one stochastic-gradient VI loop (chapters 5, 7).

A *variational family* is a :class:`torch.nn.Module` whose parameters are the
variational parameters phi and whose :meth:`~VariationalFamily.distribution` returns
q_phi as a :class:`torch.distributions.Distribution` with event shape (D,) and an empty
batch shape, supporting ``rsample`` (for the pathwise gradient) and ``log_prob``. That
is all :func:`fit_vi` asks of a family, so a new family (a normalising flow, chapter 7)
is a new class and no edit of the loop. A flow returns a
:class:`~torch.distributions.TransformedDistribution` whose transforms cache their last
input (``cache_size=1``), so ``log_prob`` of its own samples needs no inverse.

:func:`fit_vi` maximises an objective of :mod:`elbo_lib.objectives`, by default the
ELBO (Blei, Kucukelbir and McAuliffe 2017, eq. 13)

.. math::

    \\mathcal L(\\phi) = \\mathbb E_{q_\\phi(z)}[\\log p(x, z) - \\log q_\\phi(z)]

with its pathwise (reparameterisation) gradient, and with an optimiser passed in as a
factory (by default Adam, Kingma and Ba 2015): the objective object decides what is
maximised and how its gradient is estimated (pathwise, path derivative, score function,
importance weighted), so a new bound is a new class and no edit of the loop.
:func:`fit_gaussian_vi_parallel` runs many Gaussian fits (a step-size sweep over seeds)
in one batched computation, each run with its own step size (:class:`RunwiseAdam`, a
torch optimiser) (chapter 5). A family built with ``num_runs = R > 1`` holds R
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
from elbo_lib.objectives import PathwiseELBO, VariationalObjective

__all__ = [
    "DiagonalGaussian",
    "FullRankGaussian",
    "ParallelVIResult",
    "QuadratureGaussianFit",
    "RunwiseAdam",
    "VIResult",
    "VariationalFamily",
    "best_gaussian_by_quadrature",
    "fit_gaussian_vi_parallel",
    "fit_vi",
]

DTYPE = torch.float64


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


OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
DEFAULT_LR = 0.05


def _make_optimizer(optimizer: OptimizerFactory | None, lr: float | None,
                    params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """``optimizer(params)``, or Adam at ``lr`` (0.05 when None) when no factory is given."""
    if optimizer is None:
        lr = DEFAULT_LR if lr is None else check_positive(lr, "lr")
        return torch.optim.Adam(params, lr=lr)
    if lr is not None:
        raise ValueError(f"lr sets the step size of the default Adam only; with an "
                         f"optimizer factory set it there, got lr={lr!r}")
    if not callable(optimizer):
        raise TypeError(f"optimizer must be a callable params -> torch.optim.Optimizer, "
                        f"got {type(optimizer).__name__}")
    opt = optimizer(params)
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"optimizer(params) must return a torch.optim.Optimizer, got "
                        f"{type(opt).__name__}")
    return opt


def _check_objective(objective: VariationalObjective | None) -> VariationalObjective:
    if objective is None:
        return PathwiseELBO()
    if not isinstance(objective, VariationalObjective):
        raise TypeError(f"objective must be an elbo_lib.objectives.VariationalObjective "
                        f"(for example PathwiseELBO()), got {type(objective).__name__}")
    return objective


def fit_vi(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    family: VariationalFamily,
    objective: VariationalObjective | None = None,
    *,
    num_samples: int = 8,
    num_steps: int = 1000,
    optimizer: OptimizerFactory | None = None,
    lr: float | None = None,
    eval_every: int = 50,
    eval_samples: int = 256,
) -> VIResult:
    """Stochastic-gradient (black-box) VI: maximise ``objective`` over ``family``.

    Each step draws ``num_samples`` samples of q (that many evaluations of the model),
    asks the objective for its :class:`~elbo_lib.objectives.Surrogate` and takes one
    step of the optimiser on its ``loss``. The objective decides what is maximised and
    how its gradient is estimated (:mod:`elbo_lib.objectives`); the optimiser is
    anything torch offers. Chapters 5 and 7.

    Parameters
    ----------
    log_joint : callable
        Maps samples of shape (S, D) to log p(x, z), shape (S,); differentiable in z for
        an objective with ``differentiates_log_joint`` (the pathwise ones).
    family : VariationalFamily
        The family to fit; its parameters are trained in place. With ``num_runs = R >
        1`` its R members are R independent runs: each draws its own samples, and the
        loss is the sum of their losses, so each member's gradient (and, for an
        elementwise optimiser such as Adam, its step) is exactly what it would be alone.
        ``log_joint`` then sees the R runs' samples stacked, shape (S * R, D).
    objective : VariationalObjective, optional
        What to maximise, with its gradient estimator; default
        :class:`~elbo_lib.objectives.PathwiseELBO`. R > 1 runs need an objective with
        ``supports_runs``.
    num_samples, num_steps : int
        S per step (at least ``objective.min_samples()``) and number of steps.
    optimizer : callable, optional
        A factory ``params -> torch.optim.Optimizer`` (for example
        ``functools.partial(torch.optim.SGD, lr=0.01)``); default Adam (Kingma and Ba
        2015) at ``lr``.
    lr : float, optional
        Step size of the default Adam (0.05 when omitted); an error with ``optimizer``.
    eval_every, eval_samples : int
        ELBO trace (whatever the objective): every ``eval_every`` steps, with
        ``eval_samples`` samples.

    Returns
    -------
    VIResult

    Raises
    ------
    TypeError
        If ``family`` is not a :class:`VariationalFamily`, ``log_joint`` not callable,
        ``objective`` not a :class:`~elbo_lib.objectives.VariationalObjective`, or
        ``optimizer`` not a factory of a torch optimiser.
    ValueError
        For a bad size or step size; for a ``log_joint`` that carries no gradient with
        respect to z under a pathwise objective (a detached or NumPy computation), or a
        loss that no gradient connects to the parameters; and when the fit diverges
        (the loss or a parameter becomes non-finite). The message names the step, and
        the family's parameters are restored to their values at the start of the fit
        (the optimiser's state is discarded).
    """
    if not isinstance(family, VariationalFamily):
        raise TypeError(f"family must be an elbo_lib.variational.VariationalFamily, "
                        f"got {type(family).__name__}")
    if not callable(log_joint):
        raise TypeError(f"log_joint must be callable, got {type(log_joint).__name__}")
    objective = _check_objective(objective)
    runs = family.num_runs
    if runs > 1 and not objective.supports_runs:
        raise ValueError(f"a family with num_runs = {runs} needs an objective that "
                         f"supports runs, got objective={objective!r}")
    num_samples = check_positive_int(num_samples, "num_samples", objective.min_samples())
    num_steps = check_positive_int(num_steps, "num_steps")
    eval_every = check_positive_int(eval_every, "eval_every")
    eval_samples = check_positive_int(eval_samples, "eval_samples")
    params = [p for p in family.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"family {type(family).__name__} has no trainable parameters")
    opt = _make_optimizer(optimizer, lr, params)
    steps, trace = [], []
    start = [p.detach().clone() for p in params]
    trace_objective = PathwiseELBO()

    def stopped(step: int, err: ValueError) -> ValueError:
        # a stopped fit leaves the family where it started, not at a diverged iterate
        with torch.no_grad():
            for p, p0 in zip(params, start, strict=True):
                p.copy_(p0)
        hint = " (a smaller step size may help)" if "finite" in str(err) else ""
        return ValueError(f"fit_vi stopped at step {step} of {num_steps}: {err}{hint}; "
                          f"the family's parameters are restored to their values at "
                          f"the start of the fit")

    def differentiable_log_joint(z: torch.Tensor) -> torch.Tensor:
        out = log_joint(z)
        if (objective.differentiates_log_joint and z.requires_grad
                and isinstance(out, torch.Tensor) and not out.requires_grad):
            raise ValueError(
                "log_joint(z) carries no gradient with respect to z (detached, or "
                "computed outside torch?): the pathwise estimator differentiates "
                "log_joint through the samples, and without that gradient the fit "
                "would only follow the entropy; pass a log_joint differentiable in z, "
                "or use objective=ScoreFunctionELBO() for a black-box log_joint")
        return out

    def record(step: int) -> None:
        try:
            with torch.no_grad():
                value = trace_objective.surrogate(log_joint, family.distribution(),
                                                  eval_samples).estimate.numpy().copy()
        except ValueError as err:
            raise stopped(step, err) from err
        steps.append(step)
        trace.append(float(value) if runs == 1 else value)

    record(0)
    for step in range(1, num_steps + 1):
        opt.zero_grad()
        try:
            loss = objective.surrogate(differentiable_log_joint, family.distribution(),
                                       num_samples).loss
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
                    {"family": type(family).__name__, "objective": repr(objective),
                     "estimator": objective.estimator, "num_samples": num_samples,
                     "num_runs": runs})


# --------------------------------------------------------------------------------------
# many Gaussian black-box VI runs at once: step-size sweeps over several seeds
# --------------------------------------------------------------------------------------
class RunwiseAdam(torch.optim.Optimizer):
    """Adam (Kingma and Ba 2015) with one step size per run, as a torch optimiser.

    Every parameter's leading axis is the run axis of a family with ``num_runs = R``
    (no run axis when R = 1); run r moves with step size ``lr[r]``. Adam is elementwise,
    so each run's step is the one Adam would take on that run alone. The default
    optimiser of :func:`fit_gaussian_vi_parallel` (chapter 5's step-size sweep).

    Parameters
    ----------
    params : iterable of torch.Tensor
        Leaf tensors of shape (R, ...) (or any shape when R = 1).
    lr : array_like of float > 0, shape (R,)
        Step size of each run.
    betas : tuple of float
        Decay rates of the first and second moments, in [0, 1).
    eps : float
        Added to the root of the second moment (> 0).
    """

    def __init__(self, params, lr, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        lr_np = np.atleast_1d(as_float_array(lr, "lr", ndim=1))
        if lr_np.size == 0 or np.any(lr_np <= 0):
            raise ValueError("lr must hold one step size > 0 per run")
        if (not isinstance(betas, tuple) or len(betas) != 2
                or not all(0 <= float(b) < 1 for b in betas)):
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
        eps = check_positive(eps, "eps")
        params = list(params)
        runs = lr_np.size
        for p in params:
            if runs > 1 and (p.ndim == 0 or p.shape[0] != runs):
                raise ValueError(f"params must have a leading run axis of length "
                                 f"{runs} (one step size per run), got shape "
                                 f"{tuple(p.shape)}")
        lr_t = torch.as_tensor(lr_np, dtype=params[0].dtype if params else DTYPE)
        super().__init__(params, {"lr": lr_t, "betas": tuple(map(float, betas)),
                                  "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """One Adam step of every run (``closure`` re-evaluates the loss, optional)."""
        loss = None
        if closure is not None:
            if not callable(closure):
                raise TypeError(f"closure must be callable or None, got "
                                f"{type(closure).__name__}")
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t, m1, m2 = state["step"], state["exp_avg"], state["exp_avg_sq"]
                m1.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                m2.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = (m2 / (1 - beta2**t)).sqrt_().add_(eps)
                lr_b = lr.reshape(-1, *([1] * (p.ndim - 1)))
                p.sub_(lr_b * (m1 / (1 - beta1**t)) / denom)
        return loss


RunwiseOptimizerFactory = Callable[[list[nn.Parameter], torch.Tensor], torch.optim.Optimizer]


def _make_runwise_optimizer(optimizer: RunwiseOptimizerFactory | None,
                            params: list[nn.Parameter],
                            lrs: torch.Tensor) -> torch.optim.Optimizer:
    """``optimizer(params, lrs)`` (default :class:`RunwiseAdam`), checked."""
    if optimizer is None:
        return RunwiseAdam(params, lrs)
    if not callable(optimizer):
        raise TypeError(f"optimizer must be a callable (params, lrs) -> "
                        f"torch.optim.Optimizer, got {type(optimizer).__name__}")
    opt = optimizer(params, lrs)
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"optimizer(params, lrs) must return a torch.optim.Optimizer, "
                        f"got {type(opt).__name__}")
    return opt


@dataclass
class ParallelVIResult:
    """Output of :func:`fit_gaussian_vi_parallel`: R independent runs.

    Attributes
    ----------
    lrs : ndarray (R,)
        Step size of each run.
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


def fit_gaussian_vi_parallel(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    family: DiagonalGaussian | FullRankGaussian,
    lrs,
    *,
    objective: VariationalObjective | None = None,
    num_samples: int = 8,
    num_steps: int = 1000,
    eval_every: int = 100,
    eval_samples: int = 256,
    final_samples: int = 4096,
    optimizer: RunwiseOptimizerFactory | None = None,
    generator: torch.Generator | None = None,
) -> ParallelVIResult:
    """Run ``len(lrs)`` independent Gaussian black-box VI runs in parallel.

    The algorithm of :func:`fit_vi` (by default with Adam, one step size per run:
    :class:`RunwiseAdam`) on a :class:`DiagonalGaussian` or
    :class:`FullRankGaussian` built with ``num_runs = len(lrs)``, but every run has its
    own step size and its own noise, a run that diverges goes on as NaN without
    stopping the others, and all runs advance in one batched computation. Repeating a
    step size in ``lrs`` gives independent replicates (seeds) of that setting. Chapter
    5 uses it for a step-size sweep of the estimators.

    Parameters
    ----------
    log_joint : callable
        Maps samples (N, D) to log p(x, z) of shape (N,).
    family : DiagonalGaussian or FullRankGaussian
        With ``num_runs = len(lrs)``; trained in place from its current parameters.
    lrs : array_like of float > 0, shape (R,)
        Step size of each run.
    objective : VariationalObjective, optional
        Default :class:`~elbo_lib.objectives.PathwiseELBO` (closed-form entropy). The
        book's objectives use the sweep's noise through their
        :meth:`~elbo_lib.objectives.VariationalObjective.gaussian_runs_loss`; another
        objective is called through its ``surrogate`` (its noise then comes from
        torch's global generator, and a non-finite run stops the sweep).
    num_samples, num_steps : int
        S samples of q per step (S model evaluations per run and step) and steps.
    eval_every, eval_samples, final_samples : int
        ELBO trace every ``eval_every`` steps; final ELBO from ``final_samples``.
    optimizer : callable, optional
        A factory ``(params, lrs) -> torch.optim.Optimizer`` given the family's batched
        parameters (leading axis: the run) and the step sizes as a tensor (R,); default
        :class:`RunwiseAdam`. A torch optimiser with one step size for all runs is
        ``lambda params, lrs: torch.optim.SGD(params, lr=float(lrs[0]))``.
    generator : torch.Generator, optional
        Source of every run's noise (default: torch's global generator, seeded by
        :func:`elbo_lib.seed_everything`). Pass ``torch.Generator().manual_seed(s)`` to
        give a sweep its own stream, so that its runs do not depend on what ran before it.

    Returns
    -------
    ParallelVIResult

    Raises
    ------
    TypeError, ValueError
        For a bad family, objective, optimiser, size, step size or generator.
    """
    if not callable(log_joint):
        raise TypeError(f"log_joint must be callable, got {type(log_joint).__name__}")
    if not isinstance(family, DiagonalGaussian | FullRankGaussian):
        raise TypeError(f"family must be a DiagonalGaussian or FullRankGaussian, got "
                        f"{type(family).__name__}")
    objective = _check_objective(objective)
    lrs_np = np.atleast_1d(as_float_array(lrs, "lrs", ndim=1))
    if np.any(lrs_np <= 0):
        raise ValueError(f"lrs must be > 0 (every step size), got minimum {lrs_np.min()!r}")
    if lrs_np.size != family.num_runs:
        raise ValueError(f"lrs must give one step size per run of the family "
                         f"(num_runs = {family.num_runs}), got {lrs_np.size}")
    num_samples = check_positive_int(num_samples, "num_samples", objective.min_samples())
    num_steps = check_positive_int(num_steps, "num_steps")
    eval_every = check_positive_int(eval_every, "eval_every")
    eval_samples = check_positive_int(eval_samples, "eval_samples")
    final_samples = check_positive_int(final_samples, "final_samples")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, "
                        f"got {type(generator).__name__}")
    gen = generator
    r, d, s = lrs_np.size, family.dim, num_samples
    diagonal = isinstance(family, DiagonalGaussian)
    raw_leaf = family.raw_std if diagonal else family.raw_scale_tril
    raw_shape = (r, d) if diagonal else (r, d, d)
    leaves = (family.mean, raw_leaf)

    def batched() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mean (R, D), raw (R, D) or (R, D, D), L (R, D, D): views of the parameters."""
        return (family.mean.reshape(r, d), raw_leaf.reshape(raw_shape),
                family.scale_tril().reshape(r, d, d))

    entropy_const = 0.5 * d * (1.0 + math.log(2 * math.pi))

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

    def elbo_of(num) -> np.ndarray:
        with torch.no_grad():
            mu_t, _, low = batched()
            eps = torch.randn(r, num, d, dtype=DTYPE, generator=gen)
            z = mu_t[:, None, :] + eps @ low.transpose(1, 2)
            ent = torch.log(torch.diagonal(low, dim1=1, dim2=2)).sum(-1) + entropy_const
            # log p one run at a time: the same values, but the model's (samples x data)
            # intermediates of the final ELBO (R x 4096 samples) stay small (2.3x faster)
            log_p_z = torch.cat([log_p(z[i:i + 1]) for i in range(r)])
            return (log_p_z.mean(1) + ent).detach().numpy()

    opt = _make_runwise_optimizer(optimizer, list(leaves),
                                  torch.as_tensor(lrs_np, dtype=DTYPE))
    steps, trace = [0], [elbo_of(eval_samples)]
    if not np.all(np.isfinite(trace[0])):
        raise ValueError("log_joint is not finite at the starting point of the family "
                         "(step 0): every run would start diverged")
    for step in range(1, num_steps + 1):
        mu, raw, low = batched()
        eps = torch.randn(r, s, d, dtype=DTYPE, generator=gen)
        loss = objective.gaussian_runs_loss(log_p, mu, raw, low, eps)
        for p, g in zip(leaves, torch.autograd.grad(loss, leaves), strict=True):
            p.grad = g
        opt.step()
        if step % eval_every == 0 or step == num_steps:
            steps.append(step)
            trace.append(elbo_of(eval_samples))
    final = elbo_of(final_samples)
    with torch.no_grad():
        mu, _, low = batched()
    elbo = np.stack(trace, axis=1)
    diverged = ~np.isfinite(final) | (final < elbo[:, 0])
    return ParallelVIResult(lrs_np, mu.detach().numpy().copy(), low.detach().numpy().copy(),
                            np.asarray(steps), elbo, final, diverged,
                            num_steps * num_samples)


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
