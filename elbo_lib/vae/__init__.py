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

The package's modules, each importing only those above it: :mod:`~elbo_lib.vae.model`
(the networks, the prior, the encoder families), :mod:`~elbo_lib.vae.elbo` (the ELBO and
the importance-weighted bound, in one place), :mod:`~elbo_lib.vae.objectives` (what the
loops train on, as objects: ``ELBO(beta, warmup_epochs, free_bits)``, ``IWAE(k)``,
``IWAEDReG(k)``, ``RenyiVR(alpha, k)``, ``WakeSleep()``; a new one is a subclass of
:class:`VAEObjective`, no edit of a loop),
:mod:`~elbo_lib.vae.training` (the one single-model loop),
:mod:`~elbo_lib.vae.diagnostics` (quadrature, gaps, active units, the aggregate
posterior), :mod:`~elbo_lib.vae.replicates` (several runs as one tensor program) and
:mod:`~elbo_lib.vae.flow_encoder` (chapter 7's planar-flow encoder family, its
refinement and its batched training, on the layers of :mod:`elbo_lib.flows`).
Every public name is importable from ``elbo_lib.vae``. Public functions check their
inputs; the loops check their data once and their loss every step, and call the
package's unchecked private kernels in between.
"""


from elbo_lib.vae.diagnostics import (
    AggregatePosterior,
    active_units,
    aggregate_posterior,
    decoder_gradient_by_quadrature,
    fano_error_bound,
    grid_log_marginal,
    inference_gaps,
    kl_per_unit,
    latent_grid,
    refine_posterior,
)
from elbo_lib.vae.elbo import (
    bernoulli_log_likelihood,
    elbo_per_point,
    elbo_terms,
    evaluate_elbo,
    importance_log_weights,
    iwae_bound,
    iwae_objective,
    kl_to_prior,
)
from elbo_lib.vae.flow_encoder import (
    PlanarFlowEncoder,
    refine_flow_posterior,
    train_flow_vaes,
    vae_elbo_of,
)
from elbo_lib.vae.model import (
    VAE,
    DiagonalGaussianPosterior,
    GaussianEncoder,
    as_tensor,
    check_binary_images,
    log_prior,
    reparameterize,
)
from elbo_lib.vae.objectives import (
    ELBO,
    IWAE,
    IWAEDReG,
    Phase,
    RenyiVR,
    VAEObjective,
    VAEStep,
    WakeSleep,
)
from elbo_lib.vae.replicates import train_replicates
from elbo_lib.vae.training import (
    TrainingHistory,
    fit_encoder,
    train_vae,
    train_wake_sleep,
)

__all__ = [
    "ELBO",
    "IWAE",
    "IWAEDReG",
    "VAE",
    "AggregatePosterior",
    "DiagonalGaussianPosterior",
    "GaussianEncoder",
    "Phase",
    "PlanarFlowEncoder",
    "RenyiVR",
    "TrainingHistory",
    "VAEObjective",
    "VAEStep",
    "WakeSleep",
    "active_units",
    "aggregate_posterior",
    "decoder_gradient_by_quadrature",
    "elbo_per_point",
    "fano_error_bound",
    "fit_encoder",
    "inference_gaps",
    "iwae_objective",
    "kl_per_unit",
    "as_tensor",
    "bernoulli_log_likelihood",
    "check_binary_images",
    "elbo_terms",
    "evaluate_elbo",
    "grid_log_marginal",
    "importance_log_weights",
    "iwae_bound",
    "kl_to_prior",
    "latent_grid",
    "log_prior",
    "refine_flow_posterior",
    "refine_posterior",
    "reparameterize",
    "train_vae",
    "train_flow_vaes",
    "train_replicates",
    "train_wake_sleep",
    "vae_elbo_of",
]
