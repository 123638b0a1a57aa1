"""Mean-field inference and variational EM for binary sparse coding (chapter 4).

The fixed-point updates of Goodfellow et al. (2016), section 19.4.1, for one input
(:func:`bsc_mean_field`) and for a batch (:func:`bsc_mean_field_batch`, best of many
starts: :func:`bsc_mean_field_multistart`), the ELBO and its check by enumeration, and
learning W, b, beta with mean-field E-steps (:func:`bsc_variational_em`; section 19.4.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
from scipy.special import expit, log_expit, logsumexp, xlogy

from elbo_lib._validation import (
    LOG_2PI,
    as_float_array,
    check_bsc_batch_inputs,
    check_bsc_inputs,
    check_enumerable,
    check_positive,
    check_positive_int,
)
from elbo_lib.coordinate_ascent import AscentTrace, coordinate_ascent
from elbo_lib.models import bsc_exact_posterior, bsc_log_joint_table, bsc_log_likelihood


def _check_h_hat(h_hat, n: int, name: str = "h_hat") -> np.ndarray:
    h_hat = as_float_array(h_hat, name, ndim=1)
    if h_hat.size != n or np.any(h_hat < 0) or np.any(h_hat > 1):
        raise ValueError(f"{name} must hold {n} probabilities in [0, 1], got shape "
                         f"{h_hat.shape}")
    return h_hat


def bsc_elbo(h_hat, v, weights, bias, noise_precision) -> float:
    """Closed-form ELBO of binary sparse coding for q(h) = prod_i Bernoulli(h_hat_i).

    Uses E_q[h_i h_j] = h_hat_i h_hat_j (i != j) and E_q[h_i^2] = h_hat_i
    (Goodfellow et al. 2016, section 19.4.1):

    ELBO = sum_i [h_hat_i log sigma(b_i) + (1 - h_hat_i) log sigma(-b_i) + H(h_hat_i)]
    + (1/2) sum_j log(beta_j / 2 pi)
    - (1/2) [(v - W h_hat)^T B (v - W h_hat) + sum_i (W^T B W)_ii h_hat_i (1 - h_hat_i)].
    """
    v, w, b, beta = check_bsc_inputs(v, weights, bias, noise_precision)
    h = _check_h_hat(h_hat, b.size)
    return _bsc_elbo(h, v, w, b, beta)


def _bsc_elbo(h, v, w, b, beta) -> float:
    entropy = -(xlogy(h, h) + xlogy(1 - h, 1 - h)).sum()
    log_prior = h @ log_expit(b) + (1 - h) @ log_expit(-b)
    resid = v - w @ h
    diag = (w**2).T @ beta                                  # (W^T B W)_ii
    quad = resid**2 @ beta + diag @ (h * (1 - h))
    return float(log_prior + entropy + 0.5 * (np.log(beta).sum() - v.size * LOG_2PI) - 0.5 * quad)


def bsc_elbo_enumeration(h_hat, v, weights, bias, noise_precision) -> float:
    """ELBO of q(h) = prod_i Bernoulli(h_hat_i) as the exact sum over all 2^n codes.

    sum_h q(h) [log p(v, h) - log q(h)]: the independent check of :func:`bsc_elbo`.
    """
    v, w, b, beta = check_bsc_inputs(v, weights, bias, noise_precision)
    h_hat = _check_h_hat(h_hat, b.size)
    exact = bsc_exact_posterior(v, w, b, beta)
    codes = exact["codes"]
    log_q = xlogy(codes, h_hat).sum(axis=1) + xlogy(1 - codes, 1 - h_hat).sum(axis=1)
    q = np.exp(log_q)
    log_joint = exact["log_posterior"] + exact["log_evidence"]
    mask = q > 0
    return float((q[mask] * (log_joint[mask] - log_q[mask])).sum())


@dataclass
class BSCTrace:
    """Output of :func:`bsc_mean_field`: ``h_hat`` (final), ``history`` (num_iter + 1, n)
    and ``elbo`` (num_iter + 1,) after every sweep, ``converged``, and ``trace``, the
    loop's :class:`elbo_lib.coordinate_ascent.AscentTrace` (one step per sweep)."""

    h_hat: np.ndarray
    history: np.ndarray
    elbo: np.ndarray
    converged: bool
    trace: AscentTrace | None = None


