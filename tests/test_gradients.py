"""Tests of elbo_lib.gradients: Monte Carlo gradient estimators (chapters 5, 6).

Statistical tests use a fixed seed and a tolerance of a few *measured* standard errors
(the standard deviation of the estimator over R repeats divided by sqrt(R)), never a
loose constant.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
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
    apply_baseline,
    check_baseline,
    gaussian_elbo_gradient_samples,
    gaussian_score_gradient_estimates,
    gaussian_target_elbo_gradient,
    gradient_snr,
    gradient_stats,
    leave_one_out_control_variate,
    measure_valued_gradient_samples,
    pathwise_gradient,
    per_sample_gradients,
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


# --------------------------------------------------------------------------------------
# the Gaussian ELBO gradient written out (chapter 5)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ["pathwise", "path-derivative"])
def test_gaussian_elbo_gradient_matches_autodiff_sample_by_sample(estimator, gaussian_target):
    m, cov, log_joint, _ = gaussian_target
    mu = m + 0.4
    low = 1.2 * np.linalg.cholesky(cov)
    got = gaussian_elbo_gradient_samples(log_joint, mu, low, 3, estimator=estimator,
                                         generator=torch.Generator().manual_seed(5))
    eps = torch.randn(3, mu.size, dtype=F64, generator=torch.Generator().manual_seed(5))
    mu_t = torch.tensor(mu, requires_grad=True)
    low_t = torch.tensor(low, requires_grad=True)
    for s in range(3):
        z = mu_t + low_t @ eps[s]
        if estimator == "pathwise":
            q = MultivariateNormal(mu_t, scale_tril=low_t)
        else:  # path derivative: log q with its parameters held fixed
            q = MultivariateNormal(mu_t.detach(), scale_tril=low_t.detach())
        g_mu, g_low = torch.autograd.grad(log_joint(z) - q.log_prob(z), (mu_t, low_t))
        assert torch.allclose(got["mu"][0, s], g_mu, atol=1e-10)
        assert torch.allclose(got["scale_tril"][0, s], torch.tril(g_low), atol=1e-10)


def test_gaussian_target_elbo_gradient_matches_autodiff_of_the_closed_form(gaussian_target):
    m, cov, _, _ = gaussian_target
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


def test_both_elbo_gradients_unbiased_and_path_derivative_exact_at_optimum(gaussian_target):
    m, cov, log_joint, _ = gaussian_target
    prec, l_star = np.linalg.inv(cov), np.linalg.cholesky(cov)
    gen = torch.Generator().manual_seed(0)
    mu, low = m + 0.5, 1.5 * l_star
    exact = gaussian_target_elbo_gradient(mu, low, m, prec)
    for est in ("pathwise", "path-derivative"):
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


@pytest.mark.parametrize("estimator", ["score", "score-cv"])
def test_score_gradient_estimates_are_the_exact_elbo_gradient_on_average(estimator,
                                                                        gaussian_target):
    """gaussian_score_gradient_estimates, in the coordinates (mu, L), averaged over 4000
    estimates of S = 16 samples, matches the exact ELBO gradient of a Gaussian target
    (gradients.gaussian_target_elbo_gradient) within 5 standard errors; dropping the
    entropy's diag(1 / L_ii) from "score-cv" moves the diagonal by 1 / L_ii (> 50 SE)."""
    m, cov, log_joint, _ = gaussian_target
    mu = np.array([0.3, -0.2, 0.5])
    low = np.array([[0.9, 0, 0], [0.3, 0.6, 0], [-0.2, 0.4, 1.1]])
    reps = 4000
    est = gaussian_score_gradient_estimates(log_joint, mu, low, 16, reps, estimator=estimator,
                                            generator=torch.Generator().manual_seed(3))
    exact = gaussian_target_elbo_gradient(mu, low, m, np.linalg.inv(cov))
    assert est["mu"].shape == (reps, 3) and est["scale_tril"].shape == (reps, 3, 3)
    for key in ("mu", "scale_tril"):
        e = est[key].numpy()
        se = e.std(0, ddof=1) / np.sqrt(reps)
        z = np.abs(e.mean(0) - exact[key])[se > 0] / se[se > 0]
        assert np.all(z < 5), (key, z.max())
    assert np.all(np.triu(est["scale_tril"].numpy(), 1) == 0)


