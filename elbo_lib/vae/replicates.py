"""Independent runs of one VAE architecture trained as one tensor program (chapter 6's seeds).

:func:`train_replicates` stacks R models' parameters along a leading run axis and writes
every step of all of them as batched matrix products, for the default Gaussian encoder;
what they train on is a :class:`~elbo_lib.vae.VAEObjective` (its ``stacked_loss``).
"""

from __future__ import annotations

import math
import time

import torch

from elbo_lib.vae.elbo import _bernoulli_log_likelihood
from elbo_lib.vae.model import VAE, GaussianEncoder
from elbo_lib.vae.objectives import ELBO, VAEObjective
from elbo_lib.vae.training import (
    TrainingHistory,
    _check_objective,
    _check_training,
    _stop_on_error,
    _stopped,
)

__all__ = ["train_replicates"]


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


def _stacked_kl_units(mean, logvar):
    """Closed-form KL(N(mean, exp(logvar)) || N(0, 1)) per unit: the formula of
    :func:`elbo_lib.vae.elbo._kl_units` summed in another order (the order chapters 6 and
    7's committed results were computed with; :func:`_kl_units`' order would move their
    trained results by round-off)."""
    var = torch.exp(logvar)
    return 0.5 * (var + mean ** 2 - 1.0 - torch.log(var))


class _Stack:
    """R runs' stacked parameters as the networks an objective's
    :meth:`~elbo_lib.vae.VAEObjective.stacked_loss` calls (see there)."""

    def __init__(self, params, objectives, latent_dim, dtype):
        self.params, self.objectives = params, objectives
        self.latent_dim, self.dtype, self.num = latent_dim, dtype, len(objectives)

    def encode(self, x):
        return _stacked_encode(self.params, x)

    def decode(self, z):
        return _stacked_decode(self.params, z)

    @staticmethod
    def kl_units(mean, logvar):
        return _stacked_kl_units(mean, logvar)

    def noise(self, *shape):
        return torch.randn(self.num, *shape, dtype=self.dtype)


def _check_objectives(objective, num: int, fixed_decoder: bool) -> list[VAEObjective]:
    """One objective per run (the one given, or the sequence of ``num``), all stackable
    together."""
    if objective is None:
        objective = ELBO()
    if isinstance(objective, list | tuple):
        if len(objective) != num:
            raise ValueError(f"objective must be one VAEObjective or one per model ({num}), "
                             f"got {len(objective)}")
        objectives = list(objective)
    else:
        objectives = [objective] * num
    for obj in objectives:
        if not isinstance(obj, VAEObjective):
            raise TypeError(f"objective must be an elbo_lib.vae.VAEObjective (ELBO(), "
                            f"IWAE(k), WakeSleep(), ...) or a sequence of them, got "
                            f"{type(obj).__name__}")
    first = _check_objective(objectives[0])
    if type(first)._stacked_loss is VAEObjective._stacked_loss:
        raise TypeError(f"objective {type(first).__name__} has no _stacked_loss(): train "
                        f"it with train_vae, one model at a time")
    if any(obj.stack_key() != first.stack_key() for obj in objectives):
        raise ValueError(f"objective must hold objectives of one type that agree in their "
                         f"stack_key() (runs of ELBO may differ in beta, warm-up and free "
                         f"bits only), got "
                         f"{objectives!r}")
    if fixed_decoder and any(phase.moves == "decoder" for phase in first.phases):
        raise ValueError(f"fixed_decoder=True needs an objective whose phases move the "
                         f"encoder or the model, got {first!r}")
    return objectives


