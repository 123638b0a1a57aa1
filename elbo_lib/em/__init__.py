"""Expectation-maximisation for Gaussian mixtures, as coordinate ascent on the ELBO.

Chapter 2 of the book. For a mixture p(x, z | theta) = prod_i pi_{z_i} N(x_i | mu_{z_i},
Sigma_{z_i}) and any distribution q over the assignments z,

.. math::

    \\log p(x \\mid \\theta) = \\mathcal L(q, \\theta)
        + \\mathrm{KL}\\big(q(z) \\,\\|\\, p(z \\mid x, \\theta)\\big),
    \\qquad
    \\mathcal L(q, \\theta) = \\sum_{i,k} r_{ik}\\,[\\log \\pi_k + \\log \\mathcal N(x_i \\mid
        \\mu_k, \\Sigma_k)] - \\sum_{i,k} r_{ik} \\log r_{ik},

with r_{ik} = q(z_i = k). The E-step sets r to the exact posterior (the bound becomes
tight), the M-step maximises L over theta in closed form (Dempster, Laird and Rubin
1977; Neal and Hinton 1998; Bishop 2006, section 9.4).

The implementation follows scikit-learn's ``GaussianMixture(covariance_type="full")``
step for step (same covariance floor ``reg_covar``, same stopping rule on the change of
the per-sample mean log-likelihood, same ``max_iter``), so that both give the same answer
from the same initial parameters; it is faster because every component's log-density
comes from one BLAS matrix product per block of rows, and it records the ELBO after
every E-step and M-step for free.

The package has one submodule per concept; import from the package itself
(``from elbo_lib.em import GaussianMixtureEM``):

* :mod:`elbo_lib.em.mixture` -- the Gaussian mixture: its log-likelihood, the exact
  posterior (E-step), the ELBO, the weighted M-step, random starts and relabelling;
* :mod:`elbo_lib.em.state` -- what the EM loops share: their state, scikit-learn's
  stopping rule, and the result type :class:`EMTrace` of incremental EM and MAP-EM;
* :mod:`elbo_lib.em.estimator` -- :class:`GaussianMixtureEM` (plain and chunked EM);
* :mod:`elbo_lib.em.iteration` -- one EM iteration examined: the bounds along the line
  it moves theta on, and its Jacobian (the rate of convergence);
* :mod:`elbo_lib.em.incremental` -- incremental EM (Neal and Hinton 1998);
* :mod:`elbo_lib.em.map_estimation` -- MAP-EM with a conjugate prior.
"""

from elbo_lib.em.estimator import GaussianMixtureEM
from elbo_lib.em.incremental import incremental_em
from elbo_lib.em.iteration import bound_along_path, em_map_jacobian, interpolate_parameters
from elbo_lib.em.map_estimation import gmm_log_prior, map_em
from elbo_lib.em.mixture import (
    gmm_elbo,
    gmm_log_likelihood,
    gmm_responsibilities,
    match_components,
    random_start,
    weighted_gaussian_m_step,
)
from elbo_lib.em.state import EMTrace

__all__ = [
    "GaussianMixtureEM",
    "gmm_elbo",
    "gmm_log_likelihood",
    "gmm_responsibilities",
    "interpolate_parameters",
    "bound_along_path",
    "match_components",
    "random_start",
    "EMTrace",
    "incremental_em",
    "gmm_log_prior",
    "map_em",
    "weighted_gaussian_m_step",
    "em_map_jacobian",
]