def bsc_mean_field(v, weights, bias, noise_precision, *, schedule: str = "sequential",
                   damping: float = 1.0, init=None, max_iter: int = 200,
                   tol: float = 1e-10) -> BSCTrace:
    """Mean-field fixed-point iteration for binary sparse coding (Goodfellow et al. 2016, 19.4.1).

    The optimal factor for h_i given the others is Bernoulli(h_hat_i) with

    h_hat_i = sigmoid(b_i + v^T B W_{:,i} - (1/2) W_{:,i}^T B W_{:,i}
                      - sum_{j != i} W_{:,j}^T B W_{:,i} h_hat_j).

    ``schedule="sequential"`` applies it to one unit at a time with the newest values of
    the others (coordinate ascent: the ELBO never decreases). ``schedule="parallel"``
    applies it to every unit at once from the old values, then moves a fraction
    ``damping`` of the way: h_hat <- (1 - damping) h_hat + damping * update. Undamped
    parallel updates (damping = 1) can oscillate.

    Parameters
    ----------
    v, weights, bias, noise_precision
        As in :func:`bsc_log_joint`.
    schedule : {"sequential", "parallel"}
    damping : float
        In (0, 1]; 1 means no damping. Used by both schedules.
    init : array_like, shape (n_latent,), optional
        Starting h_hat in [0, 1]; default sigmoid(b), the prior.
    max_iter : int
        Number of sweeps at most.
    tol : float
        Stop when max |change of h_hat| in a sweep is below ``tol``.

    Returns
    -------
    BSCTrace
    """
    v, w, b, beta = check_bsc_inputs(v, weights, bias, noise_precision)
    if schedule not in ("sequential", "parallel"):
        raise ValueError(f"schedule must be 'sequential' or 'parallel', got {schedule!r}")
    damping = check_positive(damping, "damping")
    if damping > 1:
        raise ValueError(f"damping must be in (0, 1], got {damping}")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_positive(tol, "tol")
    h = expit(b) if init is None else _check_h_hat(init, b.size, "init").copy()
    gram = w.T @ (beta[:, None] * w)                         # W^T B W
    drive = b + w.T @ (beta * v) - 0.5 * np.diag(gram)       # terms not involving h_hat
    off = gram - np.diag(np.diag(gram))
    history, elbos = [h.copy()], [_bsc_elbo(h, v, w, b, beta)]

    def sweep() -> float:  # every q(h_i) in turn (or all at once), damped
        if schedule == "parallel":
            history.append((1 - damping) * h + damping * expit(drive - off @ h))
            h[:] = history[-1]
        else:
            for i in range(b.size):  # over latent units (Gauss-Seidel), not data points
                h[i] = (1 - damping) * h[i] + damping * expit(drive[i] - off[i] @ h)
            history.append(h.copy())
        elbos.append(_bsc_elbo(h, v, w, b, beta))
        return elbos[-1]

    trace = coordinate_ascent({"h": sweep},
                              stop=lambda: np.max(np.abs(history[-1] - history[-2])) < tol,
                              max_iter=max_iter, initial_bound=elbos[0])
    return BSCTrace(h, np.asarray(history), np.asarray(elbos), trace.converged, trace)


