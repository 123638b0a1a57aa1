"""The one stochastic-gradient VI loop (chapters 5, 7).

:func:`fit_vi` maximises an objective of :mod:`elbo_lib.objectives` (by default the
pathwise ELBO) over a family's parameters with an optimiser passed in as a factory
(by default Adam), and returns :class:`VIResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from elbo_lib._validation import check_positive, check_positive_int
from elbo_lib.objectives import PathwiseELBO, VariationalObjective
from elbo_lib.variational.families import VariationalFamily


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


class _Adam:
    """torch.optim.Adam's default step on CPU tensors (single-tensor, no weight decay,
    no amsgrad), the same operations in the same order, so the same bits, without the
    framework around it.

    torch's optimizer wraps each step in hooks, a profiler record and graph breaks for
    torch.compile (its first step imports torch._dynamo, about 2.5 s of CPU); for the
    tiny models of chapter 7 that costs more than the update. The library's training
    loops (:func:`fit_vi`'s default, the flow and VAE loops of chapter 7) step with
    this; ``tests/test_variational.py`` checks it against ``torch.optim.Adam`` bit for
    bit. Parameters without a gradient are skipped, as torch does (their step count
    does not advance).
    """

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = [p for p in params]
        self.lr, (self.beta1, self.beta2), self.eps = float(lr), betas, eps
        self.state = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.beta1, self.beta2
        for i, p in enumerate(self.params):
            grad = p.grad
            if grad is None:
                continue
            if self.state[i] is None:   # torch's lazy state: zero moments, step 0
                self.state[i] = [0, torch.zeros_like(p, memory_format=torch.preserve_format),
                                 torch.zeros_like(p, memory_format=torch.preserve_format)]
            state = self.state[i]
            state[0] += 1
            step = float(state[0])      # torch: a float32 step tensor's .item()
            exp_avg, exp_avg_sq = state[1], state[2]
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            step_size = self.lr / bias_correction1
            bias_correction2_sqrt = bias_correction2**0.5
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)



def _make_optimizer(optimizer: OptimizerFactory | None, lr: float | None,
                    params: list[nn.Parameter]) -> torch.optim.Optimizer | _Adam:
    """``optimizer(params)``, or Adam at ``lr`` (0.05 when None, :class:`_Adam`: torch's
    Adam without its framework) when no factory is given."""
    if optimizer is None:
        lr = DEFAULT_LR if lr is None else check_positive(lr, "lr")
        return _Adam(params, lr=lr)
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