def test_score_gradient_estimates_reject_bad_arguments(gaussian_target):
    _, _, log_joint, _ = gaussian_target
    with pytest.raises(ValueError, match="estimator must be one of"):
        gaussian_score_gradient_estimates(log_joint, np.zeros(3), np.eye(3), 8,
                                          estimator="pathwise")
    with pytest.raises(ValueError, match="num_samples must be >= 3"):
        gaussian_score_gradient_estimates(log_joint, np.zeros(3), np.eye(3), 2,
                                          estimator="score-cv")
    with pytest.raises(ValueError, match="positive diagonal"):
        gaussian_score_gradient_estimates(log_joint, np.zeros(3), -np.eye(3), 8)


@pytest.mark.parametrize("sampler, estimator", [
    (gaussian_elbo_gradient_samples, "pathwise"),
    (gaussian_elbo_gradient_samples, "path-derivative"),
    (gaussian_score_gradient_estimates, "score"),
    (gaussian_score_gradient_estimates, "score-cv"),
])
def test_gaussian_samplers_follow_the_randomness_rule(sampler, estimator, gaussian_target):
    """No generator: torch's global one (seeded, it gives the bits of a generator with the
    same seed); a generator: its own stream, the global one untouched. Rejects a sampler
    that ignores the generator or makes a private one."""
    log_joint = gaussian_target[2]

    def draw(generator):
        out = sampler(log_joint, np.zeros(3), np.eye(3), 4, 3, estimator=estimator,
                      generator=generator)
        return torch.cat([out["mu"].ravel(), out["scale_tril"].ravel()])

    torch.manual_seed(7)
    from_global, after_global = draw(None), torch.rand(4)
    torch.manual_seed(7)
    from_own, after_own = draw(torch.Generator().manual_seed(7)), torch.rand(4)
    untouched = torch.rand(4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(from_global, from_own)
    assert torch.equal(after_own, untouched) and not torch.equal(after_global, untouched)
    assert not torch.equal(from_own, draw(torch.Generator().manual_seed(8)))


def test_leave_one_out_control_variate_against_a_loop_over_samples():
    """Each sample's coefficient a = Cov(f h, h) / Var(h) from the other S - 1 samples,
    computed here with NumPy's np.cov in a loop, reproduces the vectorised kernel; with
    a coefficient from all S samples (the sample's own h included) the result differs."""
    gen = np.random.default_rng(0)
    f, h = gen.normal(size=(2, 6)), gen.normal(size=(2, 6, 3))
    got = leave_one_out_control_variate(torch.tensor(f), torch.tensor(h)).numpy()
    want, with_self = np.zeros((2, 3)), np.zeros((2, 3))
    for r in range(2):
        for s in range(6):
            others = np.delete(np.arange(6), s)
            for p in range(3):
                fh, hh = f[r, others] * h[r, others, p], h[r, others, p]
                a = np.cov(fh, hh)[0, 1] / np.var(hh, ddof=1)
                want[r, p] += (f[r, s] * h[r, s, p] - a * h[r, s, p]) / 6
                fa, ha = f[r] * h[r, :, p], h[r, :, p]
                a_all = np.cov(fa, ha)[0, 1] / np.var(ha, ddof=1)
                with_self[r, p] += (f[r, s] * h[r, s, p] - a_all * h[r, s, p]) / 6
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert np.abs(got - with_self).max() > 1e-3


def test_measure_valued_gradient_against_closed_forms():
    """f(z) = sum_i z_i^3 under N(m, diag(s^2)): grad_m E[f] = 3 (m^2 + s^2) exactly.
    The mean of 40000 coupled measure-valued terms is within 4 SE of it in every
    coordinate (a missing 1 / (s sqrt(2 pi)) is off by a factor 2.5 and 3.8 in the last
    two); for the
    sine of chapter 5 the one-sample variance matches the closed form
    2 cos^2(w m) Var[sin(w s R)] / (pi s^2) within 5%."""
    from scipy.special import dawsn

    m, s = np.array([0.5, -1.0, 2.0]), np.array([0.4, 1.0, 1.5])
    terms = measure_valued_gradient_samples(lambda z: (z**3).sum(-1), m, s, 40_000, 0)
    exact = 3 * (m**2 + s**2)
    se = terms.std(0, ddof=1) / np.sqrt(len(terms))
    assert terms.shape == (40_000, 3)
    assert np.all(np.abs(terms.mean(0) - exact) < NUM_SE * se)
    w, mu, sigma = 2.0, 0.3, 1.0
    sine = measure_valued_gradient_samples(lambda z: np.sin(w * z[:, 0]), [mu], [sigma],
                                           40_000, 1)[:, 0]
    b = w * sigma
    var_sin = np.sqrt(2) * b * dawsn(np.sqrt(2) * b) - (b * np.sqrt(np.pi / 2)
                                                        * np.exp(-b**2 / 2)) ** 2
    exact_var = 2 * np.cos(w * mu) ** 2 / (np.pi * sigma**2) * var_sin
    assert abs(sine.var(ddof=1) / exact_var - 1) < 0.05




def test_gaussian_elbo_gradient_functions_validate_inputs():
    with pytest.raises(ValueError, match="estimator"):
        gaussian_elbo_gradient_samples(sum_of_squares, np.zeros(3), np.eye(3), 2,
                                       estimator="stl")
    with pytest.raises(ValueError, match="lower triangular"):
        gaussian_elbo_gradient_samples(sum_of_squares, np.zeros(3), np.ones((3, 3)), 2)
    with pytest.raises(ValueError, match="shape"):
        gaussian_elbo_gradient_samples(sum_of_squares, np.zeros(3), np.eye(2), 2)
    with pytest.raises(ValueError, match="shapes"):
        gaussian_target_elbo_gradient(np.zeros(3), np.eye(3), np.zeros(2), np.eye(3))


# --------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------
def test_leave_one_out_baseline_subtracts_the_mean_of_the_others():
    values = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]], dtype=F64)
    expected = torch.tensor([[1 - 4.0, 2 - 3.5, 6 - 1.5], [-1.5, -1.5, 3.0]], dtype=F64)
    torch.testing.assert_close(apply_baseline(values, "leave-one-out"), expected,
                               rtol=0, atol=1e-15)
    torch.testing.assert_close(apply_baseline(values, 2.0), values - 2.0)
    assert apply_baseline(values, None) is values
    assert check_baseline(3, 2) == 3.0 and isinstance(check_baseline(3, 2), float)


