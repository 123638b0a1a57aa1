"""Gradient estimators: Monte Carlo gradients of expectations (chapters 5, 6).

The gradient of the ELBO with respect to the variational parameters phi is the gradient
of an expectation under a distribution that itself depends on phi,
``grad_phi E_{q_phi}[f(z)]``. Two unbiased Monte Carlo estimators:

score function (REINFORCE, log-derivative trick)
    ``E_q[f(z) grad_phi log q_phi(z)]``; needs only samples and ``log_prob``, works for
    discrete z, high variance. A baseline ``b`` (any constant, or the leave-one-out mean
    of the other samples) keeps it unbiased and lowers the variance:
    ``E_q[(f(z) - b) grad_phi log q_phi(z)]`` (:func:`check_baseline`,
    :func:`apply_baseline`).
pathwise (reparameterisation)
    ``z = g(eps, phi)`` with ``eps`` from a fixed base distribution, so
    ``grad_phi E_q[f(z)] = E_eps[grad_phi f(g(eps, phi))]``; needs ``rsample`` (continuous z)
    and a differentiable f, usually much lower variance.

Both are implemented for *any* ``torch.distributions`` family through a factory
``make_q(**params)`` that builds q from its parameters. Per-sample gradients are obtained
in one backward pass by giving every sample its own copy of the parameters, so variances
are measured without Python loops over samples (:func:`per_sample_gradients`,
:func:`gradient_stats`). For a Gaussian q the pathwise ELBO gradient is also written out
(:func:`gaussian_elbo_gradient_samples`: closed-form entropy or the path derivative) with
its exact value for a Gaussian target (:func:`gaussian_target_elbo_gradient`).
:func:`measure_valued_gradient_samples` is the third family, for a Gaussian's mean: the
density's derivative split into two Rayleigh-shifted densities (Mohamed et al. 2020).
:func:`gradient_snr` measures the signal-to-noise ratio of any stochastic objective's
gradient per parameter group (chapter 6: IWAE_k encoder and decoder gradients).

The ELBO estimators these gradients differentiate live in :mod:`elbo_lib.bounds`
(``monte_carlo_elbo``, ``score_function_elbo_surrogate``); the loop that follows them is
:func:`elbo_lib.variational.fit_vi`.

References: Williams (1992); Ranganath, Gerrish and Blei (2014); Kingma and Welling
(2014); Rezende, Mohamed and Wierstra (2014); Roeder, Wu and Duvenaud (2017);
Rainforth et al. (2018); Mohamed et al. (2020).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from numbers import Real

import numpy as np
import torch
from torch.distributions import Distribution

from elbo_lib._validation import (
    _scalar_of,
    as_float_array,
    as_generator,
    check_positive,
    check_positive_int,
    check_spd,
)

__all__ = [
    "GradientSNR",
    "GradientStats",
    "apply_baseline",
    "check_baseline",
    "ESTIMATORS",
    "gaussian_elbo_gradient_samples",
    "gaussian_score_gradient_estimates",
    "gaussian_target_elbo_gradient",
    "gradient_snr",
    "gradient_stats",
    "leave_one_out_control_variate",
    "measure_valued_gradient_samples",
    "pathwise_gradient",
    "per_sample_gradients",
    "score_function_gradient",
]

#: The book's one vocabulary of gradient estimators (chapters 5 and 8): the objectives of
#: :mod:`elbo_lib.objectives` name theirs by these words, and the measurements here take
#: the words that apply to them ("doubly-reparameterised": DReG's IWAE gradient;
#: "self-normalised-score": the inclusive KL's reweighted score, measured in chapter 8).
ESTIMATORS = ("pathwise", "path-derivative", "score", "score-cv", "doubly-reparameterised",
              "self-normalised-score")
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
            raise TypeError(f"params keys must be str (parameter names), got "
                            f"{type(name).__name__}")
        try:
            t = torch.as_tensor(value, dtype=DTYPE)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"params[{name!r}] must be numeric, got "
                            f"{type(value).__name__}") from exc
        if not torch.all(torch.isfinite(t)):
            raise ValueError(f"params[{name!r}] must be finite (no NaN or inf)")
        out[name] = t.detach()
    return out


def _check_estimator(estimator: str, allowed: tuple[str, ...] = ("pathwise", "score")) -> str:
    """``estimator`` if it is one of ``allowed`` (words of :data:`ESTIMATORS`)."""
    if estimator not in allowed:
        raise ValueError(f"estimator must be one of {allowed}, got {estimator!r}")
    return estimator


def _build_q(make_q, reps: dict[str, torch.Tensor], n: int) -> Distribution:
    if not callable(make_q):
        raise TypeError(f"make_q must be callable, got {type(make_q).__name__}")
    try:
        q = make_q(**reps)
    except ValueError as exc:   # torch.distributions' argument validation
        raise ValueError(f"params {sorted(reps)} are not valid parameters of make_q's "
                         f"distribution: {exc}") from exc
    if not isinstance(q, Distribution):
        raise TypeError(f"make_q must return a torch Distribution, got {type(q).__name__}")
    if tuple(q.batch_shape) != (n,):
        raise ValueError(f"make_q with parameters carrying a leading batch axis of {n} must "
                         f"return batch_shape ({n},), got {tuple(q.batch_shape)}; "
                         "wrap elementwise families in Independent(..., 1)")
    return q


def _evaluate(f, z: torch.Tensor, n: int, name: str = "f") -> torch.Tensor:
    if not callable(f):
        raise TypeError(f"{name} must be callable, got {type(f).__name__}")
    fz = f(z)
    if not isinstance(fz, torch.Tensor) or tuple(fz.shape) != (n,):
        shape = tuple(fz.shape) if isinstance(fz, torch.Tensor) else type(fz).__name__
        raise ValueError(f"{name} must map samples of shape {tuple(z.shape)} to a tensor of "
                         f"shape ({n},), got {shape}")
    if not torch.all(torch.isfinite(fz)):
        raise ValueError(f"{name} returned non-finite values")
    return fz


# --------------------------------------------------------------------------------------
# baselines (control variates) of the score-function estimator
# --------------------------------------------------------------------------------------
def check_baseline(baseline, num_samples: int) -> None | float | str:
    """Validate a score-function baseline for groups of ``num_samples`` samples.

    Parameters
    ----------
    baseline : None, float or "leave-one-out"
        No baseline, a finite constant b, or the mean of the other S - 1 samples of the
        same group (which needs S >= 2).
    num_samples : int
        S, the samples per group.

    Returns
    -------
    None, float or "leave-one-out"
        The baseline, a constant converted to float.

    Raises
    ------
    TypeError, ValueError
        For another type or string, a non-finite constant, or leave-one-out with S < 2.
    """
    num_samples = check_positive_int(num_samples, "num_samples")
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
    baseline = _scalar_of(baseline)  # a 0-d array or tensor is its number
    if isinstance(baseline, bool | np.bool_) or not isinstance(baseline, Real):
        raise TypeError("baseline must be None, a finite number or 'leave-one-out', "
                        f"got {type(baseline).__name__}")
    try:
        value = float(baseline)
    except OverflowError:
        raise ValueError(f"a constant baseline must be finite, got an integer beyond "
                         f"float range ({len(str(abs(int(baseline))))} digits)") from None
    if not math.isfinite(value):
        raise ValueError(f"a constant baseline must be finite, got {baseline!r}")
    return value


def apply_baseline(values: torch.Tensor, baseline: None | float | str, *,
                   allow_nonfinite: bool = False) -> torch.Tensor:
    """Subtract a (checked) baseline from ``values`` of shape (R, S).

    ``values - b`` for a constant b; for ``"leave-one-out"`` each sample gets the mean
    of the other S - 1 samples of its row (group), which is independent of it, so the
    score-function estimator stays unbiased (chapter 5). Used by the estimators here, by
    :func:`elbo_lib.bounds.score_function_elbo_surrogate` and by
    :func:`elbo_lib.variational.fit_gaussian_vi_parallel`.

    Parameters
    ----------
    values : torch.Tensor, shape (R, S)
    baseline : None, float or "leave-one-out"
        Checked by :func:`check_baseline` with S samples per group.
    allow_nonfinite : bool
        Let NaN and inf through (the diverged runs of
        :func:`elbo_lib.variational.fit_gaussian_vi_parallel`); otherwise they are an
        error.

    Returns
    -------
    torch.Tensor, shape (R, S)

    Raises
    ------
    TypeError, ValueError
        If ``values`` is not a 2-D tensor, holds NaN or inf (unless allowed), or the
        baseline is not valid for S samples.
    """
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values must be a torch.Tensor of shape (R, S), "
                        f"got {type(values).__name__}")
    if values.ndim != 2:
        raise ValueError(f"values must have shape (R, S), got {tuple(values.shape)}")
    if not allow_nonfinite and not bool(torch.isfinite(values).all()):
        raise ValueError("values must be finite (no NaN or inf)")
    baseline = check_baseline(baseline, values.shape[1])
    if baseline is None:
        return values
    if baseline == "leave-one-out":
        s = values.shape[1]
        return values - (values.sum(dim=1, keepdim=True) - values) / (s - 1)
    return values - baseline


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
    estimator: str = "pathwise",
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Per-sample pathwise terms of the ELBO gradient for q = N(mu, L L^T).

    With z = mu + L eps and g(z) = grad_z log p(x, z), the two estimators are

    ``"pathwise"``
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
    estimator : {"pathwise", "path-derivative"}
        Words of :data:`ESTIMATORS`, the estimators of
        :class:`elbo_lib.objectives.PathwiseELBO` and
        :class:`~elbo_lib.objectives.PathDerivativeELBO`.
    generator : torch.Generator, optional
        Source of the base noise eps (default: torch's global generator).

    Returns
    -------
    dict
        ``{"mu": tensor (R, S, D), "scale_tril": tensor (R, S, D, D)}``: the per-sample
        terms; the S-sample estimate is their mean over axis 1. Chapter 5.
    """
    estimator = _check_estimator(estimator, ("pathwise", "path-derivative"))
    mu, low = _check_mu_tril(mu, scale_tril)
    num_samples = check_positive_int(num_samples, "num_samples")
    num_repeats = check_positive_int(num_repeats, "num_repeats")
    if not callable(log_joint):
        raise TypeError(f"log_joint must be callable, got {type(log_joint).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, "
                        f"got {type(generator).__name__}")
    n, d = num_samples * num_repeats, mu.shape[0]
    eps = torch.randn(n, d, dtype=DTYPE, generator=generator)
    z = (mu + eps @ low.T).requires_grad_(True)
    (g,) = torch.autograd.grad(_evaluate(log_joint, z, n, "log_joint").sum(), z)
    if estimator == "path-derivative":
        g = g + torch.linalg.solve_triangular(low.T, eps.T, upper=True).T
    g_low = torch.tril(g[:, :, None] * eps[:, None, :])
    if estimator == "pathwise":
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
    check_spd(precision, "precision")
    return {"mu": -precision @ (mu - mean),
            "scale_tril": np.tril(-precision @ low) + np.diag(1.0 / np.diag(low))}




