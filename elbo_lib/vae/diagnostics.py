"""What a trained VAE is measured by (chapter 6): exact log p(x) by quadrature, the
amortisation and approximation gaps, active units and the rate per unit, the aggregate
posterior and its mutual information, Fano's bound, the manifold grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import ndtri

from elbo_lib._validation import (
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_real,
)
from elbo_lib.gaussians import diagonal_gaussian_log_density, gaussian_kl
from elbo_lib.vae.elbo import _elbo_terms, _kl_units, iwae_bound
from elbo_lib.vae.model import (
    VAE,
    DiagonalGaussianPosterior,
    _check_data,
    _check_model,
    _check_real_tensor,
    _log_prior,
    _require_diagonal_gaussian,
)

__all__ = [
    "AggregatePosterior",
    "active_units",
    "aggregate_posterior",
    "decoder_gradient_by_quadrature",
    "fano_error_bound",
    "grid_log_marginal",
    "inference_gaps",
    "kl_per_unit",
    "latent_grid",
    "refine_posterior",
]


def refine_posterior(model: VAE, x: torch.Tensor, num_steps: int, lr: float = 0.01,
                     num_samples: int = 8) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Optimise a separate Gaussian q(z | x_i) per data point, starting from the encoder.

    With the decoder frozen, the per-point mean and log-variance are free parameters
    initialised at the encoder's output and moved by Adam along the reparameterised
    gradient of each point's ELBO (``num_samples`` samples per step, closed-form KL).
    All points are optimised in one batched problem: their ELBOs share no parameters
    and Adam is elementwise, so this is n independent optimisations at once. The
    improvement over the encoder is the amortisation gap of Cremer et al. (2018).
    Used by chapter 6.

    Returns
    -------
    (mean, logvar, trace) : torch.Tensor, torch.Tensor, numpy.ndarray
        Refined parameters (detached, shape (n, latent_dim)) and the average stochastic
        ELBO estimate at every step (shape (num_steps,)).

    Raises
    ------
    TypeError
        If the encoder is not of the diagonal Gaussian family (the refined q is one).
    ValueError
        For bad sizes, or the first step at which an ELBO is not finite.
    """
    model = _check_model(model)
    x = _check_data(x, model.num_pixels, binary=True, batch=True)
    num_steps = check_positive_int(num_steps, "num_steps")
    num_samples = check_positive_int(num_samples, "num_samples")
    lr = check_positive(lr, "lr")
    with torch.no_grad():
        q = _require_diagonal_gaussian(model.encode(x), "refine_posterior")
    mean = q.mean.clone().requires_grad_(True)
    logvar = q.logvar.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([mean, logvar], lr=lr)
    trace = torch.empty(num_steps)
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for step in range(num_steps):
            try:
                # x is checked above and the ELBO below, every step
                q = DiagonalGaussianPosterior._from_checked(mean, logvar)
                reconstruction, kl = _elbo_terms(model, q, x, (num_samples,))
                elbo = reconstruction.mean(0) - kl
                if not bool(torch.isfinite(elbo).all()):
                    raise ValueError("the ELBO is not finite")
            except ValueError as err:
                raise ValueError(f"refine_posterior stopped at step {step + 1} of "
                                 f"{num_steps}: {err} (a smaller lr than {lr} may help)"
                                 ) from err
            optimizer.zero_grad(set_to_none=True)
            (-elbo.sum()).backward()
            optimizer.step()
            trace[step] = elbo.detach().mean()
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    return mean.detach(), logvar.detach(), trace.numpy()


def _quadrature_grid(model, x, limit, num_points):
    """The checked model and binary x, and the float64 axis and (G, 2) grid over
    [-limit, limit]^2 of the 2-D latent quadrature that :func:`grid_log_marginal` and
    :func:`decoder_gradient_by_quadrature` share."""
    model = _check_model(model)
    x = _check_data(x, model.num_pixels, binary=True, batch=True)
    if model.latent_dim != 2:
        raise ValueError(f"model must have a 2-D latent space for grid quadrature, got "
                         f"latent_dim={model.latent_dim}")
    limit = check_positive(limit, "limit")
    num_points = check_positive_int(num_points, "num_points", minimum=3)
    axis = torch.linspace(-limit, limit, num_points, dtype=torch.float64)
    return model, x, axis, torch.cartesian_prod(axis, axis)


