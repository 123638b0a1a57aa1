"""The measure-valued gradient of a Gaussian's mean (chapter 5).

:func:`measure_valued_gradient_samples`: the density's derivative split into two
Rayleigh-shifted densities (Mohamed et al. 2020).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from elbo_lib._validation import (
    as_float_array,
    as_generator,
    check_positive,
    check_positive_int,
)


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
