"""Denoising diffusion as a deep hierarchical VAE: the noising chain, its posterior, the
terms of its ELBO and two oracles (chapter 9).

The encoder is fixed: q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t), t = 1..T, so
q(x_t | x_0) = N(sqrt(abar_t) x_0, 1 - abar_t) with abar_t = prod_{s <= t} alpha_s. The
decoder is a chain of Gaussians p(x_T) = N(0, 1), p(x_{t-1} | x_t) = N(m(x_t, t), v_t),
and (Sohl-Dickstein et al. 2015; Ho et al. 2020)

    log p(x_0) >= ELBO = -(L_T + sum_{t=2}^T L_{t-1} + L_0),
    L_T = KL(q(x_T | x_0) || N(0, 1)),
    L_{t-1} = E_q KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)),
    L_0 = -E_q log p(x_0 | x_1)

(Kingma et al. 2021 take T to infinity).

* schedules :class:`NoiseSchedule`, :func:`linear_schedule`, :func:`cosine_schedule`;
  :func:`forward_marginal`, :func:`forward_sample`, :func:`reverse_posterior`;
* the terms :func:`prior_kl` (L_T), :func:`denoising_kl` (L_{t-1}),
  :func:`decoder_log_likelihood` (-L_0), :func:`mean_from_epsilon` and
  :func:`epsilon_loss_weight` (Ho et al.'s epsilon loss as L_{t-1}), :func:`diffusion_elbo`;
* oracles: :class:`GaussianMixtureData` (analytic denoiser E[x_0 | x_t], optimal
  reverse mean, and the data-averaged ELBO of any mean by its shortfall from the optimum,
  :meth:`GaussianMixtureData.average_elbo`), :func:`reverse_chain_log_likelihood` (exact
  log p(x_0) in 1-D, grid) and :func:`reverse_chain_log_density_2d` (the same on a 2-D
  product grid);
* training: :func:`train_noise_predictors`, R preconditioned MLP noise predictors
  trained on the ELBO in one batched program (:class:`NoisePredictors`).

Backends: the schedule and the mixture and grid oracles are NumPy (fixed numbers, no
gradients); the forward process, the posterior and the ELBO terms accept NumPy arrays or
torch tensors (then they return tensors and are differentiable), so a denoiser is trained
through the same functions that the checks use. Elementwise functions return one value per
entry, as :func:`~elbo_lib.gaussians.gaussian_kl` does: sum over the last axis for vector
data. The time index t is 1-based as in the papers: ``schedule.betas[t - 1]`` is beta_t.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from scipy.special import logsumexp

from elbo_lib._validation import (
    as_float_array,
    as_generator,
    as_tensor,
    check_broadcast,
    check_int,
    check_positive,
    check_positive_int,
    check_probability_rows,
    check_spd,
)
from elbo_lib.em import gmm_log_likelihood, gmm_responsibilities
from elbo_lib.gaussians import diagonal_gaussian_log_density, gaussian_kl, gaussian_log_density
from elbo_lib.reproducibility import seed_everything

__all__ = [
    "DiffusionELBO",
    "GaussianMixtureData",
    "NoisePredictors",
    "NoiseSchedule",
    "cosine_schedule",
    "decoder_log_likelihood",
    "denoising_kl",
    "diffusion_elbo",
    "epsilon_loss_weight",
    "forward_marginal",
    "forward_sample",
    "linear_schedule",
    "mean_from_epsilon",
    "prior_kl",
    "reverse_chain_log_likelihood",
    "reverse_chain_log_density_2d",
    "reverse_posterior",
    "train_noise_predictors",
]


# ---------------------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------------------
class NoiseSchedule:
    """The variances beta_1..beta_T of the noising chain and what derives from them.

    Read-only NumPy attributes: ``betas`` and ``alphas`` = 1 - betas (T,); ``alpha_bars``
    (T + 1,), ``alpha_bars[t]`` = prod_{s <= t} alpha_s, ``alpha_bars[0]`` = 1;
    ``one_minus_alpha_bars`` (T + 1,), -expm1 of the log-product (accurate when abar_t is
    near 1); ``posterior_variances`` (T,), entry t - 1 the variance of
    q(x_{t-1} | x_t, x_0), beta_t (1 - abar_{t-1}) / (1 - abar_t) (0 at t = 1). Chapter 9.

    Parameters
    ----------
    betas : array_like, shape (T,)
        Each in (0, 1); a ValueError otherwise.
    """

    def __init__(self, betas):
        betas = as_float_array(betas, "betas", ndim=1)
        if np.any(betas <= 0) or np.any(betas >= 1):
            raise ValueError(f"betas must lie in (0, 1), got range [{betas.min()!r}, "
                             f"{betas.max()!r}]")
        log_abar = np.concatenate([[0.0], np.cumsum(np.log1p(-betas))])
        one_minus = -np.expm1(log_abar)
        one_minus[0] = 0.0  # not -0.0
        fields = {"betas": betas.copy(), "alphas": 1.0 - betas,
                  "alpha_bars": np.exp(log_abar), "one_minus_alpha_bars": one_minus,
                  "posterior_variances": betas * one_minus[:-1] / one_minus[1:]}
        for name, value in fields.items():
            value.setflags(write=False)
            setattr(self, name, value)

    @property
    def num_steps(self) -> int:
        """T, the number of noising steps."""
        return int(self.betas.size)

    def __repr__(self) -> str:
        return (f"NoiseSchedule(num_steps={self.num_steps}, beta in [{self.betas.min():.3g}, "
                f"{self.betas.max():.3g}], alpha_bar_T={self.alpha_bars[-1]:.3g})")


def linear_schedule(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02
                    ) -> NoiseSchedule:
    """beta_t linear from ``beta_start`` to ``beta_end`` (Ho et al. 2020).

    The defaults are Ho et al.'s for T = 1000 (then abar_T = 4e-5); a short chain needs
    larger betas for q(x_T | x_0) to approach N(0, 1): pass them (chapter 9).

    Parameters
    ----------
    num_steps : int
        T >= 1.
    beta_start, beta_end : float
        0 < beta_start <= beta_end < 1 (T = 1 uses ``beta_end``); a ValueError otherwise.

    Returns
    -------
    NoiseSchedule
    """
    num_steps = check_positive_int(num_steps, "num_steps", maximum=10**7)
    beta_start = check_positive(beta_start, "beta_start")
    beta_end = check_positive(beta_end, "beta_end")
    if not beta_start <= beta_end < 1:
        raise ValueError(f"beta_start and beta_end must satisfy 0 < beta_start <= beta_end "
                         f"< 1, got {beta_start!r} and {beta_end!r}")
    if num_steps == 1:
        return NoiseSchedule([beta_end])
    return NoiseSchedule(np.linspace(beta_start, beta_end, num_steps))


def cosine_schedule(num_steps: int, offset: float = 0.008, max_beta: float = 0.999
                    ) -> NoiseSchedule:
    """abar_t = f(t) / f(0), f(t) = cos^2(pi/2 (t/T + s) / (1 + s)) (Nichol & Dhariwal
    2021).

    beta_t = 1 - abar_t / abar_{t-1}, clipped at ``max_beta`` as they do (else beta_T = 1);
    the schedule's ``alpha_bars`` are those of the clipped betas.

    Parameters
    ----------
    num_steps : int
        T >= 1.
    offset : float
        s > 0, keeps beta_1 away from 0.
    max_beta : float
        In (0, 1).

    Returns
    -------
    NoiseSchedule
    """
    num_steps = check_positive_int(num_steps, "num_steps", maximum=10**7)
    offset = check_positive(offset, "offset")
    max_beta = check_positive(max_beta, "max_beta")
    if max_beta >= 1:
        raise ValueError(f"max_beta must be < 1, got {max_beta!r}")
    s = np.arange(num_steps + 1) / num_steps
    f = np.cos(0.5 * np.pi * (s + offset) / (1 + offset)) ** 2
    betas = 1.0 - f[1:] / f[:-1]
    return NoiseSchedule(np.clip(betas, np.finfo(float).tiny, max_beta))


# ---------------------------------------------------------------------------------------
# argument handling shared by the forward and reverse functions
# ---------------------------------------------------------------------------------------
def _check_schedule(schedule) -> NoiseSchedule:
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    return schedule


def _arrays(**named):
    """The named arrays as float64 NumPy arrays, or as tensors when any is a tensor (in the
    dtype of the first floating tensor), finite and broadcastable."""
    if any(isinstance(a, torch.Tensor) for a in named.values()):
        dtype = next((a.dtype for a in named.values()
                      if isinstance(a, torch.Tensor) and a.is_floating_point()), torch.float64)
        out = [as_tensor(a, name, dtype=dtype) for name, a in named.items()]
    else:
        out = [as_float_array(a, name) for name, a in named.items()]
    if len(out) > 1:
        check_broadcast(**dict(zip(named, out, strict=True)))
    return out


def _check_t(t, schedule: NoiseSchedule, first: int = 1):
    """t as an int or an int64 array with every entry in [first, T]."""
    last = schedule.num_steps
    if isinstance(t, torch.Tensor) and t.ndim > 0:
        t = t.detach().cpu().numpy()
    if isinstance(t, np.ndarray) and t.ndim > 0:
        if t.dtype.kind not in "iu":
            raise TypeError(f"t must be an integer or an array of integers, got {t.dtype}")
        if t.min() < first or t.max() > last:
            raise ValueError(f"t must lie in [{first}, {last}], got range [{t.min()}, "
                             f"{t.max()}]")
        return t.astype(np.int64)
    return check_int(t, "t", first, last)


def _coef(values: np.ndarray, t, x):
    """``values[t]`` shaped to broadcast against ``x``: an array t indexes x's leading axes."""
    c = values[t]
    if isinstance(t, np.ndarray):
        if x.shape[:t.ndim] != t.shape:
            raise ValueError(f"t of shape {t.shape} must match the leading axes of the data "
                             f"(shape {tuple(x.shape)})")
        c = c.reshape(t.shape + (1,) * (x.ndim - t.ndim))
    return torch.as_tensor(c, dtype=x.dtype) if isinstance(x, torch.Tensor) else c