@pytest.mark.parametrize("baseline, num_samples, error, match", [
    ("median", 4, ValueError, "baseline must be None"),
    ([1.0], 4, TypeError, "baseline must be None"),
    (True, 4, TypeError, "baseline must be None"),
    (float("nan"), 4, ValueError, "must be finite"),
    ("leave-one-out", 1, ValueError, "needs num_samples >= 2"),
])
def test_check_baseline_rejects(baseline, num_samples, error, match):
    with pytest.raises(error, match=match):
        check_baseline(baseline, num_samples)


# --------------------------------------------------------------------------------------
# bad input of the estimators, one case per row
# --------------------------------------------------------------------------------------
def _normal_without_independent(mu, sigma):
    return torch.distributions.Normal(mu, sigma)   # batch_shape (N, D), not (N,)


def _bernoulli(logits):
    return Independent(Bernoulli(logits=logits), 1)


BAD_ESTIMATOR_CALLS = [
    (lambda f, p: per_sample_gradients(f, diagonal_gaussian, p, 4, estimator="magic"),
     ValueError, "estimator must be one of"),
    (lambda f, p: per_sample_gradients(f, diagonal_gaussian, p, 4, estimator="pathwise",
                                       baseline=1.0),
     ValueError, "baseline applies to the score-function"),
    (lambda f, p: score_function_gradient(f, diagonal_gaussian, p, 1,
                                          baseline="leave-one-out"),
     ValueError, "leave-one-out baseline needs num_samples >= 2"),
    (lambda f, p: score_function_gradient(f, diagonal_gaussian, p, 4, baseline="median"),
     ValueError, "baseline must be None"),
    (lambda f, p: pathwise_gradient(f, diagonal_gaussian, p, 0),
     ValueError, "num_samples must be >= 1"),
    (lambda f, p: pathwise_gradient(f, diagonal_gaussian, p, 2.5),
     TypeError, "num_samples must be an integer"),
    (lambda f, p: pathwise_gradient(f, diagonal_gaussian, {}, 4),
     TypeError, "params must be a non-empty mapping"),
    (lambda f, p: pathwise_gradient(f, diagonal_gaussian,
                                    {**p, "mu": torch.tensor([np.nan] * 3)}, 4),
     ValueError, "must be finite"),
    (lambda f, p: pathwise_gradient(f, _normal_without_independent, p, 4),
     ValueError, "batch_shape"),
    (lambda f, p: pathwise_gradient(f, lambda mu, sigma: mu, p, 4),
     TypeError, "must return a torch Distribution"),
    (lambda f, p: pathwise_gradient(lambda z: z, diagonal_gaussian, p, 4),
     ValueError, "f must map samples"),
    (lambda f, p: pathwise_gradient(lambda z: z.sum(-1) * np.nan, diagonal_gaussian, p, 4),
     ValueError, "non-finite"),
    (lambda f, p: gradient_stats(f, diagonal_gaussian, p, 4, 1, estimator="score"),
     ValueError, "num_repeats must be >= 2"),
    (lambda f, p: pathwise_gradient(lambda z: z.sum(-1), _bernoulli,
                                    {"logits": torch.zeros(2)}, 2),
     ValueError, "has no rsample"),
]


