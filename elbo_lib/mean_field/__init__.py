"""Mean-field variational inference and coordinate ascent (CAVI): chapter 4.

Every routine here maximises the ELBO over a product family q(z) = prod_j q_j(z_j) by
setting one factor at a time to its optimum, log q_j*(z_j) = E_{-j}[log p(x, z)] + const
(Bishop 2006, section 10.1.1; Goodfellow et al. 2016, section 19.4), and each comes with an
exact answer to check it against (the oracles live in :mod:`elbo_lib.models`):

* :func:`cavi_normal_gamma` -- univariate Gaussian with unknown mean and precision and a
  Normal-Gamma prior (Bishop 2006, section 10.1.3); the exact posterior is Normal-Gamma
  (:func:`elbo_lib.models.normal_gamma_posterior`) and the exact evidence is
  :func:`elbo_lib.models.normal_gamma_log_evidence`.
* :func:`mean_field_gaussian`, :func:`cavi_gaussian` -- a correlated Gaussian approximated
  by a factorised one (Bishop 2006, section 10.1.2), with
  :func:`elbo_lib.gaussians.gaussian_kl_full`.
* :func:`cavi_gaussian_mixture` -- the Bayesian mixture of unit-variance Gaussians of
  Blei, Kucukelbir & McAuliffe (2017), section 3, with its ELBO
  :func:`gaussian_mixture_elbo`.
* :func:`bsc_mean_field` -- binary sparse coding with the fixed-point updates of
  Goodfellow et al. (2016), section 19.4.1, checked against exact enumeration
  (:func:`elbo_lib.models.bsc_exact_posterior`).
* :func:`cavi_dirichlet_mixture` -- the same mixture with learned weights (q(pi) Dirichlet),
  checked against its exact evidence over all set partitions
  (:func:`elbo_lib.models.dirichlet_mixture_log_evidence`) on small data.
* :func:`bsc_variational_em` -- learning W, b, beta of binary sparse coding with mean-field
  E-steps (Goodfellow et al. 2016, section 19.4.4), with the exact log-likelihood
  (:func:`elbo_lib.models.bsc_log_likelihood`) tracked by enumeration; its E-step can keep
  the best of many starts per input (:func:`bsc_mean_field_multistart`).
* :func:`svi_gaussian_mixture` -- stochastic variational inference with natural gradients
  (Hoffman et al. 2013) for the mixture of :func:`cavi_gaussian_mixture`, checked against
  full-batch CAVI.

The package has one submodule per model; import from the package itself
(``from elbo_lib.mean_field import cavi_normal_gamma``): :mod:`~elbo_lib.mean_field.normal_gamma`,
:mod:`~elbo_lib.mean_field.gaussian`, :mod:`~elbo_lib.mean_field.mixture` (CAVI for the
Bayesian mixture), :mod:`~elbo_lib.mean_field.svi` (its stochastic variational inference),
:mod:`~elbo_lib.mean_field.dirichlet_mixture` and
:mod:`~elbo_lib.mean_field.binary_sparse_coding` (CAVI and variational EM).
"""

from elbo_lib.mean_field.binary_sparse_coding import (
    BSCLearningResult,
    BSCTrace,
    bsc_elbo,
    bsc_elbo_batch,
    bsc_elbo_enumeration,
    bsc_mean_field,
    bsc_mean_field_batch,
    bsc_mean_field_multistart,
    bsc_variational_em,
)
from elbo_lib.mean_field.dirichlet_mixture import (
    DirichletMixtureCAVIResult,
    cavi_dirichlet_mixture,
    dirichlet_mixture_elbo,
)
from elbo_lib.mean_field.gaussian import cavi_gaussian, mean_field_gaussian
from elbo_lib.mean_field.mixture import (
    MixtureCAVIResult,
    cavi_gaussian_mixture,
    gaussian_mixture_elbo,
)
from elbo_lib.mean_field.normal_gamma import (
    NormalGammaCAVIResult,
    cavi_normal_gamma,
    normal_gamma_elbo,
)
from elbo_lib.mean_field.svi import SVIMixtureResult, svi_gaussian_mixture

__all__ = [
    "BSCLearningResult",
    "BSCTrace",
    "DirichletMixtureCAVIResult",
    "MixtureCAVIResult",
    "NormalGammaCAVIResult",
    "bsc_elbo",
    "bsc_elbo_batch",
    "bsc_elbo_enumeration",
    "bsc_mean_field",
    "bsc_mean_field_batch",
    "bsc_mean_field_multistart",
    "bsc_variational_em",
    "cavi_dirichlet_mixture",
    "cavi_gaussian",
    "cavi_gaussian_mixture",
    "cavi_normal_gamma",
    "SVIMixtureResult",
    "svi_gaussian_mixture",
    "dirichlet_mixture_elbo",
    "gaussian_mixture_elbo",
    "mean_field_gaussian",
    "normal_gamma_elbo",
]