@torch.no_grad()
def grid_log_marginal(model: VAE, x: torch.Tensor, limit: float = 5.0,
                      num_points: int = 201, max_batch: int = 2**10) -> torch.Tensor:
    """log p(x) = log \u222b p(x | z) p(z) dz by quadrature on a grid (2-D latent only).

    The integrand is evaluated on a ``num_points`` x ``num_points`` grid over
    [-limit, limit]^2 and summed with the cell area h^2 (a Riemann sum, which converges
    very fast for smooth, rapidly decaying integrands), in float64 with log-sum-exp.
    The decoder is evaluated once per grid point and shared by all data points:
    log p(x | z_g) = x . l_g - sum_j softplus(l_gj) is one matrix product. This is the
    independent reference that chapter 6 checks the ELBO and IWAE_k against.

    Returns
    -------
    torch.Tensor, shape (n,), float64
    """
    model, x, axis, grid = _quadrature_grid(model, x, limit, num_points)
    log_cell = 2 * math.log(float(axis[1] - axis[0]))
    x64 = x.to(torch.float64)
    parts = []
    for chunk in grid.split(check_positive_int(max_batch, "max_batch")):
        logits = model.decode(chunk.float()).to(torch.float64)  # (g, D)
        log_lik = x64 @ logits.T - F.softplus(logits).sum(-1)   # (n, g)
        parts.append(torch.logsumexp(log_lik + _log_prior(chunk), dim=1))
    return torch.logsumexp(torch.stack(parts, dim=1), dim=1) + log_cell


def latent_grid(num_points: int, low: float = 0.05, high: float = 0.95) -> torch.Tensor:
    """A 2-D grid of z values at standard-normal quantiles, row by row (top row first).

    The learned manifold of Kingma & Welling (2014, fig. 4): equally spaced
    probabilities in [low, high] mapped through the inverse normal CDF, so the grid
    covers the prior's mass evenly. Row r has z_2 decreasing from top to bottom and
    z_1 increasing from left to right, matching an image of the decoded grid.

    The quantiles are computed in float32, or, when ``low < 0.01`` or ``high > 0.99``
    (where float32 loses the tail probabilities: 2p - 1 rounds to -1 for p = 1e-10,
    whose quantile would be -inf), in float64 with ``scipy.special.ndtri`` of p below
    1/2 and of 1 - p above (exact in float64), which keeps full relative accuracy
    down to the smallest float probabilities (p = 1e-300 gives -37.047), and are
    returned as float32.

    Returns
    -------
    torch.Tensor, shape (num_points**2, 2)
    """
    num_points = check_positive_int(num_points, "num_points", minimum=2)
    low, high = check_real(low, "low"), check_real(high, "high")
    if not 0.0 < low < high < 1.0:
        raise ValueError(f"need 0 < low < high < 1, got low={low!r}, high={high!r}")
    if low < 0.01 or high > 0.99:   # tails: ndtri of the smaller of p and 1 - p
        p = torch.linspace(low, high, num_points, dtype=torch.float64).numpy()
        q = torch.from_numpy(np.where(p <= 0.5, ndtri(np.minimum(p, 0.5)),
                                      -ndtri(np.minimum(1.0 - p, 0.5)))).float()
    else:
        unit = torch.distributions.Normal(torch.tensor(0.0), torch.tensor(1.0))
        q = unit.icdf(torch.linspace(low, high, num_points, dtype=torch.float32))
    z1, z2 = torch.meshgrid(q, q.flip(0), indexing="xy")
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)


@torch.no_grad()
def active_units(model: VAE, x: torch.Tensor, threshold: float = 0.01
                 ) -> tuple[int, np.ndarray]:
    """Number of active latent units: Cov_x(E_q[z_u | x]) > threshold (Burda et al. 2016).

    A unit whose posterior mean does not vary with x carries no information about x:
    its q(z_u | x) has collapsed to the prior (posterior collapse). Any encoder family
    whose q has a ``mean``. Used by chapter 6.

    Returns
    -------
    (count, variances) : int and numpy.ndarray of shape (latent_dim,)

    Raises
    ------
    TypeError
        If the encoder's q has no ``mean`` (e.g. a normalising flow).
    """
    model = _check_model(model)
    x = _check_data(x, model.num_pixels, batch=True)
    threshold = check_positive(threshold, "threshold")
    if len(x) < 2:
        raise ValueError(f"x must hold at least 2 data points to measure a variance, "
                         f"got {len(x)}")
    q = model.encode(x)
    try:
        mean = q.mean
    except NotImplementedError as err:
        raise TypeError(f"active_units needs an encoder family whose q has a mean "
                        f"(E_q[z | x]), got {type(q).__name__}") from err
    variances = mean.var(dim=0, unbiased=True).numpy().astype(np.float64)
    return int((variances > threshold).sum()), variances