@pytest.mark.parametrize("call, error, match", BAD_ESTIMATOR_CALLS)
def test_estimators_reject_bad_input(call, error, match):
    f, params = quadratic_problem()[4:]
    with pytest.raises(error, match=match):
        call(f, params)


# --------------------------------------------------------------------------------------
# gradient signal-to-noise ratio
# --------------------------------------------------------------------------------------
def test_gradient_snr_matches_its_closed_form():
    """objective = theta . mean_s z_s + phi^2 . mean_s z_s^2 with z_s ~ N(1, 1), S = 16.

    d/dtheta_j = mean_s z_s: mean 1, sd 1/4, SNR 4. d/dphi_j = 2 phi_j mean_s z_s^2 at
    phi = 1: mean 2 E z^2 = 4, sd 2 sqrt(Var z^2 / 16) with Var z^2 = 4 mu^2 + 2 = 6,
    SNR 4 / sqrt(6 / 4)."""
    seed_everything(0)
    theta = torch.zeros(3, dtype=F64, requires_grad=True)
    phi = torch.ones(2, dtype=F64, requires_grad=True)

    def objective():
        z = 1.0 + torch.randn(16, 5, dtype=F64)
        return (theta * z[:, :3].mean(0)).sum() + (phi**2 * (z[:, 3:] ** 2).mean(0)).sum()

    r = 4000
    res = gradient_snr(objective, {"theta": [theta], "phi": [phi]}, num_repeats=r)
    assert res.snr["theta"].shape == (3,) and res.snr["phi"].shape == (2,)
    assert res.num_repeats == r
    # the SNR estimate's standard error: sqrt((1 + snr^2 / 2) / R) for Gaussian gradients,
    # larger for the skewed d/dphi: allow 6 of those
    for name, exact in (("theta", 4.0), ("phi", 4 / np.sqrt(6 / 4))):
        np.testing.assert_allclose(res.snr[name], exact,
                                   atol=6 * np.sqrt((1 + exact**2 / 2) / r))
    np.testing.assert_allclose(res.mean["theta"], 1.0, atol=NUM_SE * 0.25 / np.sqrt(r))
    np.testing.assert_allclose(res.mean["phi"], 4.0,
                               atol=NUM_SE * 2 * np.sqrt(6 / 16 / r))


