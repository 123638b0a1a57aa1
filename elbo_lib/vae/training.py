"""Training the VAE: the ELBO (beta, warm-up, free bits), IWAE, wake-sleep, encoder refits.

Every loop checks its data and sizes once (:func:`_check_training`), then calls the
unchecked kernels of :mod:`elbo_lib.vae.model` and :mod:`elbo_lib.vae.elbo` at every
step and checks what comes out: a non-finite loss stops the loop with a message naming
the epoch and step (:func:`_stop_on_error`) and puts the parameters back
(:func:`_restore_on_error`). Chapter 6.
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
from torch import nn
from tqdm import tqdm

from elbo_lib._validation import (
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_real,
)
from elbo_lib.bounds import importance_weighted_bound
from elbo_lib.vae.elbo import (
    _bernoulli_log_likelihood,
    _elbo_terms,
    _evaluate_elbo,
    _kl_to_prior,
    _kl_units,
    _log_likelihood,
    _log_q,
    _log_weights,
)
from elbo_lib.vae.model import (
    VAE,
    DiagonalGaussianPosterior,
    _check_data,
    _check_model,
    _dtype_of,
    _require_diagonal_gaussian,
)

__all__ = [
    "TrainingHistory",
    "fit_encoder",
    "train_vae",
    "train_vae_variant",
    "train_wake_sleep",
]


def _stopped(where: str, epoch: int, num_epochs: int, step: int | None, lr: float,
             reason: str) -> str:
    at = "the end-of-epoch evaluation" if step is None else f"step {step + 1}"
    return (f"{where} stopped at epoch {epoch + 1} of {num_epochs}, {at}: "
            f"{reason} (a smaller lr than {lr} may help)")


@contextmanager
def _stop_on_error(where: str, epoch: int, num_epochs: int, step: int | None, lr: float):
    """Run one training step (or evaluation); re-raise a ValueError (a non-finite loss)
    naming the epoch and step at which it happened."""
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
        with torch.no_grad():
            val = _evaluate_elbo(model, model._encode(x_val), x_val)
        history.record({"elbo": rec - kl_mean, "reconstruction": rec, "kl": kl_mean}, val)


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
                    x = x_train[idx]
                    reconstruction, kl = _elbo_terms(model, model._encode(x), x)
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
                        q = model._encode(x)
                        z = q.rsample()
                        kl = _kl_to_prior(q, z)
                    reconstruction = _bernoulli_log_likelihood(x, model._decode(z))
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
                        x_dream = _dream(torch.sigmoid(model._decode(z_dream)))
                    sleep_loss = -_log_q(model._encode(x_dream), z_dream).mean()
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
                    q = model._encode(x)
                    if free_bits:
                        _require_diagonal_gaussian(q, "train_vae_variant with free_bits")
                    # per-unit closed-form KL for the diagonal Gaussian (free bits need units)
                    kl = (_kl_units(q.base_dist.loc, q.logvar)
                          if isinstance(q, DiagonalGaussianPosterior) else None)
                    if k > 1:
                        z = q.rsample((k,))
                        log_w, log_lik = _log_weights(model, x, q, z)         # (k, b) each
                        loss = -importance_weighted_bound(log_w, dim=0).mean()
                        reconstruction = log_lik.mean(0)
                        kl = _kl_to_prior(q, z) if kl is None else kl
                    else:
                        z = q.rsample()
                        reconstruction = _log_likelihood(model, x, z)
                        kl = _kl_to_prior(q, z) if kl is None else kl
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
                x = x_train[idx]
                reconstruction, kl = _elbo_terms(new, new._encode(x), x)
                loss = -(reconstruction - kl).mean()
                _check_loss(loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            totals += torch.stack([reconstruction.detach().sum(), kl.detach().sum()])
        _end_of_epoch(history, totals, n, new, x_val, "fit_encoder", epoch, num_epochs, lr)
    history.seconds = time.perf_counter() - start
    return new, history

