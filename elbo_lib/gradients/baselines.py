"""Baselines (control variates) of the score-function estimator (chapters 5, 8).

A constant or the leave-one-out mean of the other samples (:func:`check_baseline`,
:func:`apply_baseline`), and the leave-one-out control-variate coefficient of
:func:`leave_one_out_control_variate`.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import torch

from elbo_lib._validation import (
    _scalar_of,
    check_positive_int,
)


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
