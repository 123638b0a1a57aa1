"""elbo_lib: the shared library of the ELBO book.

One module per concept; every chapter imports what it needs from here, so that the
book and the code it runs never drift apart.

Modules (the table with the chapters that use each is in CONTRIBUTING.md)
-------
gaussians
    Closed forms of Gaussians: KL, entropy, log-densities (NumPy and torch).
bounds
    Estimators of the ELBO and the evidence over a log-joint and a q.
models
    Models with exact evidence or posterior, used as oracles.
objectives
    What a VI loop maximises, as objects (the ELBO under each estimator, IWAE's bound).
variational
    Variational families as objects and the one VI loop ``fit_vi``.
gradients
    Monte Carlo gradient estimators (score function, pathwise).
heteroscedastic
    Chapter 5's heteroscedastic regression example.
em, hmm
    EM for Gaussian mixtures; Gaussian hidden Markov models.
coordinate_ascent
    The one coordinate-ascent loop of EM and CAVI.
mean_field
    Coordinate-ascent mean-field VI (CAVI).
sparse_coding
    MAP inference: ISTA / FISTA, dictionary learning, patch denoising.
vae
    The variational autoencoder.
flows, density_flows
    Normalising flows: as q, and as density models of discrete data.
diffusion
    Diffusion models as hierarchical VAEs: the forward process, the ELBO's terms, oracles.
datasets
    Digits / MNIST splits and natural-image patches, without network access.
plotting, reporting, reproducibility
    The figure style and text summaries, rounded printing, a chapter's ``Checks``,
    ``seed_everything``.
"""

from elbo_lib.reproducibility import seed_everything, training_seed

__all__ = ["seed_everything", "training_seed"]
__version__ = "0.1.0"
