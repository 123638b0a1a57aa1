"""The estimators' vocabulary and the package's shared input checks (chapters 5, 6, 8).

:data:`ESTIMATORS` (the book's one vocabulary of gradient estimators), the dtype
:data:`DTYPE`, and the private helpers the estimators share: checks of ``params`` and of
the estimator's name, building q from per-sample copies of its parameters, and
evaluating f on the samples.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.distributions import Distribution

#: The book's one vocabulary of gradient estimators (chapters 5 and 8): the objectives of
#: :mod:`elbo_lib.objectives` name theirs by these words, and the measurements here take
#: the words that apply to them ("doubly-reparameterised": DReG's IWAE gradient;
#: "self-normalised-score": the inclusive KL's reweighted score, measured in chapter 8).
ESTIMATORS = ("pathwise", "path-derivative", "score", "score-cv", "doubly-reparameterised",
              "self-normalised-score")
DTYPE = torch.float64



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
