"""The variational autoencoder: amortised inference with a learned encoder (chapter 6).

The model is p_theta(x, z) = p(z) p_theta(x | z) with a standard-normal prior
p(z) = N(0, I) and a Bernoulli decoder whose logits are an MLP of z. The approximate
posterior is amortised: an encoder network maps each x to a distribution q_phi(z | x)
(Kingma & Welling 2014; Rezende et al. 2014). The encoder FAMILY is pluggable: any
:class:`torch.nn.Module` mapping x of shape (B, num_pixels) to a
:class:`torch.distributions.Distribution` over z with batch shape (B,) and event shape
(latent_dim,), supporting ``rsample`` and ``log_prob`` (chapter 7's flows are one). The
default, :class:`GaussianEncoder`, is the diagonal Gaussian of chapter 6: an MLP
returning the mean and log-variance, as a :class:`DiagonalGaussianPosterior`.
Encoder and decoder are trained together by stochastic gradient ascent on

.. math::

    \\mathcal L(\\theta, \\phi; x) = \\mathbb E_{q_\\phi(z\\mid x)}[\\log p_\\theta(x\\mid z)]
    - \\mathrm{KL}(q_\\phi(z\\mid x) \\,\\|\\, p(z)),

with reparameterised samples (z = mean + exp(logvar / 2) * eps for the default) and the
KL in closed form where one is known (:func:`kl_to_prior`: the book's formula
:func:`elbo_lib.gaussians.gaussian_kl` for the default, ``torch.distributions``'
registered KL for other Gaussians) or else by Monte Carlo, log q(z | x) - log p(z) at
the same samples. Functions that only make sense for the diagonal Gaussian
(:func:`kl_per_unit`, :func:`aggregate_posterior`, :func:`refine_posterior`,
:func:`inference_gaps`) raise a ``TypeError`` for other families. The module also holds the tighter
importance-weighted bound (Burda et al. 2016), per-datapoint refinement of q for the
amortisation gap (Cremer et al. 2018), exact 2-D quadrature of log p(x) as the
reference answer, the active-unit count for posterior collapse, wake-sleep
training (Hinton et al. 1995) for comparison, and :func:`train_replicates`, which
trains several independent runs (seeds) of one architecture as one tensor program.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import ndtri
from torch import nn
from torch.distributions import (
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
    kl_divergence,
)
from tqdm import tqdm

from elbo_lib._validation import (
    LOG_2PI,
    as_numeric_array,
    check_finite_tensor,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_real,
)
from elbo_lib.bounds import importance_weighted_bound
from elbo_lib.gaussians import diagonal_gaussian_log_density, gaussian_kl

__all__ = [
    "VAE",
    "AggregatePosterior",
    "DiagonalGaussianPosterior",
    "GaussianEncoder",
    "TrainingHistory",
    "active_units",
    "aggregate_posterior",
    "decoder_gradient_by_quadrature",
    "elbo_per_point",
    "fano_error_bound",
    "fit_encoder",
    "inference_gaps",
    "iwae_objective",
    "kl_per_unit",
    "train_vae_variant",
    "as_tensor",
    "bernoulli_log_likelihood",
    "elbo_terms",
    "evaluate_elbo",
    "grid_log_marginal",
    "importance_log_weights",
    "iwae_bound",
    "kl_to_prior",
    "latent_grid",
    "refine_posterior",
    "reparameterize",
    "train_vae",
    "train_replicates",
    "train_wake_sleep",
]



class DiagonalGaussianPosterior(Independent):
    """q(z | x) = N(mean, diag(exp(logvar))) per data point: the default encoder family.

    ``Independent(Normal(mean, exp(logvar / 2)), 1)`` that keeps ``logvar`` and computes
    with the book's formulas (chapter 6): :meth:`rsample` is
    ``mean + exp(logvar / 2) * eps`` (:func:`reparameterize`), :meth:`log_prob` is
    :func:`elbo_lib.gaussians.diagonal_gaussian_log_density`, and :func:`kl_to_prior`
    uses :func:`elbo_lib.gaussians.gaussian_kl` with var = exp(logvar).

    Parameters
    ----------
    mean, logvar : torch.Tensor, same shape (..., latent_dim)

    Attributes
    ----------
    logvar : torch.Tensor
        The log-variances; ``mean`` is the inherited property.
    """

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor) -> None:
        _check_mean_logvar(mean, logvar)
        if mean.ndim == 0:
            raise ValueError("mean and logvar must have a latent axis, shape (..., latent_dim)")
        super().__init__(Normal(mean, torch.exp(0.5 * logvar), validate_args=False), 1,
                         validate_args=False)
        self.logvar = logvar

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        """Reparameterised samples mean + exp(logvar / 2) * eps, shape
        ``sample_shape + batch_shape + (latent_dim,)``."""
        return _reparameterize(self.base_dist.loc, self.logvar,
                               self._extended_shape(_check_sample_shape(sample_shape)))

    def sample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        """:meth:`rsample` without gradients (the same random numbers)."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log N(value; mean, diag(exp(logvar))), summed over the latent axis."""
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"value must be a torch.Tensor, got {type(value).__name__}")
        if value.shape[-1:] != self.event_shape:
            raise ValueError(f"value must have shape (..., {self.event_shape[0]}), got "
                             f"{tuple(value.shape)}")
        if _TRUSTED:  # inside a training step or an evaluation that checked its inputs
            return diagonal_gaussian_log_density(value, self.base_dist.loc, self.logvar,
                                                 validate=False)
        _check_real_tensor(value, "value")
        return diagonal_gaussian_log_density(value, self.base_dist.loc, self.logvar)


class GaussianEncoder(nn.Sequential):
    """The default encoder: x -> tanh hidden layer -> (mean, logvar) of q_phi(z | x).

    A one-hidden-layer MLP with 2 * latent_dim outputs, split into the mean and the
    log-variance of a :class:`DiagonalGaussianPosterior` (chapter 6).

    Parameters
    ----------
    num_pixels, latent_dim, hidden : int
        Input size, latent dimension and hidden width.
    """

    def __init__(self, num_pixels: int, latent_dim: int, hidden: int = 128) -> None:
        num_pixels = check_positive_int(num_pixels, "num_pixels")
        latent_dim = check_positive_int(latent_dim, "latent_dim")
        hidden = check_positive_int(hidden, "hidden")
        super().__init__(nn.Linear(num_pixels, hidden), nn.Tanh(),
                         nn.Linear(hidden, 2 * latent_dim))

    def forward(self, x: torch.Tensor) -> DiagonalGaussianPosterior:
        """q_phi(z | x) for x of shape (B, num_pixels): batch (B,), event (latent_dim,).

        ``x`` of another floating dtype (float64) is converted to the weights' dtype.
        """
        first = self[0]
        x = _check_data(x, first.in_features, dtype=first.weight.dtype)
        mean, logvar = super().forward(x).chunk(2, dim=-1)
        return DiagonalGaussianPosterior(mean, logvar)


