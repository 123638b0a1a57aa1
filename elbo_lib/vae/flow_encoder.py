"""A planar flow per image as the VAE's encoder family (chapter 7).

:class:`PlanarFlowEncoder` amortises a diagonal Gaussian pushed through K planar layers
(Rezende & Mohamed 2015, section 4; the layers are :class:`elbo_lib.flows.
PlanarStackTransform`); :func:`vae_elbo_of` is the ELBO of any q(z | x) under a VAE's
decoder, :func:`refine_flow_posterior` optimises the flow's outputs per image (the
amortisation gap of Cremer et al. 2018) and :func:`train_flow_vaes` trains R flow VAEs
as one tensor program.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal, TransformedDistribution

from elbo_lib._validation import check_finite_tensor, check_positive, check_positive_int
from elbo_lib.flows import PlanarStackTransform
from elbo_lib.vae.elbo import _bernoulli_log_likelihood, bernoulli_log_likelihood
from elbo_lib.vae.model import VAE, _check_data, _log_prior
from elbo_lib.vae.training import TrainingHistory, _check_loop_arguments, _stopped
from elbo_lib.variational.fit import _Adam

__all__ = ["PlanarFlowEncoder", "refine_flow_posterior", "train_flow_vaes", "vae_elbo_of"]


class PlanarFlowEncoder(nn.Module):
    """x -> q_phi(z | x): a diagonal Gaussian pushed through K planar layers per image.

    One tanh hidden layer outputs, for every image, the mean and log-variance of the
    base Gaussian and the parameters (u, w, b) of K planar layers (Rezende & Mohamed
    2015, section 4: the flow is amortised like the Gaussian). With ``num_layers=0`` it
    is chapter 6's Gaussian encoder. The planar layers start near the identity, as in
    :class:`FlowFamily`: the output layer's flow weights start at zero and its biases
    at a random w with w^T u_hat = 0. Plugs into :class:`elbo_lib.vae.VAE` as
    ``encoder=``. Chapter 7.

    Parameters
    ----------
    num_pixels, latent_dim : int
        Input size and dimension of z.
    num_layers : int
        K >= 0.
    hidden : int
        Hidden units.
    """

    def __init__(self, num_pixels: int, latent_dim: int, num_layers: int,
                 hidden: int = 128) -> None:
        super().__init__()
        self.num_pixels = check_positive_int(num_pixels, "num_pixels")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.num_layers = check_positive_int(num_layers, "num_layers", minimum=0)
        hidden = check_positive_int(hidden, "hidden")
        d, k = self.latent_dim, self.num_layers
        self.inner = nn.Linear(num_pixels, hidden)
        self.outer = nn.Linear(hidden, 2 * d + k * (2 * d + 1))
        if k:
            w = torch.randn(k, d)
            unit = w / w.norm(dim=-1, keepdim=True)
            u = math.log(math.e - 1) / w.norm(dim=-1, keepdim=True) * unit
            with torch.no_grad():
                self.outer.weight[2 * d:].zero_()
                self.outer.bias[2 * d:] = torch.cat([u, w, torch.zeros(k, 1)], -1).reshape(-1)

    def raw_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The encoder's outputs for x (B, num_pixels): ``mean``, ``logvar`` (B, d) and
        ``u``, ``w`` (K, B, d), ``b`` (K, B).

        ``x`` must be a finite real tensor; another floating dtype is converted to the
        weights' (float32 by default), as :class:`elbo_lib.vae.GaussianEncoder` does.
        """
        x = _check_data(x, self.num_pixels, dtype=self.inner.weight.dtype)
        d, k = self.latent_dim, self.num_layers
        out = self.outer(torch.tanh(self.inner(x)))
        params = {"mean": out[..., :d], "logvar": out[..., d:2 * d]}
        flow = out[..., 2 * d:].reshape(*x.shape[:-1], k, 2 * d + 1).movedim(-2, 0)
        params.update(u=flow[..., :d], w=flow[..., d:2 * d], b=flow[..., 2 * d])
        return params

    def posterior(self, params: dict[str, torch.Tensor]) -> Distribution:
        """q(z | x) from :meth:`raw_outputs` (or refined copies of them).

        Raises
        ------
        TypeError, ValueError
            If ``params`` lacks a key, or a value is not a finite real tensor.
        """
        keys = ("mean", "logvar") + (("u", "w", "b") if self.num_layers else ())
        if not isinstance(params, dict) or any(k not in params for k in keys):
            raise TypeError(f"params must be a dict with keys {keys} (from raw_outputs)")
        for key in keys:
            _check_float_tensor(params[key], f"params[{key!r}] ({key})")
        return self._posterior(params)

    def _posterior(self, params: dict[str, torch.Tensor]) -> Distribution:
        """:meth:`posterior` of outputs known to be finite tensors (no checks)."""
        base = Independent(Normal(params["mean"], torch.exp(0.5 * params["logvar"])), 1)
        if self.num_layers == 0:
            return base
        return TransformedDistribution(
            base, [PlanarStackTransform(params["u"], params["w"], params["b"],
                                        validate=False)])

    def forward(self, x: torch.Tensor) -> Distribution:
        """q_phi(z | x): batch shape (B,), event shape (latent_dim,)."""
        return self._posterior(self.raw_outputs(x))


