"""The signal-to-noise ratio of a stochastic objective's gradient (chapter 6).

:func:`gradient_snr` and its result :class:`GradientSNR` (Rainforth et al. 2018).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from elbo_lib._validation import (
    check_positive_int,
)


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