class VAE(nn.Module):
    """A VAE with a pluggable encoder family and a Bernoulli decoder (chapters 6, 7).

    Parameters
    ----------
    num_pixels : int
        Data dimension D (64 for the 8x8 digits, 784 for MNIST).
    latent_dim : int
        Dimension of z (2 for the manifold figures).
    hidden : int
        Width of the hidden layer of the decoder (and of the default encoder).
    encoder : torch.nn.Module or None
        Maps x of shape (B, num_pixels) to a torch Distribution over z with batch shape
        (B,) and event shape (latent_dim,) that supports ``rsample`` and ``log_prob``.
        ``None``: a :class:`GaussianEncoder` of width ``hidden``, created before the
        decoder (so a seeded VAE draws the same initial weights as before).

    Attributes
    ----------
    encoder : torch.nn.Module
        x -> q_phi(z | x).
    decoder : torch.nn.Sequential
        z -> logits of the D independent Bernoulli pixels of p_theta(x | z).
    """

    def __init__(self, num_pixels: int, latent_dim: int, hidden: int = 128,
                 encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.num_pixels = check_positive_int(num_pixels, "num_pixels")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.hidden = check_positive_int(hidden, "hidden")
        if encoder is None:
            encoder = GaussianEncoder(num_pixels, latent_dim, hidden)
        elif not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be a torch.nn.Module returning a "
                            f"Distribution, got {type(encoder).__name__}")
        self.encoder = encoder
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Tanh(),
                                     nn.Linear(hidden, num_pixels))

    def encode(self, x: torch.Tensor) -> Distribution:
        """q_phi(z | x): batch shape ``x.shape[:-1]``, event shape ``(latent_dim,)``.

        ``x`` may be float32 or float64 (converted to the dtype of the encoder's weights,
        float32 by default).

        Raises
        ------
        TypeError, ValueError
            If x is not a finite tensor of ``num_pixels`` columns, or the encoder does not
            return a Distribution of the promised shapes.
        """
        if not _TRUSTED:  # a trusted caller passes x checked and in the model's dtype
            x = _check_data(x, self.num_pixels, dtype=_dtype_of(self.encoder, self.decoder))
        q = self.encoder(x)
        if not isinstance(q, Distribution):
            raise TypeError(f"the encoder must return a torch.distributions.Distribution "
                            f"over z, got {type(q).__name__}")
        if (tuple(q.batch_shape) != tuple(x.shape[:-1])
                or tuple(q.event_shape) != (self.latent_dim,)):
            raise ValueError(f"the encoder's q must have batch_shape {tuple(x.shape[:-1])} "
                             f"and event_shape ({self.latent_dim},), got "
                             f"{tuple(q.batch_shape)} and {tuple(q.event_shape)}")
        return q

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits of p_theta(x | z), shape ``(..., num_pixels)``.

        ``z`` may be float32 or float64 (converted to the decoder's dtype, float32 by
        default); it must be finite.
        """
        _check_latent(z, self.latent_dim)
        dtype = _dtype_of(self.decoder)
        return self.decoder(z if z.dtype == dtype else z.to(dtype))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Distribution]:
        """One reparameterised pass: returns ``(logits, q)``."""
        q = self.encode(x)
        return self.decode(q.rsample()), q


def _check_latent(z, latent_dim: int) -> None:
    """z of shape (..., latent_dim), finite unless inside a checked loop."""
    if not isinstance(z, torch.Tensor) or z.shape[-1:] != (latent_dim,):
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"z must be a tensor of shape (..., {latent_dim}), got {got}")
    if not _TRUSTED:
        _check_real_tensor(z, "z")


def _check_mean_logvar(mean, logvar) -> None:
    if _TRUSTED:
        return
    if not isinstance(mean, torch.Tensor) or not isinstance(logvar, torch.Tensor):
        raise TypeError(f"mean and logvar must be tensors, got {type(mean).__name__} "
                        f"and {type(logvar).__name__}")
    if mean.shape != logvar.shape:
        raise ValueError(f"mean and logvar must have the same shape, got {tuple(mean.shape)} "
                         f"and {tuple(logvar.shape)}")
    _check_real_tensor(mean, "mean")
    _check_real_tensor(logvar, "logvar")


def _check_real_tensor(t: torch.Tensor, name: str) -> torch.Tensor:
    """A finite real tensor (complex tensors refused by name, before any arithmetic)."""
    if t.is_complex():
        raise TypeError(f"{name} must be a real tensor, got dtype {t.dtype}")
    return check_finite_tensor(t, name)


def _check_sample_shape(sample_shape) -> torch.Size:
    if isinstance(sample_shape, int) or not isinstance(sample_shape, tuple | list):
        raise TypeError(f"sample_shape must be a tuple (or torch.Size) of ints, got "
                        f"{type(sample_shape).__name__}")
    for n in sample_shape:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"sample_shape must be a tuple of ints, got {sample_shape!r}")
        if n < 0:
            raise ValueError(f"sample_shape must hold sizes >= 0, got {tuple(sample_shape)}")
    return torch.Size(sample_shape)


def _dtype_of(*modules: nn.Module) -> torch.dtype:
    """The dtype of the first parameter of the first module that has one (float32).

    The parameter that ``module.parameters()`` yields first (a pre-order walk of the
    submodules), found without building that generator: this runs twice per training
    step, where ``parameters()`` cost more than the check it serves.
    """
    for module in modules:
        stack = [module]
        while stack:
            current = stack.pop()
            for p in current._parameters.values():
                if p is not None:
                    return p.dtype
            stack.extend(reversed(current._modules.values()))
    return torch.get_default_dtype()


def _require_diagonal_gaussian(q: Distribution, what: str) -> DiagonalGaussianPosterior:
    if not isinstance(q, DiagonalGaussianPosterior):
        raise TypeError(f"{what} needs the diagonal Gaussian encoder family (an encoder "
                        f"returning elbo_lib.vae.DiagonalGaussianPosterior, with a mean "
                        f"and a logvar per unit), got {type(q).__name__}")
    return q


def _log_prior(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last axis."""
    return -0.5 * (LOG_2PI * z.shape[-1] + (z**2).sum(-1))


def _stopped(where: str, epoch: int, num_epochs: int, step: int | None, lr: float,
             reason: str) -> str:
    at = "the end-of-epoch evaluation" if step is None else f"step {step + 1}"
    return (f"{where} stopped at epoch {epoch + 1} of {num_epochs}, {at}: "
            f"{reason} (a smaller lr than {lr} may help)")