def vae_elbo_of(model: nn.Module, x: torch.Tensor, q: Distribution,
                num_samples: int) -> torch.Tensor:
    """Per-image ELBO of any q(z | x) under a VAE's decoder: mean over S samples of
    log p(x | z) + log N(z; 0, I) - log q(z | x). Differentiable. Chapter 7.

    Parameters
    ----------
    model : elbo_lib.vae.VAE
        Provides ``decode`` (Bernoulli logits).
    x : torch.Tensor, shape (B, num_pixels)
    q : torch.distributions.Distribution
        Batch shape (B,), event shape (latent_dim,), with ``rsample``.
    num_samples : int

    Returns
    -------
    torch.Tensor, shape (B,)
    """
    if not callable(getattr(model, "decode", None)):
        raise TypeError(f"model must be an elbo_lib.vae.VAE (with decode), got "
                        f"{type(model).__name__}")
    num_samples = check_positive_int(num_samples, "num_samples")
    if not isinstance(q, Distribution):
        raise TypeError(f"q must be a torch Distribution, got {type(q).__name__}")
    if not isinstance(x, torch.Tensor) or tuple(x.shape[:-1]) != tuple(q.batch_shape):
        raise ValueError(f"x must be a tensor whose leading shape is q's batch shape "
                         f"{tuple(q.batch_shape)}")
    return _vae_elbo_of(model, x, q, num_samples, model.decode, bernoulli_log_likelihood)


def _vae_elbo_of(model, x: torch.Tensor, q: Distribution, num_samples: int,
                 decode=None, log_likelihood=_bernoulli_log_likelihood) -> torch.Tensor:
    """:func:`vae_elbo_of` with the public ``decode`` and ``log_likelihood`` (which check
    z, x and the logits) or, by default, the VAE's unchecked kernels (a refinement step,
    whose x is checked once and whose ELBO is checked every step). The prior is torch's
    ``Normal`` (the arithmetic chapter 7's results were computed with; the package's
    :func:`~elbo_lib.vae.log_prior` sums in another order, equal up to round-off)."""
    z = q.rsample((num_samples,))
    log_prior = Independent(Normal(torch.zeros_like(z), torch.ones_like(z)), 1).log_prob(z)
    log_lik = log_likelihood(x, (model._decode if decode is None else decode)(z))
    return (log_lik + log_prior - q.log_prob(z)).mean(0)


