"""Training the VAE on an objective (:mod:`elbo_lib.vae.objectives`), and encoder refits.

One loop (:func:`_train`) serves :func:`train_vae`, :func:`train_wake_sleep` and
:func:`fit_encoder`: the objective gives each phase's loss, the loop minimises it. Every
public trainer checks its data and sizes once (:func:`_check_training`), then calls the
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
    check_positive,
    check_positive_int,
    check_real,
)
from elbo_lib.vae.elbo import _evaluate_elbo
from elbo_lib.vae.model import (
    VAE,
    _check_data,
    _check_model,
    _dtype_of,
)
from elbo_lib.vae.objectives import ELBO, Phase, VAEObjective, WakeSleep

__all__ = [
    "TrainingHistory",
    "fit_encoder",
    "train_vae",
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


def _check_loop_arguments(num_pixels, dtype, x_train, x_val, num_epochs, batch_size, lr):
    """A training loop's data (binary images of ``num_pixels``, converted to ``dtype``
    once, not every step) and schedule, checked: the checks every VAE loop shares."""
    x_train = _check_data(x_train, num_pixels, "x_train", binary=True, dtype=dtype,
                          batch=True)
    x_val = _check_data(x_val, num_pixels, "x_val", binary=True, dtype=dtype, batch=True)
    num_epochs = check_positive_int(num_epochs, "num_epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive(lr, "lr")
    return x_train, x_val, num_epochs, batch_size, lr


def _check_training(model, x_train, x_val, num_epochs, batch_size, lr):
    model = _check_model(model)
    dtype = _dtype_of(model.encoder, model.decoder)
    return (model, *_check_loop_arguments(model.num_pixels, dtype, x_train, x_val,
                                          num_epochs, batch_size, lr))


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


def _check_objective(objective) -> VAEObjective:
    if not isinstance(objective, VAEObjective):
        raise TypeError(f"objective must be an elbo_lib.vae.VAEObjective (ELBO(), IWAE(k), "
                        f"WakeSleep(), ...), got {type(objective).__name__}")
    for phase in objective.phases:
        if not isinstance(phase, Phase) or phase.moves not in ("model", "encoder", "decoder"):
            raise ValueError(f"objective's phases must be Phase(name, moves) with moves "
                             f"'model', 'encoder' or 'decoder', got {phase!r}")
    return objective


def _phase_parameters(model: VAE, moves: str, fixed_decoder: bool) -> list:
    if moves == "encoder" or (moves == "model" and fixed_decoder):
        return list(model.encoder.parameters())
    if moves == "decoder":
        return list(model.decoder.parameters())
    return list(model.parameters())


def _train(model: VAE, x_train, x_val, num_epochs, batch_size, lr, objective, where: str,
           progress: bool = False, fixed_decoder: bool = False) -> TrainingHistory:
    """The one loop of the single-model trainers: each epoch a fresh permutation of the
    training set (torch's global generator); each minibatch, every phase of ``objective``
    in order, each with its own Adam on the parameters it moves; the objective's
    recorded terms averaged per epoch, and the validation ELBO. Arguments checked."""
    optimizers = [torch.optim.Adam(_phase_parameters(model, phase.moves, fixed_decoder),
                                   lr=lr) for phase in objective.phases]
    names = [where if len(objective.phases) == 1 else f"{where} ({phase.name} phase)"
             for phase in objective.phases]
    history = TrainingHistory()
    n = len(x_train)
    steps_per_epoch = math.ceil(n / batch_size)
    step = 0
    start = time.perf_counter()
    bar = tqdm(range(num_epochs), desc=f"VAE {objective!r}", disable=not progress,
               mininterval=0.5)
    with _restore_on_error(model):
        for epoch in bar:
            model.train()
            totals = torch.zeros(2)
            for step_in_epoch, idx in enumerate(torch.randperm(n).split(batch_size)):
                x = x_train[idx]
                for phase, (name, optimizer) in enumerate(zip(names, optimizers,
                                                              strict=True)):
                    with _stop_on_error(name, epoch, num_epochs, step_in_epoch, lr):
                        out = objective._loss(model, x, phase, step, steps_per_epoch)
                        _check_loss(out.loss)
                    optimizer.zero_grad(set_to_none=True)
                    out.loss.backward()
                    optimizer.step()
                    if out.reconstruction is not None:
                        totals += torch.stack([out.reconstruction.detach().sum(),
                                               out.kl.detach().sum()])
                step += 1
            model.eval()
            _end_of_epoch(history, totals, n, model, x_val, where, epoch, num_epochs, lr)
            bar.set_postfix(val_elbo=f"{history.val_elbo[-1]:.2f}", refresh=False)
    history.seconds = time.perf_counter() - start
    return history


def train_vae(model: VAE, x_train: torch.Tensor, x_val: torch.Tensor, num_epochs: int,
              batch_size: int = 64, lr: float = 1e-3, objective: VAEObjective | None = None,
              progress: bool = False) -> TrainingHistory:
    """Train encoder and decoder with Adam on ``objective`` (default: the ELBO).

    Each step draws a minibatch (a fresh permutation of the training set every epoch,
    from torch's global generator, seeded by :func:`elbo_lib.seed_everything`) and,
    for each phase of the objective (:class:`~elbo_lib.vae.VAEObjective`), takes one
    Adam step (Kingma & Ba 2015) on the parameters that phase moves. With the default
    :class:`~elbo_lib.vae.ELBO` it ascends, one reparameterised sample per image,
    mean_i [log p_theta(x_i | z_i) - beta * KL(q_phi(z | x_i) || p(z))]
    (Kingma & Welling 2014); ``ELBO(beta=...)``, ``ELBO(warmup_epochs=...)``,
    ``ELBO(free_bits=...)``, ``IWAE(k)`` and ``WakeSleep()`` are chapter 6's variants,
    and any subclass of :class:`~elbo_lib.vae.VAEObjective` trains here unchanged.

    Parameters
    ----------
    model : VAE
        Trained in place; any encoder family (:func:`elbo_terms`; free bits need the
        diagonal Gaussian).
    x_train, x_val : torch.Tensor, shape (n, D)
    num_epochs : int
    batch_size : int
    lr : float
        Adam learning rate.
    objective : VAEObjective or None
        What to train on; None is ``ELBO()``.
    progress : bool
        Show a tqdm progress bar over epochs (on stderr).

    Returns
    -------
    TrainingHistory
        ``train_*``: the epoch's averages of the objective's recorded terms (for the
        ELBO, the one-sample reconstruction estimate and the KL); ``val_*``: the true
        ELBO (beta = 1) and its two terms on the validation set.

    Raises
    ------
    TypeError
        If ``objective`` is not a VAEObjective (or free bits meet another family).
    ValueError
        For bad sizes, or the first time a loss is not finite (naming epoch, step and,
        for several phases, the phase); the model's parameters are then put back as
        they were before the call.
    """
    model, x_train, x_val, num_epochs, batch_size, lr = _check_training(
        model, x_train, x_val, num_epochs, batch_size, lr)
    objective = ELBO() if objective is None else _check_objective(objective)
    return _train(model, x_train, x_val, num_epochs, batch_size, lr, objective,
                  "train_vae", progress)


def train_wake_sleep(model: VAE, x_train: torch.Tensor, x_val: torch.Tensor, num_epochs: int,
                     batch_size: int = 64, lr: float = 1e-3,
                     progress: bool = False) -> TrainingHistory:
    """Train the same networks with the wake-sleep algorithm (Hinton et al. 1995):
    :func:`train_vae` with ``objective=WakeSleep()`` (see :class:`~elbo_lib.vae.WakeSleep`
    for the two phases), its messages naming ``train_wake_sleep``. Used by chapter 6.

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
    return _train(model, x_train, x_val, num_epochs, batch_size, lr, WakeSleep(),
                  "train_wake_sleep", progress)


def fit_encoder(model: VAE, x_train: torch.Tensor, x_val: torch.Tensor, num_epochs: int,
                hidden: int, batch_size: int = 64, lr: float = 1e-3,
                objective: VAEObjective | None = None) -> tuple[VAE, TrainingHistory]:
    """A new encoder of width ``hidden`` trained on the ELBO of ``model``'s frozen decoder.

    Returns a new VAE whose decoder is a copy of ``model.decoder`` (never updated) and
    whose encoder (a :class:`GaussianEncoder`, one hidden layer of ``hidden`` tanh units;
    ``new.hidden`` is the encoder's width) is trained by Adam on ``objective`` (default
    the reparameterised ``ELBO()``; an objective whose phases move only the encoder or
    the whole model), as :func:`train_vae` does with the decoder held fixed; ``model``
    itself may have any encoder family. With the decoder fixed, the amortisation gaps of
    encoders of different widths are gaps for the same model p_theta, so they can be
    compared (Cremer et al. 2018). Used by chapter 6.

    Returns
    -------
    (new_model, history)
    """
    model, x_train, x_val, num_epochs, batch_size, lr = _check_training(
        model, x_train, x_val, num_epochs, batch_size, lr)
    hidden = check_positive_int(hidden, "hidden")
    objective = ELBO() if objective is None else _check_objective(objective)
    if any(phase.moves == "decoder" for phase in objective.phases):
        raise ValueError(f"fit_encoder holds the decoder fixed: objective must not have a "
                         f"phase that moves the decoder, got {objective!r}")
    new = VAE(model.num_pixels, model.latent_dim, hidden)
    new.decoder = copy.deepcopy(model.decoder)       # same shape and weights, frozen below
    for p in new.decoder.parameters():
        p.requires_grad_(False)
    history = _train(new, x_train, x_val, num_epochs, batch_size, lr, objective,
                     "fit_encoder", fixed_decoder=True)
    return new, history
