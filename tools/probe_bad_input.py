"""Probe of issue 34's kinds of bad input over public names of elbo_lib (not a test).

Every spec below is a valid call; each of its arguments is replaced, one at a time, by
inputs of the issue's kinds: a tensor that requires grad for an array (valid: the answer
of the plain array is expected), complex values, numeric strings, ints beyond float
range, bools, NumPy floats and 0-d arrays (valid) for numbers, NumPy integers and 0-d
integer arrays (valid), 2**63, True and 2.5 for counts, rng=-1 and a NumPy-integer seed.
A bad input must raise TypeError or ValueError whose message names the argument ("clear
error"); anything else is counted as the issue counts it. A second part runs the issue's
individual failures against independent answers (scipy, closed forms). Written for the
modules of issue 34's second round (bounds, em, gaussians, models, mean_field, datasets,
gradients, sparse_coding, heteroscedastic); the other modules can add specs.

Usage: ``.venv/bin/python tools/probe_bad_input.py [-v]`` (about 20 s; ``-v`` lists every
call that is not a clear error or an accepted valid input). Run it against another
checkout of the library with ``PYTHONPATH=<dir holding elbo_lib>``.
"""
from __future__ import annotations

import collections
import signal
import sys
import warnings

import numpy as np
import torch

from elbo_lib import (
    bounds,
    datasets,
    em,
    gaussians,
    gradients,
    heteroscedastic,
    mean_field,
    models,
    sparse_coding,
)

warnings.simplefilter("ignore")
torch.manual_seed(0)
R = np.random.default_rng(0)
X2 = np.vstack([R.normal(size=(10, 2)), R.normal(size=(10, 2)) + 4])
W3 = np.array([[1.0, 0.5], [0.0, 1.0], [0.3, -0.2]])
V3 = np.array([0.5, -0.2, 1.0])
B2 = np.array([-0.5, 0.1])
COV2 = np.stack([np.eye(2), 2 * np.eye(2)])
MEANS2 = np.array([[0.0, 0.0], [4.0, 4.0]])
WTS2 = np.array([0.5, 0.5])
NG = models.NormalGamma(0.0, 1.0, 2.0, 2.0)
QNG = mean_field.NormalGammaMeanField(0.1, 0.5, 2.0, 2.0)
Xs = R.normal(size=(4, 3))
Ws = sparse_coding.normalize_columns(R.normal(size=(3, 5)))
Hs = R.normal(size=(4, 5))
IMG = R.uniform(size=(16, 16))
CGM = models.ConjugateGaussianMean(np.array([0.3, 1.2, -0.4]))
BLR = models.BayesianLogisticRegression(R.normal(size=(8, 2)), (R.uniform(size=8) > .5) * 1.0)
GMM = em.GaussianMixtureEM(2, rng=0).fit(X2)
ZCA = datasets.ZCAWhitener().fit(R.normal(size=(20, 4)))
NET = heteroscedastic.HeteroscedasticNet(4)


def lj_t(z):
    return -0.5 * (z**2).sum(-1)


def lj_np(z):
    return -0.5 * z**2


def make_q(mu, sigma):
    return gaussians.diagonal_gaussian(mu, sigma)


PARAMS = {"mu": torch.zeros(2, dtype=torch.float64), "sigma": torch.ones(2, dtype=torch.float64)}


def f_quad(z):
    return (z**2).sum(-1)


def snr_objective():
    return (M_SNR ** 2).sum() + torch.randn(()) * 0.1


M_SNR = torch.ones(2, dtype=torch.float64, requires_grad=True)
PARAMS_SNR = {"m": [M_SNR]}