def _sqrt(x):
    return torch.sqrt(x) if isinstance(x, torch.Tensor) else np.sqrt(x)


# ---------------------------------------------------------------------------------------
# the forward process and its posterior
# ---------------------------------------------------------------------------------------
def forward_marginal(schedule: NoiseSchedule, x0, t):
    """Mean and variance of q(x_t | x_0) = N(sqrt(abar_t) x_0, 1 - abar_t), elementwise.

    Parameters
    ----------
    schedule : NoiseSchedule
    x0 : array_like or torch.Tensor
    t : int or array of int, in [0, T]
        An array indexes the leading axes of ``x0`` (one t per data point).

    Returns
    -------
    (mean, var) : arrays or tensors of the shape of ``x0``.
    """
    schedule = _check_schedule(schedule)
    (x0,) = _arrays(x0=x0)
    t = _check_t(t, schedule, first=0)
    mean = _sqrt(_coef(schedule.alpha_bars, t, x0)) * x0
    return mean, mean * 0 + _coef(schedule.one_minus_alpha_bars, t, x0)


def forward_sample(schedule: NoiseSchedule, x0, t, noise):
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, a draw of q(x_t | x_0) given noise.

    The caller draws the noise (``rng.standard_normal`` or ``torch.randn``; Ho et al.'s
    epsilon), so NumPy checks and torch training share this function.

    Parameters
    ----------
    schedule : NoiseSchedule
    x0 : array_like or torch.Tensor
    t : int or array of int, in [0, T], as in :func:`forward_marginal`
    noise : array_like or torch.Tensor
        Standard normal draws, broadcastable with ``x0`` (extra leading axes: samples).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        x_t, of the broadcast shape.
    """
    schedule = _check_schedule(schedule)
    x0, noise = _arrays(x0=x0, noise=noise)
    t = _check_t(t, schedule, first=0)
    return (_sqrt(_coef(schedule.alpha_bars, t, x0)) * x0
            + _sqrt(_coef(schedule.one_minus_alpha_bars, t, x0)) * noise)


def reverse_posterior(schedule: NoiseSchedule, x0, xt, t):
    """Mean and variance of q(x_{t-1} | x_t, x_0), Gaussian by Bayes' rule.

    .. math::

        \\tilde\\mu_t = \\frac{\\sqrt{\\bar\\alpha_{t-1}}\\beta_t}{1 - \\bar\\alpha_t} x_0
        + \\frac{\\sqrt{\\alpha_t}(1 - \\bar\\alpha_{t-1})}{1 - \\bar\\alpha_t} x_t, \\quad
        \\tilde\\beta_t = \\frac{1 - \\bar\\alpha_{t-1}}{1 - \\bar\\alpha_t}\\beta_t

    (Ho et al. 2020, eq. 6-7). At t = 1 the posterior is the point x_0 (variance 0).
    With x_0 replaced by a denoiser's E[x_0 | x_t] the mean is the optimal reverse mean.

    Parameters
    ----------
    schedule : NoiseSchedule
    x0, xt : array_like or torch.Tensor, broadcastable
    t : int or array of int, in [1, T], indexing the leading axes of the data

    Returns
    -------
    (mean, var) : arrays or tensors of the broadcast shape.
    """
    schedule = _check_schedule(schedule)
    x0, xt = _arrays(x0=x0, xt=xt)
    t = _check_t(t, schedule)
    like = x0 + xt
    one_minus, t0 = schedule.one_minus_alpha_bars, np.subtract(t, 1)
    coef_x0 = np.sqrt(schedule.alpha_bars[:-1]) * schedule.betas / one_minus[1:]
    coef_xt = np.sqrt(schedule.alphas) * one_minus[:-1] / one_minus[1:]
    mean = _coef(coef_x0, t0, like) * x0 + _coef(coef_xt, t0, like) * xt
    return mean, like * 0 + _coef(schedule.posterior_variances, t0, like)


# ---------------------------------------------------------------------------------------
# the terms of the ELBO
# ---------------------------------------------------------------------------------------
def prior_kl(schedule: NoiseSchedule, x0):
    """L_T = KL(q(x_T | x_0) || N(0, 1)), elementwise, in nats; free of model parameters.

    Parameters
    ----------
    schedule : NoiseSchedule
    x0 : array_like or torch.Tensor
    """
    mean, var = forward_marginal(schedule, x0, _check_schedule(schedule).num_steps)
    return gaussian_kl(mean, var, mean * 0, var * 0 + 1)


def denoising_kl(schedule: NoiseSchedule, x0, xt, t, mean_p, var_p):
    """L_{t-1} given x_t: KL(q(x_{t-1} | x_t, x_0) || N(mean_p, var_p)), elementwise.

    Closed form through :func:`elbo_lib.gaussians.gaussian_kl`; the ELBO's term is its
    expectation over x_t ~ q(x_t | x_0) (:func:`diffusion_elbo`). Differentiable in
    ``mean_p`` and ``var_p`` when they are tensors.

    Parameters
    ----------
    schedule : NoiseSchedule
    x0, xt : array_like or torch.Tensor
    t : int or array of int, in [2, T] (t = 1 is :func:`decoder_log_likelihood`)
    mean_p, var_p : array_like or torch.Tensor
        The model's p(x_{t-1} | x_t); ``var_p`` > 0.

    Returns
    -------
    numpy.ndarray or torch.Tensor of the broadcast shape, in nats.
    """
    t = _check_t(t, _check_schedule(schedule), first=2)
    mean_q, var_q = reverse_posterior(schedule, x0, xt, t)
    return gaussian_kl(mean_q, var_q, mean_p, var_p)


def decoder_log_likelihood(x0, mean_p, var_p):
    """log p(x_0 | x_1) = log N(x_0; mean_p, var_p), elementwise; -L_0 given x_1.

    A Gaussian decoder on continuous data (chapter 9's data are continuous: a density,
    which the grid oracle integrates), not Ho et al.'s discretised decoder of 8-bit images.

    Parameters
    ----------
    x0, mean_p, var_p : array_like or torch.Tensor
        Broadcastable; ``var_p`` > 0.

    Returns
    -------
    numpy.ndarray or torch.Tensor of the broadcast shape, in nats.
    """
    x0, mean_p, var_p = _arrays(x0=x0, mean_p=mean_p, var_p=var_p)
    if bool((var_p <= 0).any()):
        raise ValueError("var_p must be > 0 everywhere")
    numpy = not isinstance(x0, torch.Tensor)
    if numpy:
        x0, mean_p, var_p = (torch.tensor(a) for a in (x0, mean_p, var_p))
    out = diagonal_gaussian_log_density(x0[..., None], mean_p[..., None],
                                        torch.log(var_p)[..., None])
    return out.numpy() if numpy else out


def mean_from_epsilon(schedule: NoiseSchedule, xt, t, eps_pred):
    """The reverse mean of an epsilon-predicting model (Ho et al. 2020, eq. 11).

    m(x_t, t) = (x_t - beta_t / sqrt(1 - abar_t) eps_pred) / sqrt(alpha_t): the posterior
    mean of :func:`reverse_posterior` with x_0 = (x_t - sqrt(1 - abar_t) eps_pred) /
    sqrt(abar_t).

    Parameters
    ----------
    schedule : NoiseSchedule
    xt, eps_pred : array_like or torch.Tensor, broadcastable
    t : int or array of int, in [1, T]

    Returns
    -------
    numpy.ndarray or torch.Tensor
    """
    schedule = _check_schedule(schedule)
    xt, eps_pred = _arrays(xt=xt, eps_pred=eps_pred)
    t = _check_t(t, schedule)
    like, t0 = xt + eps_pred, np.subtract(t, 1)
    scale = schedule.betas / np.sqrt(schedule.one_minus_alpha_bars[1:])
    return (xt - _coef(scale, t0, like) * eps_pred) / _sqrt(_coef(schedule.alphas, t0, like))


def epsilon_loss_weight(schedule: NoiseSchedule, t, var_p):
    """w_t with L_{t-1} = C_t + w_t (eps - eps_pred)^2 for the mean of :func:`mean_from_epsilon`.

    w_t = beta_t^2 / (2 var_p alpha_t (1 - abar_t)) (Ho et al. 2020, eq. 12), per
    entry; C_t = KL(N(0, tilde beta_t) || N(0, var_p)) does not depend on the model's mean
    (0 when var_p = tilde beta_t). At t = 1 the same w_1 gives -log p(x_0 | x_1) =
    log(2 pi var_p) / 2 + w_1 (eps - eps_pred)^2. Ho et al.'s "simple" loss replaces w_t by
    1: a reweighted bound, not the ELBO.

    Parameters
    ----------
    schedule : NoiseSchedule
    t : int or array of int, in [1, T]
    var_p : float or array_like
        The model's variance at t, > 0, broadcastable with t.

    Returns
    -------
    numpy.ndarray
    """
    schedule = _check_schedule(schedule)
    t0 = np.subtract(_check_t(t, schedule), 1)
    var_p = check_positive(var_p, "var_p", allow_array=True)
    check_broadcast(t=t0, var_p=var_p)
    return schedule.betas[t0] ** 2 / (2 * var_p * schedule.alphas[t0]
                                      * schedule.one_minus_alpha_bars[1:][t0])


@dataclasses.dataclass(frozen=True)
class DiffusionELBO:
    """The terms of a diffusion model's ELBO, per data point, in nats.

    ``prior_kl`` (n,) is L_T; ``denoising_kl`` (T - 1, n), row t - 2 is L_{t-1} for
    t = 2..T; ``decoder_nll`` (n,) is L_0. ``elbo`` = -(their sum), shape (n,).
    """

    prior_kl: np.ndarray | torch.Tensor
    denoising_kl: np.ndarray | torch.Tensor
    decoder_nll: np.ndarray | torch.Tensor

    @property
    def elbo(self):
        """The ELBO of every data point, shape (n,)."""
        return -(self.prior_kl + self.denoising_kl.sum(0) + self.decoder_nll)


def diffusion_elbo(schedule: NoiseSchedule, x0, mean_fn: Callable, variances, noise,
                   noise_weights=None) -> DiffusionELBO:
    """The ELBO of a Gaussian reverse chain, each expectation over x_t ~ q(x_t | x_0)
    taken with the given noise draws (Monte Carlo) or nodes (quadrature).

    For each t, x_t = :func:`forward_sample` (x_0, t, noise[s]) and the term is the
    ``noise_weights``-weighted sum over s; the same draws serve every t (each term is an
    expectation under its own marginal, so this is unbiased). With ``noise`` the
    Gauss-Hermite nodes sqrt(2) z_s and weights w_s / sqrt(pi) the expectations are
    quadratures (1-D data). Chapter 9.

    Parameters
    ----------
    schedule : NoiseSchedule
    x0 : array_like or torch.Tensor, shape (n,) or (n, d)
        Scalar data points, or vectors (terms summed over the last axis).
    mean_fn : callable
        ``mean_fn(x_t, t)`` -> the mean of p(x_{t-1} | x_t), of the shape of ``x_t``
        (S, n) or (S, n, d); t is an int in [1, T].
    variances : array_like or torch.Tensor, shape (T,)
        ``variances[t - 1]`` the variance of p(x_{t-1} | x_t), > 0.
    noise : array_like or torch.Tensor, shape (S, ...)
        One more axis than ``x0``, the rest broadcastable with ``x0``.
    noise_weights : array_like, shape (S,), optional
        >= 0, summing to 1; default 1/S each.

    Returns
    -------
    DiffusionELBO
    """
    schedule = _check_schedule(schedule)
    if not callable(mean_fn):
        raise TypeError(f"mean_fn must be callable, got {type(mean_fn).__name__}")
    x0, noise = _arrays(x0=x0, noise=noise)
    if x0.ndim not in (1, 2) or noise.ndim != x0.ndim + 1:
        raise ValueError(f"x0 must have shape (n,) or (n, d) and noise one more leading axis,"
                         f" got {tuple(x0.shape)} and {tuple(noise.shape)}")
    num_samples, num_steps = noise.shape[0], schedule.num_steps
    variances = (as_tensor(variances, "variances", dtype=x0.dtype)
                 if isinstance(x0, torch.Tensor) else as_float_array(variances, "variances"))
    if tuple(variances.shape) != (num_steps,) or bool((variances <= 0).any()):
        raise ValueError(f"variances must have shape ({num_steps},) with entries > 0, got "
                         f"shape {tuple(variances.shape)}, minimum {float(variances.min())!r}")
    weights = (np.full(num_samples, 1.0 / num_samples) if noise_weights is None else
               check_probability_rows(noise_weights, "noise_weights", (num_samples,)))
    if isinstance(x0, torch.Tensor):
        weights = torch.as_tensor(weights, dtype=x0.dtype)
    weights = weights.reshape((-1,) + (1,) * x0.ndim)

    def expect(term):  # weighted mean over the draws, summed over the data's last axis
        term = (weights * term).sum(0)
        return term.sum(-1) if x0.ndim == 2 else term

    def mean_at(t):
        xt = forward_sample(schedule, x0, t, noise)
        mean = mean_fn(xt, t)
        if tuple(getattr(mean, "shape", ())) != tuple(xt.shape):
            raise ValueError(f"mean_fn must return the shape of x_t {tuple(xt.shape)}, got "
                             f"{tuple(getattr(mean, 'shape', ()))} at t={t}")
        return xt, mean

    terms = []
    for t in range(2, num_steps + 1):
        xt, mean = mean_at(t)
        terms.append(expect(denoising_kl(schedule, x0, xt, t, mean, variances[t - 1])))
    if isinstance(x0, torch.Tensor):
        denoising = torch.stack(terms) if terms else x0.new_zeros((0, x0.shape[0]))
    else:
        denoising = np.stack(terms) if terms else np.zeros((0, x0.shape[0]))
    _, mean = mean_at(1)
    decoder = -expect(decoder_log_likelihood(x0, mean, variances[0]))
    prior = prior_kl(schedule, x0)
    return DiffusionELBO(prior.sum(-1) if x0.ndim == 2 else prior, denoising, decoder)


# ---------------------------------------------------------------------------------------
# oracle 1: Gaussian-mixture data, whose q(x_t) is a Gaussian mixture
# ---------------------------------------------------------------------------------------
class GaussianMixtureData:
    """Data from sum_k w_k N(m_k, C_k): the diffused marginals, the optimal denoiser
    E[x_0 | x_t] and the optimal reverse mean E[x_{t-1} | x_t] in closed form.

    q(x_t) = sum_k w_k N(sqrt(abar_t) m_k, S_k), S_k = abar_t C_k + (1 - abar_t) I, and
    E[x_0 | x_t, k] = m_k + sqrt(abar_t) C_k S_k^{-1} (x_t - sqrt(abar_t) m_k), weighted by
    the responsibilities of q(x_t). The best Gaussian reverse step of given variance has
    mean E[x_{t-1} | x_t] = :func:`reverse_posterior` mean at x_0 = E[x_0 | x_t]
    (Ho et al. 2020; Kingma et al. 2021). Chapter 9.

    Parameters
    ----------
    weights : array_like, shape (K,)
        >= 0, summing to 1.
    means : array_like, shape (K,) or (K, d)
        (K,): scalar data (points of any shape); (K, d): vectors (points (..., d)).
    covariances : array_like, shape (K,) or (K, d, d)
        Variances (> 0) for scalar data, symmetric positive-definite matrices otherwise.

    Attributes ``weights``, ``means`` (K, d), ``covariances`` (K, d, d) (d = 1 for scalar
    data) and ``scalar``. A ValueError names a shape that does not fit, a negative weight
    or a covariance that is not positive definite.
    """

    def __init__(self, weights, means, covariances):
        means = as_float_array(means, "means", ndim=(1, 2))
        self.scalar = means.ndim == 1
        k = means.shape[0]
        self.weights = check_probability_rows(weights, "weights", (k,))
        if self.scalar:
            covariances = check_positive(covariances, "covariances", allow_array=True)
            if covariances.shape != (k,):
                raise ValueError(f"covariances must have shape ({k},) for means of shape "
                                 f"({k},), got {covariances.shape}")
            means, covariances = means[:, None], covariances[:, None, None]
        else:
            d = means.shape[1]
            covariances, _ = check_spd(covariances, "covariances", (k, d, d))
        self.means, self.covariances = means, covariances

    @property
    def dim(self) -> int:
        """d, the dimension of a data point (1 for scalar data)."""
        return int(self.means.shape[1])

    def _points(self, x, name: str) -> tuple[np.ndarray, tuple[int, ...]]:
        x = as_float_array(x, name)
        if self.scalar:
            return x.reshape(-1, 1), x.shape
        if x.shape[-1] != self.dim:
            raise ValueError(f"{name} must have shape (..., {self.dim}), got {x.shape}")
        return x.reshape(-1, self.dim), x.shape[:-1]

    def _out(self, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return values.reshape(shape if self.scalar else shape + (self.dim,))

    def sample(self, num_samples: int, rng) -> np.ndarray:
        """``num_samples`` draws, shape (n,) for scalar data or (n, d)."""
        num_samples = check_positive_int(num_samples, "num_samples", maximum=10**9)
        rng = as_generator(rng)
        k = rng.choice(self.weights.size, size=num_samples, p=self.weights)
        z = rng.standard_normal((num_samples, self.dim))
        x = self.means[k] + np.einsum("nij,nj->ni", np.linalg.cholesky(self.covariances)[k], z)
        return x[:, 0] if self.scalar else x

    def diffused(self, schedule: NoiseSchedule, t) -> GaussianMixtureData:
        """The mixture q(x_t) (t in [0, T]; t = 0 is the data's own)."""
        t = _check_t(t, _check_schedule(schedule), first=0)
        if not isinstance(t, int):
            raise TypeError("t must be one integer here")
        abar = schedule.alpha_bars[t]
        means = np.sqrt(abar) * self.means
        cov = abar * self.covariances + (1 - abar) * np.eye(self.dim)
        if self.scalar:
            return GaussianMixtureData(self.weights, means[:, 0], cov[:, 0, 0])
        return GaussianMixtureData(self.weights, means, cov)

    def log_density(self, x) -> np.ndarray:
        """log of the mixture density at every point of ``x``."""
        pts, shape = self._points(x, "x")
        return gmm_log_likelihood(pts, self.weights, self.means, self.covariances,
                                  per_sample=True).reshape(shape)

    def denoiser(self, schedule: NoiseSchedule, xt, t) -> np.ndarray:
        """E[x_0 | x_t] under q, t an int in [1, T], of the shape of ``xt``."""
        t = _check_t(t, _check_schedule(schedule))
        if not isinstance(t, int):
            raise TypeError("t must be one integer here")
        pts, shape = self._points(xt, "xt")
        diffused = self.diffused(schedule, t)
        resp = gmm_responsibilities(pts, self.weights, diffused.means, diffused.covariances)
        root = np.sqrt(schedule.alpha_bars[t])
        gain = root * np.linalg.solve(diffused.covariances, self.covariances)  # S^-1 C
        resid = pts[:, None, :] - diffused.means[None]                          # (N, K, d)
        # row vectors: (sqrt(abar) C S^-1 r)^T = r^T (sqrt(abar) S^-1 C), C and S symmetric
        cond = self.means[None] + np.einsum("nki,kij->nkj", resid, gain)
        return self._out(np.einsum("nk,nkd->nd", resp, cond), shape)

    def reverse_mean(self, schedule: NoiseSchedule, xt, t) -> np.ndarray:
        """E[x_{t-1} | x_t] under q: the mean of the best Gaussian reverse step."""
        return reverse_posterior(schedule, self.denoiser(schedule, xt, t), xt, t)[0]

    def average_elbo(self, schedule: NoiseSchedule, mean_fn: Callable, variances, grid
                     ) -> tuple[float, np.ndarray]:
        """The ELBO of a Gaussian reverse chain averaged over the data, and its shortfall
        from the best mean, by the regression decomposition on a product grid.

        In L_{t-1} the mean enters through E_q ||mu~_t(x_t, x_0) - m(x_t)||^2 / (2 v_t), and
        since mu~_t is linear in x_0 with coefficient a_t = sqrt(abar_{t-1}) beta_t /
        (1 - abar_t) (a_1 = 1, where mu~_1 = x_0),

            E_q ||mu~_t - m||^2 = E_{q(x_t)} ||m*(x_t, t) - m(x_t)||^2
                                  + a_t^2 (E ||x_0||^2 - E_{q(x_t)} ||E[x_0 | x_t]||^2),

        with m* = :meth:`reverse_mean` (law of total variance). So the data-averaged ELBO
        is the best chain's minus sum_t E_{q(x_t)} ||m* - m||^2 / (2 v_t), the shortfall:
        every expectation is over q(x_t), a Gaussian mixture (:meth:`diffused`), taken
        here by the trapezoid rule on the grid (``grid`` x ``grid`` for 2-D data), and
        L_T = (abar_T (E ||x_0||^2 - d) - d log(1 - abar_T)) / 2 is closed. An independent
        route to the number :func:`diffusion_elbo` computes point by point (chapter 9
        checks the two against each other). Chapter 9.

        Parameters
        ----------
        schedule : NoiseSchedule
        mean_fn : callable
            ``mean_fn(x, t)`` for points x of shape (m,) (scalar data) or (m, d), returning
            an array of that shape.
        variances : array_like, shape (T,)
            > 0, the variances of p(x_{t-1} | x_t).
        grid : array_like, shape (G,)
            Evenly spaced axis of the product grid; it must hold every q(x_t) within 1e-6
            and resolve it (spacing at most the smallest sqrt(variances)).

        Returns
        -------
        (elbo, shortfall) : float and numpy.ndarray of shape (T,)
            ``shortfall[t - 1]`` = E_{q(x_t)} ||m* - m||^2 / (2 v_t) >= 0; the best chain's
            average ELBO is ``elbo + shortfall.sum()``.
        """
        schedule = _check_schedule(schedule)
        if not callable(mean_fn):
            raise TypeError(f"mean_fn must be callable, got {type(mean_fn).__name__}")
        variances = check_positive(variances, "variances", allow_array=True)
        if variances.shape != (schedule.num_steps,):
            raise ValueError(f"variances must have shape ({schedule.num_steps},), got "
                             f"{variances.shape}")
        if self.dim > 2:
            raise ValueError(f"average_elbo takes data of dimension 1 or 2, got {self.dim}")
        grid, h = _grid_axis(grid, variances)
        d = self.dim
        points = (grid if self.scalar else np.stack(np.meshgrid(grid, grid, indexing="ij"),
                                                    -1).reshape(-1, 2))
        second = float(self.weights @ (np.sum(self.means**2, -1)
                                       + np.trace(self.covariances, axis1=1, axis2=2)))
        abar, one_minus = schedule.alpha_bars, schedule.one_minus_alpha_bars
        coef = np.sqrt(abar[:-1]) * schedule.betas / one_minus[1:]
        ratio = schedule.posterior_variances / variances
        const = np.where(np.arange(schedule.num_steps) == 0,
                         0.5 * d * np.log(2 * np.pi * variances),
                         0.5 * d * (ratio - 1 - np.log(np.where(ratio > 0, ratio, 1.0))))
        shortfall, resolved = np.empty(schedule.num_steps), np.empty(schedule.num_steps)
        for t in range(1, schedule.num_steps + 1):
            weight = np.exp(self.diffused(schedule, t).log_density(points)) * h**d
            if abs(weight.sum() - 1) > 1e-6:
                raise ValueError(f"grid holds mass {weight.sum():.8g} of q(x_{t}) (not 1 "
                                 f"within 1e-6): widen the grid")
            den = np.asarray(self.denoiser(schedule, points, t))
            best = reverse_posterior(schedule, den, points, t)[0]
            mean = _grid_means(mean_fn, points, t)
            sq, den = (mean - best) ** 2, den**2
            shortfall[t - 1] = weight @ (sq if self.scalar else sq.sum(-1)) / (
                2 * variances[t - 1])
            resolved[t - 1] = weight @ (den if self.scalar else den.sum(-1))
        prior = 0.5 * (abar[-1] * (second - d) - d * np.log(one_minus[-1]))
        spread = coef**2 * (second - resolved) / (2 * variances)
        return float(-(prior + const.sum() + spread.sum() + shortfall.sum())), shortfall


# ---------------------------------------------------------------------------------------
# oracle 2: the exact log p(x_0) of a 1-D reverse chain, by quadrature on a grid
# ---------------------------------------------------------------------------------------
def _grid_means(mean_fn: Callable, points: np.ndarray, t: int) -> np.ndarray:
    mean = np.asarray(mean_fn(points, t), dtype=float)
    if mean.shape != points.shape or not np.all(np.isfinite(mean)):
        raise ValueError(f"mean_fn must return finite values of shape {points.shape}, got "
                         f"shape {mean.shape} at t={t}")
    return mean


def reverse_chain_log_likelihood(x0, mean_fn: Callable, variances, grid) -> np.ndarray:
    """log p(x_0) of the chain p(x_T) = N(0, 1), p(x_{t-1} | x_t) = N(mean_fn(x_t, t),
    variances[t - 1]), for scalar data, by propagating the density on a grid.

    p_{t-1}(y) = int p_t(x) N(y; m(x, t), v_t) dx is a trapezoid sum over the grid (an
    (G, G) matrix of log N per step, :func:`elbo_lib.gaussians.gaussian_log_density`,
    reduced by log-sum-exp); the last step is evaluated at the data. The trapezoid rule is
    exponentially accurate for these smooth integrands once both the grid's spacing and the
    spacing of its images under the mean function are below the step standard deviation
    (both checked at every step: where the mean is steep, the integrand over x_t is
    narrower than sqrt(v_t) and a grid fine enough in y is not fine enough in x) and the grid holds
    the chain's mass (checked at every step: mass within 1e-6 of 1) and the posterior of
    x_1 given each x_0 (checked: the grid's end points carry a share below 1e-9 of the
    last integral). Cost O(T G^2). Chapter 9.

    Parameters
    ----------
    x0 : array_like, shape (n,)
    mean_fn : callable
        ``mean_fn(x, t)`` for a 1-D array x, returning an array of its shape.
    variances : array_like, shape (T,)
        > 0; ``variances[0]`` is the decoder's.
    grid : array_like, shape (G,)
        Strictly increasing, G >= 3, spacing at most the smallest sqrt(variances), and
        fine enough that ``mean_fn(grid, t)`` moves by at most ``sqrt(variances[t - 1])``
        between neighbouring points at every t.

    Returns
    -------
    numpy.ndarray, shape (n,)

    A ValueError says which input is wrong: not finite, a grid too coarse or too narrow,
    ``mean_fn`` returning another shape.
    """
    x0 = as_float_array(x0, "x0", ndim=1)
    if not callable(mean_fn):
        raise TypeError(f"mean_fn must be callable, got {type(mean_fn).__name__}")
    variances = check_positive(variances, "variances", allow_array=True)
    if variances.ndim != 1:
        raise ValueError(f"variances must have 1 dimension, got shape {variances.shape}")
    grid = as_float_array(grid, "grid", ndim=1)
    step = np.diff(grid)
    if grid.size < 3 or np.any(step <= 0):
        raise ValueError("grid must be strictly increasing with at least 3 points")
    if step.max() > np.sqrt(variances.min()):
        raise ValueError(f"grid spacing {step.max():.3g} must be at most the smallest step "
                         f"standard deviation sqrt(min(variances)) = "
                         f"{np.sqrt(variances.min()):.3g}")
    log_w = np.log(np.concatenate([[0.0], step]) / 2 + np.concatenate([step, [0.0]]) / 2)
    log_p = -0.5 * (grid**2 + np.log(2 * np.pi))                   # p(x_T) = N(0, 1)
    for t in range(variances.size, 0, -1):
        mean = _grid_means(mean_fn, grid, t)
        jump = np.abs(np.diff(mean))
        if jump.max() > np.sqrt(variances[t - 1]):
            i = int(np.argmax(jump))
            raise ValueError(
                f"grid too coarse where mean_fn is steep: mean_fn(grid, {t}) moves by "
                f"{jump[i]:.3g} between grid points {grid[i]:.4g} and {grid[i + 1]:.4g}, "
                f"more than the step standard deviation sqrt(variances[{t - 1}]) = "
                f"{np.sqrt(variances[t - 1]):.3g}: refine the grid")
        mass = np.exp(logsumexp(log_w + log_p))
        if abs(mass - 1) > 1e-6:
            raise ValueError(f"grid holds mass {mass:.8g} of x_{t} (not 1 within 1e-6): "
                             f"widen the grid")
        prec_chol = np.full((grid.size, 1, 1), 1 / np.sqrt(variances[t - 1]))
        at = x0 if t == 1 else grid
        log_kernel = gaussian_log_density(at[:, None], mean[:, None], prec_chol)
        terms = log_kernel + (log_w + log_p)
        log_p = logsumexp(terms, axis=1)
    edge = np.maximum(terms[:, 0], terms[:, -1]) - log_p
    if np.any(edge > np.log(1e-9)):
        i = int(np.argmax(edge))
        raise ValueError(f"x0[{i}] = {float(x0[i])!r}: its integrand over x_1 reaches the "
                         f"grid's edge (share {np.exp(edge[i]):.3g} > 1e-9): widen the grid")
    return log_p


# ---------------------------------------------------------------------------------------
# oracle 2 in two dimensions: the product grid, one separable matrix product per step
# ---------------------------------------------------------------------------------------
def _grid_axis(grid, variances: np.ndarray) -> tuple[np.ndarray, float]:
    grid = as_float_array(grid, "grid", ndim=1)
    step = np.diff(grid)
    if grid.size < 3 or np.any(step <= 0) or np.ptp(step) > 1e-9 * step.mean():
        raise ValueError("grid must be evenly spaced and increasing with at least 3 points")
    if step[0] > np.sqrt(variances.min()):
        raise ValueError(f"grid spacing {step[0]:.3g} must be at most the smallest step "
                         f"standard deviation sqrt(min(variances)) = "
                         f"{np.sqrt(variances.min()):.3g}")
    return grid, float(step[0])


def reverse_chain_log_density_2d(mean_fn: Callable, variances, grid) -> np.ndarray:
    """log p(x_0) on the product grid ``grid`` x ``grid`` of a 2-D chain p(x_T) = N(0, I),
    p(x_{t-1} | x_t) = N(mean_fn(x_t, t), variances[t - 1] I), by propagating the density.

    The step kernel factorises over the coordinates, N(y; m(x), v I) = N(y_1; m_1(x), v)
    N(y_2; m_2(x), v), so p_{t-1}(y_1, y_2) = sum_x h^2 p_t(x) K_1[y_1, x] K_2[y_2, x] is
    one matrix product of (G, G^2) by (G^2, G): 2 G^3 exponentials and G^4 multiply-adds
    per step, where the direct sum needs G^4 exponentials (torch, float64, rescaled by the
    largest term against underflow). A data average E_q[log p(x_0)] is then the trapezoid
    sum of q(x_0) log p(x_0) over the grid. Checked: the grid evenly spaced, its spacing at
    most the smallest step standard deviation, and the mass of every p_t, p_0 included,
    within 1e-6 of 1 (else a wider grid is needed). Unlike the 1-D
    :func:`reverse_chain_log_likelihood` it does not hold the mean's images to one step
    standard deviation between neighbouring points: in 2-D that would take a grid several
    times finer than chapter 9's budget (the optimal mean of a mixture is steep in the
    valleys between its modes), so the caller checks the answer against a finer grid
    (chapter 9 checks the optimal chain and one trained run at each of its T = 8 and 16
    against a grid of spacing 0.075, and a chain with linear means against its
    closed-form Gaussian marginal; the other trained runs are not refined); a mean steep
    where the chain has mass can be off on a coarse grid. Chapter 9.

    Parameters
    ----------
    mean_fn : callable
        ``mean_fn(x, t)`` for points x of shape (G^2, 2) (row i * G + j is
        (grid[i], grid[j])), returning an array of that shape.
    variances : array_like, shape (T,)
        > 0; ``variances[0]`` is the decoder's.
    grid : array_like, shape (G,)
        The axis of the product grid, evenly spaced, G >= 3.

    Returns
    -------
    numpy.ndarray, shape (G, G)
        log p(x_0) at (grid[i], grid[j]); -inf where the density underflows.

    A ValueError says which input is wrong: a shape, a grid too coarse or too narrow,
    ``mean_fn`` returning another shape or non-finite values.
    """
    if not callable(mean_fn):
        raise TypeError(f"mean_fn must be callable, got {type(mean_fn).__name__}")
    variances = check_positive(variances, "variances", allow_array=True)
    if variances.ndim != 1:
        raise ValueError(f"variances must have 1 dimension, got shape {variances.shape}")
    grid, h = _grid_axis(grid, variances)
    points = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    axis = torch.as_tensor(grid, dtype=torch.float64)[:, None]
    log_cell = torch.as_tensor(-0.5 * (points**2).sum(-1) - np.log(2 * np.pi)
                               + 2 * np.log(h))
    for t in range(variances.size, -1, -1):
        mass = float(torch.logsumexp(log_cell, 0).exp())
        if abs(mass - 1) > 1e-6:
            raise ValueError(f"grid holds mass {mass:.8g} of x_{t} (not 1 within 1e-6): "
                             f"widen the grid")
        if t == 0:
            return (log_cell - 2 * np.log(h)).reshape(grid.size, grid.size).numpy()
        mean = torch.as_tensor(_grid_means(mean_fn, points, t))
        sd = float(np.sqrt(variances[t - 1]))
        top = log_cell.max()
        kernel = [torch.exp(-0.5 * ((axis - mean[None, :, i]) / sd) ** 2)
                  / (np.sqrt(2 * np.pi) * sd) for i in (0, 1)]
        log_cell = (torch.log((kernel[0] * torch.exp(log_cell - top)) @ kernel[1].T)
                    .ravel() + top + 2 * np.log(h))
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------------------
# training: independent noise predictors, batched in one tensor program
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NoisePredictors:
    """R trained noise predictors eps_theta(x_t, t) and the ELBO estimates of their
    training (:func:`train_noise_predictors`).

    eps_theta = (x_t - sqrt(abar_t) D_theta(x_t, t)) / sqrt(1 - abar_t) with the denoiser
    D_theta = c_skip x_t + c_out F(c_in x_t, t): F a two-hidden-layer SiLU MLP (t one-hot),
    c_skip x_t the best linear denoiser of data of variance s^2 per coordinate,
    c_skip = sqrt(abar_t) s^2 / S_t, c_out = s sqrt((1 - abar_t) / S_t), c_in = S_t^(-1/2),
    S_t = abar_t s^2 + 1 - abar_t (Karras et al. 2022's preconditioning in the variance-
    preserving chain): every output of F has target of unit scale, so no step's weight
    in the ELBO needs F to be precise to the thousandth. ``params`` are six stacked float32
    tensors (R runs first; weights in (in, out) layout), ``scales`` the (T, 3) array of
    (c_skip, c_out, c_in), ``elbo_trace`` (num_iters, R) the minibatch ELBO estimates,
    nats per point.
    """

    schedule: NoiseSchedule
    params: tuple[torch.Tensor, ...]
    scales: np.ndarray
    elbo_trace: np.ndarray

    @property
    def num_runs(self) -> int:
        """R, the number of runs."""
        return int(self.params[0].shape[0])

    def mean_fn(self, run: int) -> Callable:
        """m_theta(x, t) of run ``run`` as a NumPy function of points (m, d) and t in [1, T]
        (float64 arithmetic), for :func:`diffusion_elbo` and the oracles."""
        run = check_int(run, "run", 0, self.num_runs - 1)
        params = [p[run:run + 1].detach().double() for p in self.params]

        def mean(x, t):
            xt = torch.as_tensor(np.asarray(x, dtype=float))
            shape = xt.shape
            xt = xt.reshape(1, -1, shape[-1])
            index = torch.full((xt.shape[1],), check_int(t, "t", 1, self.schedule.num_steps)
                               - 1)
            scales = torch.as_tensor(self.scales, dtype=torch.float64)
            eps = _epsilon_mlp(params, scales, self.schedule.alpha_bars[t], xt, index)
            return mean_from_epsilon(self.schedule, np.asarray(x, dtype=float), t,
                                     eps.reshape(shape).numpy())
        return mean


def _epsilon_mlp(params, scales, abar, xt, t_index):
    """eps_theta for R runs at once: xt (R, N, d), t_index (N,) in [0, T), ``scales`` (T, 3)
    of :class:`NoisePredictors`, ``abar`` abar_t per entry of t_index (or one float)
    -> (R, N, d)."""
    w1, b1, w2, b2, w3, b3 = params
    skip, out, inp = (scales[t_index, i][:, None] for i in range(3))
    onehot = torch.nn.functional.one_hot(t_index, w1.shape[1] - xt.shape[-1]).to(xt.dtype)
    feats = torch.cat([inp * xt, onehot.expand(xt.shape[0], -1, -1)], -1)
    h = torch.nn.functional.silu(torch.baddbmm(b1[:, None], feats, w1))
    h = torch.nn.functional.silu(torch.baddbmm(b2[:, None], h, w2))
    denoised = skip * xt + out * torch.baddbmm(b3[:, None], h, w3)
    abar = torch.as_tensor(abar, dtype=xt.dtype).reshape(-1, 1)
    return (xt - abar.sqrt() * denoised) / (1 - abar).sqrt()


def train_noise_predictors(data: GaussianMixtureData, schedule: NoiseSchedule,
                           seeds, *, hidden: int = 64, num_iters: int = 1500,
                           batch: int = 16, lr: float = 1e-2) -> NoisePredictors:
    """Train one noise predictor per seed on the ELBO, all runs in one batched program.

    The model is :class:`NoisePredictors`' (a preconditioned MLP denoiser, hidden width
    ``hidden``); variances v_t = beta_t. Each step draws ``batch`` fresh points of ``data`` per run,
    noises each to every level t = 1..T and takes an Adam step (learning rate ``lr``,
    cosine decay to 0 over ``num_iters``) on sum_t w_t ||eps - eps_theta||^2 averaged over
    the points (:func:`epsilon_loss_weight`, eq. 12 of Ho et al. 2020), which plus the
    constants (L_T, the d C_t, d log(2 pi v_1) / 2) is minus an unbiased estimate of the
    ELBO: recorded per step. Run r's initial weights come from torch's global generator
    seeded with ``seeds[r]`` (torch.nn.Linear's initialisation) and its data and noise
    from its own torch.Generator seeded with ``seeds[r]``: a chapter passes
    ``[training_seed(s) for s in ...]``. float32. Chapter 9.

    Parameters
    ----------
    data : GaussianMixtureData
        Vector data (means of shape (K, d)).
    schedule : NoiseSchedule
    seeds : sequence of int
        One per run, >= 0; R = len(seeds) >= 1.
    hidden, num_iters, batch : int
        Width of the two hidden layers, Adam steps, points per step and run; >= 1.
    lr : float
        > 0.

    Returns
    -------
    NoisePredictors
    """
    if not isinstance(data, GaussianMixtureData) or data.scalar:
        raise TypeError("data must be a GaussianMixtureData of vector data (means (K, d))")
    schedule = _check_schedule(schedule)
    seeds = [check_int(s, "seeds", 0) for s in np.atleast_1d(np.asarray(seeds, dtype=object))]
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    hidden = check_positive_int(hidden, "hidden", maximum=10**5)
    num_iters = check_positive_int(num_iters, "num_iters", maximum=10**8)
    batch = check_positive_int(batch, "batch", maximum=10**7)
    lr = check_positive(lr, "lr")
    d, num_steps, num_runs = data.dim, schedule.num_steps, len(seeds)
    runs = []
    for seed in seeds:
        seed_everything(seed)
        layers = [torch.nn.Linear(d + num_steps, hidden), torch.nn.Linear(hidden, hidden),
                  torch.nn.Linear(hidden, d)]
        runs.append([p for layer in layers for p in (layer.weight.T, layer.bias)])
    params = [torch.stack([run[i] for run in runs]).detach().requires_grad_(True)
              for i in range(6)]
    gens = [torch.Generator().manual_seed(seed) for seed in seeds]
    f32 = torch.float32
    w_t = torch.tensor(epsilon_loss_weight(schedule, np.arange(1, num_steps + 1),
                                           schedule.betas), dtype=f32)
    abar = torch.tensor(schedule.alpha_bars[1:], dtype=f32)[:, None]
    mix_w = torch.tensor(data.weights, dtype=f32)
    mix_m = torch.tensor(data.means, dtype=f32)
    mix_l = torch.tensor(np.linalg.cholesky(data.covariances), dtype=f32)
    var = float(np.trace(data.covariances, axis1=1, axis2=2) @ data.weights
                + data.weights @ np.sum(data.means**2, -1)
                - np.sum((data.weights @ data.means) ** 2)) / d
    big_s = schedule.alpha_bars[1:] * var + schedule.one_minus_alpha_bars[1:]
    scales = np.stack([np.sqrt(schedule.alpha_bars[1:]) * var / big_s,
                       np.sqrt(var * schedule.one_minus_alpha_bars[1:] / big_s),
                       1 / np.sqrt(big_s)], -1)
    scales_32 = torch.tensor(scales, dtype=f32)
    constant = float(d * gaussian_kl(0.0, schedule.posterior_variances[1:], 0.0,
                                     schedule.betas[1:]).sum()
                     + 0.5 * d * np.log(2 * np.pi * schedule.betas[0]))
    optimizer = torch.optim.Adam(params, lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, num_iters)
    t_index = torch.arange(num_steps).repeat(batch)             # every level, every point
    abar_index = torch.tensor(schedule.alpha_bars[1:], dtype=f32)[t_index]
    trace = np.empty((num_iters, num_runs))
    for it in range(num_iters):
        draws = [(torch.multinomial(mix_w, batch, replacement=True, generator=g),
                  torch.randn(batch, d, generator=g),
                  torch.randn(batch, num_steps, d, generator=g)) for g in gens]
        comp, z, eps = (torch.stack(parts) for parts in zip(*draws, strict=True))
        x0 = mix_m[comp] + (mix_l[comp] @ z[..., None])[..., 0]             # (R, B, d)
        xt = abar.sqrt() * x0[:, :, None] + (1 - abar).sqrt() * eps         # (R, B, T, d)
        pred = _epsilon_mlp(params, scales_32, abar_index, xt.reshape(num_runs, -1, d),
                            t_index).reshape(xt.shape)
        loss = (w_t * ((eps - pred) ** 2).sum(-1)).sum(-1).mean(-1)        # (R,)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
        decay.step()
        prior = prior_kl(schedule, x0.detach().double()).sum(-1).mean(-1)
        trace[it] = -(loss.detach().double().numpy() + constant + prior.numpy())
    return NoisePredictors(schedule, tuple(p.detach() for p in params), scales, trace)