@pytest.mark.parametrize("args, error, match", [
    (("not callable", {"a": [torch.zeros(1)]}), TypeError, "objective must be callable"),
    ((lambda: torch.zeros(()), {}), TypeError, "non-empty mapping"),
    ((lambda: torch.zeros(()), {"a": []}), TypeError, "group 'a'"),
    ((lambda: torch.zeros(()), {"a": [torch.zeros(1)]}, 1), ValueError, "num_repeats"),
])
def test_gradient_snr_rejects_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        gradient_snr(*args)


def test_gradient_snr_names_a_non_finite_gradient():
    w = torch.ones(1, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="repeat 0 is not finite"):
        gradient_snr(lambda: (w * np.inf).sum(), {"w": [w]}, 3)


# --------------------------------------------------------------------------------------
# Contract cases (issue 16): every public name of elbo_lib.gradients has bad-input cases.
# --------------------------------------------------------------------------------------
_P = {"mu": torch.zeros(2, dtype=F64), "sigma": torch.ones(2, dtype=F64)}


def _with(**kw):
    return {**_P, **{k: torch.tensor(v, dtype=F64) for k, v in kw.items()}}


def _std_log_joint(z):
    return -0.5 * (z**2).sum(-1)


def _sum_np(z):
    return z.sum(-1)