# (name, function, positional-or-keyword arguments)
SPECS = [
    ("gaussians.gaussian_kl", gaussians.gaussian_kl,
     dict(mean_q=np.array([0.1]), var_q=np.array([0.5]), mean_p=np.array([0.0]),
          var_p=np.array([1.0]))),
    ("gaussians.gaussian_entropy", gaussians.gaussian_entropy, dict(var=np.array([0.5, 2.0]))),
    ("gaussians.gaussian_kl_full", gaussians.gaussian_kl_full,
     dict(mean_q=np.zeros(2), cov_q=np.eye(2), mean_p=np.ones(2), cov_p=2 * np.eye(2))),
    ("gaussians.precision_cholesky", gaussians.precision_cholesky, dict(covariances=COV2)),
    ("gaussians.gaussian_log_density", gaussians.gaussian_log_density,
     dict(X=X2, means=MEANS2, prec_chol=gaussians.precision_cholesky(COV2))),
    ("gaussians.diagonal_gaussian_log_density", gaussians.diagonal_gaussian_log_density,
     dict(z=torch.zeros(3, 2, dtype=torch.float64), mean=np.zeros(2), logvar=np.zeros(2))),
    ("gaussians.diagonal_gaussian", lambda **k: gaussians.diagonal_gaussian(**k).mean,
     dict(mu=torch.zeros(2, dtype=torch.float64), sigma=torch.ones(2, dtype=torch.float64))),
    ("gaussians.gaussian_quadratic_expectation", gaussians.gaussian_quadratic_expectation,
     dict(a=np.eye(2), b=np.ones(2), mu=np.zeros(2), sigma=np.ones(2))),
    ("gaussians.gaussian_quadratic_gradient", gaussians.gaussian_quadratic_gradient,
     dict(a=np.eye(2), b=np.ones(2), mu=np.zeros(2), sigma=np.ones(2))),
    ("bounds.monte_carlo_elbo", lambda **k: bounds.monte_carlo_elbo(lj_t, **k),
     dict(q=torch.distributions.Independent(torch.distributions.Normal(
         torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)), 1),
          num_samples=5)),
    ("bounds.importance_weighted_bound", bounds.importance_weighted_bound,
     dict(log_weights=np.array([[-1.0, -2.0], [-0.5, -3.0]]), dim=0)),
    ("bounds.gaussian_elbo_quadrature", lambda **k: bounds.gaussian_elbo_quadrature(lj_np, **k),
     dict(mean=0.5, std=1.5, num_nodes=20)),
    ("bounds.log_evidence_quadrature", lambda **k: bounds.log_evidence_quadrature(lj_np, **k),
     dict(grid=np.linspace(-12, 12, 201))),
    ("bounds.importance_sampling_posterior",
     lambda **k: bounds.importance_sampling_posterior(lj_t, **k),
     dict(mean=np.zeros(2), cov=np.eye(2), num_samples=50, rng=0, df=5.0, chunk_size=20)),
    ("bounds.kl_on_grid", bounds.kl_on_grid,
     dict(log_q=-0.5 * np.add.outer(np.linspace(-3, 3, 7)**2, np.linspace(-3, 3, 5)**2),
          log_p=-0.4 * np.add.outer(np.linspace(-3, 3, 7)**2, np.linspace(-3, 3, 5)**2),
          grid_0=np.linspace(-3, 3, 7), grid_1=np.linspace(-3, 3, 5))),
    ("em.weighted_gaussian_m_step", em.weighted_gaussian_m_step,
     dict(X=X2, resp=np.repeat([[0.3, 0.7]], 20, axis=0), reg_covar=1e-6)),
    ("em.gmm_log_likelihood", em.gmm_log_likelihood,
     dict(X=X2, weights=WTS2, means=MEANS2, covariances=COV2)),
    ("em.gmm_responsibilities", em.gmm_responsibilities,
     dict(X=X2, weights=WTS2, means=MEANS2, covariances=COV2)),
    ("em.gmm_elbo", em.gmm_elbo,
     dict(X=X2, resp=np.repeat([[0.3, 0.7]], 20, axis=0), weights=WTS2, means=MEANS2,
          covariances=COV2)),
    ("em.GaussianMixtureEM.fit", lambda X, **k: em.GaussianMixtureEM(**k).fit(X).means_,
     dict(X=X2, n_components=2, tol=1e-3, reg_covar=1e-6, max_iter=50, rng=0)),
    ("em.GaussianMixtureEM.score_samples", GMM.score_samples, dict(X=X2)),
    ("em.GaussianMixtureEM.predict_proba", GMM.predict_proba, dict(X=X2)),
    ("em.interpolate_parameters", em.interpolate_parameters,
     dict(theta_0=(WTS2, MEANS2, COV2), theta_1=(WTS2, MEANS2 + 1, COV2), t=0.3)),
    ("em.bound_along_path", em.bound_along_path,
     dict(X=X2, theta_old=(WTS2, MEANS2, COV2), theta_new=(WTS2, MEANS2 + 1, COV2),
          ts=np.linspace(0, 1, 3))),
    ("em.random_start", em.random_start, dict(X=X2, n_components=2, rng=0)),
    ("em.match_components", em.match_components, dict(reference=MEANS2, estimate=MEANS2[::-1])),
    ("em.incremental_em", lambda **k: em.incremental_em(**k).means_,
     dict(X=X2, n_components=2, num_blocks=2, num_sweeps=2, rng=0, reg_covar=1e-6)),
    ("em.gmm_log_prior", em.gmm_log_prior,
     dict(weights=WTS2, covariances=COV2, weight_concentration=2.0, cov_prior_dof=4.0,
          cov_prior_scale=np.eye(2))),
    ("em.map_em", lambda **k: em.map_em(**k).means_,
     dict(X=X2, n_components=2, weight_concentration=1.5, cov_prior_dof=4.0,
          cov_prior_scale=0.1 * np.eye(2), tol=1e-6, max_iter=20, rng=0)),
    ("models.ConjugateGaussianMean", lambda **k: models.ConjugateGaussianMean(**k).log_evidence(),
     dict(x=np.array([0.3, 1.2]), noise_std=1.0, prior_mean=0.0, prior_std=2.0)),
    ("models.ConjugateGaussianMean.elbo", CGM.elbo, dict(q_mean=np.array([0.1]),
                                                         q_var=np.array([0.5]))),
    ("models.ConjugateGaussianMean.kl_to_prior", CGM.kl_to_prior,
     dict(q_mean=np.array([0.1]), q_var=np.array([0.5]))),
    ("models.ConjugateGaussianMean.log_joint", CGM.log_joint,
     dict(z=torch.zeros(3, dtype=torch.float64))),
    ("models.NormalGamma.log_pdf", NG.log_pdf, dict(mu=np.array([0.1]), tau=np.array([1.0]))),
    ("models.normal_gamma_posterior", lambda **k: models.normal_gamma_posterior(**k).mean,
     dict(x=np.array([0.3, 1.2, -0.4]), prior=NG)),
    ("models.normal_gamma_log_evidence", models.normal_gamma_log_evidence,
     dict(x=np.array([0.3, 1.2, -0.4]), prior=NG)),
    ("models.bsc_log_joint", models.bsc_log_joint,
     dict(h=np.array([1.0, 0.0]), v=V3, weights=W3, bias=B2, noise_precision=2.0)),
    ("models.bsc_log_likelihood", models.bsc_log_likelihood,
     dict(v=V3[None], weights=W3, bias=B2, noise_precision=2.0)),
    ("models.bsc_exact_moments", models.bsc_exact_moments,
     dict(v=V3[None], weights=W3, bias=B2, noise_precision=2.0)),
    ("models.set_partitions", models.set_partitions, dict(n=3)),
    ("models.dirichlet_mixture_log_evidence", models.dirichlet_mixture_log_evidence,
     dict(x=np.array([0.1, 0.5, 3.0]), n_components=2, prior_var=4.0, alpha0=1.0)),
    ("models.BayesianLogisticRegression.map_estimate", BLR.map_estimate,
     dict(tol=1e-10, max_iter=100)),
    ("models.BayesianLogisticRegression.predictive_proba", BLR.predictive_proba,
     dict(x=np.ones((2, 2)), weights=np.zeros((3, 2)))),
    ("mean_field.normal_gamma_elbo", mean_field.normal_gamma_elbo,
     dict(x=np.array([0.3, 1.2, -0.4]), prior=NG, q=QNG)),
    ("mean_field.cavi_normal_gamma", lambda **k: mean_field.cavi_normal_gamma(**k).elbo,
     dict(x=np.array([0.3, 1.2, -0.4]), prior=NG, max_iter=50, tol=1e-12)),
    ("mean_field.mean_field_gaussian", mean_field.mean_field_gaussian,
     dict(mean=np.zeros(2), precision=np.array([[2.0, 0.5], [0.5, 1.0]]))),
    ("mean_field.cavi_gaussian", mean_field.cavi_gaussian,
     dict(mean=np.zeros(2), precision=np.array([[2.0, 0.5], [0.5, 1.0]]),
          init_mean=np.ones(2), num_sweeps=5)),
    ("mean_field.cavi_gaussian_mixture", lambda **k: mean_field.cavi_gaussian_mixture(**k).means,
     dict(x=X2, n_components=2, prior_var=10.0, rng=0, num_init=2, max_iter=50, tol=1e-8)),
    ("mean_field.cavi_dirichlet_mixture",
     lambda **k: mean_field.cavi_dirichlet_mixture(**k).means,
     dict(x=X2, n_components=2, prior_var=10.0, alpha0=1.0, rng=0, max_iter=50, tol=1e-8)),
    ("mean_field.bsc_mean_field", lambda **k: mean_field.bsc_mean_field(**k).h_hat,
     dict(v=V3, weights=W3, bias=B2, noise_precision=2.0, damping=1.0, max_iter=50,
          tol=1e-10)),
    ("mean_field.bsc_elbo", mean_field.bsc_elbo,
     dict(h_hat=np.array([0.3, 0.6]), v=V3, weights=W3, bias=B2, noise_precision=2.0)),
    ("mean_field.bsc_mean_field_batch", lambda **k: mean_field.bsc_mean_field_batch(**k),
     dict(v=np.vstack([V3, V3]), weights=W3, bias=B2, noise_precision=2.0, max_iter=50,
          tol=1e-8)),
    ("mean_field.bsc_variational_em", lambda **k: mean_field.bsc_variational_em(**k).weights,
     dict(v=np.vstack([V3, V3 + .1, V3 - .2]), init_weights=W3, init_bias=B2,
          init_noise_precision=2.0, num_iter=3)),
    ("datasets.split_indices", datasets.split_indices,
     dict(n=20, rng=0, val_fraction=0.15, test_fraction=0.15)),
    ("datasets.binarize", datasets.binarize, dict(x=np.array([[0.2, 0.8]]), rng=0)),
    ("datasets.random_patches", datasets.random_patches,
     dict(image=IMG, patch_size=4, num_patches=3, rng=0)),
    ("datasets.remove_dc", datasets.remove_dc, dict(X=R.normal(size=(3, 4)))),
    ("datasets.ZCAWhitener.fit", lambda X, **k: datasets.ZCAWhitener(**k).fit(X).mean_,
     dict(X=R.normal(size=(20, 4)), eps_fraction=0.01)),
    ("datasets.ZCAWhitener.transform", ZCA.transform, dict(X=R.normal(size=(3, 4)))),
    ("gradients.score_function_gradient",
     lambda **k: gradients.score_function_gradient(f_quad, make_q, PARAMS, **k),
     dict(num_samples=8)),
    ("gradients.pathwise_gradient",
     lambda **k: gradients.pathwise_gradient(f_quad, make_q, PARAMS, **k),
     dict(num_samples=8)),
    ("gradients.gradient_stats",
     lambda **k: gradients.gradient_stats(f_quad, make_q, PARAMS, estimator="pathwise", **k),
     dict(num_samples=4, num_repeats=3)),
    ("gradients.gaussian_elbo_gradient_samples",
     lambda **k: gradients.gaussian_elbo_gradient_samples(lj_t, **k),
     dict(mu=np.zeros(2), scale_tril=np.eye(2), num_samples=4, num_repeats=2)),
    ("gradients.gaussian_target_elbo_gradient", gradients.gaussian_target_elbo_gradient,
     dict(mu=np.zeros(2), scale_tril=np.eye(2), mean=np.ones(2), precision=np.eye(2))),
    ("gradients.gradient_snr", lambda **k: gradients.gradient_snr(snr_objective, PARAMS_SNR, **k),
     dict(num_repeats=5)),
    ("gradients.check_baseline", gradients.check_baseline, dict(baseline=0.5, num_samples=4)),
    ("sparse_coding.soft_threshold", sparse_coding.soft_threshold,
     dict(v=np.array([-1.0, 0.2, 2.0]), threshold=0.5)),
    ("sparse_coding.lipschitz_constant", sparse_coding.lipschitz_constant,
     dict(W=Ws, method="power", max_iter=100, tol=1e-10, rng=0)),
    ("sparse_coding.sklearn_lasso_alpha", sparse_coding.sklearn_lasso_alpha,
     dict(lam=0.5, signal_dim=3)),
    ("sparse_coding.lasso_objective", sparse_coding.lasso_objective,
     dict(X=Xs, W=Ws, H=Hs, lam=0.1)),
    ("sparse_coding.lasso_duality_gap", sparse_coding.lasso_duality_gap,
     dict(X=Xs, W=Ws, H=Hs, lam=0.1)),
    ("sparse_coding.ista", lambda **k: sparse_coding.ista(**k).codes,
     dict(X=Xs, W=Ws, lam=0.1, max_iter=50, tol=1e-8, check_every=5)),
    ("sparse_coding.fista", lambda **k: sparse_coding.fista(**k).codes,
     dict(X=Xs, W=Ws, lam=0.1, max_iter=50, tol=1e-8, check_every=5)),
    ("sparse_coding.normalize_columns", sparse_coding.normalize_columns, dict(W=Ws * 2)),
    ("sparse_coding.update_dictionary", sparse_coding.update_dictionary,
     dict(X=Xs, H=Hs, W=Ws, num_sweeps=2)),
    ("sparse_coding.learn_dictionary", lambda **k: sparse_coding.learn_dictionary(**k).dictionary,
     dict(X=R.normal(size=(10, 3)), num_atoms=4, lam=0.1, num_iter=2, code_iter=5, rng=0)),
    ("sparse_coding.best_m_term_reconstruction", sparse_coding.best_m_term_reconstruction,
     dict(X=Xs, basis=np.eye(3), num_terms=2)),
    ("sparse_coding.debias_codes", sparse_coding.debias_codes,
     dict(X=Xs, W=Ws, H=Hs, chunk_size=2)),
    ("sparse_coding.sparse_coding_log_joint", sparse_coding.sparse_coding_log_joint,
     dict(X=Xs, W=Ws, H=Hs, sigma=0.5, b=1.0)),
    ("sparse_coding.omp_codes", sparse_coding.omp_codes, dict(X=Xs, W=Ws, num_nonzero=2)),
    ("sparse_coding.denoise_image", sparse_coding.denoise_image,
     dict(noisy=IMG, atoms=np.eye(16)[:, :8], lam=0.1, max_iter=20, tol=1e-6)),
    ("heteroscedastic.crps_gaussian", heteroscedastic.crps_gaussian,
     dict(mean=np.zeros(3), std=np.ones(3), y=np.array([0.1, -0.5, 2.0]))),
    ("heteroscedastic.monte_carlo_crps", heteroscedastic.monte_carlo_crps,
     dict(samples=torch.randn(8, 3, dtype=torch.float64),
          y=torch.tensor([0.1, -0.5, 2.0], dtype=torch.float64))),
    ("heteroscedastic.HeteroscedasticNet.sample", NET.sample,
     dict(x=torch.zeros(3, dtype=torch.float64), num_samples=4)),
    ("heteroscedastic.fit_heteroscedastic",
     lambda **k: heteroscedastic.fit_heteroscedastic(**k)[0].forward(torch.zeros(1))[0],
     dict(x=np.linspace(-1, 1, 8), y=np.linspace(0, 1, 8), hidden=4, num_samples=4,
          num_steps=3, lr=0.01)),
]

