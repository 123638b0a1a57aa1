"""The ELBO gradient of a Gaussian q, written out (chapter 5).

Pathwise and path-derivative samples (:func:`gaussian_elbo_gradient_samples`), the
exact gradient for a Gaussian target (:func:`gaussian_target_elbo_gradient`), and the
score-function estimates with and without control variates
(:func:`gaussian_score_gradient_estimates`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from elbo_lib._validation import (
    as_float_array,
    check_positive_int,
    check_spd,
)
from elbo_lib.gradients.base import DTYPE, _check_estimator, _evaluate
from elbo_lib.gradients.baselines import _loo_controlled


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
