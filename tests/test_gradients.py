"""Tests of elbo_lib.gradients: Monte Carlo gradient estimators (chapter 5).

Statistical tests use a fixed seed and a tolerance of a few *measured* standard errors
(the standard deviation of the estimator over R repeats divided by sqrt(R)), never a
loose constant.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch.distributions import (
    Bernoulli,
    Independent,
    MultivariateNormal,
    OneHotCategorical,
)

from elbo_lib import seed_everything
from elbo_lib.gaussians import (
    diagonal_gaussian,
    gaussian_quadratic_expectation,
    gaussian_quadratic_gradient,
)
from elbo_lib.gradients import (
    BayesianLogisticRegression,
    GaussianVariational,
    crps_gaussian,
    fit_gaussian_vi,
    fit_gaussian_vi_parallel,
    gaussian_elbo_gradient_samples,
    gaussian_target_elbo_gradient,
    gradient_stats,
    importance_sampling_posterior,
    monte_carlo_crps,
    pathwise_gradient,
    per_sample_gradients,
    score_function_elbo_surrogate,
    score_function_gradient,
)

NUM_SE = 4.0  # tolerance in measured standard errors
F64 = torch.float64


def sum_of_squares(z: torch.Tensor) -> torch.Tensor:
    """f(z) = ||z||^2 per sample: the test function with closed-form moments."""
    return (z**2).sum(-1)


def quadratic_problem(dim: int = 3, seed: int = 1):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim))
    b = rng.normal(size=dim)
    mu = rng.normal(size=dim)
    sigma = rng.uniform(0.5, 1.5, size=dim)
    at, bt = torch.tensor(a), torch.tensor(b)

    def f(z):
        return torch.einsum("ni,ij,nj->n", z, at, z) + z @ bt

    params = {"mu": torch.tensor(mu), "sigma": torch.tensor(sigma)}
    return a, b, mu, sigma, f, params


def test_closed_form_gradient_matches_autograd_of_closed_form_expectation():
    a, b, mu, sigma, _, _ = quadratic_problem()
    mu_t = torch.tensor(mu, requires_grad=True)
    sigma_t = torch.tensor(sigma, requires_grad=True)
    at, bt = torch.tensor(a), torch.tensor(b)
    value = mu_t @ at @ mu_t + torch.diagonal(at) @ sigma_t**2 + bt @ mu_t
    value.backward()
    exact = gaussian_quadratic_gradient(a, b, mu, sigma)
    np.testing.assert_allclose(exact["mu"], mu_t.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(exact["sigma"], sigma_t.grad.numpy(), rtol=1e-12)
    assert np.isclose(float(value.detach()), gaussian_quadratic_expectation(a, b, mu, sigma))


def test_closed_form_expectation_matches_monte_carlo():
    a, b, mu, sigma, f, _ = quadratic_problem()
    seed_everything(0)
    z = diagonal_gaussian(torch.tensor(mu), torch.tensor(sigma)).sample((50_000,))
    values = f(z)
    se = float(values.std()) / np.sqrt(values.numel())
    assert abs(float(values.mean()) - gaussian_quadratic_expectation(a, b, mu, sigma)) < NUM_SE * se


@pytest.mark.parametrize(("estimator", "baseline"),
                         [("score", None), ("score", "leave-one-out"), ("score", 3.0),
                          ("pathwise", None)])
def test_estimators_are_unbiased_for_quadratic(estimator, baseline):
    a, b, mu, sigma, f, params = quadratic_problem()
    seed_everything(0)
    stats = gradient_stats(f, diagonal_gaussian, params, 8, 4000, estimator=estimator,
                           baseline=baseline)
    exact = gaussian_quadratic_gradient(a, b, mu, sigma)
    for name in ("mu", "sigma"):
        z_scores = np.abs(stats.mean[name] - exact[name]) / stats.std_error[name]
        assert np.all(z_scores < NUM_SE), (name, z_scores)


def test_a_biased_baseline_is_detected_by_the_same_tolerance():
    """The unbiasedness test can fail. Subtracting the plain mean of the S samples
    (which includes f(z_s) itself) multiplies the leave-one-out estimator by (S - 1)/S:
    with S = 2 the estimate is half the gradient, and the 4-standard-error test sees it."""
    a, b, mu, sigma, f, params = quadratic_problem()
    seed_everything(0)
    s, r = 2, 4000
    g = per_sample_gradients(f, diagonal_gaussian, params, s, estimator="score",
                             baseline="leave-one-out", num_repeats=r)
    biased = (s - 1) / s * g["mu"].mean(dim=1).numpy()
    exact = gaussian_quadratic_gradient(a, b, mu, sigma)["mu"]
    se = biased.std(axis=0, ddof=1) / np.sqrt(r)
    assert np.max(np.abs(biased.mean(axis=0) - exact) / se) > NUM_SE


def test_measured_variances_match_closed_forms_in_one_dimension():
    # f(z) = z^2, z ~ N(1, 1): pathwise d/dmu = 2z has variance 4 sigma^2 = 4;
    # score d/dmu = z^2 eps / sigma has variance (mu^4 + 18 mu^2 sigma^2 + 15 sigma^4)/sigma^2
    # - 4 mu^2 = 30 for one sample.
    seed_everything(0)
    params = {"mu": torch.ones(1, dtype=F64), "sigma": torch.ones(1, dtype=F64)}

    r = 20_000
    for estimator, exact in (("pathwise", 4.0), ("score", 30.0)):
        g = per_sample_gradients(sum_of_squares, diagonal_gaussian, params, 1, estimator=estimator,
                                 num_repeats=r)["mu"].reshape(r).numpy()
        # standard error of a sample variance: sqrt((m4 - s^4) / R)
        centred = g - g.mean()
        se_var = np.sqrt((np.mean(centred**4) - np.var(centred) ** 2) / r)
        assert abs(g.var(ddof=1) - exact) < NUM_SE * se_var, (estimator, g.var())


def test_variance_ordering_and_growth_with_dimension():
    seed_everything(0)

    totals = {}
    for dim in (2, 16):
        params = {"mu": torch.ones(dim, dtype=F64), "sigma": torch.ones(dim, dtype=F64)}
        totals[dim] = [gradient_stats(sum_of_squares, diagonal_gaussian, params, 16, 400,
                                      estimator=e, baseline=bl).total_variance()
                       for e, bl in (("score", None), ("score", "leave-one-out"),
                                     ("pathwise", None))]
        score, loo, path = totals[dim]
        assert score > loo > path
    # the score/pathwise ratio grows with the dimension
    assert totals[16][0] / totals[16][2] > 4 * totals[2][0] / totals[2][2]


def test_variance_falls_as_one_over_num_samples():
    """Var(S = 1) / Var(S = 16) = 16, within 4 bootstrap standard errors of the ratio."""
    seed_everything(0)
    params = {"mu": torch.ones(2, dtype=F64), "sigma": torch.ones(2, dtype=F64)}

    r = 4000
    estimates = []
    for s in (1, 16):
        g = per_sample_gradients(sum_of_squares, diagonal_gaussian, params, s, estimator="pathwise",
                                 num_repeats=r)
        estimates.append(np.concatenate([v.mean(dim=1).numpy() for v in g.values()], axis=1))

    def ratio(idx1, idx16):
        return estimates[0][idx1].var(axis=0, ddof=1).sum() / \
            estimates[1][idx16].var(axis=0, ddof=1).sum()

    boot_rng = np.random.default_rng(0)
    boots = [ratio(boot_rng.integers(0, r, r), boot_rng.integers(0, r, r)) for _ in range(200)]
    measured = ratio(slice(None), slice(None))
    assert abs(measured - 16) < NUM_SE * np.std(boots), (measured, np.std(boots))


def test_full_rank_gaussian_through_the_generic_interface():
    # q = N(mu, L L^T), f(z) = ||z||^2: E f = ||mu||^2 + ||L||_F^2, so grad_mu = 2 mu and
    # grad_L = 2 L (lower triangle). Both estimators, through MultivariateNormal.
    mu = torch.tensor([0.5, -1.0], dtype=F64)
    low = torch.tensor([[1.0, 0.0], [0.4, 0.7]], dtype=F64)

    def make_q(mu, low):
        return torch.distributions.MultivariateNormal(mu, scale_tril=torch.tril(low))

    seed_everything(0)
    for estimator, baseline in (("pathwise", None), ("score", "leave-one-out")):
        stats = gradient_stats(sum_of_squares, make_q, {"mu": mu, "low": low}, 8, 3000,
                               estimator=estimator, baseline=baseline)
        exact = {"mu": 2 * mu.numpy(), "low": np.tril(2 * low.numpy())}
        for name in exact:
            se = np.where(stats.std_error[name] > 0, stats.std_error[name], 1.0)
            assert np.all(np.abs(stats.mean[name] - exact[name]) < NUM_SE * se), name
        assert stats.mean["low"][0, 1] == 0.0  # the upper triangle does not enter q


def test_single_estimate_functions_agree_with_per_sample_terms():
    _, _, _, _, f, params = quadratic_problem()
    seed_everything(3)
    g1 = score_function_gradient(f, diagonal_gaussian, params, 5, baseline="leave-one-out")
    seed_everything(3)
    g2 = per_sample_gradients(f, diagonal_gaussian, params, 5, estimator="score",
                              baseline="leave-one-out")
    torch.testing.assert_close(g1["mu"], g2["mu"][0].mean(0))
    seed_everything(3)
    p1 = pathwise_gradient(f, diagonal_gaussian, params, 5)
    assert p1["sigma"].shape == (3,)


def test_score_function_works_for_discrete_latents_and_pathwise_refuses():
    # f(z) = sum_k c_k z_k for one-hot z: E f = sum_k softmax(l)_k c_k, gradient by autograd
    c = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    logits = torch.tensor([0.2, -0.4, 0.1], dtype=F64)
    leaf = logits.clone().requires_grad_(True)
    (torch.softmax(leaf, 0) @ c).backward()

    def make_q(logits):
        return OneHotCategorical(logits=logits)

    def f(z):
        return z @ c

    seed_everything(0)
    stats = gradient_stats(f, make_q, {"logits": logits}, 4, 4000, estimator="score",
                           baseline="leave-one-out")
    z_scores = np.abs(stats.mean["logits"] - leaf.grad.numpy()) / stats.std_error["logits"]
    assert np.all(z_scores < NUM_SE)
    with pytest.raises(ValueError, match="has no rsample"):
        pathwise_gradient(f, make_q, {"logits": logits}, 4)


def test_score_function_elbo_surrogate_is_unbiased_for_conjugate_model():
    # log p(x, z) = N(z; 1, 0.5^2) (unnormalised evidence irrelevant): exact ELBO gradient
    # for q = N(m, s^2): d/dm = -(m - 1)/0.25, d/ds = -s/0.25 + 1/s
    target = torch.distributions.Normal(torch.tensor(1.0, dtype=F64),
                                        torch.tensor(0.5, dtype=F64))
    m, s = 0.3, 0.8
    ests = []
    seed_everything(0)
    for _ in range(300):
        mu = torch.tensor([m], dtype=F64, requires_grad=True)
        sd = torch.tensor([s], dtype=F64, requires_grad=True)
        surrogate, _ = score_function_elbo_surrogate(lambda z: target.log_prob(z[:, 0]),
                                                     diagonal_gaussian(mu, sd), 32)
        surrogate.backward()
        ests.append([mu.grad.item(), sd.grad.item()])
    ests = np.array(ests)
    exact = np.array([-(m - 1) / 0.25, -s / 0.25 + 1 / s])
    se = ests.std(axis=0, ddof=1) / np.sqrt(len(ests))
    assert np.all(np.abs(ests.mean(axis=0) - exact) < NUM_SE * se)


def test_bad_inputs_raise_clear_errors():
    _, _, _, _, f, params = quadratic_problem()
    with pytest.raises(ValueError, match="estimator must be one of"):
        per_sample_gradients(f, diagonal_gaussian, params, 4, estimator="magic")
    with pytest.raises(ValueError, match="baseline applies to the score-function"):
        per_sample_gradients(f, diagonal_gaussian, params, 4, estimator="pathwise",
                             baseline=1.0)
    with pytest.raises(ValueError, match="leave-one-out baseline needs num_samples >= 2"):
        score_function_gradient(f, diagonal_gaussian, params, 1, baseline="leave-one-out")
    with pytest.raises(ValueError, match="baseline must be None"):
        score_function_gradient(f, diagonal_gaussian, params, 4, baseline="median")
    with pytest.raises(TypeError, match="baseline must be None"):
        score_function_gradient(f, diagonal_gaussian, params, 4, baseline=[1.0])
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        pathwise_gradient(f, diagonal_gaussian, params, 0)
    with pytest.raises(TypeError, match="num_samples must be an integer"):
        pathwise_gradient(f, diagonal_gaussian, params, 2.5)
    with pytest.raises(TypeError, match="params must be a non-empty mapping"):
        pathwise_gradient(f, diagonal_gaussian, {}, 4)
    with pytest.raises(ValueError, match="must be finite"):
        pathwise_gradient(f, diagonal_gaussian, {**params, "mu": torch.tensor([np.nan] * 3)}, 4)
    with pytest.raises(ValueError, match="batch_shape"):
        # forgetting Independent gives batch_shape (N, D), not (N,)
        pathwise_gradient(f, lambda mu, sigma: torch.distributions.Normal(mu, sigma), params, 4)
    with pytest.raises(TypeError, match="must return a torch Distribution"):
        pathwise_gradient(f, lambda mu, sigma: mu, params, 4)
    with pytest.raises(ValueError, match="f must map samples"):
        pathwise_gradient(lambda z: z, diagonal_gaussian, params, 4)
    with pytest.raises(ValueError, match="num_repeats must be >= 2"):
        gradient_stats(f, diagonal_gaussian, params, 4, 1, estimator="score")
    with pytest.raises(ValueError, match="sigma must be > 0"):
        gaussian_quadratic_gradient(np.eye(2), np.zeros(2), np.zeros(2), [1.0, -1.0])
    with pytest.raises(ValueError, match="a must have shape"):
        gaussian_quadratic_gradient(np.eye(3), np.zeros(2), np.zeros(2), [1.0, 1.0])
    with pytest.raises(ValueError, match="family must be one of"):
        GaussianVariational(3, family="banded")
    with pytest.raises(ValueError, match="only 0 and 1"):
        BayesianLogisticRegression(np.ones((3, 2)), [0, 1, 2])
    with pytest.raises(ValueError, match="same number of rows"):
        BayesianLogisticRegression(np.ones((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="even number of samples"):
        monte_carlo_crps(torch.zeros(3, 2, dtype=F64), torch.zeros(2, dtype=F64))
    with pytest.raises(TypeError, match="q must be a torch.distributions"):
        score_function_elbo_surrogate(f, "q", 4)
    with pytest.raises(ValueError, match="has no rsample"):
        pathwise_gradient(lambda z: z.sum(-1),
                          lambda logits: Independent(Bernoulli(logits=logits), 1),
                          {"logits": torch.zeros(2)}, 2)
    with pytest.raises(ValueError, match="estimator must be one of"):
        fit_gaussian_vi(lambda z: -(z**2).sum(-1), 2, estimator="exact", num_steps=1)


def test_gaussian_variational_families():
    q = GaussianVariational(4, "full", init_scale=0.5)
    np.testing.assert_allclose(q.covariance(), 0.25 * np.eye(4), rtol=1e-12)
    assert q.num_parameters() == 4 + 10
    assert GaussianVariational(4, "diagonal").num_parameters() == 8
    assert q.distribution().event_shape == (4,)


def test_logistic_map_matches_scikit_learn_and_laplace_is_a_covariance():
    rng = np.random.default_rng(0)
    x = np.c_[np.ones(200), rng.normal(size=(200, 3))]
    y = (rng.uniform(size=200) < 1 / (1 + np.exp(-x @ np.array([0.5, 1.0, -2.0, 0.0])))) * 1.0
    model = BayesianLogisticRegression(x, y, prior_std=2.0)
    w_map, cov = model.laplace()
    # scikit-learn: minimises 0.5 ||w||^2 + C sum log-loss, i.e. prior N(0, C I)
    sk = LogisticRegression(C=4.0, fit_intercept=False, tol=1e-12, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(w_map, sk.coef_[0], atol=1e-5)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    # log_joint agrees with a direct evaluation through torch.distributions
    w = torch.tensor(rng.normal(size=(5, 4)))
    direct = (torch.distributions.Bernoulli(logits=w @ torch.tensor(x).T)
              .log_prob(torch.tensor(y)).sum(1)
              + torch.distributions.Normal(0.0, 2.0).log_prob(w).sum(1))
    torch.testing.assert_close(model.log_joint(w), direct.to(F64))


def test_pathwise_vi_recovers_a_gaussian_target():
    # target N(m, C) is in the full-rank family: VI must find it (KL -> 0)
    m = torch.tensor([1.0, -1.0], dtype=F64)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=F64)
    target = torch.distributions.MultivariateNormal(m, cov)
    seed_everything(0)
    res = fit_gaussian_vi(target.log_prob, 2, family="full", num_samples=16, num_steps=1000,
                          lr=0.02, eval_every=100)
    np.testing.assert_allclose(res.q.mu.detach().numpy(), m.numpy(), atol=0.1)
    np.testing.assert_allclose(res.q.covariance(), cov.numpy(), atol=0.1)
    assert abs(res.elbo[-1]) < 0.05  # log p(x) = 0 for a normalised target
    assert res.model_evaluations == 1000 * 16


def test_crps_monte_carlo_matches_closed_form():
    seed_everything(0)
    mu = torch.tensor([0.0, 1.0, -2.0], dtype=F64)
    sigma = torch.tensor([1.0, 0.3, 2.0], dtype=F64)
    y = torch.tensor([0.5, 1.0, 1.0], dtype=F64)
    samples = mu + sigma * torch.randn(200_000, 3, dtype=F64)
    torch.testing.assert_close(monte_carlo_crps(samples, y), crps_gaussian(mu, sigma, y),
                               atol=0.02, rtol=0)


# --------------------------------------------------------------------------------------
# the Gaussian ELBO gradient, parallel VI runs and importance sampling (chapter 5)
# --------------------------------------------------------------------------------------
def _gaussian_target(d: int = 3, seed: int = 3, log_z: float = 1.7):
    """A Gaussian 'posterior' N(m, C) with log p(x, z) = log N(z; m, C) + log_z."""
    gen = np.random.default_rng(seed)
    a = gen.normal(size=(d, d))
    cov = a @ a.T / d + 0.5 * np.eye(d)
    m = gen.normal(size=d)
    target = MultivariateNormal(torch.tensor(m), covariance_matrix=torch.tensor(cov))

    def log_joint(z):
        return target.log_prob(z) + log_z

    return m, cov, log_joint, log_z


@pytest.mark.parametrize("estimator", ["total", "path-derivative"])
def test_gaussian_elbo_gradient_matches_autodiff_sample_by_sample(estimator):
    m, cov, log_joint, _ = _gaussian_target()
    mu = m + 0.4
    low = 1.2 * np.linalg.cholesky(cov)
    got = gaussian_elbo_gradient_samples(log_joint, mu, low, 3, estimator=estimator,
                                         generator=torch.Generator().manual_seed(5))
    eps = torch.randn(3, mu.size, dtype=F64, generator=torch.Generator().manual_seed(5))
    mu_t = torch.tensor(mu, requires_grad=True)
    low_t = torch.tensor(low, requires_grad=True)
    for s in range(3):
        z = mu_t + low_t @ eps[s]
        if estimator == "total":
            q = MultivariateNormal(mu_t, scale_tril=low_t)
        else:  # path derivative: log q with its parameters held fixed
            q = MultivariateNormal(mu_t.detach(), scale_tril=low_t.detach())
        g_mu, g_low = torch.autograd.grad(log_joint(z) - q.log_prob(z), (mu_t, low_t))
        assert torch.allclose(got["mu"][0, s], g_mu, atol=1e-10)
        assert torch.allclose(got["scale_tril"][0, s], torch.tril(g_low), atol=1e-10)


def test_gaussian_target_elbo_gradient_matches_autodiff_of_the_closed_form():
    m, cov, _, _ = _gaussian_target()
    prec = np.linalg.inv(cov)
    mu = torch.tensor(m - 0.3, requires_grad=True)
    low = torch.tensor(0.8 * np.linalg.cholesky(cov), requires_grad=True)
    diff, pt = mu - torch.tensor(m), torch.tensor(prec)
    elbo = (-0.5 * diff @ pt @ diff - 0.5 * torch.trace(pt @ low @ low.T)
            + torch.log(torch.diagonal(low)).sum())
    g_mu, g_low = torch.autograd.grad(elbo, (mu, low))
    exact = gaussian_target_elbo_gradient(mu.detach(), low.detach(), m, prec)
    np.testing.assert_allclose(exact["mu"], g_mu.numpy(), atol=1e-12)
    np.testing.assert_allclose(exact["scale_tril"], torch.tril(g_low).numpy(), atol=1e-12)


def test_both_elbo_gradients_unbiased_and_path_derivative_exact_at_optimum():
    m, cov, log_joint, _ = _gaussian_target()
    prec, l_star = np.linalg.inv(cov), np.linalg.cholesky(cov)
    gen = torch.Generator().manual_seed(0)
    mu, low = m + 0.5, 1.5 * l_star
    exact = gaussian_target_elbo_gradient(mu, low, m, prec)
    for est in ("total", "path-derivative"):
        g = gaussian_elbo_gradient_samples(log_joint, mu, low, 4, 3000, estimator=est,
                                           generator=gen)
        for k, v in g.items():
            r = v.mean(1).numpy()
            se = r.std(0, ddof=1) / np.sqrt(len(r))
            mask = se > 0
            assert np.all(np.abs(r.mean(0) - exact[k])[mask] < NUM_SE * se[mask])
            assert np.all(np.abs(r.mean(0) - exact[k])[~mask] < 1e-12)
    at_opt = gaussian_elbo_gradient_samples(log_joint, m, l_star, 4, 50,
                                            estimator="path-derivative", generator=gen)
    assert all(float(v.abs().max()) < 1e-10 for v in at_opt.values())
    total = gaussian_elbo_gradient_samples(log_joint, m, l_star, 1, 4000, generator=gen)
    var_mu = float(total["mu"].reshape(4000, -1).numpy().var(0, ddof=1).sum())
    assert abs(var_mu / np.trace(prec) - 1) < 0.1  # Var(-P L eps) = P, trace tr P


@pytest.mark.parametrize("family", ["diagonal", "full"])
def test_parallel_vi_reaches_a_gaussian_posterior(family):
    m, cov, log_joint, log_z = _gaussian_target()
    res = fit_gaussian_vi_parallel(log_joint, 3, [0.05, 0.05], family=family,
                                   estimator="path-derivative", num_steps=600,
                                   eval_every=200, final_samples=4000, seed=2)
    assert res.elbo.shape == (2, 4) and res.steps.tolist() == [0, 200, 400, 600]
    assert not res.diverged.any() and res.model_evaluations == 600 * 8
    # the final ELBO is a 4000-sample estimate (sd about 0.02 near the optimum)
    assert np.all(res.final_elbo <= log_z + 0.08)
    if family == "full":  # the family contains the posterior: KL -> 0
        assert np.all(np.abs(log_z - res.final_elbo) < 0.08)
        np.testing.assert_allclose(res.mu, np.tile(m, (2, 1)), atol=0.05)
        for low in res.scale_tril:
            np.testing.assert_allclose(low @ low.T, cov, atol=0.1)
    else:  # the best diagonal q: precision diagonal P_ii^{-1}, KL in closed form
        prec = np.linalg.inv(cov)
        kl = 0.5 * (np.sum(np.log(np.diag(prec))) + np.linalg.slogdet(cov)[1])
        np.testing.assert_allclose(log_z - res.final_elbo, kl, atol=0.08)


def test_parallel_vi_estimators_agree_and_divergence_is_flagged():
    _, _, log_joint, log_z = _gaussian_target()
    for est in ("pathwise", "score"):
        res = fit_gaussian_vi_parallel(log_joint, 3, [0.02], family="full", estimator=est,
                                       num_steps=1500, eval_every=500, seed=4)
        assert not res.diverged[0] and log_z - res.final_elbo[0] < 0.2
    # an absurd step size for the score function leaves the ELBO below where it started
    bad = fit_gaussian_vi_parallel(log_joint, 3, [50.0], family="full", estimator="score",
                                   num_steps=50, eval_every=50, seed=0)
    assert bad.diverged[0]


def test_importance_sampling_is_exact_on_a_gaussian_posterior():
    m, cov, log_joint, log_z = _gaussian_target()
    res = importance_sampling_posterior(log_joint, m + 0.1, 1.3 * cov, 40_000,
                                       rng=np.random.default_rng(0), df=8.0)
    assert abs(res.log_evidence - log_z) < NUM_SE * res.log_evidence_se
    assert 1000 < res.ess <= 40_000
    se_mean = np.sqrt(np.diag(cov) / res.ess)
    assert np.all(np.abs(res.mean - m) < NUM_SE * se_mean)
    np.testing.assert_allclose(res.sd, np.sqrt(np.diag(cov)), rtol=0.05)
    assert np.all(np.abs(res.skewness) < NUM_SE * np.sqrt(6 / res.ess))


def test_new_chapter5_functions_validate_inputs():
    _, cov, log_joint, _ = _gaussian_target()
    with pytest.raises(ValueError, match="estimator"):
        gaussian_elbo_gradient_samples(log_joint, np.zeros(3), np.eye(3), 2,
                                       estimator="stl")
    with pytest.raises(ValueError, match="lower triangular"):
        gaussian_elbo_gradient_samples(log_joint, np.zeros(3), np.ones((3, 3)), 2)
    with pytest.raises(ValueError, match="shape"):
        gaussian_elbo_gradient_samples(log_joint, np.zeros(3), np.eye(2), 2)
    with pytest.raises(ValueError, match="step size"):
        fit_gaussian_vi_parallel(log_joint, 3, [0.1, -0.1])
    with pytest.raises(ValueError, match="estimator"):
        fit_gaussian_vi_parallel(log_joint, 3, [0.1], estimator="reinforce")
    with pytest.raises(ValueError, match="family"):
        fit_gaussian_vi_parallel(log_joint, 3, [0.1], family="lowrank")
    with pytest.raises(TypeError, match="rng"):
        importance_sampling_posterior(log_joint, np.zeros(3), cov, 10, rng=0)
    with pytest.raises(ValueError, match="cov"):
        importance_sampling_posterior(log_joint, np.zeros(3), np.eye(2), 10,
                                      rng=np.random.default_rng(0))