SKIP_ARRAY = {"q", "prior", "theta_0", "theta_1", "theta_old", "theta_new", "init"}
COUNT_NAMES = ("num_", "max_iter", "n_components", "chunk_size", "check_every", "n",
               "hidden", "num_nonzero", "num_terms", "patch_size", "signal_dim",
               "code_iter")


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang


def run(func, kwargs, seconds=10):
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        torch.manual_seed(0)
        return func(**kwargs)
    finally:
        signal.alarm(0)


def leaves(out):
    if isinstance(out, torch.Tensor):
        return [out.detach().numpy()]
    if isinstance(out, np.ndarray | float | int | np.floating):
        return [np.asarray(out, dtype=float)]
    if isinstance(out, dict):
        return [x for v in out.values() for x in leaves(v)]
    if isinstance(out, list | tuple):
        return [x for v in out for x in leaves(v)]
    if hasattr(out, "__dataclass_fields__"):
        return [x for k in out.__dataclass_fields__ for x in leaves(getattr(out, k))]
    return []


def non_finite(out):
    return any(a.dtype.kind == "f" and not np.all(np.isfinite(a)) for a in leaves(out))


def same(a, b):
    la, lb = leaves(a), leaves(b)
    if len(la) != len(lb):
        return False
    return all(x.shape == y.shape and np.allclose(x, y, rtol=1e-6, atol=1e-9, equal_nan=True)
               for x, y in zip(la, lb, strict=True))


