"""One coordinate-ascent loop for EM and CAVI (chapters 2 and 4).

EM and mean-field CAVI are the same algorithm: maximise the ELBO L(q, theta) one block
of its arguments at a time (Neal and Hinton 1998; Bishop 2006, sections 9.4 and 10.1.1).
EM alternates two blocks, q (the E-step) and theta (the M-step); CAVI cycles over the
factors q_j; incremental EM visits one block of data points after another. Each
algorithm here is a list of *steps* -- callables that update their block of a shared
state and return the bound after the update -- and a *stopping rule*, handed to
:func:`coordinate_ascent`, which runs the sweeps and records the bound after every step
in an :class:`AscentTrace` (the curves of chapters 2 and 4). The loop is written once,
in the way scikit-learn's ``BaseMixture.fit`` is written once for every mixture, with
the model supplying its ``_e_step`` and ``_m_step``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from elbo_lib._validation import check_positive_int

__all__ = ["AscentTrace", "coordinate_ascent"]


@dataclass(frozen=True)
class AscentTrace:
    """The record of one coordinate-ascent run: the bound after every step.

    Attributes
    ----------
    step_names : tuple of str
        The steps of one sweep, in order (``("E", "M")`` for EM, ``("mu", "tau")`` for
        a two-factor CAVI, one name per block of data for incremental EM).
    initial_bound : float
        The bound before the first sweep (NaN where it is not defined, e.g. EM before
        its first E-step, when there is no q yet).
    bounds : numpy.ndarray, shape (n_iter, len(step_names))
        ``bounds[t, j]`` is the bound right after step j of sweep t + 1; NaN where a step
        does not evaluate it (a CAVI that measures the bound once per sweep).
    n_iter : int
        Sweeps run.
    converged : bool
        Whether the stopping rule ended the run before ``max_iter`` sweeps.
    """

    step_names: tuple[str, ...]
    initial_bound: float
    bounds: np.ndarray
    n_iter: int
    converged: bool

    def after(self, step: str) -> np.ndarray:
        """The bound after the named step of every sweep, shape (n_iter,).

        Raises
        ------
        ValueError
            If ``step`` is not one of ``step_names``.
        """
        if step not in self.step_names:
            raise ValueError(f"step must be one of {self.step_names}, got {step!r}")
        return self.bounds[:, self.step_names.index(step)]

    @property
    def half_steps(self) -> np.ndarray:
        """Every recorded bound in the order it was reached: the initial one (if defined),
        then step by step, sweep by sweep."""
        flat = self.bounds.ravel()
        if np.isnan(self.initial_bound):
            return flat.copy()
        return np.concatenate([[self.initial_bound], flat])

    def __repr__(self) -> str:
        return (f"AscentTrace(step_names={self.step_names}, n_iter={self.n_iter}, "
                f"converged={self.converged})")


def coordinate_ascent(steps: Mapping[str, Callable[[], float | None]], *,
                      stop: Callable[[], bool], max_iter: int,
                      initial_bound: float | None = None) -> AscentTrace:
    """Sweep over ``steps`` until ``stop()`` holds or ``max_iter`` sweeps ran.

    Parameters
    ----------
    steps : mapping of str to callable
        The steps of one sweep, in order. Each updates its block of the caller's state
        (a closure) and returns the bound after the update, or None where it does not
        evaluate it (recorded as NaN).
    stop : callable
        The stopping rule, asked after every sweep (it reads the caller's state: the
        change of the log-likelihood for EM, of the ELBO for CAVI).
    max_iter : int
        At most this many sweeps (>= 1).
    initial_bound : float, optional
        The bound before the first sweep, to record with the others.

    Returns
    -------
    AscentTrace

    Raises
    ------
    TypeError
        If ``steps`` is not a non-empty mapping of names to callables, or ``stop`` is
        not callable.
    ValueError
        If ``max_iter`` is not a positive integer.
    """
    if not isinstance(steps, Mapping) or not steps or not all(
            isinstance(k, str) and callable(f) for k, f in steps.items()):
        raise TypeError(f"steps must be a non-empty mapping of step names to callables, "
                        f"got {type(steps).__name__}")
    if not callable(stop):
        raise TypeError(f"stop must be callable, got {type(stop).__name__}")
    max_iter = check_positive_int(max_iter, "max_iter")
    updates = list(steps.values())
    rows: list[list[float]] = []
    converged = False
    for _ in range(max_iter):
        row = []
        for update in updates:
            value = update()
            row.append(np.nan if value is None else value)
        rows.append(row)
        if stop():
            converged = True
            break
    bounds = np.array(rows, dtype=np.float64).reshape(len(rows), len(updates))
    return AscentTrace(tuple(steps), np.nan if initial_bound is None else float(initial_bound),
                       bounds, len(rows), converged)
