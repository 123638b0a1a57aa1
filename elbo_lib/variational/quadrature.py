"""The best full-covariance Gaussian of a low-dimensional target, without sampling (chapters 7, 8).

:func:`best_gaussian_by_quadrature` maximises the ELBO computed by Gauss-Hermite
quadrature, the deterministic answer a Gaussian fitted by stochastic VI is checked
against; its result is :class:`QuadratureGaussianFit`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from elbo_lib._validation import as_float_array, check_positive_int
from elbo_lib.variational.families import DTYPE


@dataclass
class QuadratureGaussianFit:
    """Output of :func:`best_gaussian_by_quadrature`: one local optimum per start.

    Attributes
    ----------
    mean : ndarray (N, D)
    scale_tril : ndarray (N, D, D)
        The optimum q = N(mean, L L^T) reached from each of the N starts.
    elbo : ndarray (N,)
        Its ELBO by Gauss-Hermite quadrature.
    best : int
        The start whose optimum has the largest ELBO.
    """

    mean: np.ndarray
    scale_tril: np.ndarray
    elbo: np.ndarray
    best: int



def best_gaussian_by_quadrature(log_density: Callable[[torch.Tensor], torch.Tensor],
                                starts, *, num_nodes: int = 40,
                                max_iter: int = 500) -> QuadratureGaussianFit:
    r"""The best full-covariance Gaussian q of a low-dimensional target, without sampling.

    Maximises

    .. math::

        \mathcal L(m, L) = \sum_j w_j \log \tilde p(m + L t_j) + \log|\det L|
        + \tfrac D2 \log(2\pi e)

    over the mean m and the Cholesky factor L (positive diagonal), the ELBO of
    q = N(m, L L^T) with E_q computed by the tensor-product Gauss-Hermite rule
    (probabilists' nodes t_j, normalised weights w_j; ``num_nodes`` per dimension), by
    L-BFGS (SciPy) with exact gradients (autograd), from each start's mean with L = I.
    A deterministic, independent answer for a Gaussian fitted by stochastic VI: the
    reverse KL has local optima (on a target with two modes a Gaussian can sit on
    either or between them), so give many starts and take ``best``. Chapter 7.

    Parameters
    ----------
    log_density : callable
        Maps points (N, D) (float64 tensor) to the unnormalised log target, shape (N,),
        differentiable.
    starts : array_like, shape (num_starts, D)
        Starting means; D <= 3 (the rule has ``num_nodes ** D`` points).
    num_nodes : int
        Gauss-Hermite nodes per dimension (>= 2).
    max_iter : int
        L-BFGS iterations per start.

    Returns
    -------
    QuadratureGaussianFit
    """
    from numpy.polynomial.hermite_e import hermegauss
    from scipy.optimize import minimize

    if not callable(log_density):
        raise TypeError(f"log_density must be callable, got {type(log_density).__name__}")
    starts = np.atleast_2d(as_float_array(starts, "starts"))
    if starts.ndim != 2 or not 1 <= starts.shape[1] <= 3 or starts.shape[0] < 1:
        raise ValueError(f"starts must have shape (num_starts, D) with 1 <= D <= 3, got "
                         f"{starts.shape}")
    num_nodes = check_positive_int(num_nodes, "num_nodes", 2)
    max_iter = check_positive_int(max_iter, "max_iter")
    d = starts.shape[1]
    nodes_1d, weights_1d = hermegauss(num_nodes)
    grids = np.meshgrid(*[nodes_1d] * d, indexing="ij")
    nodes = torch.as_tensor(np.stack([g.ravel() for g in grids], -1), dtype=DTYPE)
    weights = torch.as_tensor(np.prod(np.meshgrid(*[weights_1d / weights_1d.sum()] * d,
                                                  indexing="ij"), 0).ravel(), dtype=DTYPE)
    rows, cols = np.tril_indices(d, -1)
    const = 0.5 * d * (1.0 + math.log(2 * math.pi))

    def unpack(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = torch.diag_embed(torch.exp(theta[d:2 * d]))
        if rows.size:
            low = low.index_put((torch.as_tensor(rows), torch.as_tensor(cols)),
                                theta[2 * d:])
        return theta[:d], low

    def negative_elbo(theta_np: np.ndarray) -> tuple[float, np.ndarray]:
        theta = torch.as_tensor(theta_np, dtype=DTYPE).requires_grad_(True)
        mean, low = unpack(theta)
        values = log_density(mean + nodes @ low.T)
        elbo = values @ weights + theta[d:2 * d].sum() + const
        (grad,) = torch.autograd.grad(-elbo, theta)
        return -float(elbo.detach()), grad.numpy()

    means, lows, elbos = [], [], []
    for start in starts:
        theta0 = np.concatenate([start, np.zeros(d), np.zeros(rows.size)])
        result = minimize(negative_elbo, theta0, jac=True, method="L-BFGS-B",
                          options={"maxiter": max_iter})
        if not np.isfinite(result.fun):
            raise ValueError(f"the quadrature ELBO is not finite at the optimum from "
                             f"start {start.tolist()}")
        mean, low = unpack(torch.as_tensor(result.x, dtype=DTYPE))
        means.append(mean.numpy())
        lows.append(low.numpy())
        elbos.append(-result.fun)
    elbos = np.asarray(elbos)
    return QuadratureGaussianFit(np.stack(means), np.stack(lows), elbos,
                                 int(np.argmax(elbos)))