def mutations(key, value):
    """(kind, new value, expect_valid)"""
    if key == "rng":
        yield "rng=-1", -1, False
        yield "rng=np.int64", np.int64(value), True
        return
    if isinstance(value, bool):
        return
    if isinstance(value, np.ndarray) and key not in SKIP_ARRAY:
        yield ("requires-grad tensor",
               torch.tensor(np.ascontiguousarray(value), requires_grad=True), True)
        yield "complex array", value + 1j, False
        yield "string array", value.astype(str), False
        huge = value.astype(object)
        huge.flat[0] = 10**400
        yield "int beyond float", huge, False
        return
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        yield "complex tensor", value.to(torch.complex128) + 1j, False
        yield "requires-grad tensor", value.clone().requires_grad_(True), True
        return
    if isinstance(value, float):
        yield "bool number", True, False
        yield "numeric string", str(value), False
        yield "complex number", complex(value, 1.0), False
        yield "int beyond float", 10**400, False
        yield "np.float32", np.float32(value), True
        yield "0-d array", np.array(value), True
        return
    if isinstance(value, int):
        yield "np.int64", np.int64(value), True
        yield "0-d int array", np.array(value), True
        if key.startswith(COUNT_NAMES) or key in COUNT_NAMES:
            yield "2**63 count", 2**63, False
        yield "bool int", True, False
        yield "float for int", float(value) + 0.5, False


