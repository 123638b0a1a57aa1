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

from elbo_lib._validation import _scalar_of, as_float_array, check_positive_int, check_spd

__all__ = [
    "GradientSNR",
    "GradientStats",
    "apply_baseline",
    "check_baseline",
    "gaussian_elbo_gradient_samples",
    "gaussian_target_elbo_gradient",
    "gradient_snr",
    "gradient_stats",
    "pathwise_gradient",
    "per_sample_gradients",
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


def _check_estimator(estimator: str) -> str:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
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
    check_spd(precision, "precision")
    return {"mu": -precision @ (mu - mean),
            "scale_tril": np.tril(-precision @ low) + np.diag(1.0 / np.diag(low))}




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