#: True inside a training step (see :func:`_stop_on_error`): its data were validated once
#: by the loop, and a NaN anywhere reaches the loss, which is checked every step, so the
#: per-call input checks of encode/decode/KL/likelihood are skipped there (they cost
#: about a quarter of a small VAE's training time). Numerics are the same either way.
_TRUSTED = False


@contextmanager
def _trusted():
    """Skip the per-call input checks inside: the caller has validated its inputs, and
    checks what comes out (a non-finite loss or result)."""
    global _TRUSTED
    trusted, _TRUSTED = _TRUSTED, True
    try:
        yield
    finally:
        _TRUSTED = trusted


@contextmanager
def _stop_on_error(where: str, epoch: int, num_epochs: int, step: int | None, lr: float):
    """Run one training step (or evaluation) on inputs its loop has validated; re-raise a
    ValueError (a non-finite loss) naming the epoch and step at which it happened."""
    with _trusted():
        try:
            yield
        except ValueError as err:
            raise ValueError(_stopped(where, epoch, num_epochs, step, lr, str(err))) from err


@contextmanager
def _restore_on_error(*modules: nn.Module):
    """Put the parameters (and buffers) of ``modules`` back as they were on entry when
    the block raises: a training loop that stops (a non-finite loss, naming the step)
    leaves the model as the caller gave it, not half-way to NaN. One copy per call."""
    saved = [copy.deepcopy(m.state_dict()) for m in modules]
    try:
        yield
    except BaseException:
        with torch.no_grad():
            for module, state in zip(modules, saved, strict=True):
                module.load_state_dict(state)
        raise


def _dream(probs: torch.Tensor) -> torch.Tensor:
    """Bernoulli pixels of probabilities ``probs``; a NaN probability (a diverged
    decoder) is the library's ValueError, not torch's RuntimeError."""
    try:
        return torch.bernoulli(probs)
    except RuntimeError as err:
        raise ValueError("the decoder's pixel probabilities are not finite") from err


def _check_loss(loss: torch.Tensor) -> None:
    if not bool(torch.isfinite(loss)):
        raise ValueError("the loss is not finite")


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
        if not _TRUSTED:
            _check_real_tensor(z, "z")
    if isinstance(q, DiagonalGaussianPosterior):
        return _kl_units(q).sum(-1)
    closed = _closed_form_kl(q)
    if closed is not None:
        return closed
    if z is None:
        raise ValueError(f"torch has no closed-form KL for {type(q).__name__} against "
                         "N(0, I): pass reparameterised samples z for a Monte Carlo KL")
    kl = q.log_prob(z) - _log_prior(z)
    return kl.reshape(-1, *q.batch_shape).mean(0)


_ZERO_ONE: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}


def _kl_units(q: DiagonalGaussianPosterior) -> torch.Tensor:
    """Per-unit closed-form KL to N(0, 1), shape (n, latent_dim).

    :func:`~elbo_lib.gaussians.gaussian_kl` with var = exp(logvar) wherever that variance
    is a positive float; where it underflows to 0 (logvar below -104 in float32, -745 in
    float64) or overflows, the same closed form in log-variance space,
    (exp(logvar) - logvar + mean^2 - 1) / 2 (+inf where the KL itself overflows).
    Inside a training step the first form only (a KL that underflowed there stops the
    loop with a non-finite loss naming the step; a float64 model goes to -745).
    """
    var = torch.exp(q.logvar)
    if not _TRUSTED:
        if bool(((var > 0) & torch.isfinite(var)).all()):
            return gaussian_kl(q.base_dist.loc, var, 0.0, 1.0)
        return 0.5 * (var - q.logvar + q.base_dist.loc ** 2 - 1.0)
    # gaussian_kl's own arithmetic with mean_p = 0 and var_p = 1 as tensors of q's dtype
    zero, one = _ZERO_ONE.get(var.dtype) or _ZERO_ONE.setdefault(
        var.dtype, (torch.tensor(0.0, dtype=var.dtype), torch.tensor(1.0, dtype=var.dtype)))
    return 0.5 * (torch.log(one) - torch.log(var) + (var + (q.base_dist.loc - zero) ** 2)
                  / one - 1.0)


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


def _check_data(x, num_pixels: int | None = None, name: str = "x", *, binary: bool = False,
                dtype: torch.dtype | None = None, batch: bool = False) -> torch.Tensor:
    """``x`` checked (a finite tensor of ``num_pixels`` columns; with ``binary``, 0/1
    pixels for the Bernoulli decoder; with ``batch``, of shape (n, num_pixels): one
    image of shape (num_pixels,) is refused by name, as ``x[None]`` is a batch of one)
    and converted to ``dtype`` if given."""
    if _TRUSTED:
        return x if dtype is None or x.dtype == dtype else x.to(dtype)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (use elbo_lib.vae.as_tensor), "
                        f"got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one data point, got shape "
                         f"{tuple(x.shape)}")
    if batch and x.ndim != 2:
        raise ValueError(f"{name} must be a batch of shape (n, num_pixels), got shape "
                         f"{tuple(x.shape)} (one image x is the batch x[None])")
    if num_pixels is not None and x.shape[-1] != num_pixels:
        raise ValueError(f"{name} must have {num_pixels} pixels in its last axis, "
                         f"got shape {tuple(x.shape)}")
    if x.is_complex():
        raise TypeError(f"{name} must be a real tensor, got dtype {x.dtype}")
    check_finite_tensor(x, name)
    if binary:
        other = (x != 0) & (x != 1)
        if bool(other.any()):
            raise ValueError(f"{name} must be binary (0 or 1) for the Bernoulli decoder, "
                             f"got {int(other.sum())} other values, e.g. "
                             f"{float(x[other][0])!r}; binarise grey images first "
                             f"(elbo_lib.datasets.binarize)")
    if dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    return x


def _check_model(model) -> VAE:
    if not isinstance(model, VAE):
        raise TypeError(f"model must be an elbo_lib.vae.VAE, got {type(model).__name__}")
    return model


def as_tensor(x) -> torch.Tensor:
    """Images as a float32 tensor with values checked to lie in [0, 1].

    Raises
    ------
    ValueError
        If ``x`` is not 2-D (n, D), is empty, not finite, or outside [0, 1].
    """
    arr = as_numeric_array(x, "x", dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"x must have shape (n, num_pixels) with n >= 1, got {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise ValueError("x must contain finite pixel values in [0, 1]")
    return torch.from_numpy(np.ascontiguousarray(arr))


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor,
                   num_samples: int | None = None) -> torch.Tensor:
    """Reparameterised samples z = mean + exp(logvar / 2) * eps with eps ~ N(0, I).

    Gradients flow to ``mean`` and ``logvar`` (the pathwise estimator of chapter 5):
    dz/dmean = 1 and dz/dlogvar = exp(logvar / 2) * eps / 2.

    Parameters
    ----------
    mean, logvar : torch.Tensor, same shape ``(..., latent_dim)``
    num_samples : int or None
        ``None``: one sample of the shape of ``mean``. Otherwise ``num_samples`` samples
        stacked in a new leading axis.

    Returns
    -------
    torch.Tensor

    Raises
    ------
    TypeError, ValueError
        If mean or logvar is not a tensor, their shapes differ, or a value is not finite.
    """
    _check_mean_logvar(mean, logvar)
    shape = mean.shape if num_samples is None else (
        check_positive_int(num_samples, "num_samples"), *mean.shape)
    return _reparameterize(mean, logvar, shape)