def train_replicates(models, x_train: torch.Tensor, x_val: torch.Tensor, num_epochs: int,
                     objective=None, batch_size: int = 64, lr: float = 1e-3,
                     fixed_decoder: bool = False) -> list[TrainingHistory]:
    """Train several VAEs of one architecture at once, each as its own independent run.

    The models' parameters are stacked along a leading run axis (R, ...) and every step
    of all of them is one tensor program: each layer of every run is one batched matrix
    product (``torch.baddbmm``) over the stack, the objective's
    :meth:`~elbo_lib.vae.VAEObjective.stacked_loss` writes the losses out for the
    default Gaussian encoder, and one Adam per phase moves every stacked parameter. Each
    model draws its own minibatch order (a permutation per model per epoch) and its own
    noise; the loss is the sum of the models' losses, so each model's gradient is that of
    its own loss; and Adam is elementwise. So every model follows the trajectory it
    would follow trained alone by :func:`train_vae` with the same objective, with other
    random numbers (a stack of one draws the very random numbers of the one-model
    function, in the same order). Used by chapter 6 to report trained results over seeds
    at a fraction of the cost of separate runs.

    Parameters
    ----------
    models : sequence of VAE
        At least one; distinct models with the default Gaussian encoder and parameters
        of the same shapes. Trained in place.
    x_train, x_val : torch.Tensor, shape (n, D)
    num_epochs : int
    objective : VAEObjective, sequence of VAEObjective, or None
        What every run trains on (None: ``ELBO()``), or one objective per model, of one
        type and agreeing in their :meth:`~elbo_lib.vae.VAEObjective.stack_key` (e.g.
        ``[ELBO(beta=b) for b in betas]``: one KL weight per run; runs of ELBO may also
        differ in warm-up and free bits). The objective must implement the hook
        ``_stacked_loss``.
    batch_size : int
    lr : float
        Adam learning rate.
    fixed_decoder : bool
        Only the encoders move and the decoders stay as they are (as
        :func:`fit_encoder`, with the models' own encoders and decoders).

    Returns
    -------
    list of TrainingHistory
        One per model, recorded as by :func:`train_vae` (``seconds`` is the time of the
        whole stack).

    Raises
    ------
    TypeError, ValueError
        For bad arguments, models of different shapes or families, objectives that
        cannot be stacked, or the first time a model's loss is not finite (naming the
        model, epoch, step and, for several phases, the phase).
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
    if not isinstance(fixed_decoder, bool):
        raise TypeError(f"fixed_decoder must be a bool, got {type(fixed_decoder).__name__}")
    objectives = _check_objectives(objective, len(models), fixed_decoder)
    objective = objectives[0]
    num, n, latent = len(models), len(x_train), first.latent_dim
    dtype = x_train.dtype
    names = [name for name, _ in first.named_parameters()]
    with torch.no_grad():
        params = {name: torch.stack([dict(m.named_parameters())[name].detach()
                                     for m in models]).requires_grad_(True)
                  for name in names}
    encoder = [v for name, v in params.items() if name.startswith("encoder.")]
    decoder = [v for name, v in params.items() if name.startswith("decoder.")]
    if fixed_decoder:   # the decoders stay as they are: no gradients for them
        for v in decoder:
            v.requires_grad_(False)
    moved = {"model": encoder + ([] if fixed_decoder else decoder), "encoder": encoder,
             "decoder": decoder}
    optimizers = [torch.optim.Adam(moved[phase.moves], lr=lr, fused=True)
                  for phase in objective.phases]
    histories = [TrainingHistory() for _ in models]
    stack = _Stack(params, objectives, latent, dtype)
    steps_per_epoch = math.ceil(n / batch_size)
    where = f"train_replicates ({type(objective).__name__})"
    wheres = [where if len(objective.phases) == 1
              else f"train_replicates ({type(objective).__name__}, {phase.name} phase)"
              for phase in objective.phases]

    def noise(*shape):
        return torch.randn(num, *shape, dtype=dtype)

    def backward(loss, opt, where, epoch, step_in_epoch):
        if not bool(torch.isfinite(loss).all()):
            bad = int(torch.flatten(~torch.isfinite(loss)).nonzero()[0])
            raise ValueError(_stopped(where, epoch, num_epochs, step_in_epoch, lr,
                                      f"the loss of model {bad} is not finite"))
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()

    start = time.perf_counter()
    step = 0
    # the data are checked above and every loss is checked below
    for epoch in range(num_epochs):
        totals = torch.zeros(num, 2)
        order = torch.stack([torch.randperm(n) for _ in models])      # (num, n)
        for step_in_epoch, idx in enumerate(order.split(batch_size, dim=1)):
            x = x_train[idx]                                          # (num, b, D)
            for phase, (name, opt) in enumerate(zip(wheres, optimizers, strict=True)):
                try:
                    out = objective._stacked_loss(stack, x, phase, step, steps_per_epoch)
                except ValueError as err:
                    raise ValueError(_stopped(name, epoch, num_epochs, step_in_epoch,
                                              lr, str(err))) from err
                backward(out.loss, opt, name, epoch, step_in_epoch)
                if out.reconstruction is not None:
                    totals += torch.stack([out.reconstruction.detach(),
                                           out.kl.detach()], dim=1)
            step += 1
        with torch.no_grad():    # evaluate_elbo(model, x_val): one sample, closed-form KL
            mean, logvar = _stacked_encode(params, x_val.expand(num, *x_val.shape))
            z = mean + torch.exp(0.5 * logvar) * noise(len(x_val), latent)
            val_rec = _bernoulli_log_likelihood(x_val, _stacked_decode(params, z)).mean(1)
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
