"""MAP inference and sparse coding: the lasso, ISTA / FISTA and dictionary learning.

The sparse coding model of chapter 3 (Olshausen & Field 1996; Goodfellow et al. 2016,
section 19.3) is

.. math::

    h_j \\sim \\mathrm{Laplace}(0, b), \\qquad x \\mid h \\sim \\mathcal N(W h, \\sigma^2 I),

and MAP inference of the codes h (the ELBO with q restricted to a point mass) is the lasso

.. math::

    \\min_h \\; \\tfrac12 \\lVert x - W h \\rVert_2^2 + \\lambda \\lVert h \\rVert_1,
    \\qquad \\lambda = \\sigma^2 / b .

Conventions (those of scikit-learn's ``sparse_encode``): a batch of ``n`` signals is a
matrix ``X`` of shape ``(n, d)``, one signal per row; the dictionary ``W`` has shape
``(d, k)``, one atom per column; the codes ``H`` have shape ``(n, k)``, so that
``X ~= H @ W.T``. Every routine works on the whole batch at once with matrix products.

Penalty conversions to scikit-learn (checked in ``tests/test_sparse_coding.py``):

* ``sklearn.decomposition.sparse_encode(X, W.T, algorithm="lasso_lars" or "lasso_cd",
  alpha=lam)`` minimises exactly the objective above for every row: ``alpha = lam``.
* ``sklearn.linear_model.Lasso`` minimises ``(1 / (2 n_samples)) ||y - A w||^2 +
  alpha ||w||_1``; coding one signal x means ``y = x``, ``A = W``, ``n_samples = d``,
  hence ``alpha = lam / d`` (see :func:`sklearn_lasso_alpha`).

The package has one submodule per concept; import from the package itself
(``from elbo_lib.sparse_coding import fista``):

* :mod:`elbo_lib.sparse_coding.lasso` -- the lasso problem: its objective, duality gap,
  proximal operator (soft thresholding), Lipschitz constant and scikit-learn's penalty;
* :mod:`elbo_lib.sparse_coding.proximal_gradient` -- ISTA and FISTA;
* :mod:`elbo_lib.sparse_coding.dictionary` -- dictionary learning;
* :mod:`elbo_lib.sparse_coding.support` -- codes with a given number of non-zeros (best
  m-term approximation, orthogonal matching pursuit) and least squares on a support;
* :mod:`elbo_lib.sparse_coding.evidence` -- what the point mass throws away: the
  log-joint, the exact evidence of a 2-D model and the ELBO of a Gaussian q;
* :mod:`elbo_lib.sparse_coding.patches` -- image patches: denoising and the orientation
  of atoms.
"""

from elbo_lib.sparse_coding.dictionary import (
    DictionaryLearningResult,
    learn_dictionary,
    normalize_columns,
    update_dictionary,
)
from elbo_lib.sparse_coding.evidence import (
    fit_sparse_coding_gaussian_q,
    sparse_coding_gaussian_elbo,
    sparse_coding_log_evidence_2d,
    sparse_coding_log_joint,
)
from elbo_lib.sparse_coding.lasso import (
    lasso_duality_gap,
    lasso_objective,
    lipschitz_constant,
    sklearn_lasso_alpha,
    soft_threshold,
)
from elbo_lib.sparse_coding.patches import denoise_image, orientation_concentration
from elbo_lib.sparse_coding.proximal_gradient import ProximalGradientResult, fista, ista
from elbo_lib.sparse_coding.support import best_m_term_reconstruction, debias_codes, omp_codes

__all__ = [
    "DictionaryLearningResult",
    "ProximalGradientResult",
    "best_m_term_reconstruction",
    "debias_codes",
    "denoise_image",
    "fista",
    "fit_sparse_coding_gaussian_q",
    "ista",
    "lasso_duality_gap",
    "lasso_objective",
    "learn_dictionary",
    "lipschitz_constant",
    "normalize_columns",
    "omp_codes",
    "orientation_concentration",
    "sklearn_lasso_alpha",
    "soft_threshold",
    "sparse_coding_gaussian_elbo",
    "sparse_coding_log_evidence_2d",
    "sparse_coding_log_joint",
    "update_dictionary",
]