def classify(name, func, kwargs, key, kind, value, expect_valid, base):
    new = dict(kwargs, **{key: value})
    try:
        out = run(func, new)
    except Hang:
        return "hang", ""
    except Exception as exc:  # noqa: BLE001
        msg = f"{type(exc).__name__}: {str(exc)[:160]}"
        if expect_valid:
            return "valid input rejected", msg
        if isinstance(exc, TypeError | ValueError) and key in str(exc):
            return "clear error", msg
        return "unclear error", msg
    if expect_valid:
        if non_finite(out) and not non_finite(base):
            return "silent NaN/inf", ""
        if not same(out, base):
            return "wrong result", ""
        return "accepted valid", ""
    return ("silent NaN/inf" if non_finite(out) else "bad input accepted"), f"{out!r:.80}"


def main():
    verbose = "-v" in sys.argv
    counts = collections.Counter()
    names = collections.defaultdict(collections.Counter)
    for name, func, kwargs in SPECS:
        try:
            base = run(func, kwargs, 60)
        except Exception as exc:  # noqa: BLE001
            print(f"BASE FAILS {name}: {type(exc).__name__}: {exc}")
            continue
        for key, value in kwargs.items():
            for kind, new, valid in mutations(key, value):
                verdict, msg = classify(name, func, kwargs, key, kind, new, valid, base)
                counts[verdict] += 1
                names[name][verdict] += 1
                if verbose and verdict not in ("clear error", "accepted valid"):
                    print(f"{verdict:22s} {name}({key}= {kind}) {msg}")
    total = sum(counts.values())
    print(f"{len(SPECS)} names, {total} calls")
    for verdict in ("clear error", "accepted valid", "unclear error", "silent NaN/inf",
                    "bad input accepted", "wrong result", "valid input rejected", "hang"):
        print(f"  {verdict:22s} {counts[verdict]}")


