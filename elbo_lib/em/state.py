"""What the mixture EM loops share: their state, stopping rule and result type.

:class:`EMTrace` is the result of :func:`elbo_lib.em.incremental_em` and
:func:`elbo_lib.em.map_em`; :class:`elbo_lib.em.GaussianMixtureEM` keeps its results
as estimator attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from elbo_lib.coordinate_ascent import AscentTrace


# ---------------------------------------------------------------------------------------
# the state and stopping rule of the mixture EM loops
# ---------------------------------------------------------------------------------------
class _EMSettings(NamedTuple):
    """The constructor arguments of :class:`GaussianMixtureEM`, validated by ``fit``."""

    n_components: int
    tol: float
    reg_covar: float
    max_iter: int
    covariance_floor: str
    keep_history: bool
    chunk_size: int | None


@dataclass
class _EMState:
    """What the E-step and M-step of a mixture EM share while the loop runs."""

    theta: tuple | list
    prec_chol: np.ndarray
    wlp: np.ndarray | None = None
    resp: np.ndarray | None = None
    entropy: float = 0.0
    stats: list = field(default_factory=list)
    log_lik: list = field(default_factory=list)
    shortfalls: list = field(default_factory=list)
    lower_bound: float = -np.inf


def _mean_log_likelihood_rule(state: _EMState, n: int, tol: float):
    """scikit-learn's stopping rule: the per-point mean log-likelihood measured in the
    E-step changed by less than ``tol`` since the previous iteration."""
    def stop() -> bool:
        previous, state.lower_bound = state.lower_bound, state.log_lik[-1] / n
        return abs(state.lower_bound - previous) < tol
    return stop


@dataclass(frozen=True, repr=False)
class EMTrace:
    """Result of :func:`incremental_em` or :func:`map_em`: the fitted theta and its record.

    Attributes
    ----------
    weights_, means_, covariances_ : numpy.ndarray
        The fitted theta.
    n_iter_ : int
        Sweeps over the data (incremental EM) or EM iterations (MAP-EM).
    log_likelihood_ : numpy.ndarray
        log p(x | theta) after every recorded step (index 0: the start).
    trace_ : AscentTrace
        The bound after every step of the coordinate ascent (one step per block for
        incremental EM; the E-step's tight bound log p(x | theta) + log p(theta) for
        MAP-EM, whose M-step does not evaluate it).
    steps_per_sweep : int
        Recorded steps per pass over the data (the number of blocks; 1 for MAP-EM).
    elbo_ : numpy.ndarray or None
        (incremental EM) L(q, theta) after every block step, with q the stored
        responsibilities of all blocks (index 0: after the first full EM iteration).
    log_prior_ : numpy.ndarray or None
        (MAP-EM) log p(theta) after every step; the monotone objective is
        ``log_likelihood_ + log_prior_``.
    """

    weights_: np.ndarray
    means_: np.ndarray
    covariances_: np.ndarray
    n_iter_: int
    log_likelihood_: np.ndarray
    trace_: AscentTrace
    steps_per_sweep: int
    elbo_: np.ndarray | None = None
    log_prior_: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"EMTrace(n_iter_={self.n_iter_})"