@torch.no_grad()
def kl_per_unit(model: VAE, x: torch.Tensor) -> np.ndarray:
    """Average over ``x`` of each latent unit's closed-form KL(q(z_u | x) || N(0, 1)).

    The rate split by unit: the sum over units is the average KL term of the ELBO.
    Used by chapter 6 to see free bits hold units at their floor.

    Returns
    -------
    numpy.ndarray, shape (latent_dim,)

    Raises
    ------
    TypeError
        If the encoder is not of the diagonal Gaussian family (no per-unit KL).
    """
    model = _check_model(model)
    x = _check_data(x, model.num_pixels, batch=True)
    q = _require_diagonal_gaussian(model.encode(x), "kl_per_unit")
    return _kl_units(q.base_dist.loc, q.logvar).mean(0).numpy().astype(np.float64)


def decoder_gradient_by_quadrature(model: VAE, x: torch.Tensor, limit: float = 5.0,
                                   num_points: int = 201) -> np.ndarray:
    """Exact gradient of mean_n log p_theta(x_n) with respect to the decoder (2-D latent).

    The grid quadrature of :func:`grid_log_marginal`, differentiated by autograd: the
    reference that the IWAE_k decoder gradients approach as k grows. Used by chapter 6.

    Returns
    -------
    numpy.ndarray
        The decoder gradient, flattened in the order of ``model.decoder.parameters()``.
    """
    model, x, axis, grid = _quadrature_grid(model, x, limit, num_points)
    logits = model.decode(grid.float()).to(torch.float64)
    x64 = x.to(torch.float64)
    log_joint = (x64 @ logits.T - F.softplus(logits).sum(-1)
                 + _log_prior(grid))
    log_px = torch.logsumexp(log_joint, dim=1)                   # + const (cell area)
    params = list(model.decoder.parameters())
    grads = torch.autograd.grad(log_px.mean(), params)
    return torch.cat([g.reshape(-1) for g in grads]).numpy()


@dataclass
class AggregatePosterior:
    """The aggregate posterior q(z) = (1/N) sum_n q_phi(z | x_n) on a 2-D grid.

    Attributes
    ----------
    axis : numpy.ndarray, shape (m,)
        Grid coordinates along each latent axis.
    log_density : numpy.ndarray, shape (m, m)
        log q(z) at ``(z_1, z_2) = (axis[i], axis[j])`` in ``log_density[i, j]``.
    kl_to_prior : float
        KL(q(z) || N(0, I)) by quadrature.
    mutual_information : float
        I_q(x; z) = mean_n KL(q(z | x_n) || q(z)) by quadrature.
    mean_rate : float
        mean_n KL(q(z | x_n) || N(0, I)) in closed form. Hoffman and Johnson (2016):
        ``mean_rate = mutual_information + kl_to_prior``.
    """

    axis: np.ndarray
    log_density: np.ndarray
    kl_to_prior: float
    mutual_information: float
    mean_rate: float