def leave_one_out_control_variate(f: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Mean over samples of f h - a h, a = Cov(f h, h) / Var(h) per coordinate, unbiased.

    The score function with the score h itself as a control variate, one coefficient per
    coordinate (Ranganath, Gerrish and Blei 2014, section 3.2). Each sample's
    coefficient is estimated from the other S - 1 samples of its row (leave one out),
    independent of its own h, so that E[a h] = E[a] E[h] = 0. Chapter 5.

    Parameters
    ----------
    f : torch.Tensor, shape (R, S)
        The integrand at each sample (for the ELBO's E_q[log p] part, log p(x, z_s)).
    h : torch.Tensor, shape (R, S, ...)
        The score coordinates at each sample; S >= 3.

    Returns
    -------
    torch.Tensor, shape (R, ...)
        One estimate per row.

    Raises
    ------
    TypeError, ValueError
        If f or h is not a tensor, or their shapes do not match, or S < 3.
    """
    if not isinstance(f, torch.Tensor) or not isinstance(h, torch.Tensor):
        raise TypeError(f"f and h must be torch.Tensors, got {type(f).__name__} and "
                        f"{type(h).__name__}")
    if f.ndim != 2 or h.ndim < 2 or tuple(h.shape[:2]) != tuple(f.shape):
        raise ValueError(f"f must have shape (R, S) and h (R, S, ...), got "
                         f"{tuple(f.shape)} and {tuple(h.shape)}")
    check_positive_int(f.shape[1], "the number of samples S of f", 3)
    return _loo_controlled(f, h)


def _loo_controlled(f: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """:func:`leave_one_out_control_variate` without its checks (the loops' kernel)."""
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
    score-function estimators of :class:`elbo_lib.objectives.ScoreFunctionELBO` and
    :class:`~elbo_lib.objectives.ScoreControlVariateELBO` (words of :data:`ESTIMATORS`):

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
    estimator = _check_estimator(estimator, ("score", "score-cv"))
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


def measure_valued_gradient_samples(f: Callable[[np.ndarray], np.ndarray], mean, std,
                                    num_samples: int, rng) -> np.ndarray:
    """Per-sample measure-valued estimates of grad_mean E_q[f(z)], q = N(mean, diag(std^2)).

    The derivative of the Gaussian density in mean_i splits into a positive and a
    negative part, the densities of mean_i + std_i R and mean_i - std_i R (R ~ Rayleigh(1)),
    times 1 / (std_i sqrt(2 pi)) (Mohamed et al. 2020, section 6). With the same R in both
    terms (the coupling), sample s's estimate of coordinate i is

        (f(mean + std_i R_si e_i) - f(mean - std_i R_si e_i)) / (std_i sqrt(2 pi)),

    unbiased, with no derivative of f or of a sampler: 2 D evaluations of f per sample.
    Chapter 5 (the fast-oscillating sine).

    Parameters
    ----------
    f : callable
        Maps points (S, D) (NumPy) to values (S,).
    mean, std : array_like, shape (D,)
        Parameters of q; std > 0.
    num_samples : int
        S.
    rng : int or numpy.random.Generator
        Source of the Rayleigh draws, shape (S, D), drawn in one call.

    Returns
    -------
    ndarray, shape (S, D)
        The per-sample terms; their mean over axis 0 is the S-sample estimate.

    Raises
    ------
    TypeError, ValueError
        For a bad argument, or an f that does not return finite values of shape (S,).
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    mean = as_float_array(mean, "mean", ndim=1)
    std = np.atleast_1d(check_positive(as_float_array(std, "std", ndim=1), "std",
                                       allow_array=True))
    if std.shape != mean.shape:
        raise ValueError(f"std must have the shape of mean {mean.shape}, got {std.shape}")
    num_samples = check_positive_int(num_samples, "num_samples")
    r = as_generator(rng).rayleigh(size=(num_samples, mean.size))
    out = np.empty_like(r)
    for i in range(mean.size):
        unit = np.zeros(mean.size)
        unit[i] = 1.0
        values = []
        for z in (mean + (std[i] * r[:, i])[:, None] * unit,
                  mean - (std[i] * r[:, i])[:, None] * unit):
            value = np.asarray(f(z), dtype=float)
            if value.shape != (num_samples,) or not np.all(np.isfinite(value)):
                raise ValueError(f"f must return finite values of shape ({num_samples},) "
                                 f"for points of shape {z.shape}")
            values.append(value)
        out[:, i] = (values[0] - values[1]) / (std[i] * np.sqrt(2 * np.pi))
    return out


# --------------------------------------------------------------------------------------
# signal-to-noise ratio of a stochastic objective's gradient (chapter 6)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GradientSNR:
    """Output of :func:`gradient_snr`.

    Attributes
    ----------
    snr : dict of str to ndarray
        Per parameter group, |mean| / standard deviation (ddof=1) of every flattened
        parameter's gradient over the repeats.
    mean : dict of str to ndarray
        Per parameter group, the gradient averaged over the repeats (flattened in the
        order of the group's parameters).
    num_repeats : int
    """

    snr: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    num_repeats: int


def gradient_snr(objective: Callable[[], torch.Tensor],
                 params: Mapping[str, Iterable[torch.Tensor]],
                 num_repeats: int = 100) -> GradientSNR:
    """Signal-to-noise ratio of a stochastic objective's gradient, per parameter.

    ``objective()`` is called ``num_repeats`` times (each call draws fresh samples) and
    differentiated with respect to every parameter; the SNR of a parameter is
    |mean| / standard deviation over the repeats (Rainforth et al. 2018). Chapter 6
    passes the IWAE_k objective of a VAE with the groups ``"encoder"`` and
    ``"decoder"``: as k grows the decoder's SNR grows like sqrt(k) and the encoder's
    shrinks like 1 / sqrt(k).

    Parameters
    ----------
    objective : callable
        No arguments; returns a scalar tensor, differentiable in the parameters.
    params : mapping of str to iterable of tensors
        Named groups of parameters (e.g. ``{"encoder": model.encoder.parameters()}``).
    num_repeats : int
        Number of gradient estimates (>= 2).

    Returns
    -------
    GradientSNR

    Raises
    ------
    TypeError
        If ``objective`` is not callable, a group is empty or holds a non-tensor, or
        the objective does not return a scalar tensor.
    ValueError
        If ``num_repeats < 2`` or a gradient estimate is not finite.
    """
    if not callable(objective):
        raise TypeError(f"objective must be callable, got {type(objective).__name__}")
    if not isinstance(params, Mapping) or not params:
        raise TypeError("params must be a non-empty mapping name -> parameters, "
                        f"got {type(params).__name__}")
    num_repeats = check_positive_int(num_repeats, "num_repeats", minimum=2)
    groups = {name: list(group) for name, group in params.items()}
    for name, group in groups.items():
        if not group or not all(isinstance(p, torch.Tensor) for p in group):
            raise TypeError(f"params group {name!r} must hold at least one tensor")
    flat = [p for group in groups.values() for p in group]
    samples = []
    for repeat in range(num_repeats):
        value = objective()
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            raise TypeError("objective must return a scalar tensor")
        grads = torch.autograd.grad(value, flat)
        g = torch.cat([g.reshape(-1) for g in grads]).double()
        if not bool(torch.isfinite(g).all()):
            raise ValueError(f"the gradient estimate of repeat {repeat} is not finite")
        samples.append(g)
    g = torch.stack(samples)                                  # (repeats, P)
    mean, std = g.mean(0), g.std(0)
    snr = (mean.abs() / std.clamp_min(1e-30)).numpy()
    mean = mean.numpy()
    out_snr, out_mean, start = {}, {}, 0
    for name, group in groups.items():
        stop = start + sum(p.numel() for p in group)
        out_snr[name], out_mean[name] = snr[start:stop], mean[start:stop]
        start = stop
    return GradientSNR(out_snr, out_mean, num_repeats)