# the individual failures in these modules: (label, call, check); check raises
# AssertionError on a wrong answer; an expected error is ("error", argument name)
def _is_close(want, rtol=1e-9):
    def check(out):
        np.testing.assert_allclose(out, want, rtol=rtol)
    return check


def _isp_1d():
    def lj(z):
        z = z[:, 0]
        return -0.5 * z**2 - 0.5 * (1.0 - z) ** 2 - np.log(2 * np.pi)
    return bounds.importance_sampling_posterior(lj, [0.5], [[0.5]], 20000, rng=0)


def _isp_half():
    def lj(z):
        inside = -0.5 * z[:, 0] ** 2 + 0.5 * np.log(2.0 / np.pi)
        return torch.where(z[:, 0] > 0, inside, torch.full_like(inside, -np.inf))
    return bounds.importance_sampling_posterior(lj, [0.5], [[1.0]], 40000, rng=1, df=5.0)


def _far_gmm():
    from scipy.special import softmax
    from scipy.stats import multivariate_normal as mvn
    P = np.array([[1e155, 0.0], [1e155, -1e155]])
    Q = P / 1e5
    lj = np.stack([np.log(w) + mvn(m, c).logpdf(Q) for w, m, c in
                   zip(GMM.weights_, GMM.means_, GMM.covariances_, strict=True)], axis=1)
    return GMM.score_samples(P), GMM.predict_proba(P), softmax(lj, axis=1)


