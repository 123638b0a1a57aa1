"""What the VAE loops train on, as objects: the ELBO (beta, warm-up, free bits), IWAE_k
(chapter 6) with the doubly reparameterised gradient, the variational Renyi bound
(chapter 8), wake-sleep's two phases (chapter 6).

A :class:`VAEObjective` gives one step's loss on a minibatch, for one model
(:meth:`~VAEObjective.loss`; its hook ``_loss`` is what :func:`elbo_lib.vae.train_vae`
calls) and, where it can, for a stack of runs (:meth:`~VAEObjective.stacked_loss`, hook
``_stacked_loss``, called by :func:`elbo_lib.vae.train_replicates`). The loops only
minimise the losses, one optimiser per phase (:attr:`~VAEObjective.phases`), and record
the returned terms; a new objective (another KL schedule, another bound) is a new class
and no edit of a loop, as Pyro hands an ``ELBO`` object to ``SVI``. The terms come from
the package's one ELBO kernel, :mod:`elbo_lib.vae.elbo`:

=======================================  ==================================================
``ELBO()``                               the ELBO, reparameterised (Kingma & Welling 2014)
``ELBO(beta=b)``                         the beta-VAE objective (Higgins et al. 2017)
``ELBO(beta=b, warmup_epochs=w)``        KL warm-up: the weight rises linearly to b over w
                                         epochs, per step (Bowman et al. 2016; Sonderby et
                                         al. 2016); :meth:`ELBO.kl_schedule`
``ELBO(free_bits=lam)``                  free bits: sum_j max(lam, mean_batch KL_j)
                                         (Kingma et al. 2016)
``IWAE(k)``                              IWAE_k (Burda, Grosse & Salakhutdinov 2016)
``IWAEDReG(k)``                          IWAE_k with the doubly reparameterised encoder
                                         gradient (Tucker et al. 2019)
``RenyiVR(alpha, k)``                    the k-sample variational Renyi bound (Li &
                                         Turner 2016); alpha = 0 is IWAE_k
``WakeSleep()``                          wake phase on the decoder, sleep phase on the
                                         encoder (Hinton et al. 1995)
=======================================  ==================================================
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from elbo_lib._validation import (
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_real,
)
from elbo_lib.bounds import importance_weighted_bound
from elbo_lib.gaussians import diagonal_gaussian_log_density
from elbo_lib.objectives import renyi_bound
from elbo_lib.vae.elbo import (
    _bernoulli_log_likelihood,
    _elbo_terms,
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
    _log_prior,
    _require_diagonal_gaussian,
)

__all__ = ["ELBO", "IWAE", "IWAEDReG", "Phase", "RenyiVR", "VAEObjective", "VAEStep",
           "WakeSleep"]


class Phase(NamedTuple):
    """One optimisation phase of an objective: its name and the parameters its own
    Adam moves (``"model"``: encoder and decoder; ``"encoder"``; ``"decoder"``)."""

    name: str
    moves: str


class VAEStep(NamedTuple):
    """What an objective returns for one phase of one step.

    Attributes
    ----------
    loss : torch.Tensor
        What the phase's optimiser minimises: a scalar for one model, shape (R,) for a
        stack of R runs (one loss per run; the loop minimises their sum).
    reconstruction, kl : torch.Tensor or None
        The terms the loop records (the history's ``train_*`` curves are their averages
        over the epoch): for one model, per image, shapes (n,) and (n,) or (n,
        latent_dim); for a stack, summed over the minibatch, shape (R,). ``None`` for a
        phase that records nothing (wake-sleep's sleep phase).
    """

    loss: torch.Tensor
    reconstruction: torch.Tensor | None = None
    kl: torch.Tensor | None = None


_STACK_ATTRIBUTES = ("encode", "decode", "kl_units", "noise", "latent_dim", "dtype",
                     "objectives")


class VAEObjective:
    """Base class of the VAE training objectives: subclass it and implement the hook
    :meth:`_loss` (and :meth:`_stacked_loss` for :func:`elbo_lib.vae.train_replicates`).

    The loops call the hooks directly (their data are checked once, up front); the public
    :meth:`loss` and :meth:`stacked_loss` check their arguments and call the hooks.

    Attributes
    ----------
    phases : tuple of Phase
        The phases of one step, in order; each has its own Adam and the loop calls the
        hook once per phase (one phase, moving the whole model, by default).
    """

    phases: tuple[Phase, ...] = (Phase("joint", "model"),)

    def loss(self, model: VAE, x: torch.Tensor, phase: int = 0, step: int = 0,
             steps_per_epoch: int = 1) -> VAEStep:
        """One phase's loss on the minibatch ``x``, checked (what the loops compute at
        every step, without the checks, by the hook ``_loss``).

        Parameters
        ----------
        model : VAE
        x : torch.Tensor (n, D)
            Binary images.
        phase : int
            Index into :attr:`phases`.
        step, steps_per_epoch : int
            Steps taken before this one (from 0, over all epochs) and steps per epoch,
            for schedules.

        Returns
        -------
        VAEStep

        Raises
        ------
        TypeError, ValueError
            If ``model`` is not a VAE, ``x`` not a finite binary tensor of shape (n,
            num_pixels), ``phase`` not an index of :attr:`phases`, or ``step`` /
            ``steps_per_epoch`` not integers >= 0 / >= 1.
        """
        model = _check_model(model)
        x = _check_data(x, model.num_pixels, "x", binary=True,
                        dtype=_dtype_of(model.encoder, model.decoder), batch=True)
        phase, step, steps_per_epoch = self._check_progress(phase, step, steps_per_epoch)
        return self._loss(model, x, phase, step, steps_per_epoch)

    def stacked_loss(self, stack, x: torch.Tensor, phase: int = 0, step: int = 0,
                     steps_per_epoch: int = 1) -> VAEStep:
        """One phase's losses for a stack of R runs, checked (the hook ``_stacked_loss``
        is what :func:`elbo_lib.vae.train_replicates` calls at every step).

        ``stack`` gives ``stack.encode(x)`` -> (mean, logvar) for x (R, ..., D),
        ``stack.decode(z)`` -> logits for z (R, ..., latent_dim), ``stack.kl_units(mean,
        logvar)`` (the closed-form KL per unit), ``stack.noise(*shape)`` (standard
        normal noise of shape (R, *shape), torch's global generator),
        ``stack.latent_dim``, ``stack.dtype`` and ``stack.objectives`` (one objective per
        run, all of this one's type and :meth:`stack_key`). ``x`` has shape (R, n, D),
        each run its own minibatch. Returns a :class:`VAEStep` of shape-(R,) tensors.

        Raises
        ------
        TypeError, ValueError
            If ``stack`` lacks one of those attributes, ``x`` is not a floating tensor of
            shape (R, n, D), or ``phase``, ``step``, ``steps_per_epoch`` are out of range.
        """
        missing = [a for a in _STACK_ATTRIBUTES if not hasattr(stack, a)]
        if missing:
            raise TypeError(f"stack must be the stack of runs train_replicates passes (with "
                            f"{', '.join(_STACK_ATTRIBUTES)}), got {type(stack).__name__} "
                            f"without {', '.join(missing)}")
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 3 \
                or x.shape[0] != len(stack.objectives):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a floating tensor of shape ({len(stack.objectives)}, "
                             f"n, D), one minibatch per run, got {shape}")
        phase, step, steps_per_epoch = self._check_progress(phase, step, steps_per_epoch)
        return self._stacked_loss(stack, x, phase, step, steps_per_epoch)

    def _check_progress(self, phase, step, steps_per_epoch) -> tuple[int, int, int]:
        phase = check_positive_int(phase, "phase", minimum=0)
        if phase >= len(self.phases):
            raise ValueError(f"phase must be an index of the objective's {len(self.phases)} "
                             f"phases, got {phase}")
        return (phase, check_positive_int(step, "step", minimum=0),
                check_positive_int(steps_per_epoch, "steps_per_epoch"))

    def _loss(self, model: VAE, x: torch.Tensor, phase: int, step: int,
              steps_per_epoch: int) -> VAEStep:
        """The hook: one phase's :class:`VAEStep` for checked arguments. Call the model's
        unchecked kernels ``model._encode(x)`` (the encoder's Distribution) and
        ``model._decode(z)`` (the decoder's logits)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _loss()")

    def _stacked_loss(self, stack, x: torch.Tensor, phase: int, step: int,
                      steps_per_epoch: int) -> VAEStep:
        """The hook of :meth:`stacked_loss` (optional: without it the objective trains
        with :func:`elbo_lib.vae.train_vae` only)."""
        raise NotImplementedError(f"{type(self).__name__} has no _stacked_loss(): train it "
                                  f"with train_vae, one model at a time")

    def stack_key(self) -> tuple:
        """What must agree between the objectives of the runs of one stack (by default
        the type and every attribute)."""
        return (type(self), tuple(sorted(vars(self).items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


#: ELBO attributes that may differ between the runs of one stack.
_PER_RUN = ("beta", "warmup_epochs", "free_bits")


def _free_bits_kl(kl_per_unit: torch.Tensor, free_bits: float) -> torch.Tensor:
    """sum_j max(free_bits, mean over the minibatch of KL_j), per data point (shape (n,))."""
    floored = torch.clamp(kl_per_unit.mean(0), min=free_bits).sum()
    return floored.expand(kl_per_unit.shape[0])


class ELBO(VAEObjective):
    """The ELBO with a weighted KL: mean_i [log p(x_i | z_i) - w_t KL_i], one
    reparameterised sample per image.

    The weight is w_t = beta * :meth:`kl_schedule` (t counts steps); ``beta = 1`` without
    warm-up is the ELBO. With ``free_bits > 0`` the KL term is sum_j max(free_bits,
    mean_batch KL_j) (a unit is not pushed below ``free_bits`` nats; the diagonal
    Gaussian family only). Subclass and override :meth:`kl_schedule` for another
    schedule.

    Parameters
    ----------
    beta : float
        KL weight (> 0); in :func:`~elbo_lib.vae.train_replicates` the runs of a stack
        may have different betas, warm-ups and free bits (chapter 6 trains its beta
        sweep and both remedies as one stack).
    warmup_epochs : int
        Epochs over which the weight rises linearly from 0 to beta (0: none).
    free_bits : float
        Nats per latent unit below which the KL is not pushed (0: none).

    Raises
    ------
    TypeError, ValueError
        For a beta that is not a finite number > 0, warm-up epochs that are not an int
        >= 0, or free bits that are not a finite number >= 0.
    """

    def __init__(self, beta: float = 1.0, warmup_epochs: int = 0,
                 free_bits: float = 0.0) -> None:
        self.beta = check_positive(beta, "beta")
        self.warmup_epochs = check_positive_int(warmup_epochs, "warmup_epochs", minimum=0)
        self.free_bits = check_nonnegative(free_bits, "free_bits")

    def kl_schedule(self, step: int, steps_per_epoch: int) -> float:
        """The factor of beta at step ``step`` (from 0): min(1, (step + 1) / (warmup_epochs
        * steps_per_epoch)) during warm-up, else 1. Override it for another schedule.

        Raises
        ------
        TypeError, ValueError
            If ``step`` is not an integer >= 0 or ``steps_per_epoch`` not one >= 1.
        """
        check_positive_int(step, "step", minimum=0)
        check_positive_int(steps_per_epoch, "steps_per_epoch")
        if self.warmup_epochs:
            return min(1.0, (step + 1) / (self.warmup_epochs * steps_per_epoch))
        return 1.0

    def stack_key(self) -> tuple:
        """Runs of one stack may differ in beta, warm-up and free bits (each run follows
        its own :meth:`kl_schedule`); any other attribute of a subclass must agree."""
        return (type(self), tuple(sorted((k, v) for k, v in vars(self).items()
                                         if k not in _PER_RUN)))

    def _loss(self, model, x, phase, step, steps_per_epoch):
        q = model._encode(x)
        weight = self.beta * self.kl_schedule(step, steps_per_epoch)
        if self.free_bits:
            _require_diagonal_gaussian(q, "ELBO with free_bits")
            kl = _kl_units(q.base_dist.loc, q.logvar)                  # (n, latent_dim)
            reconstruction = _log_likelihood(model, x, q.rsample())
            kl_term = _free_bits_kl(kl, self.free_bits)
        else:
            reconstruction, kl = _elbo_terms(model, q, x)
            kl_term = kl
        return VAEStep(-(reconstruction - weight * kl_term).mean(), reconstruction, kl)

    def _stacked_loss(self, stack, x, phase, step, steps_per_epoch):
        objectives = stack.objectives
        beta = torch.tensor([o.beta for o in objectives], dtype=stack.dtype)
        schedules = [o.kl_schedule(step, steps_per_epoch) for o in objectives]
        if all(s == schedules[0] for s in schedules):      # one schedule for every run
            weight = beta * schedules[0]                                   # (R,)
        else:
            weight = beta * torch.tensor(schedules, dtype=stack.dtype)
        mean, logvar = stack.encode(x)
        kl_units = stack.kl_units(mean, logvar)                        # (R, n, latent)
        kl = kl_units.sum(-1)
        z = mean + torch.exp(0.5 * logvar) * stack.noise(x.shape[1], stack.latent_dim)
        rec = _bernoulli_log_likelihood(x, stack.decode(z))
        free_bits = [o.free_bits for o in objectives]
        if all(f == free_bits[0] for f in free_bits):      # one floor (or none) for all
            if free_bits[0]:
                kl_term = torch.clamp(kl_units.mean(1), min=free_bits[0]).sum(-1)  # (R,)
                loss = -(rec.mean(1) - weight * kl_term)
            else:
                loss = -(rec - weight[:, None] * kl).mean(1)
        else:       # runs with and without free bits, or with different floors
            floor = torch.tensor(free_bits, dtype=stack.dtype)
            kl_term = torch.maximum(kl_units.mean(1), floor[:, None]).sum(-1)     # (R,)
            loss = torch.where(floor > 0, -(rec.mean(1) - weight * kl_term),
                               -(rec - weight[:, None] * kl).mean(1))
        return VAEStep(loss, rec.sum(1), kl.sum(1))


class IWAE(VAEObjective):
    """The importance-weighted bound IWAE_k, k reparameterised samples per image
    (Burda et al. 2016); k = 1 is the ELBO.

    The recorded reconstruction is log p(x | z) averaged over the k samples; the
    recorded KL is the closed form (per unit) for the diagonal Gaussian, else the Monte
    Carlo estimate at the k samples.

    Parameters
    ----------
    k : int
        Importance samples per image (>= 1).

    Raises
    ------
    TypeError, ValueError
        For a k that is not an int >= 1.
    """

    def __init__(self, k: int) -> None:
        self.k = check_positive_int(k, "k")

    def _loss(self, model, x, phase, step, steps_per_epoch):
        log_w, log_lik, kl, _ = _importance_samples(model, x, self.k)      # (k, n) each
        return VAEStep(-importance_weighted_bound(log_w, dim=0).mean(), log_lik.mean(0), kl)

    def _stacked_loss(self, stack, x, phase, step, steps_per_epoch):
        log_w, log_lik, kl, _ = _stacked_importance_samples(stack, x, self.k)  # (R, k, n)
        iwae = torch.logsumexp(log_w, dim=1) - math.log(self.k)
        return VAEStep(-iwae.mean(1), log_lik.mean(1).sum(1), kl.sum(1))


class IWAEDReG(IWAE):
    r"""IWAE_k trained with the doubly reparameterised gradient (DReG; Tucker, Lawson, Gu
    and Maddison 2019): the same bound, the same expected gradient, a better encoder
    gradient.

    The decoder's gradient is IWAE's, sum_j w~_j grad_theta log w_j with w~_j = w_j /
    sum_i w_i. The encoder's is

    .. math::

        \sum_{j=1}^k \tilde w_j^2\, \frac{\partial \log w_j}{\partial z_j}
        \frac{\partial z_j}{\partial \phi},

    where log w_j = log p(x, z_j) - log q(z_j | x) with q's parameters held fixed in
    log q (the score part of IWAE's gradient, reparameterised once more); its mean is
    IWAE's encoder gradient, and its signal-to-noise ratio does not fall with k as the
    plain one's does (chapter 8 derives both;
    :class:`elbo_lib.objectives.DoublyReparameterisedIWAE` is the same estimator for a
    log-joint and a Gaussian q).
    The loss's value is -IWAE_k (as :class:`IWAE`'s, at the same draws); its gradient is
    the one above: the loss is -sum_j w~_j log w_j (weights detached) and a hook on the
    samples scales the gradient reaching each z_j by w~_j. At k = 1 the encoder's
    gradient is the ELBO's path derivative (sticking the landing). The diagonal Gaussian
    encoder family only. Chapter 8.

    Parameters
    ----------
    k : int
        Importance samples per image (>= 1).

    Raises
    ------
    TypeError, ValueError
        For a k that is not an int >= 1; for an encoder that is not the diagonal
        Gaussian family (when a loss is computed).
    """

    def _loss(self, model, x, phase, step, steps_per_epoch):
        log_w, log_lik, kl, z = _importance_samples(model, x, self.k, hold_q=True)
        return VAEStep(_dreg_loss(log_w, z, dim=0).mean(), log_lik.mean(0), kl)

    def _stacked_loss(self, stack, x, phase, step, steps_per_epoch):
        log_w, log_lik, kl, z = _stacked_importance_samples(stack, x, self.k, hold_q=True)
        return VAEStep(_dreg_loss(log_w, z, dim=1).mean(1), log_lik.mean(1).sum(1),
                       kl.sum(1))


class RenyiVR(VAEObjective):
    r"""The variational Renyi bound L_alpha from k samples per image (Li and Turner 2016).

    .. math::

        \hat{\mathcal L}_{\alpha,k} = \frac{1}{1-\alpha}
        \log \frac1k \sum_{j=1}^k w_j^{1-\alpha}, \qquad
        w_j = \frac{p_\theta(x, z_j)}{q_\phi(z_j \mid x)},

    (:func:`elbo_lib.objectives.renyi_bound`), differentiated through reparameterised
    z_j: its gradient is sum_j v_j grad log w_j with v_j = w_j^(1 - alpha) / sum_i
    w_i^(1 - alpha), for the decoder and the encoder alike (Li and Turner's VR gradient).
    alpha = 0 is :class:`IWAE` (the same loss at the same draws); alpha = 1 the mean of
    the k log weights, an ELBO estimate (the weights v_j all 1/k); at k = 1 every alpha
    gives log w. For 0 < alpha < 1 the bound lies between the ELBO and log p(x); for
    alpha < 0 (-inf: "VR-max") the exact L_alpha is an upper bound on log p(x), which
    the loops maximise all the same, as Li and Turner do (its k-sample estimate is below
    IWAE_k + log k). The recorded terms are IWAE's. Chapter 8.

    Parameters
    ----------
    alpha : float
        Real, or -inf / +inf.
    k : int
        Importance samples per image (>= 1).

    Raises
    ------
    TypeError, ValueError
        For an alpha that is not a real number (NaN refused) or a k that is not an int
        >= 1.
    """

    def __init__(self, alpha: float, k: int) -> None:
        infinite = isinstance(alpha, float) and math.isinf(alpha)     # VR-max / VR-min
        self.alpha = float(alpha) if infinite else check_real(alpha, "alpha")
        self.k = check_positive_int(k, "k")

    def _loss(self, model, x, phase, step, steps_per_epoch):
        log_w, log_lik, kl, _ = _importance_samples(model, x, self.k)      # (k, n) each
        return VAEStep(-renyi_bound(log_w, self.alpha, dim=0).mean(), log_lik.mean(0), kl)

    def _stacked_loss(self, stack, x, phase, step, steps_per_epoch):
        log_w, log_lik, kl, _ = _stacked_importance_samples(stack, x, self.k)  # (R, k, n)
        return VAEStep(-renyi_bound(log_w, self.alpha, dim=1).mean(1),
                       log_lik.mean(1).sum(1), kl.sum(1))


def _importance_samples(model: VAE, x: torch.Tensor, k: int, hold_q: bool = False):
    """k reparameterised samples of q(z | x) per image and their log weights: (log w,
    log p(x | z), the KL to the prior, z) of shapes (k, n), (k, n), (n,) or (n,
    latent_dim), (k, n, latent_dim). The KL is the closed form (per unit) for the
    diagonal Gaussian, else the Monte Carlo estimate at the samples. ``hold_q``: log q
    in the weights with q's parameters detached (the samples keep their path; the
    diagonal Gaussian only), as DReG needs."""
    q = model._encode(x)
    if hold_q:
        _require_diagonal_gaussian(q, "IWAEDReG")
    kl = (_kl_units(q.base_dist.loc, q.logvar)
          if isinstance(q, DiagonalGaussianPosterior) else None)
    z = q.rsample((k,))
    scored = (DiagonalGaussianPosterior._from_checked(q.base_dist.loc.detach(),
                                                      q.logvar.detach()) if hold_q else q)
    log_w, log_lik = _log_weights(model, x, scored, z)
    kl = _kl_to_prior(q, z) if kl is None else kl
    return log_w, log_lik, kl, z


def _stacked_importance_samples(stack, x: torch.Tensor, k: int, hold_q: bool = False):
    """:func:`_importance_samples` for a stack of R runs (x of shape (R, n, D)): log w
    and log p(x | z) of shape (R, k, n), the closed-form KL (R, n), z (R, k, n,
    latent_dim)."""
    mean, logvar = stack.encode(x)
    kl = stack.kl_units(mean, logvar).sum(-1)
    z = (mean.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1)
         * stack.noise(k, x.shape[1], stack.latent_dim))
    log_lik = _bernoulli_log_likelihood(x.unsqueeze(1), stack.decode(z))
    if hold_q:
        mean, logvar = mean.detach(), logvar.detach()
    log_q = diagonal_gaussian_log_density(z, mean.unsqueeze(1), logvar.unsqueeze(1),
                                          validate=False)
    return log_lik + _log_prior(z) - log_q, log_lik, kl, z


def _dreg_loss(log_w: torch.Tensor, z: torch.Tensor, dim: int) -> torch.Tensor:
    """Per image, minus IWAE_k in value, with DReG's gradient: -sum_j w~_j log w_j
    (weights detached) plus a hook scaling the gradient reaching z_j by w~_j, so that the
    encoder gets sum_j w~_j^2 (d log w_j / d z_j)(d z_j / d phi) (with log q's
    parameters held by the caller) and the decoder IWAE's sum_j w~_j grad log w_j."""
    weights = torch.softmax(log_w.detach(), dim=dim)
    if z.requires_grad:
        z.register_hook(lambda grad: grad * weights.unsqueeze(-1))
    surrogate = (weights * log_w).sum(dim)
    bound = torch.logsumexp(log_w.detach(), dim=dim) - math.log(log_w.shape[dim])
    return -(bound + (surrogate - surrogate.detach()))


def _dream(probs: torch.Tensor) -> torch.Tensor:
    """Bernoulli pixels of probabilities ``probs``; a NaN probability (a diverged
    decoder) is the library's ValueError, not torch's RuntimeError."""
    try:
        return torch.bernoulli(probs)
    except RuntimeError as err:
        raise ValueError("the decoder's pixel probabilities are not finite") from err


class WakeSleep(VAEObjective):
    """The wake-sleep algorithm (Hinton et al. 1995): two phases per step.

    Wake (moves the decoder): z ~ q_phi(z | x) for the data minibatch, without
    reparameterisation, and minimise -log p_theta(x | z) (the prior has no parameters).
    Sleep (moves the encoder): dream (z, x) ~ p(z) p_theta(x | z) with the updated
    decoder and minimise -log q_phi(z | x) on the dream, i.e. KL(p_theta(z | x) ||
    q_phi(z | x)) averaged over the model's own x (any encoder family whose
    ``log_prob`` takes arbitrary z). The recorded terms are the wake phase's
    reconstruction and the KL of q, so the curves compare with the ELBO's.
    """

    phases = (Phase("wake", "decoder"), Phase("sleep", "encoder"))

    def _loss(self, model, x, phase, step, steps_per_epoch):
        if phase == 0:
            with torch.no_grad():
                q = model._encode(x)
                z = q.rsample()
                kl = _kl_to_prior(q, z)
            reconstruction = _bernoulli_log_likelihood(x, model._decode(z))
            return VAEStep(-reconstruction.mean(), reconstruction, kl)
        with torch.no_grad():
            z_dream = torch.randn(len(x), model.latent_dim)
            x_dream = _dream(torch.sigmoid(model._decode(z_dream)))
        return VAEStep(-_log_q(model._encode(x_dream), z_dream).mean())

    def _stacked_loss(self, stack, x, phase, step, steps_per_epoch):
        b = x.shape[1]
        if phase == 0:
            with torch.no_grad():
                mean, logvar = stack.encode(x)
                z = mean + torch.exp(0.5 * logvar) * stack.noise(b, stack.latent_dim)
                kl = stack.kl_units(mean, logvar).sum(-1)
            rec = _bernoulli_log_likelihood(x, stack.decode(z))
            return VAEStep(-rec.mean(1), rec.sum(1), kl.sum(1))
        with torch.no_grad():
            z_dream = stack.noise(b, stack.latent_dim)
            x_dream = _dream(torch.sigmoid(stack.decode(z_dream)))
        mean, logvar = stack.encode(x_dream)
        log_q = diagonal_gaussian_log_density(z_dream, mean, logvar, validate=False)
        return VAEStep(-log_q.mean(1))