def refine_flow_posterior(model: nn.Module, x: torch.Tensor, num_steps: int,
                          lr: float = 0.01, num_samples: int = 8, *,
                          start: dict[str, torch.Tensor] | None = None
                          ) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Optimise the encoder's outputs separately for every image (decoder frozen).

    The flow version of chapter 6's refinement (Cremer et al. 2018): the base
    Gaussian's mean and log-variance and the K planar layers' (u, w, b) of each image
    start at the :class:`PlanarFlowEncoder`'s output (or at ``start``) and follow Adam
    on that image's ELBO (:func:`vae_elbo_of`, ``num_samples`` samples per step). The
    images share no parameters, so one batched problem is n independent optimisations.
    Chapter 7 also uses it to fit one family's q on a decoder trained with another
    family's encoder (``start`` then comes from that other q).

    Parameters
    ----------
    model : elbo_lib.vae.VAE
        With a :class:`PlanarFlowEncoder`; its K sets the family.
    x : torch.Tensor, shape (n, num_pixels)
        Binary images.
    num_steps : int
    lr : float
    num_samples : int
    start : dict of torch.Tensor, optional
        Starting outputs with the keys and shapes of ``model.encoder.raw_outputs(x)``
        (``mean``, ``logvar`` (n, d); for K > 0 also ``u``, ``w`` (K, n, d), ``b``
        (K, n)); default: the encoder's outputs for x.

    Returns
    -------
    params : dict of torch.Tensor
        Refined outputs, detached (pass to ``model.encoder.posterior``).
    trace : numpy.ndarray, shape (num_steps,)
        Mean stochastic ELBO per step.

    Raises
    ------
    TypeError, ValueError
        For a model without a :class:`PlanarFlowEncoder`, x that is not a binary
        (n, num_pixels) tensor, bad sizes, or the first step at which the ELBO is not
        finite or q cannot be formed (a step too large: "stopped at step s of
        num_steps"). The model is never changed (its decoder is frozen and the encoder
        only supplies the start).
    """
    if not isinstance(getattr(model, "encoder", None), PlanarFlowEncoder):
        raise TypeError(f"model.encoder must be a PlanarFlowEncoder (model: an "
                        f"elbo_lib.vae.VAE), got {type(model).__name__}")
    if not isinstance(model, VAE):
        raise TypeError(f"model must be an elbo_lib.vae.VAE, got "
                        f"{type(model).__name__}")
    x = _check_data(x, model.encoder.num_pixels, binary=True, batch=True,
                    dtype=model.encoder.inner.weight.dtype)
    num_steps = check_positive_int(num_steps, "num_steps")
    lr = check_positive(lr, "lr")
    num_samples = check_positive_int(num_samples, "num_samples")
    with torch.no_grad():
        own = model.encoder.raw_outputs(x)
    if start is not None:
        needed = {k for k, v in own.items() if v.numel() > 0}
        if not isinstance(start, dict) or not needed <= set(start):
            raise TypeError(f"start must be a dict with the keys of "
                            f"model.encoder.raw_outputs(x) {tuple(own)}")
        for key, value in own.items():
            if value.numel() == 0:
                continue
            given = _check_float_tensor(start[key], f"start[{key!r}]")
            if given.shape != value.shape:
                raise ValueError(f"start[{key!r}] must have shape {tuple(value.shape)}, "
                                 f"got {tuple(given.shape)}")
            own[key] = given.detach().to(value.dtype)
    params = {name: value.clone().requires_grad_(True) for name, value in own.items()
              if value.numel() > 0}
    optimizer = _Adam(list(params.values()), lr=lr)   # torch's Adam, bit for bit
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    trace = np.empty(num_steps)
    try:
        for step in range(num_steps):
            try:
                # x was checked above; the ELBO is checked below
                elbo = _vae_elbo_of(model, x, model.encoder._posterior(params), num_samples)
                trace[step] = float(elbo.detach().mean())
                if not math.isfinite(trace[step]):
                    raise ValueError("the ELBO is not finite")
            except ValueError as err:   # also torch's check of the base Gaussian's scale
                raise ValueError(f"refine_flow_posterior stopped at step {step + 1} of "
                                 f"{num_steps}: {_stop_reason(err)} (a smaller lr than "
                                 f"{lr} may help)") from err
            optimizer.zero_grad(set_to_none=True)
            (-elbo.sum()).backward()
            optimizer.step()
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    return {name: value.detach() for name, value in params.items()}, trace


def _stacked_linear(layers: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights (R, n_in, n_out) and biases (R, 1, n_out) of R linear layers, as new
    leaf tensors (copies) for a batched training loop."""
    weight = torch.stack([m.weight.detach().T for m in layers]).contiguous()
    bias = torch.stack([m.bias.detach() for m in layers]).unsqueeze(1).contiguous()
    return weight.requires_grad_(True), bias.requires_grad_(True)


