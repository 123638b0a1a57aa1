"""Draw the landing page's figure, book/_static/intro_elbo_gap.svg (run once, committed).

The same model and data as chapter 1 (seed 0, 20 draws of N(1.5, 2^2), prior N(0, 3^2),
noise sd 2): fix the width of q = N(m, s_n^2) at the posterior's and slide its mean m.
The ELBO stays below log p(x) and the KL divergence to the posterior fills the gap
exactly; they touch at the posterior mean. Every value comes from elbo_lib's closed
forms, and the script checks the identity before it draws.

    PYTHONPATH=. .venv/bin/python book/_ext/intro_figure.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from elbo_lib import seed_everything  # noqa: E402
from elbo_lib.models import ConjugateGaussianMean  # noqa: E402
from elbo_lib.plotting import COLORS, set_theme  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "_static" / "intro_elbo_gap.svg"


def main() -> None:
    rng = seed_everything(0)
    set_theme()
    plt.rcParams["svg.hashsalt"] = "elbo-book"  # stable ids: the file changes only if the data do
    x = rng.normal(loc=1.5, scale=2.0, size=20)  # chapter 1's data
    model = ConjugateGaussianMean(x, noise_std=2.0, prior_mean=0.0, prior_std=3.0)
    log_evidence = model.log_evidence()
    m_n, var_n = model.posterior_mean, model.posterior_var
    m = np.linspace(m_n - 2.0, m_n + 2.0, 201)
    elbo = model.elbo(m, var_n)
    kl = model.kl_to_posterior(m, var_n)
    assert np.max(np.abs(elbo + kl - log_evidence)) < 1e-9, "log p(x) != ELBO + KL"
    assert np.all(kl >= 0) and abs(m[np.argmin(kl)] - m_n) < 0.03

    fig, ax = plt.subplots(figsize=(6.4, 3.3))
    ax.axhline(log_evidence, color=COLORS["exact"], lw=2, label=r"$\log p(x)$")
    ax.plot(m, elbo, color=COLORS["q"], lw=2, label=r"$\mathcal{L}(q)$, the ELBO")
    ax.fill_between(m, elbo, elbo + kl, color=COLORS["bound"], alpha=0.3,
                    label=r"$\mathrm{KL}(q \,\|\, p(z \mid x))$")
    ax.axvline(m_n, color="0.4", ls=":", lw=1.2)
    ax.annotate("posterior mean", xy=(m_n, log_evidence - 9.0), xytext=(8, 0),
                textcoords="offset points", color="0.3", fontsize=10)
    ax.set(xlabel=r"mean $m$ of $q = \mathcal{N}(m, s_n^2)$", ylabel="nats",
           ylim=(log_evidence - 12, log_evidence + 1.5), xlim=(m[0], m[-1]))
    fig.legend(loc="outside lower center", ncols=3, frameon=False)
    fig.set_layout_engine("constrained")
    fig.savefig(OUT, format="svg", metadata={"Date": None})
    plt.close(fig)
    print(f"wrote {OUT} (log p(x) = {log_evidence:.3f}, posterior mean {m_n:.3f})")


if __name__ == "__main__":
    main()