def _reparameterize(mean: torch.Tensor, logvar: torch.Tensor, shape) -> torch.Tensor:
    eps = torch.randn(shape, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * eps


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
    if not _TRUSTED:
        _check_real_tensor(logits, "logits")
    if x.dtype != logits.dtype:
        x = x.to(logits.dtype)
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits),
                                               reduction="none").sum(-1)


#: Rows of z per block in :func:`_log_likelihood`.
_BLOCK_ROWS = 4096


def _log_likelihood(model: VAE, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p_theta(x | z) = ``bernoulli_log_likelihood(x, model.decode(z))``, shape
    ``z.shape[:-1]``; without gradients, for the default decoder, by a cheaper program.

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
        return bernoulli_log_likelihood(x, model.decode(z))
    first, last = layers[0], layers[2]
    _check_latent(z, model.latent_dim)
    x = _check_data(x, binary=True)
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
        if not _TRUSTED:
            _check_real_tensor(logits, "logits")
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
    q = model.encode(x)
    z = q.rsample()
    reconstruction = bernoulli_log_likelihood(x, model.decode(z))
    return reconstruction, kl_to_prior(q, z)


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
    q = model.encode(x)
    z = q.rsample((num_samples,))
    reconstruction = _log_likelihood(model, x, z).mean(0).mean()
    kl = kl_to_prior(q, z).mean()
    return {"elbo": float(reconstruction - kl), "reconstruction": float(reconstruction),
            "kl": float(kl)}


@dataclass
class TrainingHistory:
    """Per-epoch averages (nats per image) recorded by :func:`train_vae`.

    ``train_*`` are averages over the epoch's minibatches (one sample each); ``val_*``
    are evaluated on the validation set at the end of each epoch. ``seconds`` is the
    wall-clock training time (never printed in a compared cell).
    """

    train_elbo: list[float] = field(default_factory=list)
    train_reconstruction: list[float] = field(default_factory=list)
    train_kl: list[float] = field(default_factory=list)
    val_elbo: list[float] = field(default_factory=list)
    val_reconstruction: list[float] = field(default_factory=list)
    val_kl: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def record(self, train: dict[str, float], val: dict[str, float]) -> None:
        """Append one epoch's train and validation averages.

        Raises
        ------
        TypeError, ValueError
            If ``train`` or ``val`` is not a mapping with finite ``"elbo"``,
            ``"reconstruction"`` and ``"kl"`` (a history never fills with NaN).
        """
        keys = ("elbo", "reconstruction", "kl")
        for part, values in (("train", train), ("val", val)):
            if not isinstance(values, Mapping):
                raise TypeError(f"{part} must be a mapping with the keys {keys}, "
                                f"got {type(values).__name__}")
            if any(key not in values for key in keys):
                raise ValueError(f"{part} must hold the keys {keys}, got {tuple(values)}")
            for key in keys:
                check_real(values[key], f"{part}[{key!r}]")
        for part, values in (("train", train), ("val", val)):
            for key in ("elbo", "reconstruction", "kl"):
                getattr(self, f"{part}_{key}").append(values[key])

    def as_arrays(self) -> dict[str, np.ndarray]:
        """Every curve as a NumPy array, keyed like the attributes."""
        return {k: np.asarray(v) for k, v in vars(self).items() if isinstance(v, list)}


def _check_training(model, x_train, x_val, num_epochs, batch_size, lr):
    model = _check_model(model)
    dtype = _dtype_of(model.encoder, model.decoder)   # converted once, not every step
    x_train = _check_data(x_train, model.num_pixels, "x_train", binary=True, dtype=dtype,
                            batch=True)
    x_val = _check_data(x_val, model.num_pixels, "x_val", binary=True, dtype=dtype,
                            batch=True)
    num_epochs = check_positive_int(num_epochs, "num_epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive(lr, "lr")
    return model, x_train, x_val, num_epochs, batch_size, lr


def _end_of_epoch(history: TrainingHistory, totals: torch.Tensor, n: int, model: VAE,
                  x_val: torch.Tensor, where: str, epoch: int, num_epochs: int,
                  lr: float) -> None:
    """Record the epoch's training averages and the validation ELBO (finite, or a stop
    naming the epoch)."""
    rec, kl_mean = (totals / n).tolist()
    with _stop_on_error(where, epoch, num_epochs, None, lr):
        history.record({"elbo": rec - kl_mean, "reconstruction": rec, "kl": kl_mean},
                       evaluate_elbo(model, x_val))


def train_vae(model: VAE, x_train: torch.Tensor, x_val: torch.Tensor, num_epochs: int,
              batch_size: int = 64, lr: float = 1e-3, beta: float = 1.0,
              progress: bool = False) -> TrainingHistory:
    """Train encoder and decoder jointly with Adam on the (beta-weighted) ELBO.

    Each step draws a minibatch (a fresh permutation of the training set every epoch,
    from torch's global generator, seeded by :func:`elbo_lib.seed_everything`), takes one
    reparameterised sample per image and ascends
    mean_i [log p_theta(x_i | z_i) - beta * KL(q_phi(z | x_i) || p(z))]
    (Kingma & Welling 2014; Kingma & Ba 2015). ``beta = 1`` is the ELBO; other values give
    the beta-VAE objective of Higgins et al. (2017). Used by chapter 6.

    Parameters
    ----------
    model : VAE
        Trained in place; any encoder family (:func:`elbo_terms`).
    x_train, x_val : torch.Tensor, shape (n, D)
    num_epochs : int
    batch_size : int
    lr : float
        Adam learning rate.
    beta : float
        Weight of the KL term (> 0).
    progress : bool
        Show a tqdm progress bar over epochs (on stderr).

    Returns
    -------
    TrainingHistory
        The history always reports the true ELBO (beta = 1) next to its two terms.

    Raises
    ------
    ValueError
        For bad sizes, or the first time the loss is not finite (naming epoch and step);
        the model's parameters are then put back as they were before the call.
    """
    model, x_train, x_val, num_epochs, batch_size, lr = _check_training(
        model, x_train, x_val, num_epochs, batch_size, lr)
    beta = check_positive(beta, "beta")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = TrainingHistory()
    n = len(x_train)
    start = time.perf_counter()
    bar = tqdm(range(num_epochs), desc=f"VAE beta={beta:g}", disable=not progress,
               mininterval=0.5)
    with _restore_on_error(model):
        for epoch in bar:
            model.train()
            totals = torch.zeros(2)
            for step, idx in enumerate(torch.randperm(n).split(batch_size)):
                with _stop_on_error("train_vae", epoch, num_epochs, step, lr):
                    reconstruction, kl = elbo_terms(model, x_train[idx])
                    loss = -(reconstruction - beta * kl).mean()
                    _check_loss(loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                totals += torch.stack([reconstruction.detach().sum(), kl.detach().sum()])
            model.eval()
            _end_of_epoch(history, totals, n, model, x_val, "train_vae", epoch, num_epochs, lr)
            bar.set_postfix(val_elbo=f"{history.val_elbo[-1]:.2f}", refresh=False)
    history.seconds = time.perf_counter() - start
    return history


def train_wake_sleep(model: VAE, x_train: torch.Tensor, x_val: torch.Tensor, num_epochs: int,
                     batch_size: int = 64, lr: float = 1e-3,
                     progress: bool = False) -> TrainingHistory:
    """Train the same networks with the wake-sleep algorithm (Hinton et al. 1995).

    Wake phase: z ~ q_phi(z | x) for a data minibatch, without reparameterisation, and a
    gradient step on the decoder only, maximising log p_theta(x | z) (the prior has no
    parameters). Sleep phase: dream (z, x) ~ p(z) p_theta(x | z) and a gradient step on the
    encoder only, maximising log q_phi(z | x) on the dream, i.e. minimising
    KL(p_theta(z | x) || q_phi(z | x)) averaged over the model's own x (any encoder
    family whose ``log_prob`` takes arbitrary z). The recorded curves are the ELBO and
    its terms, so that they compare with :func:`train_vae`. Used by chapter 6.

    Returns
    -------
    TrainingHistory

    Raises
    ------
    ValueError
        For bad sizes, or the first time a phase's loss (or the decoder's dream
        probabilities) is not finite, naming the phase, epoch and step; the model's
        parameters are then put back as they were before the call.
    """
    model, x_train, x_val, num_epochs, batch_size, lr = _check_training(
        model, x_train, x_val, num_epochs, batch_size, lr)
    opt_decoder = torch.optim.Adam(model.decoder.parameters(), lr=lr)
    opt_encoder = torch.optim.Adam(model.encoder.parameters(), lr=lr)
    history = TrainingHistory()
    n = len(x_train)
    start = time.perf_counter()
    bar = tqdm(range(num_epochs), desc="wake-sleep", disable=not progress, mininterval=0.5)
    with _restore_on_error(model):
        for epoch in bar:
            totals = torch.zeros(2)
            for step, idx in enumerate(torch.randperm(n).split(batch_size)):
                x = x_train[idx]
                # wake: fit the decoder to the encoder's explanations of real data
                with _stop_on_error("train_wake_sleep (wake phase)", epoch, num_epochs, step, lr):
                    with torch.no_grad():
                        q = model.encode(x)
                        z = q.rsample()
                        kl = kl_to_prior(q, z)
                    reconstruction = bernoulli_log_likelihood(x, model.decode(z))
                    wake_loss = -reconstruction.mean()
                    _check_loss(wake_loss)
                opt_decoder.zero_grad(set_to_none=True)
                wake_loss.backward()
                opt_decoder.step()
                # sleep: fit the encoder to the decoder's dreams
                with _stop_on_error("train_wake_sleep (sleep phase)", epoch, num_epochs, step,
                                    lr):
                    with torch.no_grad():
                        z_dream = torch.randn(len(idx), model.latent_dim)
                        x_dream = _dream(torch.sigmoid(model.decode(z_dream)))
                    sleep_loss = -model.encode(x_dream).log_prob(z_dream).mean()
                    _check_loss(sleep_loss)
                opt_encoder.zero_grad(set_to_none=True)
                sleep_loss.backward()
                opt_encoder.step()
                totals += torch.stack([reconstruction.detach().sum(), kl.sum()])
            _end_of_epoch(history, totals, n, model, x_val, "train_wake_sleep", epoch,
                          num_epochs, lr)
            bar.set_postfix(val_elbo=f"{history.val_elbo[-1]:.2f}", refresh=False)
    history.seconds = time.perf_counter() - start
    return history


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
    return _log_weights(model, x, q, q.rsample((k,)))[0]     # z: (k, n, latent_dim)


def _log_weights(model: VAE, x: torch.Tensor, q: Distribution, z: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x | z) + log p(z) - log q(z | x) and log p(x | z) at samples z of q."""
    log_px_given_z = _log_likelihood(model, x, z)
    return log_px_given_z + _log_prior(z) - q.log_prob(z), log_px_given_z


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
    with _trusted():   # the inputs are checked; the bounds are checked below
        for start in range(0, len(x), chunk):
            sl = slice(start, start + chunk)
            lw = importance_log_weights(model, x[sl], k,
                                        None if mean is None else mean[sl],
                                        None if logvar is None else logvar[sl])
            iwae.append(importance_weighted_bound(lw, dim=0))
            elbo.append(lw.mean(0))
    iwae, elbo = torch.cat(iwae), torch.cat(elbo)
    if not bool(torch.isfinite(elbo).all()):
        raise ValueError("the log importance weights are not finite: the model's encoder "
                         "or decoder returned NaN or inf")
    return iwae, elbo


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
                with _trusted():   # x is checked above and the ELBO below, every step
                    z = reparameterize(mean, logvar, num_samples)
                    reconstruction = bernoulli_log_likelihood(x, model.decode(z)).mean(0)
                elbo = (reconstruction
                        - gaussian_kl(mean, torch.exp(logvar), 0.0, 1.0).sum(-1))
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


# -- additions for chapter 6's second half: per-image ELBOs, IWAE training, KL warm-up and
#    free bits, the aggregate posterior, encoder refits ----------------------------------


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
    q = model.encode(x)
    z = q.rsample((num_samples,))
    reconstruction = _log_likelihood(model, x, z).mean(0)
    return reconstruction - kl_to_prior(q, z)


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


def _free_bits_kl(kl_per_unit: torch.Tensor, free_bits: float) -> torch.Tensor:
    """sum_j max(free_bits, mean over the minibatch of KL_j), per data point (shape (n,))."""
    if free_bits <= 0:
        return kl_per_unit.sum(-1)
    floored = torch.clamp(kl_per_unit.mean(0), min=free_bits).sum()
    return floored.expand(kl_per_unit.shape[0])


def train_vae_variant(model: VAE, x_train: torch.Tensor, x_val: torch.Tensor,
                      num_epochs: int, k: int = 1, beta: float = 1.0,
                      warmup_epochs: int = 0, free_bits: float = 0.0,
                      batch_size: int = 64, lr: float = 1e-3) -> TrainingHistory:
    """Train a VAE on the IWAE_k objective, or on the ELBO with KL warm-up / free bits.

    Same minibatches, optimiser and recorded history as :func:`train_vae`, with one of:

    - ``k > 1``: ascend IWAE_k (Burda et al. 2016), k reparameterised samples per image;
    - ``warmup_epochs > 0``: the KL weight rises linearly from 0 to ``beta`` over the
      first ``warmup_epochs`` epochs (per step), then stays at ``beta`` (KL annealing,
      Bowman et al. 2016; warm-up, Sonderby et al. 2016);
    - ``free_bits > 0``: the KL term is sum_j max(free_bits, mean_batch KL_j), so a latent
      unit is not pushed below ``free_bits`` nats (Kingma et al. 2016).

    The recorded ``train_*`` values are the epoch's averages of the one-sample
    reconstruction estimate and the closed-form KL (for ``k > 1``, the reconstruction
    term averaged over the k samples); ``val_*`` are the true ELBO and its terms, as in
    :func:`train_vae`. Used by chapter 6.

    Any encoder family, except that free bits need the diagonal Gaussian's per-unit
    KL; for families without a closed-form KL the recorded KL is the Monte Carlo
    estimate at the training samples.

    Raises
    ------
    TypeError
        If ``free_bits > 0`` and the encoder is not of the diagonal Gaussian family.
    ValueError
        If ``k > 1`` is combined with ``beta != 1``, warm-up or free bits (the IWAE
        objective has no separate KL term to weight), on invalid sizes, or the first
        time the loss is not finite (naming epoch and step; the model's parameters are
        then put back as they were before the call).
    """
    model, x_train, x_val, num_epochs, batch_size, lr = _check_training(
        model, x_train, x_val, num_epochs, batch_size, lr)
    k = check_positive_int(k, "k")
    beta = check_positive(beta, "beta")
    warmup_epochs = check_positive_int(warmup_epochs, "warmup_epochs", minimum=0)
    free_bits = check_nonnegative(free_bits, "free_bits")
    if k > 1 and (beta != 1.0 or warmup_epochs or free_bits):
        raise ValueError("k > 1 (IWAE) cannot be combined with beta, warmup_epochs or "
                         "free_bits")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = TrainingHistory()
    n = len(x_train)
    steps_per_epoch = math.ceil(n / batch_size)
    step = 0
    start = time.perf_counter()
    with _restore_on_error(model):
        for epoch in range(num_epochs):
            model.train()
            totals = torch.zeros(2)
            for step_in_epoch, idx in enumerate(torch.randperm(n).split(batch_size)):
                x = x_train[idx]
                with _stop_on_error("train_vae_variant", epoch, num_epochs, step_in_epoch, lr):
                    q = model.encode(x)
                    if free_bits:
                        _require_diagonal_gaussian(q, "train_vae_variant with free_bits")
                    # per-unit closed-form KL for the diagonal Gaussian (free bits need units)
                    kl = _kl_units(q) if isinstance(q, DiagonalGaussianPosterior) else None
                    if k > 1:
                        z = q.rsample((k,))
                        log_w, log_lik = _log_weights(model, x, q, z)         # (k, b) each
                        loss = -importance_weighted_bound(log_w, dim=0).mean()
                        reconstruction = log_lik.mean(0)
                        kl = kl_to_prior(q, z) if kl is None else kl
                    else:
                        z = q.rsample()
                        reconstruction = bernoulli_log_likelihood(x, model.decode(z))
                        kl = kl_to_prior(q, z) if kl is None else kl
                        weight = beta
                        if warmup_epochs:
                            weight = beta * min(1.0, (step + 1)
                                                / (warmup_epochs * steps_per_epoch))
                        kl_term = kl if kl.ndim == 1 else _free_bits_kl(kl, free_bits)
                        loss = -(reconstruction - weight * kl_term).mean()
                    _check_loss(loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                totals += torch.stack([reconstruction.detach().sum(), kl.detach().sum()])
            model.eval()
            _end_of_epoch(history, totals, n, model, x_val, "train_vae_variant", epoch,
                          num_epochs, lr)
    history.seconds = time.perf_counter() - start
    return history


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
    return _kl_units(q).mean(0).numpy().astype(np.float64)


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
    log_q_parts, kl_prior, mutual = [], 0.0, 0.0
    for chunk in grid.split(check_positive_int(max_batch, "max_batch")):
        log_q_cond = diagonal_gaussian_log_density(chunk[:, None, :], mean, logvar)   # (g, N)
        log_q = torch.logsumexp(log_q_cond, dim=1) - log_n                    # (g,)
        log_p = _log_prior(chunk)
        kl_prior += float((torch.exp(log_q + log_cell) * (log_q - log_p)).sum())
        weights = torch.exp(log_q_cond + log_cell - log_n)
        mutual += float((weights * (log_q_cond - log_q[:, None])).sum())
        log_q_parts.append(log_q)
    rate = float(gaussian_kl(mean, torch.exp(logvar), 0.0, 1.0).sum(-1).mean())
    log_density = torch.cat(log_q_parts).reshape(num_points, num_points).numpy()
    return AggregatePosterior(axis.numpy(), log_density, kl_prior, mutual, rate)


def fit_encoder(model: VAE, x_train: torch.Tensor, x_val: torch.Tensor, num_epochs: int,
                hidden: int, batch_size: int = 64, lr: float = 1e-3
                ) -> tuple[VAE, TrainingHistory]:
    """A new encoder of width ``hidden`` trained on the ELBO of ``model``'s frozen decoder.

    Returns a new VAE whose decoder is a copy of ``model.decoder`` (never updated) and
    whose encoder (a :class:`GaussianEncoder`, one hidden layer of ``hidden`` tanh units;
    ``new.hidden`` is the encoder's width) is trained by Adam on the reparameterised
    ELBO; ``model`` itself may have any encoder family. With the decoder
    fixed, the amortisation gaps of encoders of different widths are gaps for the same
    model p_theta, so they can be compared (Cremer et al. 2018). Used by chapter 6.

    Returns
    -------
    (new_model, history)
    """
    model, x_train, x_val, num_epochs, batch_size, lr = _check_training(
        model, x_train, x_val, num_epochs, batch_size, lr)
    hidden = check_positive_int(hidden, "hidden")
    new = VAE(model.num_pixels, model.latent_dim, hidden)
    new.decoder = copy.deepcopy(model.decoder)       # same shape and weights, frozen below
    for p in new.decoder.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(new.encoder.parameters(), lr=lr)
    history = TrainingHistory()
    n = len(x_train)
    start = time.perf_counter()
    for epoch in range(num_epochs):
        totals = torch.zeros(2)
        for step, idx in enumerate(torch.randperm(n).split(batch_size)):
            with _stop_on_error("fit_encoder", epoch, num_epochs, step, lr):
                reconstruction, kl = elbo_terms(new, x_train[idx])
                loss = -(reconstruction - kl).mean()
                _check_loss(loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            totals += torch.stack([reconstruction.detach().sum(), kl.detach().sum()])
        _end_of_epoch(history, totals, n, new, x_val, "fit_encoder", epoch, num_epochs, lr)
    history.seconds = time.perf_counter() - start
    return new, history


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


# -- independent runs trained as one tensor program (chapter 6's seeds) -------------------

_REPLICATE_METHODS = ("elbo", "iwae", "wake_sleep", "encoder")


def _stacked_linear(p: dict[str, torch.Tensor], name: str, h: torch.Tensor) -> torch.Tensor:
    """nn.Linear ``name`` of every run at once: h (R, ..., in) -> (R, ..., out), one
    batched matrix product (``torch.baddbmm``) with the runs' stacked weights (R, out, in)
    and biases (R, out)."""
    weight, bias = p[name + ".weight"], p[name + ".bias"]
    flat = h.reshape(h.shape[0], -1, h.shape[-1])
    out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return out.reshape(*h.shape[:-1], weight.shape[1])


def _stacked_encode(p, x):
    """Every run's GaussianEncoder on its own minibatch x (R, b, D): (mean, logvar)."""
    h = torch.tanh(_stacked_linear(p, "encoder.0", x))
    return _stacked_linear(p, "encoder.2", h).chunk(2, dim=-1)


def _stacked_decode(p, z):
    """Every run's decoder logits at its own z (R, ..., latent_dim)."""
    return _stacked_linear(p, "decoder.2", torch.tanh(_stacked_linear(p, "decoder.0", z)))


def _stacked_log_likelihood(x, logits):
    """bernoulli_log_likelihood without its checks (a training step checks its loss), x
    broadcast against the logits."""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits),
                                               reduction="none").sum(-1)


def _stacked_kl_units(mean, logvar):
    """Closed-form KL(N(mean, exp(logvar)) || N(0, 1)) per unit (the book's formula with
    var = exp(logvar), as in a training step of :func:`train_vae`)."""
    var = torch.exp(logvar)
    return 0.5 * (var + mean ** 2 - 1.0 - torch.log(var))


def _replicate_options(models, method, k, beta, warmup_epochs, free_bits):
    """Checked k, per-run beta (tensor (R,)), warm-up epochs and free bits."""
    if method not in _REPLICATE_METHODS:
        raise ValueError(f"method must be one of {_REPLICATE_METHODS}, got {method!r}")
    k = check_positive_int(k, "k")
    if k > 1 and method != "iwae":
        raise ValueError(f"k > 1 needs method='iwae', got method={method!r}")
    if isinstance(beta, list | tuple):
        if len(beta) != len(models):
            raise ValueError(f"beta must be one number or one per model ({len(models)}), "
                             f"got {len(beta)}")
        betas = [check_positive(b, "beta") for b in beta]
    else:
        betas = [check_positive(beta, "beta")] * len(models)
    warmup_epochs = check_positive_int(warmup_epochs, "warmup_epochs", minimum=0)
    free_bits = check_nonnegative(free_bits, "free_bits")
    if (any(b != 1.0 for b in betas) or warmup_epochs or free_bits) and method != "elbo":
        raise ValueError(f"beta, warmup_epochs and free_bits need method='elbo', got "
                         f"method={method!r}")
    return k, betas, warmup_epochs, free_bits


def train_replicates(models, x_train: torch.Tensor, x_val: torch.Tensor, num_epochs: int,
                     method: str = "elbo", k: int = 1, batch_size: int = 64,
                     lr: float = 1e-3, beta=1.0, warmup_epochs: int = 0,
                     free_bits: float = 0.0) -> list[TrainingHistory]:
    """Train several VAEs of one architecture at once, each as its own independent run.

    The models' parameters are stacked along a leading run axis (R, ...) and every step
    of all of them is one tensor program: each layer of every run is one batched matrix
    product (``torch.baddbmm``) over the stack, the losses are written out for the
    default Gaussian encoder, and one Adam moves every stacked parameter. Each model
    draws its own minibatch order (a permutation per model per epoch) and its own noise;
    the loss is the sum of the models' losses, so each model's gradient is that of its
    own loss; and Adam is elementwise. So every model follows the trajectory it would
    follow trained alone, with other random numbers (a stack of one draws the very
    random numbers of the one-model function, in the same order). Used by chapter 6 to
    report trained results over seeds at a fraction of the cost of separate runs.

    Parameters
    ----------
    models : sequence of VAE
        At least one; distinct models with the default Gaussian encoder and parameters
        of the same shapes. Trained in place.
    x_train, x_val : torch.Tensor, shape (n, D)
    num_epochs : int
    method : {"elbo", "iwae", "wake_sleep", "encoder"}
        ``"elbo"``: as :func:`train_vae` (or :func:`train_vae_variant` with ``beta``,
        ``warmup_epochs`` or ``free_bits``); ``"iwae"``: IWAE_k as
        :func:`train_vae_variant` with ``k``; ``"wake_sleep"``: as
        :func:`train_wake_sleep` (a wake step on the decoders, then a sleep step on the
        encoders, each with its own Adam); ``"encoder"``: as :func:`fit_encoder`, only
        the encoders move and the decoders stay as they are.
    k : int
        Importance samples per image for ``method="iwae"`` (1 otherwise).
    batch_size : int
    lr : float
        Adam learning rate.
    beta : float or sequence of float
        KL weight (> 0), one for every model or one per model (``method="elbo"``).
    warmup_epochs : int
        KL warm-up as in :func:`train_vae_variant` (``method="elbo"``).
    free_bits : float
        Free bits per latent unit as in :func:`train_vae_variant` (``method="elbo"``).

    Returns
    -------
    list of TrainingHistory
        One per model, recorded as by :func:`train_vae` (``seconds`` is the time of the
        whole stack).

    Raises
    ------
    TypeError, ValueError
        For bad arguments, models of different shapes or families, or the first time a
        model's loss is not finite (naming the model, epoch and step).
    """
    if isinstance(models, VAE) or not isinstance(models, list | tuple) or not models:
        raise TypeError(f"models must be a non-empty list of VAE, got "
                        f"{type(models).__name__}")
    for model in models:
        if not isinstance(model, VAE):
            raise TypeError(f"models must hold elbo_lib.vae.VAE objects, got "
                            f"{type(model).__name__}")
        if type(model.encoder) is not GaussianEncoder:
            raise TypeError(f"models must have the default GaussianEncoder, got "
                            f"{type(model.encoder).__name__}")
    if len({id(m) for m in models}) != len(models):
        raise ValueError("models must be distinct objects (each is its own run)")
    shapes = [{n: tuple(p.shape) for n, p in m.named_parameters()} for m in models]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("models must have parameters of the same shapes (one architecture)")
    dtypes = {p.dtype for m in models for p in m.parameters()}
    if len(dtypes) != 1:
        raise ValueError(f"models must have parameters of one dtype, got "
                         f"{sorted(map(str, dtypes))}")
    first, x_train, x_val, num_epochs, batch_size, lr = _check_training(
        models[0], x_train, x_val, num_epochs, batch_size, lr)
    k, betas, warmup_epochs, free_bits = _replicate_options(
        models, method, k, beta, warmup_epochs, free_bits)
    num, n, latent = len(models), len(x_train), first.latent_dim
    dtype = x_train.dtype
    names = [name for name, _ in first.named_parameters()]
    with torch.no_grad():
        params = {name: torch.stack([dict(m.named_parameters())[name].detach()
                                     for m in models]).requires_grad_(True)
                  for name in names}
    encoder = [v for name, v in params.items() if name.startswith("encoder.")]
    decoder = [v for name, v in params.items() if name.startswith("decoder.")]
    if method == "encoder":   # the decoders stay as they are: no gradients for them
        for v in decoder:
            v.requires_grad_(False)
    groups = {"elbo": [encoder + decoder], "iwae": [encoder + decoder],
              "encoder": [encoder], "wake_sleep": [decoder, encoder]}[method]
    optimizers = [torch.optim.Adam(group, lr=lr, fused=True) for group in groups]
    histories = [TrainingHistory() for _ in models]
    beta_t = torch.tensor(betas, dtype=dtype)
    steps_per_epoch = math.ceil(n / batch_size)
    where = f"train_replicates (method={method!r})"

    def noise(*shape):
        return torch.randn(num, *shape, dtype=dtype)

    def train_losses(x, step):
        """(loss per run (R,), reconstruction sum (R,), KL sum (R,)) of one minibatch."""
        b = x.shape[1]
        if method == "wake_sleep":   # wake phase: the decoder fits q's explanations
            with torch.no_grad():
                mean, logvar = _stacked_encode(params, x)
                z = mean + torch.exp(0.5 * logvar) * noise(b, latent)
                kl = _stacked_kl_units(mean, logvar).sum(-1)
            rec = _stacked_log_likelihood(x, _stacked_decode(params, z))
            return -rec.mean(1), rec.sum(1), kl.sum(1)
        mean, logvar = _stacked_encode(params, x)
        kl_units = _stacked_kl_units(mean, logvar)                     # (R, b, latent)
        kl = kl_units.sum(-1)
        if method == "iwae":
            z = mean.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * noise(k, b, latent)
            log_lik = _stacked_log_likelihood(x.unsqueeze(1), _stacked_decode(params, z))
            log_q = diagonal_gaussian_log_density(z, mean.unsqueeze(1), logvar.unsqueeze(1),
                                                  validate=False)
            log_w = log_lik + _log_prior(z) - log_q                  # (R, k, b)
            iwae = torch.logsumexp(log_w, dim=1) - math.log(k)
            return -iwae.mean(1), log_lik.mean(1).sum(1), kl.sum(1)
        z = mean + torch.exp(0.5 * logvar) * noise(b, latent)
        rec = _stacked_log_likelihood(x, _stacked_decode(params, z))
        weight = beta_t
        if warmup_epochs:
            weight = beta_t * min(1.0, (step + 1) / (warmup_epochs * steps_per_epoch))
        if free_bits:
            kl_term = torch.clamp(kl_units.mean(1), min=free_bits).sum(-1)   # (R,)
            loss = -(rec.mean(1) - weight * kl_term)
        else:
            loss = -(rec - weight[:, None] * kl).mean(1)
        return loss, rec.sum(1), kl.sum(1)

    def sleep_loss(b):
        """Sleep phase: every encoder fits its own decoder's dreams."""
        with torch.no_grad():
            z_dream = noise(b, latent)
            x_dream = _dream(torch.sigmoid(_stacked_decode(params, z_dream)))
        mean, logvar = _stacked_encode(params, x_dream)
        log_q = diagonal_gaussian_log_density(z_dream, mean, logvar, validate=False)
        return -log_q.mean(1)

    def backward(loss, opt, epoch, step_in_epoch):
        if not bool(torch.isfinite(loss).all()):
            bad = int(torch.flatten(~torch.isfinite(loss)).nonzero()[0])
            raise ValueError(_stopped(where, epoch, num_epochs, step_in_epoch, lr,
                                      f"the loss of model {bad} is not finite"))
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()

    start = time.perf_counter()
    step = 0
    with _trusted():   # the data are checked above and every loss is checked
        for epoch in range(num_epochs):
            totals = torch.zeros(num, 2)
            order = torch.stack([torch.randperm(n) for _ in models])      # (num, n)
            for step_in_epoch, idx in enumerate(order.split(batch_size, dim=1)):
                x = x_train[idx]                                          # (num, b, D)
                loss, reconstruction, kl = train_losses(x, step)
                backward(loss, optimizers[0], epoch, step_in_epoch)
                if method == "wake_sleep":
                    try:
                        sleep = sleep_loss(x.shape[1])
                    except ValueError as err:
                        raise ValueError(_stopped(where, epoch, num_epochs, step_in_epoch,
                                                  lr, str(err))) from err
                    backward(sleep, optimizers[1], epoch, step_in_epoch)
                step += 1
                totals += torch.stack([reconstruction.detach(), kl.detach()], dim=1)
            with torch.no_grad():    # evaluate_elbo(model, x_val): one sample, closed-form KL
                mean, logvar = _stacked_encode(params, x_val.expand(num, *x_val.shape))
                z = mean + torch.exp(0.5 * logvar) * noise(len(x_val), latent)
                val_rec = _stacked_log_likelihood(x_val, _stacked_decode(params, z)).mean(1)
                val_kl = _stacked_kl_units(mean, logvar).sum(-1).mean(1)
            for i, history in enumerate(histories):
                rec, kl_mean = (totals[i] / n).tolist()
                rec_v, kl_v = float(val_rec[i]), float(val_kl[i])
                with _stop_on_error(where, epoch, num_epochs, None, lr):
                    history.record({"elbo": rec - kl_mean, "reconstruction": rec,
                                    "kl": kl_mean},
                                   {"elbo": rec_v - kl_v, "reconstruction": rec_v,
                                    "kl": kl_v})
    seconds = time.perf_counter() - start
    with torch.no_grad():
        for i, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(params[name][i])
    for history in histories:
        history.seconds = seconds
    return histories
