"""Variational objectives as objects: what a VI loop maximises, and how (chapters 5, 7).

An *objective* is an object with one method, :meth:`VariationalObjective.surrogate`
``(log_joint, q, num_samples) -> Surrogate(loss, estimate)``: from ``num_samples``
samples of q it returns a scalar ``loss`` whose gradient is the objective's (negated)
gradient estimate, and the objective's ``estimate`` (detached, one value per member of
q's batch). The loop (:func:`elbo_lib.variational.fit_vi`) only minimises ``loss``, so
a new bound is a new class and no edit of the loop, as Pyro hands an ``ELBO`` object to
``SVI``. The book's estimators of the ELBO gradient are instances:

========================  =============================================================
``PathwiseELBO()``        reparameterisation through ``rsample`` (Kingma and Welling
                          2014; Rezende et al. 2014)
``PathDerivativeELBO()``  the path derivative, "sticking the landing" (Roeder, Wu and
                          Duvenaud 2017): log q's parameters held fixed
``ScoreFunctionELBO(b)``  the score function with a baseline b (Ranganath, Gerrish and
                          Blei 2014)
``ScoreControlVariateELBO()``  the score function of E_q[log p] with one control-variate
                          coefficient per coordinate and the Gaussian entropy's exact
                          gradient (Ranganath et al. 2014, section 3.2)
``ImportanceWeightedBound(k)``  the importance-weighted bound of Burda, Grosse and
                          Salakhutdinov (2016), pathwise
``PathDerivativeIWAE(k)``  the same bound, log q's parameters held fixed ("sticking the
                          landing" for IWAE; biased for k > 1, Tucker et al. 2019)
``DoublyReparameterisedIWAE(k)``  the same bound with the doubly reparameterised
                          gradient (DReG) of Tucker, Lawson, Gu and Maddison (2019)
``RenyiBound(alpha, k)``  the variational Renyi bound L_alpha of Li and Turner (2016):
                          the ELBO at alpha = 1, IWAE at alpha = 0, VR-max at -inf
``ChiUpperBound(n, k)``   the chi upper bound CUBO_n of Dieng et al. (2017) = L_(1-n),
                          an upper bound on log p(x), minimised (``is_upper_bound``)
``InclusiveKL(k)``        KL(p(z | x) || q) by reweighted wake-sleep's self-normalised
                          q-update (Bornschein and Bengio 2015), minimised
``MarkovianScoreClimbing(k)``  KL(p(z | x) || q) along a conditional importance sampling
                          chain (Naesseth, Lindsten and Blei 2020), minimised
========================  =============================================================

:func:`renyi_bound` is the K-sample estimate of L_alpha from log importance weights
(chapter 8).

Each object names its estimator by ``estimator``, a word of the book's one vocabulary
:data:`elbo_lib.gradients.ESTIMATORS`, which the gradient measurements of
:mod:`elbo_lib.gradients` share. The step-size sweep
(:func:`elbo_lib.variational.fit_gaussian_vi_parallel`) trains many Gaussians at once
and asks an objective for :meth:`VariationalObjective.gaussian_runs_loss`; the book's
objectives implement it in closed form, and any other objective gets it from
:meth:`~VariationalObjective.surrogate`, so a new bound runs in the sweep unchanged.

The package has one submodule per concept; import from the package itself
(``from elbo_lib.objectives import PathwiseELBO``):

* :mod:`elbo_lib.objectives.base` -- the protocol (:class:`VariationalObjective`,
  :class:`Surrogate`) and the helpers its instances share;
* :mod:`elbo_lib.objectives.elbo` -- the ELBO under the pathwise, path-derivative,
  score-function and control-variate estimators;
* :mod:`elbo_lib.objectives.importance_weighted` -- the importance-weighted bound and
  its path-derivative and doubly reparameterised gradients;
* :mod:`elbo_lib.objectives.renyi` -- the Renyi bound and the chi upper bound;
* :mod:`elbo_lib.objectives.inclusive` -- the inclusive KL: reweighted wake-sleep and
  Markovian score climbing.
"""

from elbo_lib.gradients import ESTIMATORS
from elbo_lib.objectives.base import Surrogate, VariationalObjective
from elbo_lib.objectives.elbo import (
    PathDerivativeELBO,
    PathwiseELBO,
    ScoreControlVariateELBO,
    ScoreFunctionELBO,
)
from elbo_lib.objectives.importance_weighted import (
    DoublyReparameterisedIWAE,
    ImportanceWeightedBound,
    PathDerivativeIWAE,
)
from elbo_lib.objectives.inclusive import InclusiveKL, MarkovianScoreClimbing
from elbo_lib.objectives.renyi import ChiUpperBound, RenyiBound, renyi_bound

__all__ = [
    "ESTIMATORS",
    "ChiUpperBound",
    "DoublyReparameterisedIWAE",
    "ImportanceWeightedBound",
    "InclusiveKL",
    "MarkovianScoreClimbing",
    "PathDerivativeIWAE",
    "PathDerivativeELBO",
    "PathwiseELBO",
    "RenyiBound",
    "ScoreControlVariateELBO",
    "ScoreFunctionELBO",
    "Surrogate",
    "VariationalObjective",
    "renyi_bound",
]
