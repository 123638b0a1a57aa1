"""Heteroscedastic regression through reparameterised samples (chapter 5).

A small network maps x to the mean and standard deviation of a conditional Gaussian
p(y | x) = N(mean(x), std(x)^2) and is trained by minimising the Monte Carlo continuous
ranked probability score (CRPS) of reparameterised samples y = mean(x) + std(x) eps: the
pathwise gradient applied to a network, as the VAE encoder of chapter 6 will be. The
CRPS is a strictly proper scoring rule (Gneiting and Raftery 2007), so its minimiser is
the true conditional distribution; :func:`crps_gaussian` is its closed form for a
Gaussian, the independent check of the sample estimate :func:`monte_carlo_crps`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.distributions import Normal
from torch.nn.functional import softplus

from elbo_lib._validation import (
    as_float_array,
    as_numeric_array,
    check_finite_tensor,
    check_positive,
    check_positive_int,
)

__all__ = ["HeteroscedasticNet", "crps_gaussian", "fit_heteroscedastic", "monte_carlo_crps"]

DTYPE = torch.float64


def _as_float64(value, name: str) -> torch.Tensor:
    """``value`` (a tensor or array-like) as a float64 tensor, or a TypeError naming it.

    A tensor keeps its graph; complex values, strings and ints beyond float range are
    rejected (:func:`elbo_lib._validation.as_numeric_array`)."""
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must be real, got a complex tensor ({value.dtype})")
        return value.to(DTYPE)
    return torch.as_tensor(as_numeric_array(value, name,
                                            expected="numeric (a tensor or array-like)"))


class HeteroscedasticNet(nn.Module):
    """A small MLP mapping x to (mean(x), std(x)) of a conditional Gaussian p(y | x).

    std(x) = softplus(.) + 1e-4 keeps the scale positive. Samples are drawn by the
    reparameterisation y = mean(x) + std(x) * eps, eps ~ N(0, 1). Chapter 5.

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
        """Return mean(x) and std(x), each of shape (n,), for x of shape (n,).

        ``x``: finite, float32 or float64 (computed in float64), a scalar or 1-D.
        """
        x = _as_float64(x, "x")
        if x.ndim > 1:
            raise ValueError(f"x must have 0 or 1 dimension(s), got shape {tuple(x.shape)}")
        check_finite_tensor(x, "x")
        out = self.body(x.reshape(-1, 1))
        return out[:, 0], softplus(out[:, 1]) + 1e-4

    def sample(self, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        """Reparameterised samples y = mean(x) + std(x) eps, shape (num_samples, n)."""
        num_samples = check_positive_int(num_samples, "num_samples")
        mean, std = self(x)
        eps = torch.randn(num_samples, mean.shape[0], dtype=DTYPE)
        return mean + std * eps


def crps_gaussian(mean, std, y) -> torch.Tensor:
    """Closed-form continuous ranked probability score of N(mean, std^2) at y.

    ``CRPS = std [w (2 Phi(w) - 1) + 2 phi(w) - 1/sqrt(pi)]`` with w = (y - mean)/std
    (Gneiting and Raftery 2007): the independent check of :func:`monte_carlo_crps`.
    Elementwise, broadcasting; lower is better. Chapter 5.

    Parameters
    ----------
    mean, std, y : array_like or torch.Tensor
        Finite; std > 0. Broadcast together.

    Returns
    -------
    torch.Tensor
        The CRPS, float64, of the broadcast shape.

    Raises
    ------
    ValueError
        If an input is not finite or a standard deviation is not positive.
    """
    mean, std, y = (_as_float64(a, name) for a, name in ((mean, "mean"), (std, "std"),
                                                          (y, "y")))
    try:
        torch.broadcast_shapes(mean.shape, std.shape, y.shape)
    except RuntimeError as exc:
        raise ValueError(f"mean, std and y must broadcast together, got shapes "
                         f"{tuple(mean.shape)}, {tuple(std.shape)} and "
                         f"{tuple(y.shape)}") from exc
    for name, value in (("mean", mean), ("std", std), ("y", y)):
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite everywhere")
    if bool((std <= 0).any()):
        raise ValueError("std must be > 0 everywhere")
    w = (y - mean) / std
    unit = Normal(torch.zeros((), dtype=DTYPE), torch.ones((), dtype=DTYPE))
    return std * (w * (2 * unit.cdf(w) - 1) + 2 * unit.log_prob(w).exp()
                  - 1 / math.sqrt(math.pi))


def monte_carlo_crps(samples: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sample estimate of the CRPS, E|Y - y| - E|Y - Y'| / 2, for each column of y.

    Unbiased, using independent pairs (Y_s, Y_{s + S/2}) for the second term; with
    reparameterised samples its gradient is a pathwise gradient. Chapter 5.

    Parameters
    ----------
    samples : tensor, shape (S, n), S even and >= 2
    y : tensor, shape (n,)

    Returns
    -------
    torch.Tensor, shape (n,)
        The estimated CRPS of each column (lower is better).

    Raises
    ------
    ValueError
        If the shapes are wrong, S is odd or below 2, or an input is not finite.
    """
    if not isinstance(samples, torch.Tensor):
        raise TypeError(f"samples must be a torch.Tensor of shape (S, n), "
                        f"got {type(samples).__name__}")
    if samples.is_complex():
        raise TypeError(f"samples must be real, got a complex tensor ({samples.dtype})")
    if samples.ndim != 2:
        raise ValueError(f"samples must be a 2-D tensor (S, n), got shape "
                         f"{tuple(samples.shape)}")
    s = samples.shape[0]
    if s < 2 or s % 2:
        raise ValueError(f"samples must hold an even number of samples >= 2 (pairs), "
                         f"got {s}")
    y = _as_float64(y, "y").to(samples.dtype)
    if y.shape != samples.shape[1:]:
        raise ValueError(f"y must have shape {tuple(samples.shape[1:])}, got {tuple(y.shape)}")
    if not bool(torch.isfinite(samples).all()):
        raise ValueError("samples must be finite (no NaN or inf)")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y must be finite (no NaN or inf)")
    half = s // 2
    spread = (samples[:half] - samples[half:]).abs().mean(dim=0)
    return (samples - y).abs().mean(dim=0) - 0.5 * spread


def fit_heteroscedastic(x, y, *, hidden: int = 32, num_samples: int = 16,
                        num_steps: int = 1500, lr: float = 0.01) -> tuple[HeteroscedasticNet,
                                                                          np.ndarray]:
    """Fit mean(x), std(x) by minimising the Monte Carlo CRPS of reparameterised samples.

    Every gradient flows through y_s = mean(x) + std(x) eps_s: the pathwise estimator
    applied to a network, as the VAE encoder of chapter 6 will be. The CRPS is a strictly
    proper scoring rule, so its minimiser is the true conditional distribution.
    Full-batch Adam; torch's global generator (seeded by
    :func:`elbo_lib.seed_everything`) initialises the network and draws the noise.
    Chapter 5.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Inputs and targets (finite).
    hidden : int
        Width of the network's hidden layers.
    num_samples : int
        Even number S >= 2 of samples per point and step.
    num_steps : int
        Adam steps.
    lr : float
        Adam learning rate.

    Returns
    -------
    (net, losses) : (HeteroscedasticNet, ndarray of shape (num_steps,))

    Raises
    ------
    ValueError
        For bad inputs, or when the loss becomes non-finite (the message names the step).
    """
    x = torch.as_tensor(as_float_array(x, "x", ndim=1))
    y = torch.as_tensor(as_float_array(y, "y", ndim=1))
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)}, "
                         f"{tuple(y.shape)}")
    num_steps = check_positive_int(num_steps, "num_steps")
    if check_positive_int(num_samples, "num_samples", minimum=2) % 2:
        raise ValueError(f"num_samples must be even (pairs of samples), got {num_samples}")
    lr = check_positive(lr, "lr")
    net = HeteroscedasticNet(hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = np.empty(num_steps)
    for step in range(num_steps):
        opt.zero_grad()
        try:
            loss = monte_carlo_crps(net.sample(x, num_samples), y).mean()
            if not bool(torch.isfinite(loss)):
                raise ValueError("the loss is not finite")
        except ValueError as err:
            raise ValueError(f"fit_heteroscedastic stopped at step {step + 1} of "
                             f"{num_steps}: {err} (a smaller lr than {lr} may help)"
                             ) from err
        loss.backward()
        opt.step()
        losses[step] = float(loss.detach())
    return net, losses