@torch.no_grad()
def aggregate_posterior(model: VAE, x: torch.Tensor, limit: float = 5.0,
                        num_points: int = 201, max_batch: int = 2**12
                        ) -> AggregatePosterior:
    """The aggregate posterior of a 2-D VAE on a grid, its KL to the prior and I(x; z).

    q(z) is the equal-weight mixture of the encoder's Gaussians over the data ``x``
    (Hoffman and Johnson 2016). The average KL term of the ELBO
    splits exactly into the mutual information between x and z under q and the KL from
    q(z) to the prior; both are computed here by Riemann sums on a
    ``num_points`` x ``num_points`` grid over [-limit, limit]^2 in float64, and the sum
    is compared with the closed form in chapter 6.

    Returns
    -------
    AggregatePosterior

    Raises
    ------
    TypeError
        If the encoder is not of the diagonal Gaussian family.
    ValueError
        If the latent space is not 2-D, or for bad grid sizes.
    """
    model = _check_model(model)
    x = _check_data(x, model.num_pixels, batch=True)
    if model.latent_dim != 2:
        raise ValueError(f"model must have a 2-D latent space for the grid, got "
                         f"latent_dim={model.latent_dim}")
    limit = check_positive(limit, "limit")
    num_points = check_positive_int(num_points, "num_points", minimum=3)
    q = _require_diagonal_gaussian(model.encode(x), "aggregate_posterior")
    mean, logvar = q.mean.to(torch.float64), q.logvar.to(torch.float64)
    axis = torch.linspace(-limit, limit, num_points, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)                       # (G, 2), row-major
    log_cell = 2 * math.log(float(axis[1] - axis[0]))
    log_n = math.log(len(x))
    # log q(z | x_n) = a_1(z_1, n) + a_2(z_2, n): a diagonal Gaussian is a product over
    # the two axes, so each axis' term is computed on the m axis points once, shape (m,
    # N), and a block of whole grid rows is one broadcast sum (not G x N densities)
    per_axis = [diagonal_gaussian_log_density(axis[:, None, None], mean[:, d:d + 1],
                                              logvar[:, d:d + 1]) for d in (0, 1)]
    rows = max(1, check_positive_int(max_batch, "max_batch") // num_points)
    log_q_parts, kl_prior, mutual = [], 0.0, 0.0
    for start in range(0, num_points, rows):
        first = per_axis[0][start:start + rows]                              # (r, N)
        log_q_cond = (first[:, None, :] + per_axis[1][None, :, :]).reshape(-1, len(x))
        chunk = grid[start * num_points:(start + len(first)) * num_points]   # (g, 2)
        log_q = torch.logsumexp(log_q_cond, dim=1) - log_n                    # (g,)
        log_p = _log_prior(chunk)
        kl_prior += float((torch.exp(log_q + log_cell) * (log_q - log_p)).sum())
        weights = torch.exp(log_q_cond + log_cell - log_n)
        mutual += float((weights * (log_q_cond - log_q[:, None])).sum())
        log_q_parts.append(log_q)
    rate = float(gaussian_kl(mean, torch.exp(logvar), 0.0, 1.0).sum(-1).mean())
    log_density = torch.cat(log_q_parts).reshape(num_points, num_points).numpy()
    return AggregatePosterior(axis.numpy(), log_density, kl_prior, mutual, rate)


def fano_error_bound(conditional_entropy: float, num_classes: int) -> float:
    """Smallest error probability allowed by Fano's inequality, in nats.

    Any guess of a class Y from a code Z errs with probability P_e satisfying
    H(Y | Z) <= h(P_e) + P_e log(num_classes - 1), with h the binary entropy (nats).
    Returns the smallest P_e in [0, 1 - 1/num_classes] for which this holds (Cover and
    Thomas 2006, theorem 2.10.1). Used by chapter 6 with H(Y | Z) >= H(Y) - I(x; z).
    """
    num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
    h = check_nonnegative(conditional_entropy, "conditional_entropy")
    if h > math.log(num_classes) + 1e-12:
        raise ValueError(f"conditional_entropy cannot exceed log(num_classes) = "
                         f"{math.log(num_classes):.4g}, got {h!r}")

    def rhs(p: float) -> float:
        binary = 0.0 if p in (0.0, 1.0) else -p * math.log(p) - (1 - p) * math.log1p(-p)
        return binary + p * math.log(num_classes - 1)

    lo, hi = 0.0, 1.0 - 1.0 / num_classes            # rhs increases on this interval
    if h >= rhs(hi):
        return hi
    # bisect until lo and hi are adjacent floats (about 1100 halvings for the smallest
    # answers, a few dozen for answers of order 1: the same result as before)
    for _ in range(2000):
        mid = 0.5 * (lo + hi)
        if not lo < mid < hi:
            break
        lo, hi = (mid, hi) if rhs(mid) < h else (lo, mid)
    return hi


def inference_gaps(model: VAE, x: torch.Tensor, log_px: torch.Tensor,
                   num_steps: int = 300, lr: float = 0.01, k: int = 1000
                   ) -> dict[str, object]:
    """Amortisation and approximation gaps of ``x`` (Cremer et al. 2018).

    Refines q per data point with :func:`refine_posterior` (``num_steps`` Adam steps
    from the encoder's output), then estimates the ELBO of the encoder's q and of the
    refined q with ``k`` fresh samples each (:func:`iwae_bound`). With ``log_px`` the
    exact log-likelihood (for a 2-D latent, :func:`grid_log_marginal`):
    amortisation gap = mean(ELBO_refined - ELBO_encoder), approximation gap =
    mean(log_px - ELBO_refined). Used by chapter 6.

    Returns
    -------
    dict
        ``"amortisation"``, ``"approximation"`` (floats), ``"elbo_encoder"``,
        ``"elbo_refined"`` (tensors of shape (n,)) and ``"trace"`` (the refinement's
        mean stochastic ELBO per step).
    """
    model = _check_model(model)
    x = _check_data(x, model.num_pixels, binary=True, batch=True)
    if not isinstance(log_px, torch.Tensor) or log_px.shape != (len(x),):
        raise ValueError(f"log_px must be a tensor of shape ({len(x)},)")
    _check_real_tensor(log_px, "log_px")
    mean, logvar, trace = refine_posterior(model, x, num_steps, lr)
    elbo_encoder = iwae_bound(model, x, k)[1]
    elbo_refined = iwae_bound(model, x, k, mean, logvar)[1]
    return {"amortisation": float((elbo_refined - elbo_encoder).mean()),
            "approximation": float((log_px - elbo_refined).mean()),
            "elbo_encoder": elbo_encoder, "elbo_refined": elbo_refined, "trace": trace}


