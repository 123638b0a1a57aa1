"""Gradient estimators: Monte Carlo gradients of expectations (chapters 5, 6).

The gradient of the ELBO with respect to the variational parameters phi is the gradient
of an expectation under a distribution that itself depends on phi,
``grad_phi E_{q_phi}[f(z)]``. Two unbiased Monte Carlo estimators:

score function (REINFORCE, log-derivative trick)
    ``E_q[f(z) grad_phi log q_phi(z)]``; needs only samples and ``log_prob``, works for
    discrete z, high variance. A baseline ``b`` (any constant, or the leave-one-out mean
    of the other samples) keeps it unbiased and lowers the variance:
    ``E_q[(f(z) - b) grad_phi log q_phi(z)]`` (:func:`check_baseline`,
    :func:`apply_baseline`).
pathwise (reparameterisation)
    ``z = g(eps, phi)`` with ``eps`` from a fixed base distribution, so
    ``grad_phi E_q[f(z)] = E_eps[grad_phi f(g(eps, phi))]``; needs ``rsample`` (continuous z)
    and a differentiable f, usually much lower variance.

Both are implemented for *any* ``torch.distributions`` family through a factory
``make_q(**params)`` that builds q from its parameters. Per-sample gradients are obtained
in one backward pass by giving every sample its own copy of the parameters, so variances
are measured without Python loops over samples (:func:`per_sample_gradients`,
:func:`gradient_stats`). For a Gaussian q the pathwise ELBO gradient is also written out
(:func:`gaussian_elbo_gradient_samples`: closed-form entropy or the path derivative) with
its exact value for a Gaussian target (:func:`gaussian_target_elbo_gradient`).
:func:`measure_valued_gradient_samples` is the third family, for a Gaussian's mean: the
density's derivative split into two Rayleigh-shifted densities (Mohamed et al. 2020).
:func:`gradient_snr` measures the signal-to-noise ratio of any stochastic objective's
gradient per parameter group (chapter 6: IWAE_k encoder and decoder gradients).

The ELBO estimators these gradients differentiate live in :mod:`elbo_lib.bounds`
(``monte_carlo_elbo``, ``score_function_elbo_surrogate``); the loop that follows them is
:func:`elbo_lib.variational.fit_vi`.

References: Williams (1992); Ranganath, Gerrish and Blei (2014); Kingma and Welling
(2014); Rezende, Mohamed and Wierstra (2014); Roeder, Wu and Duvenaud (2017);
Rainforth et al. (2018); Mohamed et al. (2020).

The package has one submodule per concept; import from the package itself
(``from elbo_lib.gradients import gradient_stats``):

* :mod:`elbo_lib.gradients.base` -- the vocabulary :data:`ESTIMATORS`, :data:`DTYPE`
  and the input checks the estimators share;
* :mod:`elbo_lib.gradients.baselines` -- the score function's baselines and its
  leave-one-out control variate;
* :mod:`elbo_lib.gradients.estimators` -- score-function and pathwise gradients for any
  torch family, per sample and their statistics;
* :mod:`elbo_lib.gradients.gaussian` -- the ELBO gradient of a Gaussian q written out,
  its exact value for a Gaussian target, and its score-function estimates;
* :mod:`elbo_lib.gradients.measure_valued` -- the measure-valued gradient of a
  Gaussian's mean;
* :mod:`elbo_lib.gradients.snr` -- the signal-to-noise ratio of a gradient.
"""

from elbo_lib.gradients.base import DTYPE as DTYPE  # the dtype of every estimate, as before
from elbo_lib.gradients.base import ESTIMATORS
from elbo_lib.gradients.baselines import (
    apply_baseline,
    check_baseline,
    leave_one_out_control_variate,
)
from elbo_lib.gradients.estimators import (
    GradientStats,
    gradient_stats,
    pathwise_gradient,
    per_sample_gradients,
    score_function_gradient,
)
from elbo_lib.gradients.gaussian import (
    gaussian_elbo_gradient_samples,
    gaussian_score_gradient_estimates,
    gaussian_target_elbo_gradient,
)
from elbo_lib.gradients.measure_valued import measure_valued_gradient_samples
from elbo_lib.gradients.snr import GradientSNR, gradient_snr

__all__ = [
    "GradientSNR",
    "GradientStats",
    "apply_baseline",
    "check_baseline",
    "ESTIMATORS",
    "gaussian_elbo_gradient_samples",
    "gaussian_score_gradient_estimates",
    "gaussian_target_elbo_gradient",
    "gradient_snr",
    "gradient_stats",
    "leave_one_out_control_variate",
    "measure_valued_gradient_samples",
    "pathwise_gradient",
    "per_sample_gradients",
    "score_function_gradient",
]
