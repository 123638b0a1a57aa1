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
gradients, sparse_coding, heteroscedastic), then extended to every public name of vae,
flows and hmm (``SPECS3``, ``EXTREME3``) with more kinds for tensors: a NumPy array
where a tensor is taken (a clear error or the tensor's answer), None, NaN (a clear error;
NaN fed to a layer's elementwise map may give NaN out, as torch's transforms do), the
other float dtype (float32 <-> float64: valid, compared by shape and finiteness, or the
documented "one dtype" error for a layer's parameters), and one sample (1-D) for batch
arguments; and divergence (lr = 1e8 .. 1e10) with the state it leaves.

Usage: ``.venv/bin/python tools/probe_bad_input.py [-v] [--modules=vae,flows,hmm]``
(about 2 minutes for every module; ``-v`` lists every call that is not a clear error or
an accepted valid input; ``--modules`` keeps the names of those modules). Run it against
another checkout of the library with ``PYTHONPATH=<dir holding elbo_lib>``.
"""
from __future__ import annotations

import collections
import math
import signal
import sys
import warnings

import numpy as np
import torch

from elbo_lib import (
    bounds,
    datasets,
    em,
    flows,
    gaussians,
    gradients,
    heteroscedastic,
    hmm,
    mean_field,
    models,
    sparse_coding,
    vae,
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
QNG = models.NormalGammaMeanField(0.1, 0.5, 2.0, 2.0)
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
    ("models.ConjugateGaussianMean.elbo", CGM.elbo, dict(mean_q=np.array([0.1]),
                                                         var_q=np.array([0.5]))),
    ("models.ConjugateGaussianMean.kl_to_prior", CGM.kl_to_prior,
     dict(mean_q=np.array([0.1]), var_q=np.array([0.5]))),
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

# ---------------------------------------------------------------------------------------
# third round: vae, flows, hmm (issue 34)
# ---------------------------------------------------------------------------------------
F64 = torch.float64
XB = torch.tensor((R.uniform(size=(6, 4)) > 0.5) * 1.0, dtype=torch.float32)
XV = torch.tensor((R.uniform(size=(4, 4)) > 0.5) * 1.0, dtype=torch.float32)
Z2 = torch.tensor([[0.3, -0.2], [1.0, 0.5], [-0.7, 0.1]], dtype=F64)


def vae_model(latent=2, seed=0):
    torch.manual_seed(seed)
    return vae.VAE(4, latent, 3)


def flow_vae(num_layers=2, seed=0):
    torch.manual_seed(seed)
    return vae.VAE(4, 2, 3, encoder=vae.PlanarFlowEncoder(4, 2, num_layers, 3))


def lam_vae(fn, latent=2):
    return lambda **k: fn(vae_model(latent), **k)


_DEFAULT = object()


def planar(u=_DEFAULT, w=_DEFAULT, b=_DEFAULT):
    return flows.PlanarTransform(torch.tensor([0.3, -0.4], dtype=F64) if u is _DEFAULT else u,
                                 torch.tensor([1.0, 0.5], dtype=F64) if w is _DEFAULT else w,
                                 torch.tensor(0.2, dtype=F64) if b is _DEFAULT else b)


def pstack():
    return flows.PlanarStackTransform(torch.tensor([[0.3, -0.4], [0.1, 0.2]], dtype=F64),
                                      torch.tensor([[1.0, 0.5], [-0.3, 1.0]], dtype=F64),
                                      torch.tensor([0.2, -0.1], dtype=F64))


def radial():
    return flows.RadialTransform(torch.tensor([0.1, 0.2], dtype=F64),
                                 torch.tensor(0.3, dtype=F64), torch.tensor(0.4, dtype=F64))


def coupling_t():
    torch.manual_seed(0)
    layer = flows.AffineCoupling(2, 0, 3)
    torch.nn.init.normal_(layer.net.outer.weight, std=0.3)
    return layer.transform()


def made():
    torch.manual_seed(0)
    m = flows.MADE(2, 3)
    torch.nn.init.normal_(m.outer.weight, std=0.3)
    return m


def ar_t():
    return flows.AutoregressiveTransform(made())


def cond(z):
    return 0.3 * z.flip(-1), 0.1 + 0.0 * z


def family(kind, num_layers=2, seed=0):
    torch.manual_seed(seed)
    return flows.FlowFamily(2, num_layers, kind, hidden=3)


GRID = flows.square_grid(3.0, 5)
LOGPI = np.log([0.6, 0.4])
LOGA = np.log([[0.7, 0.3], [0.2, 0.8]])
LOGB = R.normal(size=(5, 2))
_FB = hmm.forward_backward(LOGPI, LOGA, LOGB, return_pairwise=True)
GAMMA, XI = _FB[1], _FB[3]
XH = np.vstack([R.normal(size=(8, 2)), R.normal(size=(8, 2)) + 3])
HMM = hmm.GaussianHMM(2, rng=0, max_iter=5).fit(XH)


def method_of(build, name):
    return lambda **k: getattr(build(), name)(**k)


SPECS3 = [
    # ---- vae
    ("vae.VAE", lambda **k: vae.VAE(**k).decoder[0].weight.shape[1],
     dict(num_pixels=4, latent_dim=2, hidden=3)),
    ("vae.VAE.encode", lambda **k: vae_model().encode(**k).mean, dict(x=XB)),
    ("vae.VAE.decode", lambda **k: vae_model().decode(**k), dict(z=Z2)),
    ("vae.VAE.forward", lambda **k: vae_model()(**k)[0], dict(x=XB)),
    ("vae.DiagonalGaussianPosterior",
     lambda **k: vae.DiagonalGaussianPosterior(**k).log_prob(Z2),
     dict(mean=torch.zeros(3, 2, dtype=F64), logvar=torch.full((3, 2), 0.3, dtype=F64))),
    ("vae.DiagonalGaussianPosterior.log_prob",
     lambda **k: vae.DiagonalGaussianPosterior(torch.zeros(3, 2, dtype=F64),
                                               torch.zeros(3, 2, dtype=F64)).log_prob(**k),
     dict(value=Z2)),
    ("vae.GaussianEncoder", lambda **k: vae.GaussianEncoder(**k)[0].weight.shape,
     dict(num_pixels=4, latent_dim=2, hidden=3)),
    ("vae.GaussianEncoder.forward",
     lambda **k: (torch.manual_seed(0), vae.GaussianEncoder(4, 2, 3)(**k).mean)[1],
     dict(x=XB)),
    ("vae.active_units", lam_vae(vae.active_units), dict(x=XB, threshold=0.01)),
    ("vae.aggregate_posterior", lambda **k: lam_vae(vae.aggregate_posterior)(**k).log_density,
     dict(x=XB, limit=3.0, num_points=5, max_batch=8)),
    ("vae.decoder_gradient_by_quadrature", lam_vae(vae.decoder_gradient_by_quadrature),
     dict(x=XB, limit=3.0, num_points=5)),
    ("vae.elbo_per_point", lam_vae(vae.elbo_per_point), dict(x=XB, num_samples=2)),
    ("vae.fano_error_bound", vae.fano_error_bound,
     dict(conditional_entropy=0.5, num_classes=3)),
    ("vae.fit_encoder", lambda **k: lam_vae(vae.fit_encoder)(**k)[1].val_elbo,
     dict(x_train=XB, x_val=XV, num_epochs=1, hidden=3, batch_size=3, lr=1e-3)),
    ("vae.inference_gaps", lambda **k: lam_vae(vae.inference_gaps)(**k)["amortisation"],
     dict(x=XB, log_px=torch.full((6,), -2.0), num_steps=2, lr=0.01, k=4)),
    ("vae.iwae_objective", lam_vae(vae.iwae_objective), dict(x=XB, k=3)),
    ("vae.kl_per_unit", lam_vae(vae.kl_per_unit), dict(x=XB)),
    ("vae.ELBO", vae.ELBO, dict(beta=0.5, warmup_epochs=1, free_bits=0.1)),
    ("vae.IWAE", vae.IWAE, dict(k=3)),
    ("vae.as_tensor", vae.as_tensor, dict(x=np.array([[0.0, 0.5], [1.0, 0.25]]))),
    ("vae.bernoulli_log_likelihood", vae.bernoulli_log_likelihood,
     dict(x=XB, logits=torch.linspace(-2, 2, 24).reshape(6, 4))),
    ("vae.elbo_terms", lambda **k: lam_vae(vae.elbo_terms)(**k)[0], dict(x=XB)),
    ("vae.evaluate_elbo", lam_vae(vae.evaluate_elbo), dict(x=XB, num_samples=2)),
    ("vae.grid_log_marginal", lam_vae(vae.grid_log_marginal),
     dict(x=XB, limit=3.0, num_points=7, max_batch=16)),
    ("vae.importance_log_weights", lam_vae(vae.importance_log_weights),
     dict(x=XB, k=3, mean=torch.zeros(6, 2), logvar=torch.zeros(6, 2))),
    ("vae.iwae_bound", lambda **k: lam_vae(vae.iwae_bound)(**k)[0],
     dict(x=XB, k=3, max_batch=6)),
    ("vae.kl_to_prior", lambda **k: vae.kl_to_prior(vae.DiagonalGaussianPosterior(**k)),
     dict(mean=torch.zeros(3, 2, dtype=F64), logvar=torch.full((3, 2), 0.3, dtype=F64))),
    ("vae.kl_to_prior(z)",
     lambda **k: vae.kl_to_prior(family("coupling").distribution().expand((3,)), **k),
     dict(z=Z2)),
    ("vae.latent_grid", vae.latent_grid, dict(num_points=3, low=0.05, high=0.95)),
    ("vae.refine_posterior", lambda **k: lam_vae(vae.refine_posterior)(**k)[0],
     dict(x=XB, num_steps=2, lr=0.01, num_samples=2)),
    ("vae.reparameterize", vae.reparameterize,
     dict(mean=torch.zeros(3, 2, dtype=F64), logvar=torch.zeros(3, 2, dtype=F64),
          num_samples=2)),
    ("vae.train_vae", lambda **k: lam_vae(vae.train_vae)(**k).val_elbo,
     dict(x_train=XB, x_val=XV, num_epochs=1, batch_size=3, lr=1e-3)),
    ("vae.train_replicates",
     lambda **k: [h.val_elbo for h in vae.train_replicates([vae_model(2, 0),
                                                           vae_model(2, 1)], **k)],
     dict(x_train=XB, x_val=XV, num_epochs=1, batch_size=3, lr=1e-3)),
    ("vae.train_wake_sleep", lambda **k: lam_vae(vae.train_wake_sleep)(**k).val_elbo,
     dict(x_train=XB, x_val=XV, num_epochs=1, batch_size=3, lr=1e-3)),
    ("vae.TrainingHistory.record",
     lambda **k: (lambda h: (h.record(**k), h.train_elbo)[1])(vae.TrainingHistory()),
     dict(train={"elbo": -1.0, "reconstruction": -0.5, "kl": 0.5},
          val={"elbo": -1.0, "reconstruction": -0.5, "kl": 0.5})),
    # ---- flows
    ("flows.PlanarTransform", lambda **k: planar(**k)(Z2),
     dict(u=torch.tensor([0.3, -0.4], dtype=F64), w=torch.tensor([1.0, 0.5], dtype=F64),
          b=torch.tensor(0.2, dtype=F64))),
    ("flows.PlanarTransform.__call__", lambda **k: planar()(**k), dict(x=Z2)),
    ("flows.PlanarTransform.inv", lambda y: planar().inv(y), dict(y=Z2)),
    ("flows.PlanarTransform.log_abs_det_jacobian",
     lambda x: planar().log_abs_det_jacobian(x, planar()(x)), dict(x=Z2)),
    ("flows.PlanarTransform.stack",
     lambda **k: flows.ComposeTransform(flows.PlanarTransform.stack(**k))(Z2)
     if hasattr(flows, "ComposeTransform") else
     torch.distributions.transforms.ComposeTransform(flows.PlanarTransform.stack(**k))(Z2),
     dict(u=torch.tensor([[0.3, -0.4], [0.1, 0.2]], dtype=F64),
          w=torch.tensor([[1.0, 0.5], [-0.3, 1.0]], dtype=F64),
          b=torch.tensor([0.2, -0.1], dtype=F64))),
    ("flows.PlanarStackTransform", lambda **k: flows.PlanarStackTransform(**k)(Z2),
     dict(u=torch.tensor([[0.3, -0.4], [0.1, 0.2]], dtype=F64),
          w=torch.tensor([[1.0, 0.5], [-0.3, 1.0]], dtype=F64),
          b=torch.tensor([0.2, -0.1], dtype=F64))),
    ("flows.PlanarStackTransform.__call__", lambda **k: pstack()(**k), dict(x=Z2)),
    ("flows.PlanarStackTransform.inv", lambda y: pstack().inv(y), dict(y=Z2)),
    ("flows.PlanarStackTransform.log_abs_det_jacobian",
     lambda x: pstack().log_abs_det_jacobian(x, None), dict(x=Z2)),
    ("flows.RadialTransform", lambda **k: flows.RadialTransform(**k)(Z2),
     dict(z0=torch.tensor([0.1, 0.2], dtype=F64), alpha_raw=torch.tensor(0.3, dtype=F64),
          beta_raw=torch.tensor(0.4, dtype=F64))),
    ("flows.RadialTransform.__call__", lambda **k: radial()(**k), dict(x=Z2)),
    ("flows.RadialTransform.inv", lambda y: radial().inv(y), dict(y=Z2)),
    ("flows.RadialTransform.log_abs_det_jacobian",
     lambda x: radial().log_abs_det_jacobian(x, None), dict(x=Z2)),
    ("flows.AffineCouplingTransform",
     lambda **k: flows.AffineCouplingTransform(cond, **k)(Z2),
     dict(mask=torch.tensor([1.0, 0.0], dtype=F64))),
    ("flows.AffineCouplingTransform.__call__", lambda **k: coupling_t()(**k), dict(x=Z2)),
    ("flows.AffineCouplingTransform.inv", lambda y: coupling_t().inv(y), dict(y=Z2)),
    ("flows.AffineCouplingTransform.log_abs_det_jacobian",
     lambda x: coupling_t().log_abs_det_jacobian(x, None), dict(x=Z2)),
    ("flows.MADE", lambda **k: (torch.manual_seed(0), flows.MADE(**k)(Z2))[1],
     dict(dim=2, hidden=3, max_log_scale=3.0)),
    ("flows.MADE.forward", lambda **k: made()(**k), dict(z=Z2)),
    ("flows.AutoregressiveTransform.__call__", lambda **k: ar_t()(**k), dict(x=Z2)),
    ("flows.AutoregressiveTransform.inv", lambda y: ar_t().inv(y), dict(y=Z2)),
    ("flows.AutoregressiveTransform.log_abs_det_jacobian",
     lambda x: ar_t().log_abs_det_jacobian(x, None), dict(x=Z2)),
    ("flows.AffineCoupling", lambda **k: flows.AffineCoupling(**k).mask,
     dict(dim=2, index=1, hidden=3, max_log_scale=3.0, num_runs=2)),
    ("flows.Autoregressive", lambda **k: flows.Autoregressive(**k).made.mask_in,
     dict(dim=2, index=1, hidden=3, max_log_scale=3.0)),
    ("flows.FlowFamily",
     lambda **k: (torch.manual_seed(0), flows.FlowFamily(**k).distribution().log_prob(
         torch.zeros(2, dtype=F64)))[1],
     dict(dim=2, num_layers=2, kind="planar", hidden=3, init_scale=1.0, num_runs=1)),
] + [
    (f"flows.FlowFamily({kind}).log_prob",
     (lambda name: lambda **k: family(name).distribution().log_prob(**k))(kind),
     dict(value=Z2))
    for kind in flows.FLOW_KINDS
] + [
    ("flows.Grid2D", lambda **k: flows.Grid2D(**k).cell_area,
     dict(axis=GRID.axis, points=GRID.points, cell_area=GRID.cell_area)),
    ("flows.Grid2D.log_integral", GRID.log_integral,
     dict(log_values=-0.5 * (GRID.points ** 2).sum(-1))),
    ("flows.Grid2D.integral", GRID.integral, dict(values=torch.exp(-(GRID.points ** 2).sum(-1)))),
    ("flows.Grid2D.matrix", GRID.matrix, dict(values=GRID.points[:, 0].clone())),
    ("flows.Grid2D.image", GRID.image, dict(values=GRID.points[:, 0].clone())),
    ("flows.square_grid", lambda **k: flows.square_grid(**k).points,
     dict(limit=3.0, num_points=5)),
    ("flows.log_density_u1", flows.log_density_u1, dict(z=Z2)),
    ("flows.log_density_u2", flows.log_density_u2, dict(z=Z2, confine=4.0)),
    ("flows.log_density_u3", flows.log_density_u3, dict(z=Z2, confine=4.0)),
    ("flows.log_density_u4", flows.log_density_u4, dict(z=Z2, confine=4.0)),
    ("vae.PlanarFlowEncoder", lambda **k: vae.PlanarFlowEncoder(**k).outer.bias.shape,
     dict(num_pixels=4, latent_dim=2, num_layers=2, hidden=3)),
    ("vae.PlanarFlowEncoder.raw_outputs",
     lambda **k: flow_vae().encoder.raw_outputs(**k)["u"], dict(x=XB)),
    ("vae.PlanarFlowEncoder.forward",
     lambda **k: (lambda q: q.log_prob(torch.zeros(6, 2)))(flow_vae().encoder(**k)),
     dict(x=XB)),
    ("vae.PlanarFlowEncoder.posterior",
     lambda **k: flow_vae().encoder.posterior(dict(flow_vae().encoder.raw_outputs(XB),
                                                   **k)).log_prob(torch.zeros(6, 2)),
     dict(mean=torch.zeros(6, 2), logvar=torch.zeros(6, 2))),
    ("vae.vae_elbo_of",
     lambda **k: vae.vae_elbo_of(**dict(dict(model=flow_vae(),
                                               q=flow_vae().encoder(XB)), **k)),
     dict(x=XB, num_samples=2)),
    ("vae.vae_elbo_of(model)",
     lambda **k: vae.vae_elbo_of(x=XB, q=flow_vae().encoder(XB), num_samples=2, **k),
     dict(model=flow_vae())),
    ("vae.refine_flow_posterior",
     lambda **k: vae.refine_flow_posterior(flow_vae(), **k)[1],
     dict(x=XB, num_steps=2, lr=0.01, num_samples=2)),
    ("flows.fit_maximum_likelihood",
     lambda **k: flows.fit_maximum_likelihood(family("coupling"), **k),
     dict(samples=Z2, num_steps=3, lr=0.01, batch_size=4)),
    # ---- hmm
    ("hmm.forward_backward", lambda **k: hmm.forward_backward(**k)[:2],
     dict(log_pi=LOGPI, log_A=LOGA, log_B=LOGB, return_pairwise=True,
          lengths=np.array([2, 3]))),
    ("hmm.enumerate_posterior", lambda **k: hmm.enumerate_posterior(**k)["gamma"],
     dict(log_pi=LOGPI, log_A=LOGA, log_B=LOGB)),
    ("hmm.chain_entropy", hmm.chain_entropy, dict(gamma=GAMMA, xi=XI)),
    ("hmm.viterbi", hmm.viterbi, dict(log_pi=LOGPI, log_A=LOGA, log_B=LOGB)),
    ("hmm.sample_gaussian_hmm", hmm.sample_gaussian_hmm,
     dict(startprob=np.array([0.6, 0.4]), transmat=np.exp(LOGA), means=MEANS2,
          covariances=COV2, num_steps=5, rng=0)),
    ("hmm.GaussianHMM.fit", lambda X, **k: hmm.GaussianHMM(**k).fit(X).means_,
     dict(X=XH, num_states=2, tol=1e-6, reg_covar=1e-6, max_iter=5, rng=0)),
    ("hmm.GaussianHMM.fit(init)", lambda **k: hmm.GaussianHMM(2, max_iter=3, **k).fit(XH)
     .means_, dict(startprob_init=np.array([0.5, 0.5]), transmat_init=np.exp(LOGA),
                   means_init=MEANS2, covariances_init=COV2)),
    ("hmm.GaussianHMM.fit(lengths)", lambda **k: hmm.GaussianHMM(2, max_iter=3, rng=0)
     .fit(XH, **k).means_, dict(lengths=np.array([8, 8]))),
    ("hmm.GaussianHMM.posterior", HMM.posterior, dict(X=XH[:5], lengths=np.array([2, 3]))),
    ("hmm.GaussianHMM.score", HMM.score, dict(X=XH[:5])),
    ("hmm.GaussianHMM.predict", HMM.predict, dict(X=XH[:5])),
    ("hmm.GaussianHMM.emission_log_prob", HMM.emission_log_prob,
     dict(X=XH[:5], means=MEANS2, covariances=COV2)),
]


SKIP_ARRAY = {"q", "prior", "theta_0", "theta_1", "theta_old", "theta_new", "init"}
COUNT_NAMES = ("num_", "max_iter", "n_components", "chunk_size", "check_every", "n",
               "hidden", "num_nonzero", "num_terms", "patch_size", "signal_dim",
               "code_iter", "k", "max_batch", "hidden", "num_epochs", "batch_size",
               "num_layers", "dim", "latent_dim", "num_pixels", "num_states", "num_classes",
               "warmup_epochs", "num_runs", "index")
#: arguments for which None is a valid value (the default)
NONE_OK = {"mean", "logvar", "num_samples", "lengths", "confine", "z", "startprob_init",
           "transmat_init", "means_init", "covariances_init", "means", "covariances"}
#: batch arguments (n, D) for which one sample of shape (D,) is tried
BATCH_KEYS = {"x", "x_train", "x_val", "samples"}


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


def mutations(key, value, extended=False, name=""):
    """(kind, new value, expect): expect is True (valid: the plain answer), False (bad
    input: a clear error), "either" (a clear error or the plain answer), "shape" (valid,
    compared by shape and finiteness: float32 <-> float64 and one sample) or "nan" (a clear
    error or NaN out: NaN fed to an elementwise map, as torch's own transforms do)"""
    if extended:
        yield from _extended(key, value, name)
    if key == "rng":
        yield "rng=-1", -1, False
        yield "rng=np.int64", np.int64(value), True
        return
    if isinstance(value, bool):
        return
    if isinstance(value, np.ndarray) and key not in SKIP_ARRAY:
        if value.dtype.kind == "f":
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


def _extended(key, value, name):
    if value is None or isinstance(value, bool | str | dict):
        return
    if key not in NONE_OK:
        yield "None", None, False
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        yield "numpy array", value.numpy().copy(), "either"
        other = torch.float32 if value.dtype == torch.float64 else torch.float64
        yield f"{other}".replace("torch.", ""), value.to(other), "shape"
        nan = value.clone()
        nan.view(-1)[0] = float("nan")
        transform = ("Transform." in name or name.endswith("MADE.forward")
                     or "log_density" in name)
        yield "NaN tensor", nan, "nan" if transform else False
        if key in BATCH_KEYS and value.ndim == 2:
            yield "one sample (1-D)", value[0].clone(), "either"
    # (a 1-D X of GaussianHMM is a sequence of scalar observations, not one sample)


def classify(name, func, kwargs, key, kind, value, expect_valid, base):
    new = dict(kwargs, **{key: value})
    try:
        out = run(func, new)
    except Hang:
        return "hang", ""
    except Exception as exc:  # noqa: BLE001
        msg = f"{type(exc).__name__}: {str(exc)[:160]}"
        if expect_valid == "shape" and isinstance(exc, TypeError) and key in str(exc) \
                and "one dtype" in str(exc):   # a documented contract: parameters of one dtype
            return "clear error", msg
        if expect_valid is True or expect_valid == "shape":
            return "valid input rejected", msg
        if isinstance(exc, TypeError | ValueError) and key in str(exc):
            return "clear error", msg
        return "unclear error", msg
    if expect_valid == "nan":
        return "accepted valid", ""
    if expect_valid == "shape" or (expect_valid == "either" and kind.startswith("one")):
        if non_finite(out) and not non_finite(base):
            return "silent NaN/inf", ""
        if kind.startswith("one") or [a.shape for a in leaves(out)] == [
                a.shape for a in leaves(base)]:
            return "accepted valid", ""
        return "wrong result", f"shapes {[a.shape for a in leaves(out)]}"
    if expect_valid:
        if non_finite(out) and not non_finite(base):
            return "silent NaN/inf", ""
        if not same(out, base):
            return "wrong result", ""
        return "accepted valid", ""
    return ("silent NaN/inf" if non_finite(out) else "bad input accepted"), f"{out!r:.80}"


VERDICTS = ("clear error", "accepted valid", "unclear error", "silent NaN/inf",
            "bad input accepted", "wrong result", "valid input rejected", "hang")


def main():
    verbose = "-v" in sys.argv
    wanted = [a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--modules=")]
    wanted = wanted[0] if wanted else None
    counts = collections.Counter()
    names = collections.defaultdict(collections.Counter)
    modules = collections.defaultdict(collections.Counter)
    specs = [(n, f, k, False) for n, f, k in SPECS] + [(n, f, k, True) for n, f, k in SPECS3]
    for name, func, kwargs, extended in specs:
        if wanted is not None and name.split(".")[0] not in wanted:
            continue
        try:
            base = run(func, kwargs, 60)
        except Exception as exc:  # noqa: BLE001
            print(f"BASE FAILS {name}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        for key, value in kwargs.items():
            for kind, new, valid in mutations(key, value, extended, name):
                verdict, msg = classify(name, func, kwargs, key, kind, new, valid, base)
                counts[verdict] += 1
                names[name][verdict] += 1
                modules[name.split(".")[0]][verdict] += 1
                if verbose and verdict not in ("clear error", "accepted valid"):
                    print(f"{verdict:22s} {name}({key}= {kind}) {msg}")
    total = sum(counts.values())
    print(f"{len(names)} names, {total} calls")
    for verdict in VERDICTS:
        print(f"  {verdict:22s} {counts[verdict]}")
    for module, c in sorted(modules.items()):
        print(f"  {module:16s} " + ", ".join(f"{v} {c[v]}" for v in VERDICTS if c[v]))


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


# the individual failures in vae, flows, hmm, and extreme-but-valid inputs of
# their routines whose docstrings promise a range, against independent answers
def _latent_grid_tail(low):
    from scipy.stats import norm

    def check(out):
        q = np.unique(out[:, 0].numpy().astype(np.float64))
        want = np.array([norm.ppf(low), norm.ppf(0.5 * (low + 0.95)), norm.isf(0.05)])
        np.testing.assert_allclose(q, want, rtol=1e-6)
    return (lambda: vae.latent_grid(3, low=low, high=0.95)), check


def _latent_grid_upper():
    from scipy.stats import norm

    def check(out):
        q = np.unique(out[:, 0].numpy().astype(np.float64))
        high = 1 - 1e-16   # the float 1 - 2**-53: its upper tail 1 - high is exact
        want = np.array([norm.ppf(0.05), norm.ppf(0.5 * (0.05 + high)), norm.isf(1 - high)])
        np.testing.assert_allclose(q, want, rtol=1e-6)
    return (lambda: vae.latent_grid(3, low=0.05, high=1 - 1e-16)), check


def _kl_logvar(logvar, dtype):
    mean = torch.tensor([[0.5, -1.0]], dtype=dtype)
    lv = torch.tensor([[logvar, 0.3]], dtype=dtype)
    want = 0.5 * (np.exp(np.float64([logvar, 0.3])) - np.float64([logvar, 0.3])
                  + np.float64([0.5, -1.0]) ** 2 - 1).sum()

    def check(out):
        np.testing.assert_allclose(out.double().numpy(), [want], rtol=1e-6)
    return (lambda: vae.kl_to_prior(vae.DiagonalGaussianPosterior(mean, lv))), check


def _float32_encoder_model(logvar):
    model = vae_model()
    with torch.no_grad():
        last = model.encoder[2]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.5, -1.0, logvar, logvar]))
    return model


def _elbo_terms_logvar(logvar):
    def call():
        return vae.elbo_terms(_float32_encoder_model(logvar), XB)[1]

    def check(out):   # KL of N(m, e^lv) to N(0, 1) per point, float64 closed form
        want = 0.5 * (2 * np.exp(np.float64(logvar)) - 2 * logvar + 0.25 + 1.0 - 2)
        np.testing.assert_allclose(out.detach().double().numpy(), np.full(6, want),
                                   rtol=1e-6)
    return call, check


def _ilw_logvar():
    mean = torch.zeros(6, 2)
    lv = torch.full((6, 2), -800.0)

    def call():
        return vae.importance_log_weights(vae_model(), XB, 3, mean, lv)

    def check(out):   # z = mean exactly: log p(x | 0) + log N(0; 0, I) - log q(0)
        model = vae_model()
        with torch.no_grad():
            lpx = vae.bernoulli_log_likelihood(XB, model.decode(torch.zeros(6, 2))).double()
        out = out.detach()
        want = lpx - np.log(2 * np.pi) - (-np.log(2 * np.pi) + 800.0)
        np.testing.assert_allclose(out.double().numpy(), want.expand(3, 6).numpy(),
                                   rtol=1e-6)
    return call, check


def _diverge(train, *args, **kwargs):
    """A training call that diverges: a clear error naming the step, and the model's
    parameters as they were before the call (or the library's documented state)."""
    def call():
        model = vae_model() if train is not vae.refine_flow_posterior else flow_vae()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        try:
            train(model, *args, **kwargs)
        except ValueError as exc:
            same_ = all(torch.equal(before[n], p) for n, p in model.named_parameters())
            if not ("step" in str(exc) or "epoch" in str(exc)) or not same_:
                raise AssertionError(f"kept parameters {same_}: {exc}") from exc
            raise
        return model
    return call


def _ml_diverge_then_fit():
    """A diverging maximum-likelihood fit stops naming the step and restores the family,
    so the next fit of the same family runs (it used to hold NaN parameters)."""
    torch.manual_seed(1)   # a seed at which lr = 1e6 diverges (with some, it stays finite)
    fam = flows.FlowFamily(2, 2, "coupling")
    before = {n: p.detach().clone() for n, p in fam.named_parameters()}
    data = torch.randn(200, 2, dtype=F64)
    try:
        flows.fit_maximum_likelihood(fam, data, num_steps=50, lr=1e6)
    except ValueError as exc:
        message = str(exc)
    else:
        message = "no error"
    same_ = all(torch.equal(before[n], p) for n, p in fam.named_parameters())
    return message, same_, flows.fit_maximum_likelihood(fam, data, num_steps=5)


def _ml_check(out):
    message, same_, trace = out
    assert "stopped at step" in message and same_, (message, same_)
    assert np.all(np.isfinite(trace))


EXTREME3 = [
    ("latent_grid(3, low=1e-17)", *_latent_grid_tail(1e-17)),
    ("latent_grid(3, low=1e-16)", *_latent_grid_tail(1e-16)),
    ("latent_grid(3, low=1e-300)", *_latent_grid_tail(1e-300)),
    ("latent_grid(3, high=1 - 1e-16)", *_latent_grid_upper()),
    ("kl_to_prior at logvar -800, float32", *_kl_logvar(-800.0, torch.float32)),
    ("kl_to_prior at logvar -110, float32", *_kl_logvar(-110.0, torch.float32)),
    ("kl_to_prior at logvar -800, float64", *_kl_logvar(-800.0, F64)),
    ("kl_to_prior at logvar +80, float32", *_kl_logvar(80.0, torch.float32)),
    ("kl_to_prior at logvar +700, float64", *_kl_logvar(700.0, F64)),
    ("elbo_terms KL at logvar -110 (float32 encoder)", *_elbo_terms_logvar(-110.0)),
    ("importance_log_weights at logvar -800", *_ilw_logvar()),
    ("refine_flow_posterior(lr=1e8)",
     _diverge(vae.refine_flow_posterior, XB, 200, lr=1e8), ("error", "lr")),
    ("train_wake_sleep(lr=1e10)",
     _diverge(vae.train_wake_sleep, XB, XV, 20, 3, lr=1e10), ("error", "lr")),
    ("train_vae(lr=1e10)", _diverge(vae.train_vae, XB, XV, 20, 3, lr=1e10), ("error", "lr")),
    ("refine_posterior(lr=1e10)", _diverge(vae.refine_posterior, XB, 200, lr=1e10),
     ("error", "lr")),
    ("fit_maximum_likelihood(lr=1e6), then lr=0.01", _ml_diverge_then_fit, _ml_check),
    ("vae_elbo_of(model=None)",
     lambda: vae.vae_elbo_of(None, XB, flow_vae().encoder(XB), 2), ("error", "model")),
    ("PlanarFlowEncoder.forward(numpy x)",
     lambda: flow_vae().encoder(XB.numpy()), ("error", "x")),
    ("refine_flow_posterior(None x)",
     lambda: vae.refine_flow_posterior(flow_vae(), None, 2), ("error", "x")),
    ("iwae_bound(one image)", lambda: vae.iwae_bound(vae_model(), XB[0], 3), ("error", "x")),
    ("Grid2D.log_integral(+inf)",
     lambda: GRID.log_integral(torch.full((25,), math.inf)), ("error", "log_values")),
    ("Grid2D.log_integral(-inf somewhere)",
     lambda: GRID.log_integral(torch.cat([torch.full((24,), -math.inf),
                                          torch.zeros(1, dtype=F64)])),
     _is_close(np.log(GRID.cell_area))),
    ("FlowFamily(autoregressive).log_prob(float32) = coupling's convention",
     lambda: family("autoregressive").distribution().log_prob(Z2.float()),
     lambda out: np.testing.assert_array_equal(
         out.detach().numpy(),
         family("autoregressive").distribution().log_prob(Z2.float().double())
         .detach().numpy())),
    ("hmm forward_backward(numeric strings)",
     lambda: hmm.forward_backward(LOGPI.astype(str), LOGA, LOGB), ("error", "log_pi")),
]


def run_extreme(verbose):
    counts = collections.Counter()
    wanted = [a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--modules=")]
    cases = EXTREME + EXTREME3 if not wanted or set(wanted[0]) & {"vae", "flows", "hmm"} \
        else EXTREME
    for label, call, check in cases:
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
            except Exception as exc:  # noqa: BLE001 (an assertion, or a check that fails)
                verdict = "silent NaN/inf" if non_finite(out) else "wrong result"
                if verbose:
                    print(f"  {verdict:22s} {label}: {str(exc)[:160]!r}")
        counts[verdict] += 1
        if verbose and verdict in ("right answer", "clear error"):
            print(f"  {verdict:22s} {label}")
    print(f"issue 34's individual failures ({len(cases)} cases): " +
          ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
    run_extreme("-v" in sys.argv)
