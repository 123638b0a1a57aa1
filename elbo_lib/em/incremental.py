"""Incremental EM for a Gaussian mixture (Neal and Hinton 1998; chapter 2).

The same E-step as :class:`elbo_lib.em.GaussianMixtureEM`, one block of data at a
time, each followed by an M-step from running sufficient statistics.
"""

from __future__ import annotations

import numpy as np

from elbo_lib._validation import check_nonnegative, check_positive_int
from elbo_lib.coordinate_ascent import coordinate_ascent
from elbo_lib.em.estimator import _start
from elbo_lib.em.mixture import (
    _COUNT_EPS,
    _check_data,
    _elbo_terms,
    _entropy,
    _floor_covariances,
    _normalise,
    _weighted_log_prob,
)
from elbo_lib.em.state import EMTrace, _EMState
from elbo_lib.gaussians import precision_cholesky


def _stats_from_resp(X, resp):
    """Sufficient statistics (N_k, sum_i r_ik x_i, sum_i r_ik x_i x_i^T) of a block."""
    return resp.sum(axis=0), resp.T @ X, np.einsum("nk,ni,nj->kij", resp, X, X)


def _theta_from_stats(counts, sum_x, sum_xx, reg_covar, floor):
    counts = counts + _COUNT_EPS
    weights = counts / counts.sum()
    means = sum_x / counts[:, None]
    cov = sum_xx / counts[:, None, None] - np.einsum("ki,kj->kij", means, means)
    cov = 0.5 * (cov + cov.transpose(0, 2, 1))
    _floor_covariances(cov, counts, reg_covar, floor)
    return weights, means, cov


def incremental_em(X, n_components: int, *, num_blocks: int = 10, num_sweeps: int = 20,
                   weights_init=None, means_init=None, covariances_init=None, rng=None,
                   reg_covar: float = 1e-6) -> EMTrace:
    """Incremental EM for a Gaussian mixture: one block's E-step, then an M-step (chapter 2).

    Neal and Hinton's (1998) variant of EM. The data are split into ``num_blocks``
    contiguous blocks. A first full E-step stores every block's responsibilities and
    sufficient statistics; then, block after block, the E-step is redone for that block
    only (the exact posterior of its points at the current theta), its statistics are
    swapped into the totals, and theta is set to the exact maximiser of L(q, theta) for
    the stored q. Both moves maximise L(q, theta) over one coordinate, so L never
    decreases (the covariance floor is applied by clipping, the exact constrained
    maximiser); log p(x | theta) itself may dip. The first sweep costs about as much
    as one full EM iteration but moves theta ``num_blocks`` times.

    Parameters
    ----------
    X : array_like, shape (n, d)
    n_components : int
        K (at most the number of points).
    num_blocks : int
        Number of blocks (1 <= num_blocks <= n; 1 is ordinary EM).
    num_sweeps : int
        Passes over the data after the first full E-step and M-step.
    weights_init, means_init, covariances_init, rng, reg_covar
        As for :class:`GaussianMixtureEM`.

    Returns
    -------
    EMTrace
        ``log_likelihood_`` and ``elbo_`` of length ``1 + num_sweeps * num_blocks``: the value
        after the first full EM iteration, then after every block step.
    """
    X = _check_data(X)
    n, _ = X.shape
    n_components = check_positive_int(n_components, "n_components")
    num_blocks = check_positive_int(num_blocks, "num_blocks")
    num_sweeps = check_positive_int(num_sweeps, "num_sweeps")
    if n < n_components:
        raise ValueError(f"n_components={n_components} is larger than the number of "
                         f"points n={n}: need n >= n_components")
    if num_blocks > n:
        raise ValueError(f"num_blocks={num_blocks} is larger than the number of points n={n}")
    reg_covar = check_nonnegative(reg_covar, "reg_covar")
    theta = _start(X, n_components, weights_init, means_init, covariances_init, rng,
                   reg_covar)
    bounds = np.linspace(0, n, num_blocks + 1).astype(int)
    blocks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    wlp = _weighted_log_prob(X, *theta[:2], precision_cholesky(theta[2]))
    _, resp, log_resp = _normalise(wlp)
    block_stats = [_stats_from_resp(X[b], resp[b]) for b in blocks]
    totals = [sum(st[j] for st in block_stats) for j in range(3)]
    s = _EMState(theta=_theta_from_stats(*totals, reg_covar, "clip"), prec_chol=None,
                 stats=totals)

    def record() -> float:  # log p(x | theta) and L(q, theta) for the stored q
        wlp_now = _weighted_log_prob(X, *s.theta[:2], precision_cholesky(s.theta[2]))
        s.log_lik.append(float(_normalise(wlp_now)[0].sum()))
        return _elbo_terms(resp, wlp_now, _entropy(resp, log_resp))

    def block_step(j: int, b: slice):
        def step() -> float:
            # partial E-step: exact posterior of block b at the current theta
            wlp_b = _weighted_log_prob(X[b], *s.theta[:2], precision_cholesky(s.theta[2]))
            _, resp[b], log_resp[b] = _normalise(wlp_b)
            new = _stats_from_resp(X[b], resp[b])
            s.stats = [t - old + nw for t, old, nw in zip(s.stats, block_stats[j], new,
                                                          strict=True)]
            block_stats[j] = new
            # M-step from the running totals
            s.theta = _theta_from_stats(*s.stats, reg_covar, "clip")
            return record()
        return step

    first = record()
    trace = coordinate_ascent({f"block {j}": block_step(j, b) for j, b in enumerate(blocks)},
                              stop=lambda: False, max_iter=num_sweeps, initial_bound=first)
    return EMTrace(*s.theta, n_iter_=num_sweeps, log_likelihood_=np.asarray(s.log_lik),
                   trace_=trace, steps_per_sweep=num_blocks, elbo_=trace.half_steps)


