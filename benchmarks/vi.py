"""Black-box VI (chapter 5) vs Pyro's ``SVI`` with ``Trace_ELBO``.

The model is chapter 5's Bayesian logistic regression on scikit-learn's breast-cancer
data (the same split, standardisation and intercept column; w ~ N(0, I), 31 weights).
Ours is ``elbo_lib.variational.fit_vi`` with ``DiagonalGaussian`` and ``PathwiseELBO()``;
Pyro's is ``pyro.infer.SVI(model, guide, pyro.optim.Adam, Trace_ELBO)`` with the same
model written in Pyro, a guide with the same diagonal Gaussian family and the same
parameterisation (mean 0, scale = softplus(raw) starting at 0.1), the same optimiser
(Adam), step size (0.02), samples per step (8; ``num_particles=8,
vectorize_particles=True``, so Pyro draws them in one batch as we do) and float64.

Measured: time per step (median of interleaved runs of a few hundred steps), the ELBO
each reaches after the chapter's 2000 steps (both final q's scored by the same
20,000-sample estimator), and Pyro's ``Trace_ELBO`` estimate of one fixed q (ours after
the fit) against ``elbo_lib.bounds.monte_carlo_elbo``: both are unbiased estimates of the
same number, so they must agree within Monte Carlo error (|z| < 4).

Pyro is not a dependency of the book: it is pinned in ``benchmarks/requirements.txt``
(pyro-ppl 1.9.2 with the book's torch 2.13.0); without it only our side is timed.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch.nn.functional import softplus

from benchmarks._common import Config, measure, peer, row
from elbo_lib import seed_everything
from elbo_lib.bounds import monte_carlo_elbo
from elbo_lib.gaussians import diagonal_gaussian
from elbo_lib.models import BayesianLogisticRegression
from elbo_lib.objectives import PathwiseELBO
from elbo_lib.variational import DiagonalGaussian, fit_vi

TITLE = "Black-box VI (Bayesian logistic regression) vs Pyro SVI + Trace_ELBO"
EQUALITY = (
    "Chapter 5's Bayesian logistic regression (breast-cancer data, 398 points, 31 weights, "
    r"$w \sim \mathcal N(0, I)$); the same diagonal Gaussian family and parameterisation "
    r"(softplus scale, start $\mathcal N(0, 0.1^2 I)$), Adam with step size 0.02, 8 "
    "reparameterised samples per step (Pyro: `num_particles=8, vectorize_particles=True`), "
    "float64, one torch thread. Time per step: the median of interleaved runs. ELBO reached "
    "after the chapter's 2000 steps: both final $q$ scored by the same 20,000-sample "
    "estimator. Agreement: $|z|$ of Pyro's `Trace_ELBO` estimate of one fixed $q$ against "
    "ours (20,000 samples each; $|z| < 4$ expected).")
LR, SAMPLES, STEPS, INIT_SCALE = 0.02, 8, 2000, 0.1


def chapter_data():
    """Chapter 5's design matrix (intercept + standardised features) and labels."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    features, labels = load_breast_cancer(return_X_y=True)
    x_tr, _, y_tr, _ = train_test_split(features, labels, test_size=0.3, random_state=0,
                                        stratify=labels)
    x_tr = np.c_[np.ones(len(x_tr)), StandardScaler().fit(x_tr).transform(x_tr)]
    return BayesianLogisticRegression(x_tr, y_tr, prior_std=1.0)


def ours_fit(logreg, steps: int):
    """The library's loop; its ELBO trace reduced to two 1-sample evaluations (start, end)."""
    return fit_vi(logreg.log_joint, DiagonalGaussian(logreg.dim, INIT_SCALE),
                  PathwiseELBO(), num_samples=SAMPLES, num_steps=steps, lr=LR,
                  eval_every=steps, eval_samples=1).q


class PyroProblem:
    """The same model and guide written in Pyro."""

    def __init__(self, pyro, logreg) -> None:
        import pyro.distributions as dist

        self.pyro, self.dist = pyro, dist
        self.x = torch.as_tensor(logreg.x, dtype=torch.float64)
        self.y = torch.as_tensor(logreg.y, dtype=torch.float64)
        self.dim = logreg.dim
        self.raw0 = math.log(math.expm1(INIT_SCALE))

    def model(self):
        w = self.pyro.sample("w", self.dist.Normal(
            torch.zeros(self.dim, dtype=torch.float64), 1.0).to_event(1))
        logits = (self.x @ w.unsqueeze(-1)).squeeze(-1)  # (n,) or (particles, n)
        self.pyro.sample("y", self.dist.Bernoulli(logits=logits).to_event(1), obs=self.y)

    def guide(self):
        mu = self.pyro.param("mu", torch.zeros(self.dim, dtype=torch.float64))
        raw = self.pyro.param("raw_scale", torch.full((self.dim,), self.raw0,
                                                      dtype=torch.float64))
        self.pyro.sample("w", self.dist.Normal(mu, softplus(raw)).to_event(1))

    def elbo(self, particles: int):
        return self.pyro.infer.Trace_ELBO(num_particles=particles, vectorize_particles=True,
                                          max_plate_nesting=0)

    def fit(self, steps: int):
        self.pyro.clear_param_store()
        svi = self.pyro.infer.SVI(self.model, self.guide, self.pyro.optim.Adam({"lr": LR}),
                                  self.elbo(SAMPLES))
        for _ in range(steps):
            svi.step()
        store = self.pyro.get_param_store()
        return store["mu"].detach().clone(), softplus(store["raw_scale"]).detach().clone()

    def estimate(self, mu, sigma, particles: int) -> float:
        """Pyro's Trace_ELBO estimate of the ELBO of q = N(mu, diag(sigma^2))."""
        self.pyro.clear_param_store()
        store = self.pyro.get_param_store()
        store["mu"] = mu.clone()
        store["raw_scale"] = torch.log(torch.expm1(sigma))
        return -float(self.elbo(particles).loss(self.model, self.guide))


