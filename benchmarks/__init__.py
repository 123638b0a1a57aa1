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
``benchmarks.hmm``        forward-backward and Baum-Welch vs ``hmmlearn`` (T and K sweeps)
``benchmarks.vi``         black-box VI vs Pyro's ``SVI`` + ``Trace_ELBO`` (chapter 5's model)
``benchmarks.vae``        VAE epoch vs a PyTorch-example loop; IWAE; fraction of the GEMM limit
``benchmarks.memory``     peak memory of EM (vs n, chunked E-step) and IWAE (vs k, n)
``benchmarks.book``       execution time of every notebook under nbval
========================  ==========================================================

The peers that are not dependencies of the book (hmmlearn, Pyro) are pinned in
``benchmarks/requirements.txt`` (``make bench`` installs them); without them a comparison
times our side only and says so.

The Performance appendix of the book (``book/performance.md``) renders the committed
``benchmarks/results/results.md`` and the scaling figures.
"""

__all__ = ["COMPARISONS"]

#: Comparison modules, in the order they run and appear in the results.
COMPARISONS = ("gmm", "sparse", "cavi", "hmm", "vi", "vae", "memory", "book")
