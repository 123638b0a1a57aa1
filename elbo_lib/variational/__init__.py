"""Variational families as objects, and the one stochastic-gradient VI loop (chapters 5, 7).

A *variational family* is a :class:`torch.nn.Module` whose parameters are the
variational parameters phi and whose :meth:`~VariationalFamily.distribution` returns
q_phi as a :class:`torch.distributions.Distribution` with event shape (D,) and an empty
batch shape, supporting ``rsample`` (for the pathwise gradient) and ``log_prob``. That
is all :func:`fit_vi` asks of a family, so a new family (a normalising flow, chapter 7)
is a new class and no edit of the loop. A flow returns a
:class:`~torch.distributions.TransformedDistribution` whose transforms cache their last
input (``cache_size=1``), so ``log_prob`` of its own samples needs no inverse.

:func:`fit_vi` maximises an objective of :mod:`elbo_lib.objectives`, by default the
ELBO (Blei, Kucukelbir and McAuliffe 2017, eq. 13)

.. math::

    \\mathcal L(\\phi) = \\mathbb E_{q_\\phi(z)}[\\log p(x, z) - \\log q_\\phi(z)]

with its pathwise (reparameterisation) gradient, and with an optimiser passed in as a
factory (by default Adam, Kingma and Ba 2015): the objective object decides what is
maximised and how its gradient is estimated (pathwise, path derivative, score function,
importance weighted), so a new bound is a new class and no edit of the loop.
:func:`fit_gaussian_vi_parallel` runs many Gaussian fits (a step-size sweep over seeds)
in one batched computation, each run with its own step size (:class:`RunwiseAdam`, a
torch optimiser) (chapter 5). A family built with ``num_runs = R > 1`` holds R
independent members (its distribution has batch shape (R,)), and :func:`fit_vi` trains
them as R independent runs in one computation: a trained result is a statement about
many runs, so chapter 7 fits every flow over several runs at the cost of about one.
:func:`best_gaussian_by_quadrature` finds the best full-covariance Gaussian of a
low-dimensional target deterministically, the independent answer that a Gaussian fit
by stochastic VI is checked against.

The package has one submodule per concept; import from the package itself
(``from elbo_lib.variational import fit_vi``):

* :mod:`elbo_lib.variational.families` -- the family protocol and the diagonal and
  full-rank Gaussians;
* :mod:`elbo_lib.variational.fit` -- the one VI loop :func:`fit_vi` and its result;
* :mod:`elbo_lib.variational.parallel` -- the batched step-size sweep
  :func:`fit_gaussian_vi_parallel` and its optimiser :class:`RunwiseAdam`;
* :mod:`elbo_lib.variational.quadrature` -- the best Gaussian by quadrature.
"""

# the module-level names of the former module stay importable from the package
from elbo_lib.variational.families import DTYPE as DTYPE
from elbo_lib.variational.families import DiagonalGaussian, FullRankGaussian, VariationalFamily
from elbo_lib.variational.fit import DEFAULT_LR as DEFAULT_LR
from elbo_lib.variational.fit import OptimizerFactory as OptimizerFactory
from elbo_lib.variational.fit import VIResult, fit_vi
from elbo_lib.variational.parallel import (
    ParallelVIResult,
    RunwiseAdam,
    fit_gaussian_vi_parallel,
)
from elbo_lib.variational.parallel import RunwiseOptimizerFactory as RunwiseOptimizerFactory
from elbo_lib.variational.quadrature import QuadratureGaussianFit, best_gaussian_by_quadrature

__all__ = [
    "DiagonalGaussian",
    "FullRankGaussian",
    "ParallelVIResult",
    "QuadratureGaussianFit",
    "RunwiseAdam",
    "VIResult",
    "VariationalFamily",
    "best_gaussian_by_quadrature",
    "fit_gaussian_vi_parallel",
    "fit_vi",
]
