"""Independent runs of one VAE architecture trained as one tensor program (chapter 6's seeds).

:func:`train_replicates` stacks R models' parameters along a leading run axis and writes
every step of all of them as batched matrix products, for the default Gaussian encoder.
"""

from __future__ import annotations

import math
import time

import torch

from elbo_lib._validation import check_nonnegative, check_positive, check_positive_int
from elbo_lib.gaussians import diagonal_gaussian_log_density
from elbo_lib.vae.elbo import _bernoulli_log_likelihood
from elbo_lib.vae.model import VAE, GaussianEncoder, _log_prior
from elbo_lib.vae.training import (
    TrainingHistory,
    _check_training,
    _dream,
    _stop_on_error,
    _stopped,
)

__all__ = ["train_replicates"]


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


def _stacked_kl_units(mean, logvar):
    """Closed-form KL(N(mean, exp(logvar)) || N(0, 1)) per unit: the formula of
    :func:`elbo_lib.vae.elbo._kl_units` summed in another order (the order chapters 6 and
    7's committed results were computed with; :func:`_kl_units`' order would move their
    trained results by round-off)."""
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
            rec = _bernoulli_log_likelihood(x, _stacked_decode(params, z))
            return -rec.mean(1), rec.sum(1), kl.sum(1)
        mean, logvar = _stacked_encode(params, x)
        kl_units = _stacked_kl_units(mean, logvar)                     # (R, b, latent)
        kl = kl_units.sum(-1)
        if method == "iwae":
            z = mean.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * noise(k, b, latent)
            log_lik = _bernoulli_log_likelihood(x.unsqueeze(1), _stacked_decode(params, z))
            log_q = diagonal_gaussian_log_density(z, mean.unsqueeze(1), logvar.unsqueeze(1),
                                                  validate=False)
            log_w = log_lik + _log_prior(z) - log_q                  # (R, k, b)
            iwae = torch.logsumexp(log_w, dim=1) - math.log(k)
            return -iwae.mean(1), log_lik.mean(1).sum(1), kl.sum(1)
        z = mean + torch.exp(0.5 * logvar) * noise(b, latent)
        rec = _bernoulli_log_likelihood(x, _stacked_decode(params, z))
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
    # the data are checked above and every loss is checked below
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