def _check_far(out):
    score, proba, want = out
    assert np.all(np.isneginf(score)), score
    np.testing.assert_allclose(proba, want, atol=1e-12)


def _logvar_800():
    z = torch.tensor([[0.0], [1e-170]], dtype=torch.float64)
    return gaussians.diagonal_gaussian_log_density(z, torch.zeros(1, dtype=torch.float64),
                                                   torch.tensor([-800.0],
                                                                dtype=torch.float64))


def _map_em_ok(X):
    def call():
        r = em.map_em(X, 2, rng=0, max_iter=50)
        assert np.all(np.isfinite(r.log_likelihood_)), r.log_likelihood_
        return r
    return call


EXTREME = [
    ("importance_sampling_posterior, 1-D latent", _isp_1d,
     lambda r: np.testing.assert_allclose([r.log_evidence, r.mean[0]],
                                          [-0.5 * np.log(4 * np.pi) - 0.25, 0.5], atol=0.02)),
    ("importance_sampling_posterior, -inf log joint", _isp_half,
     lambda r: np.testing.assert_allclose([r.log_evidence, r.mean[0]],
                                          [0.0, np.sqrt(2 / np.pi)], atol=0.02)),
    ("map_em, constant data", _map_em_ok(np.full((10, 2), 2.5)), lambda r: None),
    ("map_em, collinear data", _map_em_ok(np.outer(np.linspace(-1, 1, 12), [1.0, 2.0])),
     lambda r: None),
    ("map_em, d > n", _map_em_ok(R.normal(size=(3, 5))), lambda r: None),
    ("GMM scoring at norm 1e155", _far_gmm, _check_far),
    ("cavi_gaussian_mixture at 1e160",
     lambda: mean_field.cavi_gaussian_mixture(X2 * 1e160, 2, rng=0), ("error", "x")),
    ("cavi_dirichlet_mixture at 1e160",
     lambda: mean_field.cavi_dirichlet_mixture(X2 * 1e160, 2, rng=0), ("error", "x")),
    ("diagonal_gaussian_log_density at logvar -800", _logvar_800,
     _is_close([400 - 0.5 * np.log(2 * np.pi),
                400 - 0.5 * np.log(2 * np.pi) - 0.5 * (1e-170 * np.exp(400)) ** 2], 1e-12)),
    ("split_indices(2**63, 0)", lambda: datasets.split_indices(2**63, 0), ("error", "n")),
    ("importance_weighted_bound(dim=np.int64(0))",
     lambda: bounds.importance_weighted_bound(np.array([-1.0, -2.0]), dim=np.int64(0)),
     _is_close(np.logaddexp(-1.0, -2.0) - np.log(2))),
]


def run_extreme(verbose):
    counts = collections.Counter()
    for label, call, check in EXTREME:
        try:
            out = run(call, {}, 60)
        except Hang:
            verdict = "hang"
        except Exception as exc:  # noqa: BLE001
            if isinstance(check, tuple):
                ok = isinstance(exc, TypeError | ValueError) and check[1] in str(exc)
                verdict = "clear error" if ok else "unclear error"
            else:
                verdict = "valid input rejected"
            if verbose:
                print(f"  {verdict:22s} {label}: {type(exc).__name__}: {str(exc)[:120]}")
            counts[verdict] += 1
            continue
        if isinstance(check, tuple):
            verdict = "silent NaN/inf" if non_finite(out) else "bad input accepted"
        else:
            try:
                check(out)
                verdict = "right answer"
            except AssertionError as exc:
                verdict = "silent NaN/inf" if non_finite(out) else "wrong result"
                if verbose:
                    print(f"  {verdict:22s} {label}: {str(exc)[:160]!r}")
        counts[verdict] += 1
        if verbose and verdict in ("right answer", "clear error"):
            print(f"  {verdict:22s} {label}")
    print(f"issue 34's individual failures ({len(EXTREME)} cases): " +
          ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
    run_extreme("-v" in sys.argv)
