"""The VAE's evidence lower bound and the importance-weighted bound, in one place (chapter 6).

Every ELBO of the package is computed here, from three kernels: the decoder's
log-likelihood log p(x | z) (:func:`_log_likelihood`), the prior
(:func:`~elbo_lib.vae.model.log_prior`) and the KL of q to the prior
(:func:`_kl_to_prior`, whose diagonal-Gaussian case :func:`_kl_units` is the package's
one Gaussian KL). Two estimators are built on them: :func:`_elbo_terms`, the ELBO's
two terms with the KL in closed form where one is known (:func:`elbo_terms`,
:func:`evaluate_elbo`, :func:`elbo_per_point` and every training loop of the ELBO), and
:func:`_log_weights`, the log importance weights log p(x, z) - log q(z | x), whose mean
over samples estimates the same ELBO and whose log-mean-exp is IWAE_k
(:func:`importance_log_weights`, :func:`iwae_bound`, :func:`iwae_objective` and IWAE
training). Public functions check their inputs once and call the kernels, which do not
check; the training loops call the kernels directly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import (
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from elbo_lib._validation import check_positive_int
from elbo_lib.bounds import importance_weighted_bound
from elbo_lib.gaussians import diagonal_gaussian_log_density
from elbo_lib.vae.model import (
    VAE,
    DiagonalGaussianPosterior,
    _check_data,
    _check_mean_logvar,
    _check_model,
    _check_real_tensor,
    _dtype_of,
    _log_prior,
)

__all__ = [
    "bernoulli_log_likelihood",
    "elbo_per_point",
    "elbo_terms",
    "evaluate_elbo",
    "importance_log_weights",
    "iwae_bound",
    "iwae_objective",
    "kl_to_prior",
]


def kl_to_prior(q: Distribution, z: torch.Tensor | None = None) -> torch.Tensor:
    """KL(q(z | x) || N(0, I)) of every data point: closed form if known, else Monte Carlo.

    For a :class:`DiagonalGaussianPosterior`, the book's formula
    (:func:`elbo_lib.gaussians.gaussian_kl` with var = exp(logvar), summed over units).
    Otherwise torch's registered closed form against N(0, I) written as an
    ``Independent(Normal)`` or a ``MultivariateNormal`` (a full-covariance Gaussian
    encoder, for example); failing both, the Monte Carlo estimate
    mean over samples of log q(z | x) - log p(z) at the given reparameterised samples.
    Chapters 6 and 7.

    Parameters
    ----------
    q : torch.distributions.Distribution
        Batch shape (n,), event shape (latent_dim,).
    z : torch.Tensor or None
        Samples of q, shape (n, latent_dim) or (S, n, latent_dim); needed only when
        there is no closed form.

    Returns
    -------
    torch.Tensor, shape (n,)

    Raises
    ------
    ValueError
        If there is no closed form and no samples were given, or z is not finite.
    """
    if not isinstance(q, Distribution):
        raise TypeError(f"q must be a torch.distributions.Distribution, "
                        f"got {type(q).__name__}")
    if z is not None:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
        _check_real_tensor(z, "z")
    return _kl_to_prior(q, z)


def _kl_to_prior(q: Distribution, z: torch.Tensor | None) -> torch.Tensor:
    """:func:`kl_to_prior` without the checks of q and z."""
    if isinstance(q, DiagonalGaussianPosterior):
        return _kl_units(q.base_dist.loc, q.logvar).sum(-1)
    closed = _closed_form_kl(q)
    if closed is not None:
        return closed
    if z is None:
        raise ValueError(f"torch has no closed-form KL for {type(q).__name__} against "
                         "N(0, I): pass reparameterised samples z for a Monte Carlo KL")
    kl = _log_q(q, z) - _log_prior(z)
    return kl.reshape(-1, *q.batch_shape).mean(0)


_ZERO_ONE: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}


def _kl_units(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-unit closed-form KL(N(mean, exp(logvar)) || N(0, 1)): the package's Gaussian KL.

    The book's formula, :func:`elbo_lib.gaussians.gaussian_kl` with mean_p = 0 and
    var_p = 1 (as tensors of the dtype of ``mean``: the same arithmetic and the same
    bits, without its input checks, as this runs at every training step) and
    var = exp(logvar), wherever that variance is a positive float; where it underflows
    to 0 (logvar below -104 in float32, -745 in float64) or overflows, the same closed
    form in log-variance space, (exp(logvar) - logvar + mean^2 - 1) / 2 (+inf where the
    KL itself overflows).
    """
    var = torch.exp(logvar)
    if not bool(((var > 0) & torch.isfinite(var)).all()):
        return 0.5 * (var - logvar + mean ** 2 - 1.0)
    zero, one = _ZERO_ONE.get(var.dtype) or _ZERO_ONE.setdefault(
        var.dtype, (torch.tensor(0.0, dtype=var.dtype), torch.tensor(1.0, dtype=var.dtype)))
    return 0.5 * (torch.log(one) - torch.log(var) + (var + (mean - zero) ** 2) / one - 1.0)