BAD_INPUTS = {
    "check_baseline": [
        ("median", 4, ValueError, "baseline must be None"),
        ([1.0], 4, TypeError, "baseline must be None"),
        (float("nan"), 4, ValueError, "baseline must be finite"),
        ("leave-one-out", 1, ValueError, "needs num_samples >= 2"),
        ("leave-one-out", "4", TypeError, "num_samples must be an integer"),
    ],
    "apply_baseline": [
        (lambda: apply_baseline([[1.0, 2.0]], None), TypeError,
         r"values must be a torch.Tensor"),
        (lambda: apply_baseline(torch.zeros(3, dtype=F64), "leave-one-out"), ValueError,
         r"values must have shape \(R, S\)"),
        (lambda: apply_baseline(torch.zeros(2, 3, dtype=F64), "median"), ValueError,
         r"baseline must be None"),
        (lambda: apply_baseline(torch.zeros(2, 1, dtype=F64), "leave-one-out"), ValueError,
         r"leave-one-out baseline needs num_samples >= 2"),
        (lambda: apply_baseline(torch.full((2, 3), np.nan, dtype=F64), 1.0), ValueError,
         r"values must be finite"),
    ],
    "per_sample_gradients": [
        (lambda: per_sample_gradients(sum_of_squares, diagonal_gaussian, _P, 4,
                                      estimator="magic"), ValueError,
         r"estimator must be one of"),
        (lambda: per_sample_gradients(sum_of_squares, diagonal_gaussian, _with(sigma=[1, 0]),
                                      4, estimator="pathwise"), ValueError,
         r"params .*make_q.*(scale|sigma)"),
        (lambda: per_sample_gradients(sum_of_squares, diagonal_gaussian, _P, 4,
                                      estimator="score", num_repeats=0), ValueError,
         r"num_repeats must be >= 1"),
        (lambda: per_sample_gradients("f", diagonal_gaussian, _P, 4, estimator="score"),
         TypeError, r"f must be callable"),
        (lambda: per_sample_gradients(sum_of_squares, "q", _P, 4, estimator="score"),
         TypeError, r"make_q must be callable"),
    ],
    "score_function_gradient": [
        (lambda: score_function_gradient(sum_of_squares, diagonal_gaussian,
                                         _with(sigma=[1.0, -1.0]), 4), ValueError,
         r"params .*make_q.*(scale|sigma)"),
        (lambda: score_function_gradient(sum_of_squares, diagonal_gaussian,
                                         _with(sigma=[1.0, np.nan]), 4), ValueError,
         r"params\['sigma'\] must be finite"),
        (lambda: score_function_gradient(sum_of_squares, diagonal_gaussian, _P, 1,
                                         baseline="leave-one-out"), ValueError,
         r"needs num_samples >= 2"),
    ],
    "pathwise_gradient": [
        (lambda: pathwise_gradient(sum_of_squares, diagonal_gaussian, _with(sigma=[0, 1]), 4),
         ValueError, r"params .*make_q.*(scale|sigma)"),
        (lambda: pathwise_gradient(sum_of_squares, diagonal_gaussian,
                                   _with(mu=[np.nan, 0.0]), 4), ValueError,
         r"params\['mu'\] must be finite"),
        (lambda: pathwise_gradient(sum_of_squares, diagonal_gaussian,
                                   {"mu": "a", "sigma": _P["sigma"]}, 4), TypeError,
         r"params\['mu'\] must be numeric"),
        (lambda: pathwise_gradient(sum_of_squares, diagonal_gaussian, {}, 4), TypeError,
         r"params must be a non-empty mapping"),
        (lambda: pathwise_gradient(sum_of_squares, diagonal_gaussian, _P, 0), ValueError,
         r"num_samples must be >= 1"),
        (lambda: pathwise_gradient(lambda z: z.sum(-1) * np.nan, diagonal_gaussian, _P, 4),
         ValueError, r"f returned non-finite values"),
        (lambda: pathwise_gradient(lambda z: z, diagonal_gaussian, _P, 4), ValueError,
         r"f must map samples"),
    ],
    "gradient_stats": [
        (lambda: gradient_stats(sum_of_squares, diagonal_gaussian, _P, 4, 1,
                                estimator="score"), ValueError, r"num_repeats must be >= 2"),
        (lambda: gradient_stats(sum_of_squares, diagonal_gaussian, _with(sigma=[np.nan, 1]),
                                4, 10, estimator="score"), ValueError,
         r"params\['sigma'\] must be finite"),
        (lambda: gradient_stats(sum_of_squares, diagonal_gaussian, _with(sigma=[-1, 1]), 4,
                                10, estimator="pathwise"), ValueError,
         r"params .*make_q.*(scale|sigma)"),
    ],
    "gaussian_elbo_gradient_samples": [
        (lambda: gaussian_elbo_gradient_samples(_std_log_joint, np.zeros(2), np.eye(2), 2,
                                                estimator="stl"), ValueError,
         r"estimator must be one of"),
        (lambda: gaussian_elbo_gradient_samples(_std_log_joint, np.zeros(2), np.ones((2, 2)),
                                                2), ValueError,
         r"scale_tril must be lower triangular"),
        (lambda: gaussian_elbo_gradient_samples(_std_log_joint, np.zeros(2),
                                                np.diag([1.0, 0.0]), 2), ValueError,
         r"scale_tril must be lower triangular with a positive diagonal"),
        (lambda: gaussian_elbo_gradient_samples(_std_log_joint, [0.0, np.nan], np.eye(2), 2),
         ValueError, r"mu must contain only finite"),
        (lambda: gaussian_elbo_gradient_samples(_std_log_joint, np.zeros(3), np.eye(2), 2),
         ValueError, r"scale_tril must have shape \(3, 3\)"),
        (lambda: gaussian_elbo_gradient_samples("f", np.zeros(2), np.eye(2), 2), TypeError,
         r"log_joint must be callable"),
        (lambda: gaussian_elbo_gradient_samples(lambda z: z.sum(-1) * np.nan, np.zeros(2),
                                                np.eye(2), 2), ValueError,
         r"log_joint returned non-finite values"),
        (lambda: gaussian_elbo_gradient_samples(_std_log_joint, np.zeros(2), np.eye(2), 2,
                                                generator=0), TypeError,
         r"generator must be a torch.Generator or None"),
    ],
    "gaussian_score_gradient_estimates": [
        (lambda: gaussian_score_gradient_estimates(_std_log_joint, np.zeros(2), np.eye(2), 8,
                                                   estimator="pathwise"), ValueError,
         r"estimator must be one of \('score', 'score-cv'\)"),
        (lambda: gaussian_score_gradient_estimates(_std_log_joint, np.zeros(2), np.eye(2), 2,
                                                   estimator="score-cv"), ValueError,
         r"num_samples must be >= 3"),
        (lambda: gaussian_score_gradient_estimates(_std_log_joint, np.zeros(2), np.eye(2), 1),
         ValueError, r"num_samples must be >= 2"),
        (lambda: gaussian_score_gradient_estimates(_std_log_joint, np.zeros(2), -np.eye(2), 8),
         ValueError, r"scale_tril must be \(2, 2\) with a positive diagonal"),
        (lambda: gaussian_score_gradient_estimates(_std_log_joint, [0.0, np.nan], np.eye(2),
                                                   8), ValueError, r"mu must contain only finite"),
        (lambda: gaussian_score_gradient_estimates("f", np.zeros(2), np.eye(2), 8), TypeError,
         r"log_joint must be callable"),
        (lambda: gaussian_score_gradient_estimates(lambda z: z, np.zeros(2), np.eye(2), 8),
         ValueError, r"log_joint must map samples of shape \(N, 2\) to shape \(N,\)"),
        (lambda: gaussian_score_gradient_estimates(_std_log_joint, np.zeros(2), np.eye(2), 8,
                                                   num_repeats=0), ValueError,
         r"num_repeats must be >= 1"),
        (lambda: gaussian_score_gradient_estimates(_std_log_joint, np.zeros(2), np.eye(2), 8,
                                                   generator=0), TypeError,
         r"generator must be a torch.Generator or None"),
    ],
    "leave_one_out_control_variate": [
        (lambda: leave_one_out_control_variate([[1.0, 2.0, 3.0]], torch.zeros(1, 3)),
         TypeError, r"f and h must be torch.Tensors"),
        (lambda: leave_one_out_control_variate(torch.zeros(1, 3), torch.zeros(1, 4)),
         ValueError, r"f must have shape \(R, S\) and h \(R, S, ...\)"),
        (lambda: leave_one_out_control_variate(torch.zeros(3), torch.zeros(3)),
         ValueError, r"f must have shape \(R, S\)"),
        (lambda: leave_one_out_control_variate(torch.zeros(1, 2), torch.zeros(1, 2)),
         ValueError, r"the number of samples S of f must be >= 3"),
    ],
    "measure_valued_gradient_samples": [
        (lambda: measure_valued_gradient_samples("f", [0.0], [1.0], 4, 0), TypeError,
         r"f must be callable"),
        (lambda: measure_valued_gradient_samples(_sum_np, [0.0], [0.0], 4, 0), ValueError,
         r"std must be > 0"),
        (lambda: measure_valued_gradient_samples(_sum_np, [0.0], [np.nan], 4, 0), ValueError,
         r"std must contain only finite"),
        (lambda: measure_valued_gradient_samples(_sum_np, [0.0, 1.0], [1.0], 4, 0),
         ValueError, r"std must have the shape of mean"),
        (lambda: measure_valued_gradient_samples(_sum_np, [[0.0]], [1.0], 4, 0), ValueError,
         r"mean must have 1 dimension"),
        (lambda: measure_valued_gradient_samples(_sum_np, [0.0], [1.0], 0, 0), ValueError,
         r"num_samples must be >= 1"),
        (lambda: measure_valued_gradient_samples(_sum_np, [0.0], [1.0], 4, None), TypeError,
         r"rng"),
        (lambda: measure_valued_gradient_samples(lambda z: z, [0.0, 1.0], [1.0, 1.0], 4, 0),
         ValueError, r"f must return finite values of shape \(4,\)"),
        (lambda: measure_valued_gradient_samples(lambda z: z.sum(-1) * np.nan, [0.0], [1.0],
                                                 4, 0), ValueError,
         r"f must return finite values"),
    ],
    "gaussian_target_elbo_gradient": [
        (lambda: gaussian_target_elbo_gradient(np.zeros(3), np.eye(3), np.zeros(2),
                                               np.eye(3)), ValueError,
         r"mean and precision must have shapes"),
        (lambda: gaussian_target_elbo_gradient(np.zeros(2), np.eye(2), np.zeros(2),
                                               [[1.0, np.nan], [0.0, 1.0]]), ValueError,
         r"precision must contain only finite"),
        (lambda: gaussian_target_elbo_gradient(np.zeros(2), np.eye(2), np.zeros(2),
                                               [[1.0, 0.5], [0.0, 1.0]]), ValueError,
         r"precision must be symmetric"),
        (lambda: gaussian_target_elbo_gradient(np.zeros(2), np.eye(2), np.zeros(2),
                                               [[1.0, 2.0], [2.0, 1.0]]), ValueError,
         r"precision must be positive definite"),
        (lambda: gaussian_target_elbo_gradient(np.zeros(2), -np.eye(2), np.zeros(2),
                                               np.eye(2)), ValueError,
         r"scale_tril must be lower triangular with a positive diagonal"),
    ],
    "gradient_snr": [
        (lambda: gradient_snr("f", {"a": [torch.zeros(1)]}), TypeError,
         r"objective must be callable"),
        (lambda: gradient_snr(lambda: torch.zeros(()), {}), TypeError,
         r"params must be a non-empty mapping"),
        (lambda: gradient_snr(lambda: torch.zeros(()), {"a": []}), TypeError,
         r"params group 'a' must hold at least one tensor"),
        (lambda: gradient_snr(lambda: torch.zeros(()), {"a": [torch.zeros(1)]}, 1),
         ValueError, r"num_repeats must be >= 2"),
        (lambda: gradient_snr(lambda: torch.zeros(2), {"a": [torch.zeros(1)]}, 2),
         TypeError, r"objective must return a scalar tensor"),
    ],
}
# check_baseline's rows are (baseline, num_samples, error, match): make them calls
BAD_INPUTS["check_baseline"] = [
    (lambda b=b, n=n: check_baseline(b, n), e, m)
    for b, n, e, m in BAD_INPUTS["check_baseline"]]

NO_INPUTS = {
    "GradientSNR": "a result object returned by gradient_snr",
    "GradientStats": "a result object returned by gradient_stats",
}

EXTREME_INPUTS = {
    # f(z) = ||z||^2 under N(mu, diag(sigma^2)): grad_mu = 2 mu, grad_sigma = 2 sigma,
    # exactly (pathwise, per sample: 2 z and 2 z eps, mean over S -> not exact); use
    # the zero-variance case sigma -> tiny: the pathwise gradient of mu is 2 mu exactly
    "pathwise_gradient": [
        (lambda: pathwise_gradient(sum_of_squares, diagonal_gaussian,
                                   _with(mu=[1e150, -1e150], sigma=[1e-150, 1e-150]), 3),
         lambda g: np.testing.assert_allclose(g["mu"].numpy(), [2e150, -2e150],
                                              rtol=1e-12)),
    ],
    "gaussian_target_elbo_gradient": [
        (lambda: gaussian_target_elbo_gradient([1e-150], [[1e-150]], [0.0], [[1.0]]),
         lambda g: np.testing.assert_allclose(
             [g["mu"][0], g["scale_tril"][0, 0]], [-1e-150, 1e150], rtol=1e-12)),
    ],
}
