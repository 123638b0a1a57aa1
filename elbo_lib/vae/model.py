"""The VAE's model: p(z) = N(0, I), a Bernoulli decoder, and the encoder families (chapter 6).

:class:`VAE` holds an encoder (any :class:`torch.nn.Module` returning a
:class:`torch.distributions.Distribution` over z; the default is :class:`GaussianEncoder`,
whose q is a :class:`DiagonalGaussianPosterior`) and a decoder MLP of Bernoulli logits.
Public methods and functions check their inputs; the private kernels of this package
(``VAE._encode``, ``VAE._decode``, ``GaussianEncoder._forward``,
``DiagonalGaussianPosterior._from_checked``, ``_reparameterize``) compute the same
numbers without the checks, for the training loops, whose data are checked once per
call and whose losses are checked every step.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from elbo_lib._validation import (
    LOG_2PI,
    as_numeric_array,
    check_finite_tensor,
    check_positive_int,
)
from elbo_lib.gaussians import diagonal_gaussian_log_density

__all__ = [
    "VAE",
    "DiagonalGaussianPosterior",
    "GaussianEncoder",
    "as_tensor",
    "check_binary_images",
    "log_prior",
    "reparameterize",
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

    @classmethod
    def _from_checked(cls, mean: torch.Tensor, logvar: torch.Tensor
                      ) -> DiagonalGaussianPosterior:
        """The posterior of parameters computed from checked inputs (a training step's
        encoder output): the same object without the checks of ``__init__``."""
        q = cls.__new__(cls)
        Independent.__init__(q, Normal(mean, torch.exp(0.5 * logvar), validate_args=False),
                             1, validate_args=False)
        q.logvar = logvar
        return q

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

    def _forward(self, x: torch.Tensor) -> DiagonalGaussianPosterior:
        """:meth:`forward` of x checked by the caller (converted to the weights' dtype
        here), without the checks of x and of q's parameters."""
        dtype = self[0].weight.dtype
        mean, logvar = super().forward(x if x.dtype == dtype else x.to(dtype)).chunk(2, dim=-1)
        return DiagonalGaussianPosterior._from_checked(mean, logvar)


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
        x = _check_data(x, self.num_pixels, dtype=_dtype_of(self.encoder, self.decoder))
        return self._checked_q(self.encoder(x), x)

    def _encode(self, x: torch.Tensor) -> Distribution:
        """:meth:`encode` of x checked by the caller and in the model's dtype (a training
        step's minibatch): the default encoder runs without its checks of x and of q's
        parameters; any other encoder is called as it is (its own checks run)."""
        encoder = self.encoder
        q = encoder._forward(x) if type(encoder) is GaussianEncoder else encoder(x)
        return self._checked_q(q, x)

    def _checked_q(self, q, x: torch.Tensor) -> Distribution:
        """The encoder's q, refused unless a Distribution of the promised shapes."""
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
        _check_real_tensor(z, "z")
        return self._decode(z)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`decode` of z of shape (..., latent_dim) known to be finite (a sample of
        the model's own q, or of the prior), converted to the decoder's dtype."""
        dtype = _dtype_of(self.decoder)
        return self.decoder(z if z.dtype == dtype else z.to(dtype))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Distribution]:
        """One reparameterised pass: returns ``(logits, q)``."""
        q = self.encode(x)
        return self.decode(q.rsample()), q


def _check_latent(z, latent_dim: int) -> None:
    """z a tensor of shape (..., latent_dim) (its values are the caller's to check)."""
    if not isinstance(z, torch.Tensor) or z.shape[-1:] != (latent_dim,):
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"z must be a tensor of shape (..., {latent_dim}), got {got}")


def _check_mean_logvar(mean, logvar) -> None:
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
    """The dtype of the first parameter of the first module that has one (else torch's
    default dtype)."""
    for module in modules:
        for p in module.parameters():
            return p.dtype
    return torch.get_default_dtype()


def _require_diagonal_gaussian(q: Distribution, what: str) -> DiagonalGaussianPosterior:
    if not isinstance(q, DiagonalGaussianPosterior):
        raise TypeError(f"{what} needs the diagonal Gaussian encoder family (an encoder "
                        f"returning elbo_lib.vae.DiagonalGaussianPosterior, with a mean "
                        f"and a logvar per unit), got {type(q).__name__}")
    return q


def log_prior(z: torch.Tensor) -> torch.Tensor:
    """log p(z) = log N(z; 0, I) of the VAE's prior, summed over the last axis.

    Parameters
    ----------
    z : torch.Tensor, shape (..., latent_dim)
        Real and finite.

    Returns
    -------
    torch.Tensor, shape (...)
    """
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
    if z.ndim == 0:
        raise ValueError("z must have a latent axis, shape (..., latent_dim)")
    return _log_prior(_check_real_tensor(z, "z"))


def _log_prior(z: torch.Tensor) -> torch.Tensor:
    """:func:`log_prior` without the checks."""
    return -0.5 * (LOG_2PI * z.shape[-1] + (z**2).sum(-1))



def _check_data(x, num_pixels: int | None = None, name: str = "x", *, binary: bool = False,
                dtype: torch.dtype | None = None, batch: bool = False) -> torch.Tensor:
    """``x`` checked (a finite tensor of ``num_pixels`` columns; with ``binary``, 0/1
    pixels for the Bernoulli decoder; with ``batch``, of shape (n, num_pixels): one
    image of shape (num_pixels,) is refused by name, as ``x[None]`` is a batch of one)
    and converted to ``dtype`` if given."""
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


def check_binary_images(x, num_pixels: int, name: str = "x",
                        dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` checked as a batch of images for the Bernoulli decoder, converted to ``dtype``.

    The check of every public function of the VAE that takes data (and of chapter 7's
    flow encoders): a real, finite tensor of shape (n, num_pixels), n >= 1, of 0/1
    pixels (a Bernoulli log-likelihood of grey levels is not a log-likelihood).

    Parameters
    ----------
    x : torch.Tensor, shape (n, num_pixels)
    num_pixels : int
    name : str
        The argument's name in error messages.
    dtype : torch.dtype or None
        Convert to this dtype (the model's); ``None`` keeps x's.

    Returns
    -------
    torch.Tensor

    Raises
    ------
    TypeError, ValueError
        Naming ``name``, for anything else.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype or None, got {type(dtype).__name__}")
    return _check_data(x, check_positive_int(num_pixels, "num_pixels"), name, binary=True,
                       dtype=dtype, batch=True)


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