# ---------------------------------------------------------------------------------------
# learning theta: variational EM for binary sparse coding (Goodfellow et al. 19.4.4)
# ---------------------------------------------------------------------------------------
def bsc_mean_field_batch(v, weights, bias, noise_precision: float, *, init=None,
                         max_iter: int = 200, tol: float = 1e-8) -> np.ndarray:
    """Sequential mean-field updates of binary sparse coding for many inputs at once (ch. 4).

    The update of :func:`bsc_mean_field` (``schedule="sequential"``, scalar precision
    beta), applied to unit 1, then unit 2, ... with the newest values, vectorised over
    the rows of ``v``: coordinate ascent on every row's ELBO.

    Parameters
    ----------
    v : array_like, shape (N, n_visible)
    weights : array_like, shape (n_visible, n_latent)
    bias : array_like, shape (n_latent,)
    noise_precision : float
        beta > 0 (isotropic noise).
    init : array_like, shape (N, n_latent), optional
        Starting h_hat (for warm starts in variational EM); default sigmoid(b).
    max_iter : int
        Sweeps at most.
    tol : float
        Stop when no h_hat changes by more than ``tol`` in a sweep.

    Returns
    -------
    numpy.ndarray, shape (N, n_latent)
        h_hat, the Bernoulli means of q(h) for every row.
    """
    v, w, b, beta = check_bsc_batch_inputs(v, weights, bias, noise_precision)
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_positive(tol, "tol")
    n_h = b.size
    if init is None:
        h = np.tile(expit(b), (v.shape[0], 1))
    else:
        h = as_float_array(init, "init", ndim=2).copy()
        if h.shape != (v.shape[0], n_h) or np.any(h < 0) or np.any(h > 1):
            raise ValueError(f"init must hold probabilities of shape {(v.shape[0], n_h)}, "
                             f"got shape {h.shape}")
    gram = beta * w.T @ w
    drive = b[None, :] + beta * v @ w - 0.5 * np.diag(gram)[None, :]
    off = gram - np.diag(np.diag(gram))
    for _ in range(max_iter):
        old = h.copy()
        for i in range(n_h):  # over latent units (Gauss-Seidel); vectorised over rows
            h[:, i] = expit(drive[:, i] - h @ off[:, i])
        if np.max(np.abs(h - old)) < tol:
            break
    return h