def _log_q(q: Distribution, z: torch.Tensor) -> torch.Tensor:
    """log q(z | x) of samples z of q, without the checks of ``q.log_prob``."""
    if isinstance(q, DiagonalGaussianPosterior):
        return diagonal_gaussian_log_density(z, q.base_dist.loc, q.logvar, validate=False)
    return q.log_prob(z)


def _closed_form_kl(q: Distribution) -> torch.Tensor | None:
    try:
        dtype = q.mean.dtype
    except NotImplementedError:
        return None
    zeros = torch.zeros(q.event_shape, dtype=dtype)
    priors = (Independent(Normal(zeros, torch.ones_like(zeros)), 1),
              MultivariateNormal(zeros, scale_tril=torch.diag(torch.ones_like(zeros))))
    for prior in priors:
        try:
            return kl_divergence(q, prior)
        except NotImplementedError:
            continue
    return None


def bernoulli_log_likelihood(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x | z) = sum_j [x_j log sigma(l_j) + (1 - x_j) log(1 - sigma(l_j))].

    Computed from the logits l as sum_j (x_j l_j - softplus(l_j)), the stable form of
    binary cross-entropy. ``logits`` may carry extra leading (sample) axes; ``x`` is
    broadcast against them.

    ``x`` must be binary (0 or 1: a Bernoulli log-likelihood of grey levels is not a
    log-likelihood) and finite, as must the logits; x is converted to the logits' dtype.

    Returns
    -------
    torch.Tensor
        Shape ``logits.shape[:-1]``.

    Raises
    ------
    TypeError, ValueError
        If x is not a binary tensor, or the logits are not finite or of the wrong shape.
    """
    x = _check_data(x, binary=True)
    if not isinstance(logits, torch.Tensor) or logits.shape[-x.ndim:] != x.shape:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must end in the shape of x {tuple(x.shape)}, got {got}")
    _check_real_tensor(logits, "logits")
    return _bernoulli_log_likelihood(x, logits)


def _bernoulli_log_likelihood(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """:func:`bernoulli_log_likelihood` without the checks (x converted to the logits'
    dtype and broadcast against them)."""
    if x.dtype != logits.dtype:
        x = x.to(logits.dtype)
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits),
                                               reduction="none").sum(-1)


#: Rows of z per block in :func:`_log_likelihood`.
_BLOCK_ROWS = 4096


def _log_likelihood(model: VAE, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p_theta(x | z) = ``bernoulli_log_likelihood(x, model.decode(z))``, shape
    ``z.shape[:-1]``; without gradients, for the default decoder, by a cheaper program.
    The kernel of every ELBO of the package: x (binary, checked by the caller) of shape
    (n, D) or (D,), z of shape (..., n, latent_dim), neither checked here.

    The evaluations of chapter 6 (IWAE_1000 of 40 models, ELBOs with 100 samples) spend
    most of their time in the decoder's tanh and the cross-entropy. With gradients off
    and the default decoder (Linear, Tanh, Linear), this uses
    tanh(a) = 2 sigmoid(2a) - 1 folded into the weights, so that one sigmoid replaces
    the tanh: logits = sigmoid(z (2 W1)^T + 2 b1) (2 W2)^T + (b2 - W2 1), and the
    log-likelihood sum_j (x_j l_j - softplus(l_j)) (the stable form of
    :func:`bernoulli_log_likelihood`) in two passes over the logits. The same function
    in exact arithmetic; in float32 it differs from the tanh form by round-off (about
    1e-7 relative, as any reordering of the matrix products would), at about half the
    cost. With gradients on, or another decoder, it is the plain form.
    """
    layers = model.decoder
    if (torch.is_grad_enabled() or type(layers) is not nn.Sequential or len(layers) != 3
            or type(layers[0]) is not nn.Linear or type(layers[1]) is not nn.Tanh
            or type(layers[2]) is not nn.Linear or layers[0].bias is None
            or layers[2].bias is None):
        return _bernoulli_log_likelihood(x, model._decode(z))
    first, last = layers[0], layers[2]
    out_shape = (*z.shape[:-1], last.out_features)
    if x.shape != out_shape[len(out_shape) - x.ndim:]:
        raise ValueError(f"logits must end in the shape of x {tuple(x.shape)}, got "
                         f"{out_shape}")
    dtype = first.weight.dtype
    w1, b1 = 2 * first.weight.T, 2 * first.bias
    w2, b2 = 2 * last.weight.T, last.bias - last.weight.sum(1)
    x = x.to(dtype)
    # blocks of whole copies of x, of about _BLOCK_ROWS rows: the intermediates stay in
    # the cache (one pass over 2 MB arrays costs several times as much per element)
    n = math.prod(x.shape[:-1]) if x.ndim > 1 else 1
    z = z.to(dtype).reshape(-1, n, z.shape[-1])
    step = max(1, _BLOCK_ROWS // n)
    parts = []
    for block in z.split(step):
        s = torch.sigmoid(torch.addmm(b1, block.reshape(-1, block.shape[-1]), w1))
        logits = torch.addmm(b2, s, w2).reshape(len(block), n, -1)
        parts.append(torch.sub(x.reshape(n, -1) * logits, F.softplus(logits)).sum(-1))
    return torch.cat(parts).reshape(out_shape[:-1])


def elbo_terms(model: VAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-sample reconstruction term and KL to the prior of each data point.

    reconstruction_i = log p_theta(x_i | z_i) with z_i ~ q_phi(z | x_i) reparameterised
    (``rsample``), kl_i = KL(q_phi(z | x_i) || N(0, I)) by :func:`kl_to_prior` (closed
    form when known, else log q(z_i | x_i) - log p(z_i) at the same sample). The ELBO
    of x_i is ``reconstruction_i - kl_i``. Differentiable in encoder and decoder
    parameters; any encoder family.

    Returns
    -------
    (reconstruction, kl) : tuple of torch.Tensor, each of shape (n,)
    """
    model = _check_model(model)
    x = _check_data(x, model.num_pixels, binary=True, batch=True)
    reconstruction, kl = _elbo_terms(model, model.encode(x), x)
    return _finite(reconstruction, "reconstruction"), _finite(kl, "kl")


def _elbo_terms(model: VAE, q: Distribution, x: torch.Tensor, sample_shape=()
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ELBO's two terms at reparameterised samples z ~ q of shape ``sample_shape +
    (n, latent_dim)``: log p(x | z) (shape ``sample_shape + (n,)``) and KL(q || p) (shape
    (n,); in closed form where known, else log q(z) - log p(z) averaged over the
    samples). The ELBO kernel of :func:`elbo_terms`, :func:`evaluate_elbo`,
    :func:`elbo_per_point` and the training loops; x checked by the caller."""
    z = q.rsample(sample_shape)
    return _log_likelihood(model, x, z), _kl_to_prior(q, z)


def _finite(t: torch.Tensor, name: str) -> torch.Tensor:
    """A result of a public function, refused if not finite (a model returning NaN)."""
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"the {name} is not finite: the model's encoder or decoder "
                         f"returned NaN or inf")
    return t


@torch.no_grad()
def evaluate_elbo(model: VAE, x: torch.Tensor, num_samples: int = 1) -> dict[str, float]:
    """Average ELBO of ``x`` and its two terms (reconstruction and KL), in nats per image.

    The reconstruction term is averaged over ``num_samples`` reparameterised samples per
    data point; the KL is exact where :func:`kl_to_prior` has a closed form, else
    averaged over the same samples.

    Returns
    -------
    dict
        ``{"elbo": ..., "reconstruction": ..., "kl": ...}`` as Python floats.
    """
    model = _check_model(model)
    x = _check_data(x, model.num_pixels, binary=True, batch=True)
    num_samples = check_positive_int(num_samples, "num_samples")
    out = _evaluate_elbo(model, model.encode(x), x, num_samples)
    for name, value in out.items():
        if not math.isfinite(value):
            raise ValueError(f"the {name} is not finite: the model's encoder or decoder "
                             f"returned NaN or inf")
    return out


@torch.no_grad()
def _evaluate_elbo(model: VAE, q: Distribution, x: torch.Tensor, num_samples: int = 1
                   ) -> dict[str, float]:
    """:func:`evaluate_elbo` of q = q(z | x) and x checked by the caller (the end of a
    training epoch), without the checks of its inputs and of its result."""
    reconstruction, kl = _elbo_terms(model, q, x, (num_samples,))
    reconstruction, kl = reconstruction.mean(0).mean(), kl.mean()
    return {"elbo": float(reconstruction - kl), "reconstruction": float(reconstruction),
            "kl": float(kl)}


def _check_proposal(model: VAE, x: torch.Tensor, mean, logvar) -> None:
    """An explicit proposal (mean, logvar), one diagonal Gaussian per point of x, or none."""
    if (mean is None) != (logvar is None):
        raise ValueError("give both mean and logvar, or neither (to use the encoder)")
    if mean is not None:
        _check_mean_logvar(mean, logvar)
        if mean.shape != (len(x), model.latent_dim):
            raise ValueError(f"mean and logvar must have shape ({len(x)}, "
                             f"{model.latent_dim}), got {tuple(mean.shape)} and "
                             f"{tuple(logvar.shape)}")


def importance_log_weights(model: VAE, x: torch.Tensor, k: int, mean=None,
                           logvar=None) -> torch.Tensor:
    """Log importance weights log p(x, z_i) - log q(z_i | x) for k samples per point.

    The proposal is the encoder's q_phi(z | x) (any family) unless ``mean`` and
    ``logvar`` (shape (n, latent_dim)) give another diagonal Gaussian per data point,
    such as the refined q of :func:`refine_posterior`. All k * n samples go through the
    decoder in one batched call. Not wrapped in ``no_grad``: the weights are
    differentiable (through ``rsample``).

    Returns
    -------
    torch.Tensor, shape (k, n)
    """
    model = _check_model(model)
    x = _check_data(x, model.num_pixels, binary=True, batch=True)
    k = check_positive_int(k, "k")
    _check_proposal(model, x, mean, logvar)
    q = model.encode(x) if mean is None else DiagonalGaussianPosterior(mean, logvar)
    # q.log_prob: the checked density, exact where a variance underflows (logvar -800)
    log_w = _log_weights(model, x, q, q.rsample((k,)), checked=True)[0]  # z: (k, n, latent)
    return _finite(log_w, "log importance weights")


def _log_weights(model: VAE, x: torch.Tensor, q: Distribution, z: torch.Tensor,
                 checked: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x | z) + log p(z) - log q(z | x) and log p(x | z) at samples z of q: the
    ELBO's integrand (its mean over samples estimates the ELBO, its log-mean-exp is
    IWAE_k). The kernel of the importance-weighted functions; x checked by the caller;
    the samples scored by ``q.log_prob`` with ``checked``, else by :func:`_log_q`."""
    log_px_given_z = _log_likelihood(model, x, z)
    log_q_z = q.log_prob(z) if checked else _log_q(q, z)
    return log_px_given_z + _log_prior(z) - log_q_z, log_px_given_z


@torch.no_grad()
def iwae_bound(model: VAE, x: torch.Tensor, k: int, mean=None, logvar=None,
               max_batch: int = 2**14) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-data-point IWAE_k and ELBO estimates, from the same k samples.

    IWAE_k = logsumexp_i(log w_i) - log k (:func:`elbo_lib.bounds.importance_weighted_bound`)
    and the ELBO estimate mean_i(log w_i), whose expectation is the ELBO. Data points are
    processed in chunks so that at most ``max_batch`` samples meet the decoder at once.
    Used by chapter 6 to estimate the test log-likelihood with k up to thousands.

    Parameters
    ----------
    model : VAE
    x : torch.Tensor, shape (n, D)
    k : int
        Importance samples per data point.
    mean, logvar : torch.Tensor or None
        Optional proposal per data point (see :func:`importance_log_weights`).
    max_batch : int
        Upper bound on k * (points per chunk).

    Returns
    -------
    (iwae, elbo) : tuple of torch.Tensor, each of shape (n,)
    """
    model = _check_model(model)
    x = _check_data(x, model.num_pixels, binary=True,
                    dtype=_dtype_of(model.encoder, model.decoder), batch=True)
    k = check_positive_int(k, "k")
    chunk = max(1, check_positive_int(max_batch, "max_batch") // k)
    _check_proposal(model, x, mean, logvar)   # once here, not per chunk
    iwae, elbo = [], []
    for start in range(0, len(x), chunk):   # the inputs are checked; the bounds below
        sl = slice(start, start + chunk)
        q = (model._encode(x[sl]) if mean is None
             else DiagonalGaussianPosterior._from_checked(mean[sl], logvar[sl]))
        lw = _log_weights(model, x[sl], q, q.rsample((k,)))[0]
        iwae.append(importance_weighted_bound(lw, dim=0))
        elbo.append(lw.mean(0))
    iwae, elbo = torch.cat(iwae), torch.cat(elbo)
    if not bool(torch.isfinite(elbo).all()):
        raise ValueError("the log importance weights are not finite: the model's encoder "
                         "or decoder returned NaN or inf")
    return iwae, elbo


@torch.no_grad()
def elbo_per_point(model: VAE, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
    """Per-data-point ELBO, mean_s log p(x | z_s) - KL(q || p), the KL in closed form.

    The reconstruction term is averaged over ``num_samples`` reparameterised samples;
    the KL is exact where :func:`kl_to_prior` knows a closed form (the book's
    :func:`elbo_lib.gaussians.gaussian_kl` for the default encoder), else averaged over
    the same samples. :func:`iwae_bound` estimates the same quantity from log
    importance weights (Monte Carlo in both terms), so the two agree within Monte Carlo
    error. Used by chapter 6.

    Returns
    -------
    torch.Tensor, shape (n,)
    """
    model = _check_model(model)
    x = _check_data(x, model.num_pixels, binary=True, batch=True)
    num_samples = check_positive_int(num_samples, "num_samples")
    reconstruction, kl = _elbo_terms(model, model.encode(x), x, (num_samples,))
    return _finite(reconstruction.mean(0) - kl, "ELBO")


def iwae_objective(model: VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """Differentiable single-estimate IWAE_k of each data point (Burda et al. 2016).

    log (1/k) sum_i w_i with k reparameterised samples z_i ~ q_phi(z | x); k = 1 is the
    one-sample ELBO estimate with a Monte Carlo (not closed-form) KL. Gradients flow to
    encoder and decoder; any encoder family. Used by chapter 6 with
    :func:`elbo_lib.gradients.gradient_snr`.

    Returns
    -------
    torch.Tensor, shape (n,)
    """
    return importance_weighted_bound(importance_log_weights(model, x, k), dim=0)

