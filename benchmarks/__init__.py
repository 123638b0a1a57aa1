"""Side-by-side timings of the book's inference routines and the libraries a reader would use.

Run everything with ``python -m benchmarks`` (or ``make bench``); ``--smoke`` runs tiny
sizes in seconds and writes to ``benchmarks/_scratch/`` (ignored by git) so that the
committed results in ``benchmarks/results/`` are never overwritten by a smoke run.

One module per comparison; each exposes ``run(config) -> dict`` returning the rows of the
results table and a statement of how equal work and equal accuracy are ensured:

========================  ==========================================================
``benchmarks.gmm``        EM for Gaussian mixtures vs ``sklearn.mixture.GaussianMixture``
``benchmarks.sparse``     FISTA vs ``sklearn.decomposition.sparse_encode`` (lasso_cd, lasso_lars)
``benchmarks.cavi``       CAVI (Bayesian mixture) vs ``BayesianGaussianMixture``
``benchmarks.hmm``        forward-backward vs sequence length and number of states
``benchmarks.vae``        VAE epoch time vs a PyTorch-example loop; IWAE throughput
``benchmarks.book``       execution time of every notebook under nbval
========================  ==========================================================

The Performance appendix of the book (``book/performance.md``) renders the committed
``benchmarks/results/results.md`` and the scaling figures.
"""

__all__ = ["COMPARISONS"]

#: Comparison modules, in the order they run and appear in the results.
COMPARISONS = ("gmm", "sparse", "cavi", "hmm", "vae", "book")