def bsc_mean_field_multistart(v, weights, bias, noise_precision: float, *, starts=None,
                              init=None, max_iter: int = 500,
                              tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """The best of many sequential mean-field runs per input of binary sparse coding (ch. 4).

    The ELBO of binary sparse coding is not concave in h_hat jointly: the sequential
    updates of :func:`bsc_mean_field_batch` stop at the local optimum nearest their
    start (from the prior, often a low one). This runs them from every row of
    ``starts`` (the same starts for every input; default all 2^n_latent binary codes,
    which begin the search in every explanation of the input) and from ``init`` if
    given, and keeps, for each input, the run with the highest ELBO. With ``init``
    among the starts the result's ELBO is never below that of the run from ``init``
    alone, so variational EM with this E-step stays monotone.

    Parameters
    ----------
    v : array_like, shape (N, n_visible)
    weights : array_like, shape (n_visible, n_latent)
    bias : array_like, shape (n_latent,)
    noise_precision : float
        beta > 0.
    starts : array_like, shape (S, n_latent), optional
        Starting h_hat shared by every input; default every binary code (n_latent <= 10).
    init : array_like, shape (N, n_latent), optional
        One more start per input (the previous E-step's result in variational EM).
    max_iter, tol
        As in :func:`bsc_mean_field_batch`.

    Returns
    -------
    h_hat : numpy.ndarray, shape (N, n_latent)
        The highest-ELBO optimum found for each input.
    elbo : numpy.ndarray, shape (N,)
        Its ELBO (:func:`bsc_elbo_batch`).
    """
    v, w, b, beta = check_bsc_batch_inputs(v, weights, bias, noise_precision)
    n, n_h = v.shape[0], b.size
    if starts is None:
        check_enumerable(b, 10)
        starts = np.array(list(product((0.0, 1.0), repeat=n_h)))
    starts = as_float_array(starts, "starts", ndim=2)
    if starts.shape[1] != n_h or np.any(starts < 0) or np.any(starts > 1):
        raise ValueError(f"starts must hold probabilities of shape (S, {n_h}), "
                         f"got shape {starts.shape}")
    cand = np.repeat(starts[None, :, :], n, axis=0)            # (N, S, n_h)
    if init is not None:
        init = as_float_array(init, "init", ndim=2)
        if init.shape != (n, n_h) or np.any(init < 0) or np.any(init > 1):
            raise ValueError(f"init must hold probabilities of shape {(n, n_h)}, "
                             f"got shape {init.shape}")
        cand = np.concatenate([init[:, None, :], cand], axis=1)
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_positive(tol, "tol")
    num_starts = cand.shape[1]
    v_rep = np.repeat(v, num_starts, axis=0)
    h = cand.reshape(-1, n_h).copy()
    gram = beta * w.T @ w
    drive = b[None, :] + beta * v_rep @ w - 0.5 * np.diag(gram)[None, :]
    off = gram - np.diag(np.diag(gram))
    active = np.arange(h.shape[0])
    for _ in range(max_iter):       # the sweeps of bsc_mean_field_batch, on unsettled rows
        h_a, old = h[active], h[active].copy()
        for i in range(n_h):
            h_a[:, i] = expit(drive[active, i] - h_a @ off[:, i])
        h[active] = h_a
        active = active[np.max(np.abs(h_a - old), axis=1) >= tol]
        if active.size == 0:
            break
    elbo = bsc_elbo_batch(h, v_rep, w, b, beta).reshape(n, num_starts)
    best = np.argmax(elbo, axis=1)                              # ties: the first (init)
    h = h.reshape(n, num_starts, n_h)[np.arange(n), best]
    return h, elbo[np.arange(n), best]


def bsc_elbo_batch(h_hat, v, weights, bias, noise_precision: float) -> np.ndarray:
    """Closed-form ELBO of :func:`bsc_elbo` for every row of ``v`` (chapter 4), shape (N,)."""
    v, w, b, beta = check_bsc_batch_inputs(v, weights, bias, noise_precision)
    h = as_float_array(h_hat, "h_hat", ndim=2)
    if h.shape != (v.shape[0], b.size):
        raise ValueError(f"h_hat must have shape {(v.shape[0], b.size)}, got {h.shape}")
    if np.any(h < 0) or np.any(h > 1):
        raise ValueError(f"h_hat must hold probabilities in [0, 1], got range "
                         f"[{h.min()!r}, {h.max()!r}]")
    entropy = -(xlogy(h, h) + xlogy(1 - h, 1 - h)).sum(axis=1)
    log_prior = h @ log_expit(b) + (1 - h) @ log_expit(-b)
    resid = v - h @ w.T
    quad = beta * ((resid**2).sum(axis=1) + (h * (1 - h)) @ (w**2).sum(axis=0))
    return log_prior + entropy + 0.5 * v.shape[1] * (np.log(beta) - LOG_2PI) - 0.5 * quad


@dataclass
class BSCLearningResult:
    """Output of :func:`bsc_variational_em`.

    Attributes
    ----------
    weights, bias, noise_precision
        Final W, b and beta.
    elbo : numpy.ndarray
        Sum over the data of the ELBO after every E-step (the bound the run maximises).
    log_likelihood : numpy.ndarray
        Exact sum_n log p(v_n | theta) by enumeration, at the same theta.
    weights_history : numpy.ndarray, shape (num_iter, n_visible, n_latent)
        W at which each entry of ``elbo`` was evaluated.
    h_hat : numpy.ndarray, shape (N, n_latent)
        The last E-step's q (or exact marginals when ``exact=True``).
    """

    weights: np.ndarray
    bias: np.ndarray
    noise_precision: float
    elbo: np.ndarray
    log_likelihood: np.ndarray
    weights_history: np.ndarray
    h_hat: np.ndarray


def bsc_variational_em(v, init_weights, init_bias, init_noise_precision: float, *,
                       num_iter: int = 50, exact: bool = False,
                       starts=None) -> BSCLearningResult:
    """Learn theta = (W, b, beta) of binary sparse coding by (variational) EM (chapter 4).

    E-step: q(h_n) = prod_i Bernoulli(h_hat_ni) by sequential mean-field updates
    (:func:`bsc_mean_field_batch`, warm-started), or with ``exact=True`` the exact
    posterior by enumeration (ordinary EM, for comparison). M-step: the maximiser of
    sum_n E_q[log p(v_n, h_n | theta)] in closed form (Goodfellow et al. 2016, 19.4.4):

    * W = (sum_n v_n E[h_n]^T) (sum_n E[h_n h_n^T])^{-1},
    * sigmoid(b_i) = mean_n E[h_ni],
    * 1 / beta = sum_n E||v_n - W h_n||^2 / (N n_visible),

    where under mean-field E[h h^T] = h_hat h_hat^T + diag(h_hat (1 - h_hat)).
    Every E-step and M-step raises the ELBO (variational EM) or log p(V) (exact EM).

    Parameters
    ----------
    v : array_like, shape (N, n_visible)
    init_weights : array_like, shape (n_visible, n_latent)
    init_bias : array_like, shape (n_latent,)
    init_noise_precision : float
    num_iter : int
        Number of E-step / M-step pairs.
    exact : bool
        Exact posterior in the E-step (n_latent <= 16).
    starts : None, "codes" or array_like of shape (S, n_latent)
        None: the E-step runs the sequential updates from the previous E-step's q only
        (from the prior at the first). Otherwise it also restarts them from every row of
        ``starts`` ("codes": all 2^n_latent binary codes) and keeps the best per input
        (:func:`bsc_mean_field_multistart`).

    Returns
    -------
    BSCLearningResult
        ``elbo`` and ``log_likelihood`` have num_iter + 1 entries: before the first M-step
        and after every one (each evaluated after the following E-step).
    """
    v, w, b, beta = check_bsc_batch_inputs(v, init_weights, init_bias, init_noise_precision,
                                           prefix="init_")
    w, b = w.copy(), b.copy()
    num_iter = check_positive_int(num_iter, "num_iter")
    if exact:
        check_enumerable(b, 16, "init_bias")
    if isinstance(starts, str) and starts != "codes":
        raise ValueError(f"starts must be None, 'codes' or an array, got {starts!r}")
    n, n_v = v.shape
    codes = np.array(list(product((0.0, 1.0), repeat=b.size)))
    h = None
    elbos, logliks, w_hist = [], [], []

    def e_step(h_prev):
        if exact:
            _, log_joint = bsc_log_joint_table(v, w, b, beta)
            post = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
            e_h = post @ codes
            e_hh = np.einsum("nc,ci,cj->ij", post, codes, codes)
            return e_h, e_hh, float(logsumexp(log_joint, axis=1).sum())
        if starts is None:
            h_new = bsc_mean_field_batch(v, w, b, beta, init=h_prev, tol=1e-10,
                                         max_iter=500)
        else:
            h_new, _ = bsc_mean_field_multistart(
                v, w, b, beta, starts=None if isinstance(starts, str) else starts,
                init=h_prev if h_prev is not None else np.tile(expit(b), (n, 1)))
        e_hh = h_new.T @ h_new + np.diag((h_new * (1 - h_new)).sum(axis=0))
        return h_new, e_hh, float(bsc_elbo_batch(h_new, v, w, b, beta).sum())

    for it in range(num_iter + 1):
        h, e_hh, bound = e_step(h)
        elbos.append(bound)
        logliks.append(float(bsc_log_likelihood(v, w, b, beta).sum()))
        w_hist.append(w.copy())
        if it == num_iter:
            break
        w = np.linalg.solve(e_hh, h.T @ v).T                   # e_hh is symmetric
        mean_h = np.clip(h.mean(axis=0), 1e-12, 1 - 1e-12)
        b = np.log(mean_h) - np.log1p(-mean_h)
        sq = ((v - h @ w.T) ** 2).sum() + np.trace(w @ (e_hh - h.T @ h) @ w.T)
        beta = n * n_v / sq
    return BSCLearningResult(w, b, float(beta), np.asarray(elbos), np.asarray(logliks),
                             np.asarray(w_hist), h)
