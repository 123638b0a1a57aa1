"""Monte Carlo gradients of expectations and of the ELBO (chapter 5).

The gradient of the ELBO with respect to the variational parameters phi is the gradient
of an expectation under a distribution that itself depends on phi,
``grad_phi E_{q_phi}[f(z)]``. Two unbiased Monte Carlo estimators:

score function (REINFORCE, log-derivative trick)
    ``E_q[f(z) grad_phi log q_phi(z)]``; needs only samples and ``log_prob``, works for
    discrete z, high variance. A baseline ``b`` (any constant, or the leave-one-out mean
    of the other samples) keeps it unbiased and lowers the variance:
    ``E_q[(f(z) - b) grad_phi log q_phi(z)]``.
pathwise (reparameterisation)
    ``z = g(eps, phi)`` with ``eps`` from a fixed base distribution, so
    ``grad_phi E_q[f(z)] = E_eps[grad_phi f(g(eps, phi))]``; needs ``rsample`` (continuous z)
    and a differentiable f, usually much lower variance.

Both are implemented for *any* ``torch.distributions`` family through a factory
``make_q(**params)`` that builds q from its parameters. Per-sample gradients are obtained
in one backward pass by giving every sample its own copy of the parameters, so variances
are measured without Python loops over samples.

The module also holds what chapter 5 fits with these gradients: Gaussian variational
families (diagonal and full-rank via a Cholesky factor), a stochastic-gradient VI loop,
Bayesian logistic regression with its MAP / Laplace approximation, and a small network
for a heteroscedastic conditional Gaussian trained through reparameterised samples.

References: Williams (1992); Ranganath, Gerrish and Blei (2014); Kingma and Welling
(2014); Rezende, Mohamed and Wierstra (2014); Mohamed et al. (2020).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Real

import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution, MultivariateNormal, Normal
from torch.nn.functional import softplus

from elbo_lib._validation import as_float_array, check_positive, check_positive_int
from elbo_lib.bounds import monte_carlo_elbo
from elbo_lib.gaussians import diagonal_gaussian

__all__ = [
    "BayesianLogisticRegression",
    "GaussianVariational",
    "GradientStats",
    "HeteroscedasticNet",
    "VIResult",
    "crps_gaussian",
    "fit_gaussian_vi",
    "fit_heteroscedastic",
    "gradient_stats",
    "monte_carlo_crps",
    "pathwise_gradient",
    "per_sample_gradients",
    "score_function_elbo_surrogate",
    "score_function_gradient",
]

ESTIMATORS = ("score", "pathwise")
DTYPE = torch.float64


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------
def _check_params(params) -> dict[str, torch.Tensor]:
    if not isinstance(params, Mapping) or len(params) == 0:
        raise TypeError("params must be a non-empty mapping name -> tensor, "
                        f"got {type(params).__name__}")
    out = {}
    for name, value in params.items():
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be str, got {type(name).__name__}")
        try:
            t = torch.as_tensor(value, dtype=DTYPE)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"parameter {name!r} must be numeric, got "
                            f"{type(value).__name__}") from exc
        if not torch.all(torch.isfinite(t)):
            raise ValueError(f"parameter {name!r} must be finite")
        out[name] = t.detach()
    return out


def _check_estimator(estimator: str) -> str:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    return estimator


def _check_baseline(baseline, num_samples: int):
    if baseline is None:
        return None
    if isinstance(baseline, str):
        if baseline != "leave-one-out":
            raise ValueError("baseline must be None, a finite number or 'leave-one-out', "
                             f"got {baseline!r}")
        if num_samples < 2:
            raise ValueError(f"the leave-one-out baseline needs num_samples >= 2, "
                             f"got {num_samples}")
        return baseline
    if isinstance(baseline, bool) or not isinstance(baseline, Real):
        raise TypeError("baseline must be None, a finite number or 'leave-one-out', "
                        f"got {type(baseline).__name__}")
    if not math.isfinite(baseline):
        raise ValueError(f"a constant baseline must be finite, got {baseline!r}")
    return float(baseline)


def _apply_baseline(values: torch.Tensor, baseline) -> torch.Tensor:
    """Subtract the baseline from ``values`` of shape (R, S); leave-one-out is per group."""
    if baseline is None:
        return values
    if baseline == "leave-one-out":
        s = values.shape[1]
        return values - (values.sum(dim=1, keepdim=True) - values) / (s - 1)
    return values - baseline


def _build_q(make_q, reps: dict[str, torch.Tensor], n: int) -> Distribution:
    if not callable(make_q):
        raise TypeError(f"make_q must be callable, got {type(make_q).__name__}")
    q = make_q(**reps)
    if not isinstance(q, Distribution):
        raise TypeError(f"make_q must return a torch Distribution, got {type(q).__name__}")
    if tuple(q.batch_shape) != (n,):
        raise ValueError(f"make_q with parameters carrying a leading batch axis of {n} must "
                         f"return batch_shape ({n},), got {tuple(q.batch_shape)}; "
                         "wrap elementwise families in Independent(..., 1)")
    return q


def _evaluate(f, z: torch.Tensor, n: int) -> torch.Tensor:
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    fz = f(z)
    if not isinstance(fz, torch.Tensor) or tuple(fz.shape) != (n,):
        shape = tuple(fz.shape) if isinstance(fz, torch.Tensor) else type(fz).__name__
        raise ValueError(f"f must map samples of shape {tuple(z.shape)} to a tensor of "
                         f"shape ({n},), got {shape}")
    if not torch.all(torch.isfinite(fz)):
        raise ValueError("f returned non-finite values")
    return fz


# --------------------------------------------------------------------------------------
# gradient estimators of grad_phi E_q[f(z)]
# --------------------------------------------------------------------------------------
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
    baseline = _check_baseline(baseline, num_samples)
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
            weights = _apply_baseline(fz, baseline).reshape(n)
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


# --------------------------------------------------------------------------------------
# the ELBO: score-function surrogate, Gaussian families and the VI loop
# --------------------------------------------------------------------------------------
def score_function_elbo_surrogate(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    q: Distribution,
    num_samples: int,
    *,
    baseline: None | float | str = "leave-one-out",
) -> tuple[torch.Tensor, torch.Tensor]:
    """A scalar whose gradient is the score-function (black-box VI) ELBO gradient.

    With w_s = log p(x, z_s) - log q(z_s), z_s ~ q (not differentiated),

    .. math::

        \\widehat{\\nabla} = \\frac1S \\sum_s (w_s - b_s)\\, \\nabla_\\phi \\log q_\\phi(z_s),

    the estimator of Ranganath et al. (2014); the term E_q[grad log q] = 0 coming from
    the phi inside log q is dropped, as its expectation is zero. Chapter 5.

    Returns
    -------
    (surrogate, elbo_estimate) : (torch.Tensor, torch.Tensor)
        Differentiate ``surrogate``; ``elbo_estimate`` is the detached mean of w_s.
    """
    if not isinstance(q, Distribution):
        raise TypeError(f"q must be a torch.distributions.Distribution, got {type(q).__name__}")
    if q.batch_shape != torch.Size([]):
        raise ValueError(f"q must have an empty batch_shape, got {tuple(q.batch_shape)}")
    num_samples = check_positive_int(num_samples, "num_samples")
    baseline = _check_baseline(baseline, num_samples)
    z = q.sample((num_samples,))
    log_q = q.log_prob(z)
    with torch.no_grad():
        w = _evaluate(log_joint, z, num_samples) - log_q
        centred = _apply_baseline(w.unsqueeze(0), baseline).squeeze(0)
    return (centred * log_q).mean(), w.mean()


class GaussianVariational(nn.Module):
    """Gaussian q(z) = N(mu, Sigma) with diagonal or full-rank (Cholesky) covariance.

    Parameters are unconstrained: ``mu``; for ``family="diagonal"`` a vector whose
    softplus is sigma; for ``family="full"`` a matrix whose strictly lower triangle and
    softplus-ed diagonal form the Cholesky factor L (Sigma = L L^T). Chapter 5.

    Parameters
    ----------
    dim : int
        Dimension D of z.
    family : {"diagonal", "full"}
    init_scale : float
        Initial standard deviation of every coordinate (> 0).
    """

    FAMILIES = ("diagonal", "full")

    def __init__(self, dim: int, family: str = "diagonal", init_scale: float = 0.1) -> None:
        super().__init__()
        dim = check_positive_int(dim, "dim")
        if family not in self.FAMILIES:
            raise ValueError(f"family must be one of {self.FAMILIES}, got {family!r}")
        init_scale = check_positive(init_scale, "init_scale")
        self.dim, self.family = dim, family
        raw = math.log(math.expm1(init_scale))  # softplus^{-1}
        self.mu = nn.Parameter(torch.zeros(dim, dtype=DTYPE))
        if family == "diagonal":
            self.raw_scale = nn.Parameter(torch.full((dim,), raw, dtype=DTYPE))
        else:
            self.raw_scale = nn.Parameter(torch.diag(torch.full((dim,), raw, dtype=DTYPE)))

    def scale_tril(self) -> torch.Tensor:
        """The Cholesky factor L of Sigma (diagonal matrix for the diagonal family)."""
        if self.family == "diagonal":
            return torch.diag(softplus(self.raw_scale))
        return (torch.tril(self.raw_scale, -1)
                + torch.diag(softplus(torch.diagonal(self.raw_scale))))

    def distribution(self) -> Distribution:
        """q as a torch distribution with empty batch shape and event shape (D,)."""
        if self.family == "diagonal":
            return diagonal_gaussian(self.mu, softplus(self.raw_scale))
        return MultivariateNormal(self.mu, scale_tril=self.scale_tril())

    def covariance(self) -> np.ndarray:
        """Sigma = L L^T as a NumPy array."""
        low = self.scale_tril().detach()
        return (low @ low.T).numpy()

    def num_parameters(self) -> int:
        """Number of free variational parameters (2D, or D + D(D+1)/2)."""
        d = self.dim
        return 2 * d if self.family == "diagonal" else d + d * (d + 1) // 2


@dataclass
class VIResult:
    """Output of :func:`fit_gaussian_vi`.

    Attributes
    ----------
    q : GaussianVariational
        The fitted variational family.
    steps : ndarray
        Steps at which the ELBO was evaluated.
    elbo : ndarray
        ELBO estimates at those steps (``eval_samples`` fresh samples each).
    model_evaluations : int
        Total number of log-joint evaluations spent on gradients (steps x S).
    """

    q: GaussianVariational
    steps: np.ndarray
    elbo: np.ndarray
    model_evaluations: int
    info: dict = field(default_factory=dict)


def fit_gaussian_vi(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    *,
    family: str = "diagonal",
    estimator: str = "pathwise",
    num_samples: int = 8,
    num_steps: int = 1000,
    lr: float = 0.05,
    baseline: None | float | str = "leave-one-out",
    eval_every: int = 50,
    eval_samples: int = 256,
    init_scale: float = 0.1,
) -> VIResult:
    """Stochastic-gradient (black-box) VI with a Gaussian q and Adam.

    Each step draws ``num_samples`` samples of q, i.e. ``num_samples`` evaluations of
    the model, and follows either the pathwise gradient of
    :func:`~elbo_lib.bounds.monte_carlo_elbo` or the score-function gradient of
    :func:`score_function_elbo_surrogate`: the same compute for both estimators.
    Chapter 5.

    Parameters
    ----------
    log_joint : callable
        Maps samples (S, D) to log p(x, z) of shape (S,), differentiable in z for the
        pathwise estimator.
    dim : int
        Dimension D.
    family : {"diagonal", "full"}
    estimator : {"pathwise", "score"}
    num_samples, num_steps : int
        S per step and number of Adam steps.
    lr : float
        Adam learning rate (Kingma and Ba 2015).
    baseline : None, float or "leave-one-out"
        Score-function baseline (ignored by the pathwise estimator).
    eval_every, eval_samples : int
        ELBO trace: every ``eval_every`` steps, with ``eval_samples`` samples.
    init_scale : float
        Initial standard deviation of q (mean starts at 0).

    Returns
    -------
    VIResult
    """
    estimator = _check_estimator(estimator)
    num_samples = check_positive_int(num_samples, "num_samples",
                                     2 if (estimator == "score"
                                           and baseline == "leave-one-out") else 1)
    num_steps = check_positive_int(num_steps, "num_steps")
    eval_every = check_positive_int(eval_every, "eval_every")
    eval_samples = check_positive_int(eval_samples, "eval_samples")
    lr = check_positive(lr, "lr")
    q_module = GaussianVariational(dim, family, init_scale)
    opt = torch.optim.Adam(q_module.parameters(), lr=lr)
    steps, trace = [], []

    def record(step: int) -> None:
        with torch.no_grad():
            steps.append(step)
            trace.append(float(monte_carlo_elbo(log_joint, q_module.distribution(),
                                                eval_samples)))

    record(0)
    for step in range(1, num_steps + 1):
        opt.zero_grad()
        q = q_module.distribution()
        if estimator == "pathwise":
            loss = -monte_carlo_elbo(log_joint, q, num_samples)
        else:
            surrogate, _ = score_function_elbo_surrogate(log_joint, q, num_samples,
                                                         baseline=baseline)
            loss = -surrogate
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == num_steps:
            record(step)
    return VIResult(q_module, np.asarray(steps), np.asarray(trace),
                    num_steps * num_samples,
                    {"family": family, "estimator": estimator, "num_samples": num_samples})


class BayesianLogisticRegression:
    """Bayesian logistic regression: w ~ N(0, s^2 I), y_i ~ Bernoulli(sigmoid(x_i^T w)).

    The non-conjugate model of chapter 5's black-box VI section. Include a column of
    ones in X for an intercept (it then gets the same prior).

    Parameters
    ----------
    x : array_like, shape (n, D)
    y : array_like of 0/1, shape (n,)
    prior_std : float
        Prior standard deviation s of every weight.
    """

    def __init__(self, x, y, prior_std: float = 1.0) -> None:
        self.x = as_float_array(x, "x", ndim=2)
        y = as_float_array(y, "y", ndim=1)
        if y.shape[0] != self.x.shape[0]:
            raise ValueError(f"x and y must have the same number of rows, got "
                             f"{self.x.shape[0]} and {y.shape[0]}")
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("y must contain only 0 and 1")
        self.y = y
        self.prior_std = check_positive(prior_std, "prior_std")
        self.dim = self.x.shape[1]
        self._xt = torch.as_tensor(self.x, dtype=DTYPE)
        self._yt = torch.as_tensor(self.y, dtype=DTYPE)

    def log_joint(self, w: torch.Tensor) -> torch.Tensor:
        """log p(y, w | X) for weights of shape (S, D), returning shape (S,).

        Stable form: log sigmoid(a) y + log sigmoid(-a) (1 - y) = y a - softplus(a).
        """
        w = torch.as_tensor(w, dtype=DTYPE)
        if w.ndim != 2 or w.shape[1] != self.dim:
            raise ValueError(f"w must have shape (S, {self.dim}), got {tuple(w.shape)}")
        logits = w @ self._xt.T
        log_lik = (self._yt * logits - softplus(logits)).sum(dim=1)
        log_prior = (-0.5 * (w / self.prior_std) ** 2).sum(dim=1) - self.dim * (
            math.log(self.prior_std) + 0.5 * math.log(2 * math.pi))
        return log_lik + log_prior

    def _grad_hess(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = 1.0 / (1.0 + np.exp(-(self.x @ w)))
        grad = self.x.T @ (self.y - p) - w / self.prior_std**2
        hess = -(self.x.T * (p * (1 - p))) @ self.x - np.eye(self.dim) / self.prior_std**2
        return grad, hess

    def map_estimate(self, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
        """Maximum a posteriori w by Newton's method (the log posterior is concave).

        Raises
        ------
        RuntimeError
            If Newton's method has not converged after ``max_iter`` steps.
        """
        w = np.zeros(self.dim)
        for _ in range(check_positive_int(max_iter, "max_iter")):
            grad, hess = self._grad_hess(w)
            step = np.linalg.solve(hess, grad)
            w = w - step
            if np.max(np.abs(step)) < tol:
                return w
        raise RuntimeError(f"Newton's method did not converge in {max_iter} iterations")

    def laplace(self) -> tuple[np.ndarray, np.ndarray]:
        """Laplace approximation N(w_MAP, (-Hessian of log posterior at w_MAP)^{-1})."""
        w = self.map_estimate()
        _, hess = self._grad_hess(w)
        chol = np.linalg.cholesky(-hess)
        inv_chol = np.linalg.solve(chol, np.eye(self.dim))
        return w, inv_chol.T @ inv_chol

    @staticmethod
    def predictive_proba(x, weights) -> np.ndarray:
        """Monte Carlo posterior predictive P(y = 1 | x) averaged over weight samples.

        Parameters
        ----------
        x : array_like, shape (m, D)
        weights : array_like, shape (S, D) (or (D,) for a point estimate)
        """
        x = as_float_array(x, "x", ndim=2)
        weights = np.atleast_2d(as_float_array(weights, "weights", ndim=(1, 2)))
        if weights.shape[1] != x.shape[1]:
            raise ValueError(f"weights must have {x.shape[1]} columns, got {weights.shape}")
        logits = x @ weights.T
        return (0.5 * (1 + np.tanh(0.5 * logits))).mean(axis=1)


# --------------------------------------------------------------------------------------
# a network for mu(x), sigma(x): heteroscedastic regression through reparameterised samples
# --------------------------------------------------------------------------------------
class HeteroscedasticNet(nn.Module):
    """A small MLP mapping x to (mu(x), sigma(x)) of a conditional Gaussian p(y | x).

    sigma(x) = softplus(.) + 1e-4 keeps the scale positive. Samples are drawn by the
    reparameterisation y = mu(x) + sigma(x) * eps, eps ~ N(0, 1). Chapter 5.

    Parameters
    ----------
    hidden : int
        Width of the two tanh hidden layers.
    """

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        hidden = check_positive_int(hidden, "hidden")
        self.body = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(),
                                  nn.Linear(hidden, hidden), nn.Tanh(),
                                  nn.Linear(hidden, 2)).to(DTYPE)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return mu(x) and sigma(x), each of shape (n,), for x of shape (n,)."""
        out = self.body(torch.as_tensor(x, dtype=DTYPE).reshape(-1, 1))
        return out[:, 0], softplus(out[:, 1]) + 1e-4

    def sample(self, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        """Reparameterised samples y = mu(x) + sigma(x) eps, shape (num_samples, n)."""
        num_samples = check_positive_int(num_samples, "num_samples")
        mu, sigma = self(x)
        eps = torch.randn(num_samples, mu.shape[0], dtype=DTYPE)
        return mu + sigma * eps


def crps_gaussian(mu, sigma, y) -> torch.Tensor:
    """Closed-form continuous ranked probability score of N(mu, sigma^2) at y.

    ``CRPS = sigma [w (2 Phi(w) - 1) + 2 phi(w) - 1/sqrt(pi)]`` with w = (y - mu)/sigma
    (Gneiting and Raftery 2007): the independent check of :func:`monte_carlo_crps`.
    Elementwise, broadcasting; lower is better.
    """
    mu, sigma, y = (torch.as_tensor(a, dtype=DTYPE) for a in (mu, sigma, y))
    if bool((sigma <= 0).any()):
        raise ValueError("sigma must be > 0 everywhere")
    w = (y - mu) / sigma
    std = Normal(torch.zeros((), dtype=DTYPE), torch.ones((), dtype=DTYPE))
    return sigma * (w * (2 * std.cdf(w) - 1) + 2 * std.log_prob(w).exp() - 1 / math.sqrt(math.pi))


def monte_carlo_crps(samples: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sample estimate of the CRPS, E|Y - y| - E|Y - Y'| / 2, for each column of y.

    Unbiased, using independent pairs (Y_s, Y_{s + S/2}) for the second term; with
    reparameterised samples its gradient is a pathwise gradient. Chapter 5.

    Parameters
    ----------
    samples : tensor, shape (S, n), S even and >= 2
    y : tensor, shape (n,)
    """
    if not isinstance(samples, torch.Tensor) or samples.ndim != 2:
        raise ValueError("samples must be a 2-D tensor (S, n)")
    s = samples.shape[0]
    if s < 2 or s % 2:
        raise ValueError(f"need an even number of samples >= 2, got {s}")
    y = torch.as_tensor(y, dtype=samples.dtype)
    if y.shape != samples.shape[1:]:
        raise ValueError(f"y must have shape {tuple(samples.shape[1:])}, got {tuple(y.shape)}")
    half = s // 2
    spread = (samples[:half] - samples[half:]).abs().mean(dim=0)
    return (samples - y).abs().mean(dim=0) - 0.5 * spread


def fit_heteroscedastic(x, y, *, hidden: int = 32, num_samples: int = 16,
                        num_steps: int = 1500, lr: float = 0.01) -> tuple[HeteroscedasticNet,
                                                                          np.ndarray]:
    """Fit mu(x), sigma(x) by minimising the Monte Carlo CRPS of reparameterised samples.

    Every gradient flows through y_s = mu(x) + sigma(x) eps_s: the pathwise estimator
    applied to a network, as the VAE encoder of chapter 6 will be. The CRPS is a strictly
    proper scoring rule, so its minimiser is the true conditional distribution.
    Full-batch Adam. Chapter 5.

    Returns
    -------
    (net, losses) : (HeteroscedasticNet, ndarray of shape (num_steps,))
    """
    x = torch.as_tensor(as_float_array(x, "x", ndim=1))
    y = torch.as_tensor(as_float_array(y, "y", ndim=1))
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)}, "
                         f"{tuple(y.shape)}")
    num_steps = check_positive_int(num_steps, "num_steps")
    net = HeteroscedasticNet(hidden)
    opt = torch.optim.Adam(net.parameters(), lr=check_positive(lr, "lr"))
    losses = np.empty(num_steps)
    for step in range(num_steps):
        opt.zero_grad()
        loss = monte_carlo_crps(net.sample(x, num_samples), y).mean()
        loss.backward()
        opt.step()
        losses[step] = float(loss.detach())
    return net, losses


# --------------------------------------------------------------------------------------
# the Gaussian ELBO gradient written out: closed-form entropy vs the path derivative
# --------------------------------------------------------------------------------------
ELBO_GRADIENTS = ("total", "path-derivative")


def _check_mu_tril(mu, scale_tril) -> tuple[torch.Tensor, torch.Tensor]:
    mu = torch.as_tensor(as_float_array(mu, "mu", ndim=1), dtype=DTYPE)
    low = torch.as_tensor(as_float_array(scale_tril, "scale_tril", ndim=2), dtype=DTYPE)
    d = mu.shape[0]
    if tuple(low.shape) != (d, d):
        raise ValueError(f"scale_tril must have shape ({d}, {d}) to match mu, got "
                         f"{tuple(low.shape)}")
    if not torch.equal(low, torch.tril(low)) or bool((torch.diagonal(low) <= 0).any()):
        raise ValueError("scale_tril must be lower triangular with a positive diagonal")
    return mu, low


def gaussian_elbo_gradient_samples(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    mu,
    scale_tril,
    num_samples: int,
    num_repeats: int = 1,
    *,
    estimator: str = "total",
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Per-sample pathwise terms of the ELBO gradient for q = N(mu, L L^T).

    With z = mu + L eps and g(z) = grad_z log p(x, z), the two estimators are

    ``"total"``
        the closed-form-entropy gradient, ``d/dmu = g``, ``d/dL = tril(g eps^T)
        + diag(1 / L_ii)``. It is, sample by sample, what automatic differentiation of the
        Monte Carlo ELBO ``log p(x, z) - log q_phi(z)`` through ``rsample`` returns
        (the total derivative): for a Gaussian, ``log q_phi(mu + L eps)`` is
        ``-|eps|^2 / 2 - log det L + const``, whose gradient is the entropy's.
    ``"path-derivative"``
        the "sticking the landing" estimator of Roeder, Wu and Duvenaud (2017): only the
        path through z, ``s = g - grad_z log q(z) = g + L^{-T} eps``, ``d/dmu = s``,
        ``d/dL = tril(s eps^T)``. The dropped term, the score of q at fixed z, has mean
        zero; when q equals the posterior, s = 0 for every sample.

    Parameters
    ----------
    log_joint : callable
        Maps samples (N, D) to log p(x, z) of shape (N,), differentiable in z.
    mu : array_like, shape (D,)
    scale_tril : array_like, shape (D, D)
        Lower-triangular Cholesky factor L with a positive diagonal.
    num_samples, num_repeats : int
        S samples per estimate, R independent estimates.
    estimator : {"total", "path-derivative"}
    generator : torch.Generator, optional
        Source of the base noise eps (default: torch's global generator).

    Returns
    -------
    dict
        ``{"mu": tensor (R, S, D), "scale_tril": tensor (R, S, D, D)}``: the per-sample
        terms; the S-sample estimate is their mean over axis 1. Chapter 5.
    """
    if estimator not in ELBO_GRADIENTS:
        raise ValueError(f"estimator must be one of {ELBO_GRADIENTS}, got {estimator!r}")
    mu, low = _check_mu_tril(mu, scale_tril)
    num_samples = check_positive_int(num_samples, "num_samples")
    num_repeats = check_positive_int(num_repeats, "num_repeats")
    n, d = num_samples * num_repeats, mu.shape[0]
    eps = torch.randn(n, d, dtype=DTYPE, generator=generator)
    z = (mu + eps @ low.T).requires_grad_(True)
    (g,) = torch.autograd.grad(_evaluate(log_joint, z, n).sum(), z)
    if estimator == "path-derivative":
        g = g + torch.linalg.solve_triangular(low.T, eps.T, upper=True).T
    g_low = torch.tril(g[:, :, None] * eps[:, None, :])
    if estimator == "total":
        g_low = g_low + torch.diag(1.0 / torch.diagonal(low))
    return {"mu": g.reshape(num_repeats, num_samples, d),
            "scale_tril": g_low.reshape(num_repeats, num_samples, d, d)}


def gaussian_target_elbo_gradient(mu, scale_tril, mean, precision) -> dict[str, np.ndarray]:
    """Exact ELBO gradient for q = N(mu, L L^T) and a Gaussian posterior N(m, P^{-1}).

    ``ELBO = -(mu - m)^T P (mu - m) / 2 - tr(P L L^T) / 2 + log det L + const``, so
    ``d/dmu = -P (mu - m)`` and ``d/dL = tril(-P L) + diag(1 / L_ii)``: the oracle for
    :func:`gaussian_elbo_gradient_samples` in chapter 5. Zero when L L^T = P^{-1} and
    mu = m.
    """
    mu_t, low_t = _check_mu_tril(mu, scale_tril)
    mu, low = mu_t.numpy(), low_t.numpy()
    mean = as_float_array(mean, "mean", ndim=1)
    precision = as_float_array(precision, "precision", ndim=2)
    d = mu.size
    if mean.shape != (d,) or precision.shape != (d, d):
        raise ValueError(f"mean and precision must have shapes ({d},) and ({d}, {d}), got "
                         f"{mean.shape} and {precision.shape}")
    return {"mu": -precision @ (mu - mean),
            "scale_tril": np.tril(-precision @ low) + np.diag(1.0 / np.diag(low))}


# --------------------------------------------------------------------------------------
# many black-box VI runs at once: step-size sweeps over several seeds
# --------------------------------------------------------------------------------------
VI_ESTIMATORS = ("pathwise", "path-derivative", "score")


@dataclass
class ParallelVIResult:
    """Output of :func:`fit_gaussian_vi_parallel`: R independent runs.

    Attributes
    ----------
    lrs : ndarray (R,)
        Adam step size of each run.
    mu, scale_tril : ndarray (R, D) and (R, D, D)
        Final q of each run (NaN where a run's parameters overflowed).
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
    mu: np.ndarray
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

    The same algorithm as :func:`fit_gaussian_vi` (q = N(mu, L L^T), diagonal or
    full-rank, softplus diagonal, mu = 0 and L = init_scale I at the start, Adam), but
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
    estimator : {"pathwise", "path-derivative", "score"}
        Pathwise with closed-form entropy (the gradient of ``monte_carlo_elbo`` through
        ``rsample``), the path-derivative estimator of Roeder et al. (2017), or the
        score-function estimator of Ranganath et al. (2014) with ``baseline``.
    num_samples, num_steps : int
        S samples of q per step (S model evaluations per run and step) and steps.
    baseline : None, float or "leave-one-out"
        Score function only.
    eval_every, eval_samples, final_samples : int
        ELBO trace every ``eval_every`` steps; final ELBO from ``final_samples``.
    init_scale : float
    seed : int
        Seed of the private torch generator that draws every run's noise.

    Returns
    -------
    ParallelVIResult
    """
    dim = check_positive_int(dim, "dim")
    lrs_np = np.atleast_1d(as_float_array(lrs, "lrs", ndim=1))
    if np.any(lrs_np <= 0):
        raise ValueError("every step size in lrs must be > 0")
    if family not in GaussianVariational.FAMILIES:
        raise ValueError(f"family must be one of {GaussianVariational.FAMILIES}, "
                         f"got {family!r}")
    if estimator not in VI_ESTIMATORS:
        raise ValueError(f"estimator must be one of {VI_ESTIMATORS}, got {estimator!r}")
    if estimator != "score":
        baseline = None
    num_samples = check_positive_int(num_samples, "num_samples")
    baseline = _check_baseline(baseline, num_samples)
    num_steps = check_positive_int(num_steps, "num_steps")
    eval_every = check_positive_int(eval_every, "eval_every")
    eval_samples = check_positive_int(eval_samples, "eval_samples")
    final_samples = check_positive_int(final_samples, "final_samples")
    init_scale = check_positive(init_scale, "init_scale")
    gen = torch.Generator().manual_seed(check_positive_int(seed, "seed", minimum=0))
    r, d, s = lrs_np.size, dim, num_samples
    raw0 = math.log(math.expm1(init_scale))
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
        return log_joint(z.reshape(-1, d)).reshape(z.shape[0], z.shape[1])

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
    for step in range(1, num_steps + 1):
        low = tril_of(raw)
        eps = torch.randn(r, s, d, dtype=DTYPE, generator=gen)
        if estimator == "score":
            with torch.no_grad():
                z = mu[:, None, :] + eps @ low.transpose(1, 2)
            log_q = _batched_log_q(z, mu, low)
            with torch.no_grad():
                w = _apply_baseline(log_p(z) - log_q, baseline)
            objective = (w * log_q).mean(1)
        else:
            z = mu[:, None, :] + eps @ low.transpose(1, 2)
            if estimator == "pathwise":
                ent = torch.log(torch.diagonal(low, dim1=1, dim2=2)).sum(-1)
                objective = log_p(z).mean(1) + ent
            else:
                objective = (log_p(z) - _batched_log_q(z, mu.detach(),
                                                       low.detach())).mean(1)
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


# --------------------------------------------------------------------------------------
# a gold standard for a posterior with no closed form: importance sampling
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImportanceSamplingResult:
    """Output of :func:`importance_sampling_posterior`.

    Attributes
    ----------
    log_evidence : float
        log of the importance-sampling estimate of p(x) (unbiased for p(x)).
    log_evidence_se : float
        Its delta-method standard error, sqrt((mean w^2 / (mean w)^2 - 1) / N).
    ess : float
        Effective sample size (sum w)^2 / sum w^2.
    mean, sd, skewness : ndarray (D,)
        Self-normalised estimates of the posterior marginals' mean, standard deviation
        and standardised third moment.
    num_samples : int
    """

    log_evidence: float
    log_evidence_se: float
    ess: float
    mean: np.ndarray
    sd: np.ndarray
    skewness: np.ndarray
    num_samples: int


def importance_sampling_posterior(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    mean,
    cov,
    num_samples: int,
    *,
    rng: np.random.Generator,
    df: float = 10.0,
    chunk_size: int = 20_000,
) -> ImportanceSamplingResult:
    """Posterior moments and log evidence by importance sampling from a Student-t.

    The proposal is a multivariate Student-t with ``df`` degrees of freedom, location
    ``mean`` and shape ``cov`` (for example the Laplace approximation): heavier tails
    than the posterior keep the weights w = p(x, z) / r(z) bounded. The log weights are
    combined with log-sum-exp. Chapter 5 uses it as the gold standard for Bayesian
    logistic regression.

    Parameters
    ----------
    log_joint : callable
        Maps samples (N, D) to log p(x, z), shape (N,).
    mean : array_like (D,)
    cov : array_like (D, D), symmetric positive definite
    num_samples : int
    rng : numpy.random.Generator
    df : float
        Degrees of freedom (> 0) of the proposal.
    chunk_size : int
        Samples per call of ``log_joint``.

    Returns
    -------
    ImportanceSamplingResult
    """
    from scipy.special import logsumexp
    from scipy.stats import multivariate_t

    mean = as_float_array(mean, "mean", ndim=1)
    cov = as_float_array(cov, "cov", ndim=2)
    if cov.shape != (mean.size, mean.size):
        raise ValueError(f"cov must have shape ({mean.size}, {mean.size}), got {cov.shape}")
    num_samples = check_positive_int(num_samples, "num_samples", minimum=2)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    df = check_positive(df, "df")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    proposal = multivariate_t(loc=mean, shape=cov, df=df)
    z = np.atleast_2d(proposal.rvs(size=num_samples, random_state=rng))
    log_w = np.empty(num_samples)
    with torch.no_grad():
        for start in range(0, num_samples, chunk_size):
            block = torch.as_tensor(z[start:start + chunk_size], dtype=DTYPE)
            log_w[start:start + chunk_size] = log_joint(block).numpy()
    log_w -= proposal.logpdf(z)
    if not np.all(np.isfinite(log_w)):
        raise ValueError("log_joint or the proposal returned non-finite values")
    log_sum = logsumexp(log_w)
    w = np.exp(log_w - log_sum)  # normalised weights, sum 1
    ess = 1.0 / float(np.sum(w**2))
    post_mean = w @ z
    centred = z - post_mean
    var = w @ centred**2
    skew = (w @ centred**3) / var**1.5
    log_evidence = float(log_sum - math.log(num_samples))
    rel_var = max(num_samples / ess - 1.0, 0.0) / num_samples
    return ImportanceSamplingResult(log_evidence, math.sqrt(rel_var), ess, post_mean,
                                    np.sqrt(var), skew, num_samples)