def train_flow_vaes(models: list, x_train: torch.Tensor, x_val: torch.Tensor,
                    num_epochs: int, generators: list[torch.Generator], *,
                    batch_size: int = 64, lr: float = 1e-3) -> list:
    """Train R VAEs with :class:`PlanarFlowEncoder` encoders at once, each as if alone.

    Each model follows :func:`elbo_lib.vae.train_vae` (beta = 1): every epoch a fresh
    permutation of the training set, minibatches of ``batch_size``, one reparameterised
    sample per image, the KL in closed form for K = 0 (``kl_divergence`` of the base
    Gaussian against N(0, I), as :func:`~elbo_lib.vae.kl_to_prior`) and by Monte Carlo
    (log q(z | x) - log p(z) at the sample) for K > 0, Adam with ``lr``, and the
    validation ELBO (one sample) at the end of every epoch. Model r draws its
    permutations and noise from ``generators[r]``, in the order and shapes
    :func:`~elbo_lib.vae.train_vae` draws them from torch's global generator, so a
    generator in the state the global one had after seeding and building the model
    reproduces that model's solo run up to rounding (the products are batched:
    ``baddbmm`` over the R models instead of one ``addmm`` each). The R models'
    parameters are stacked, and one step of all of them is one tensor program: the
    loss is the sum of the models' losses, so each model's gradient (and Adam,
    elementwise, its step) is that of its own loss. Chapter 7.

    Parameters
    ----------
    models : list of elbo_lib.vae.VAE
        Distinct models with :class:`PlanarFlowEncoder` encoders of one architecture
        (same K, latent dimension and widths); trained in place.
    x_train, x_val : torch.Tensor, shape (n, num_pixels)
        Binary data.
    num_epochs : int
    generators : list of torch.Generator
        One per model; advanced by the draws of its model's training.
    batch_size : int
    lr : float

    Returns
    -------
    list of elbo_lib.vae.TrainingHistory
        One per model (``seconds`` is the time of the whole stack).

    Raises
    ------
    TypeError, ValueError
        For bad arguments, or the first step at which a model's loss is not finite
        (naming the model, epoch and step); the models are then left unchanged.
    """
    if isinstance(models, VAE) or not isinstance(models, list | tuple) or not models:
        raise TypeError(f"models must be a non-empty list of VAE, got {type(models).__name__}")
    for model in models:
        if not isinstance(model, VAE) or not isinstance(model.encoder, PlanarFlowEncoder):
            raise TypeError("models must be elbo_lib.vae.VAE objects with a "
                            "PlanarFlowEncoder encoder")
    if len({id(m) for m in models}) != len(models):
        raise ValueError("models must be distinct objects (each is its own run)")
    shapes = [{n: tuple(p.shape) for n, p in m.named_parameters()} for m in models]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("models must have parameters of the same shapes (one architecture)")
    if (not isinstance(generators, list | tuple) or len(generators) != len(models)
            or not all(isinstance(g, torch.Generator) for g in generators)):
        raise TypeError(f"generators must be a list of {len(models)} torch.Generator "
                        f"objects, one per model")
    first = models[0]
    dtype = first.encoder.inner.weight.dtype
    if any(p.dtype != dtype for m in models for p in m.parameters()):
        raise TypeError("every parameter of the models must have one dtype")
    x_train, x_val, num_epochs, batch_size, lr = _check_loop_arguments(
        first.num_pixels, dtype, x_train, x_val, num_epochs, batch_size, lr)
    num, d, k = len(models), first.latent_dim, first.encoder.num_layers
    layers = {"inner": [m.encoder.inner for m in models],
              "outer": [m.encoder.outer for m in models],
              "dec_in": [m.decoder[0] for m in models],
              "dec_out": [m.decoder[2] for m in models]}
    stacked = {name: _stacked_linear(mods) for name, mods in layers.items()}
    optimizer = _Adam([t for pair in stacked.values() for t in pair], lr=lr)  # torch's, bit for bit
    zero = torch.zeros(d, dtype=dtype)
    prior = Independent(Normal(zero, torch.ones_like(zero)), 1)

    def linear(name: str, x: torch.Tensor) -> torch.Tensor:
        weight, bias = stacked[name]
        return torch.baddbmm(bias, x, weight)

    def elbo_terms(x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and KL of each image of each model, (R, b), x (R, b, pixels)."""
        out = linear("outer", torch.tanh(linear("inner", x)))
        mean, logvar = out[..., :d], out[..., d:2 * d]
        base = Independent(Normal(mean, torch.exp(0.5 * logvar)), 1)
        z = base.base_dist.loc + eps * base.base_dist.scale      # Normal.rsample's form
        if k == 0:
            kl = torch.distributions.kl_divergence(base, prior)
        else:
            flow = out[..., 2 * d:].reshape(*x.shape[:-1], k, 2 * d + 1).movedim(-2, 0)
            stack = PlanarStackTransform(flow[..., :d], flow[..., d:2 * d],
                                         flow[..., 2 * d], validate=False)
            q = TransformedDistribution(base, [stack])
            z = stack(z)
            kl = q.log_prob(z) - _log_prior(z)
        logits = linear("dec_out", torch.tanh(linear("dec_in", z)))
        return _bernoulli_log_likelihood(x, logits), kl

    def noise(rows: int) -> torch.Tensor:
        return torch.stack([torch.empty(rows, d, dtype=dtype).normal_(generator=g)
                            for g in generators])

    histories = [TrainingHistory() for _ in models]
    n, where = len(x_train), "train_flow_vaes"
    start = time.perf_counter()
    # the data are checked above and every loss is checked below
    for epoch in range(num_epochs):
        totals = torch.zeros(num, 2, dtype=torch.float64)
        order = torch.stack([torch.randperm(n, generator=g) for g in generators])
        for step, idx in enumerate(order.split(batch_size, dim=1)):
            x = x_train[idx]                                          # (R, b, pixels)
            reconstruction, kl = elbo_terms(x, noise(x.shape[1]))
            loss = -(reconstruction - kl).mean(-1)                     # (R,)
            bad = (~torch.isfinite(loss)).nonzero()
            if len(bad):
                raise ValueError(_stopped(
                    where, epoch, num_epochs, step, lr,
                    f"the loss of model {int(bad[0, 0])} is not finite"))
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
            totals += torch.stack([reconstruction.detach().sum(-1),
                                   kl.detach().sum(-1)], dim=1).double()
        with torch.no_grad():
            rec_v, kl_v = elbo_terms(x_val.expand(num, *x_val.shape),
                                     noise(len(x_val)))
            bad = (~torch.isfinite((rec_v - kl_v).mean(-1))).nonzero()
        if len(bad):
            raise ValueError(_stopped(
                where, epoch, num_epochs, None, lr,
                f"the validation ELBO of model {int(bad[0, 0])} is not finite"))
        for i, history in enumerate(histories):
            rec, kl_mean = (totals[i] / n).tolist()
            rv, kv = float(rec_v[i].mean()), float(kl_v[i].mean())
            history.record({"elbo": rec - kl_mean, "reconstruction": rec, "kl": kl_mean},
                           {"elbo": rv - kv, "reconstruction": rv, "kl": kv})
    seconds = time.perf_counter() - start
    with torch.no_grad():
        for name, mods in layers.items():
            weight, bias = stacked[name]
            for i, m in enumerate(mods):
                m.weight.copy_(weight[i].T)
                m.bias.copy_(bias[i, 0])
    for history in histories:
        history.seconds = seconds
    return histories


def _check_float_tensor(value, name: str) -> torch.Tensor:
    """A finite floating-point tensor (an encoder output or a start for refinement)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    return check_finite_tensor(value, name)


def _stop_reason(err: ValueError) -> str:
    """The reason of a stopped refinement: ours, or torch's constraint check of the base
    Gaussian in a few words (its message prints whole tensors; as in
    :func:`elbo_lib.flows.fit_maximum_likelihood`)."""
    reason = str(err)
    if reason.startswith("Expected parameter"):
        what = reason.split(" (")[0].removeprefix("Expected ")
        reason = f"q cannot be formed (its {what} is not finite or out of range)"
    return reason
