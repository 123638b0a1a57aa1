"""Hidden Markov models: forward-backward, Baum-Welch (EM) and Viterbi.

Chapter 2 of the book. The latent variable is the whole state sequence z_{1:T}, and

.. math::

    \\log p(x_{1:T} \\mid \\theta) = \\mathcal L(q, \\theta)
        + \\mathrm{KL}\\big(q(z_{1:T}) \\,\\|\\, p(z_{1:T} \\mid x_{1:T}, \\theta)\\big).

The E-step needs only the posterior marginals gamma_t(k) = p(z_t = k | x) and the pairwise
marginals xi_t(i, j) = p(z_t = i, z_{t+1} = j | x), which the forward-backward recursions
compute exactly in O(T K^2) instead of the K^T terms of the sum over sequences
(Baum et al. 1970; Rabiner 1989; Bishop 2006, section 13.2). Everything here works with
logarithms (each step shifted by its maximum), so long sequences and extreme emission
densities neither underflow nor overflow. :func:`enumerate_posterior` is the brute-force
oracle the chapter and the tests compare against.

The recursions are sequential in t: they run as one compiled loop over time steps
(Numba), and everything else is vectorised over t with NumPy. The Performance page of the
book measures this against a NumPy loop over t, the associative (parallel-prefix) form of
the recursions and hmmlearn's compiled C++.

The package has one submodule per concept; import from the package itself
(``from elbo_lib.hmm import forward_backward``):

* :mod:`elbo_lib.hmm.base` -- the checks of an HMM's inputs the package shares;
* :mod:`elbo_lib.hmm.posterior` -- forward-backward (its compiled recursions and the
  log-space fallback) and the entropy of the posterior chain;
* :mod:`elbo_lib.hmm.enumeration` -- the brute-force posterior over every sequence;
* :mod:`elbo_lib.hmm.decoding` -- Viterbi;
* :mod:`elbo_lib.hmm.sampling` -- sampling an HMM with Gaussian emissions;
* :mod:`elbo_lib.hmm.baum_welch` -- :class:`GaussianHMM`, fitted by Baum-Welch.
"""

from elbo_lib.hmm.baum_welch import GaussianHMM
from elbo_lib.hmm.decoding import viterbi
from elbo_lib.hmm.enumeration import MAX_ENUMERATED_SEQUENCES as MAX_ENUMERATED_SEQUENCES
from elbo_lib.hmm.enumeration import enumerate_posterior
from elbo_lib.hmm.posterior import chain_entropy, forward_backward
from elbo_lib.hmm.sampling import sample_gaussian_hmm

__all__ = [
    "GaussianHMM",
    "chain_entropy",
    "enumerate_posterior",
    "forward_backward",
    "sample_gaussian_hmm",
    "viterbi",
]