def _score(logreg, mu, sigma, samples: int) -> tuple[float, float]:
    with torch.no_grad():
        value, se = monte_carlo_elbo(logreg.log_joint, diagonal_gaussian(mu, sigma), samples,
                                     return_std_error=True)
    return float(value), float(se)


def run(config: Config) -> dict:
    pyro = peer("pyro", "pyro.infer", "pyro.optim", "pyro.distributions")
    seed_everything(config.seed)
    logreg = chapter_data()
    steps, timed_steps, particles = (20, 10, 2000) if config.smoke else (STEPS, 200, 20_000)
    problem = PyroProblem(pyro, logreg) if pyro is not None else None
    pyro_validation = pyro.__version__ if pyro is not None else None

    # ELBO reached after the chapter's number of steps (one run each, timed too)
    torch.manual_seed(config.seed)
    t0 = time.perf_counter()
    q = ours_fit(logreg, steps)
    ours_full_s = time.perf_counter() - t0
    mu, sigma = q.mean.detach().clone(), q.std().detach().clone()
    torch.manual_seed(config.seed + 1)
    ours_elbo = _score(logreg, mu, sigma, particles)
    extra = {"steps": steps, "timed_steps": timed_steps, "samples_per_step": SAMPLES,
             "lr": LR, "ours_full_fit_s": ours_full_s, "ours_elbo": ours_elbo[0],
             "ours_elbo_se": ours_elbo[1], "torch_threads": torch.get_num_threads()}

    functions = {"ours": lambda: ours_fit(logreg, timed_steps)}
    if problem is not None:
        torch.manual_seed(config.seed)
        t0 = time.perf_counter()
        p_mu, p_sigma = problem.fit(steps)
        extra["pyro_full_fit_s"] = time.perf_counter() - t0
        torch.manual_seed(config.seed + 1)
        extra["pyro_elbo"], extra["pyro_elbo_se"] = _score(logreg, p_mu, p_sigma, particles)
        functions["pyro"] = lambda: problem.fit(timed_steps)
        # one fixed q (ours after the fit), estimated by both libraries
        torch.manual_seed(config.seed + 2)
        fixed_pyro = problem.estimate(mu, sigma, particles)
        torch.manual_seed(config.seed + 3)
        fixed_ours, fixed_se = _score(logreg, mu, sigma, particles)
        z = (fixed_pyro - fixed_ours) / (math.sqrt(2.0) * fixed_se)
        extra.update(fixed_q_pyro=fixed_pyro, fixed_q_ours=fixed_ours, fixed_q_se=fixed_se,
                     fixed_q_z=z, pyro=pyro_validation,
                     pyro_validation=bool(pyro.poutine.util.is_validation_enabled()))
    t = measure(functions, config)
    per_step = {k: v.median / timed_steps for k, v in t.items()}
    params = {"n": len(logreg.y), "D": logreg.dim, "S": SAMPLES, "steps": timed_steps}
    if problem is None:
        rows = [row("vi", "time per step", params, ours=per_step["ours"],
                    notes="Pyro not installed")]
        extra["skipped"] = ("pyro-ppl is not installed (pip install -r "
                            "benchmarks/requirements.txt): only our side was timed")
    else:
        rows = [row("vi", "time per step", params, ours=per_step["ours"],
                    reference_name="Pyro SVI + Trace_ELBO", reference=per_step["pyro"],
                    agreement="fixed-q ELBO |z|", agreement_value=abs(z),
                    notes=f"ELBO after {steps} steps: ours {ours_elbo[0]:.2f}, "
                          f"Pyro {extra['pyro_elbo']:.2f} (s.e. {ours_elbo[1]:.2f})")]
    extra["per_step_times_s"] = {k: [x / timed_steps for x in v.times] for k, v in t.items()}
    return {"name": "vi", "title": TITLE, "equality": EQUALITY, "rows": rows,
            "extra": extra}
