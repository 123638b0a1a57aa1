"""Tests of elbo_lib.vae and of bounds.importance_weighted_bound (chapter 6)."""

import copy
import itertools
import math
import re
import types

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from elbo_lib import seed_everything
from elbo_lib.bounds import importance_weighted_bound
from elbo_lib.gaussians import diagonal_gaussian_log_density, gaussian_kl
from elbo_lib.gradients import gradient_snr
from elbo_lib.models import ConjugateGaussianMean
from elbo_lib.vae import (
    ELBO,
    IWAE,
    VAE,
    DiagonalGaussianPosterior,
    IWAEDReG,
    Phase,
    RenyiVR,
    VAEObjective,
    VAEStep,
    WakeSleep,
    active_units,
    aggregate_posterior,
    as_tensor,
    bernoulli_log_likelihood,
    elbo_terms,
    evaluate_elbo,
    grid_log_marginal,
    importance_log_weights,
    iwae_bound,
    iwae_objective,
    kl_per_unit,
    kl_to_prior,
    latent_grid,
    refine_posterior,
    reparameterize,
    train_vae,
    train_wake_sleep,
)


@pytest.fixture(autouse=True)
def _seed():
    seed_everything(0)


@pytest.fixture
def toy_data(rng):
    """40 binary 'images' of 6 pixels with two clear prototypes."""
    proto = np.array([[0.9, 0.9, 0.9, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.9, 0.9, 0.9]])
    x = (rng.random((40, 6)) < proto[rng.integers(0, 2, 40)]).astype(np.float32)
    return as_tensor(x)


# -- the closed-form Gaussian KL --------------------------------------------------------------




# -- the reparameterised sampler ----------------------------------------------------------------


def test_reparameterize_pathwise_derivatives_are_exact():
    mean = torch.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    logvar = torch.tensor([[0.2, -0.7, 1.1]], requires_grad=True)
    z = reparameterize(mean, logvar, num_samples=7)
    assert z.shape == (7, 1, 3)
    eps = (z - mean) / torch.exp(0.5 * logvar)
    z.sum().backward()
    torch.testing.assert_close(mean.grad, torch.full_like(mean, 7.0))
    torch.testing.assert_close(logvar.grad, (0.5 * torch.exp(0.5 * logvar) * eps).sum(0).detach())


def test_reparameterized_gradient_is_unbiased():
    """d/dmu E[z^2] = 2 mu and d/dlogvar E[z^2] = sigma^2 for z ~ N(mu, sigma^2)."""
    mean = torch.tensor([0.7, -0.3], dtype=torch.float64, requires_grad=True)
    logvar = torch.tensor([-0.5, 0.4], dtype=torch.float64, requires_grad=True)
    z = reparameterize(mean, logvar, num_samples=200_000)
    (z**2).mean(0).sum().backward()
    torch.testing.assert_close(mean.grad, 2 * mean.detach(), atol=0.02, rtol=0)
    torch.testing.assert_close(logvar.grad, logvar.detach().exp(), atol=0.02, rtol=0)
    sample = reparameterize(mean.detach(), logvar.detach(), 200_000)
    torch.testing.assert_close(sample.var(0), logvar.detach().exp(), atol=0.02, rtol=0)


# -- likelihood pieces ----------------------------------------------------------------------------


def test_bernoulli_log_likelihood_matches_torch_and_is_stable(toy_data):
    logits = torch.randn(5, *toy_data.shape) * 3
    ours = bernoulli_log_likelihood(toy_data, logits)
    ref = Independent(Bernoulli(logits=logits), 1).log_prob(toy_data.expand_as(logits))
    assert ours.shape == (5, 40)
    torch.testing.assert_close(ours, ref)
    extreme = bernoulli_log_likelihood(torch.tensor([[1.0, 0.0]]), torch.tensor([[-200.0, 200.0]]))
    assert torch.isfinite(extreme).all() and extreme.item() == pytest.approx(-400.0)
    with pytest.raises(ValueError, match="logits"):
        bernoulli_log_likelihood(toy_data, torch.zeros(40, 5))




def test_elbo_terms_are_the_encoder_gaussians_kl_and_the_likelihood_at_its_sample(toy_data):
    model = VAE(6, 3, hidden=8)
    seed_everything(5)
    reconstruction, kl = elbo_terms(model, toy_data)
    q = model.encode(toy_data)
    ref = kl_divergence(Independent(Normal(q.mean, torch.exp(0.5 * q.logvar)), 1),
                        Independent(Normal(torch.zeros(3), torch.ones(3)), 1))
    torch.testing.assert_close(kl, ref)
    # the reconstruction term is log p(x | z) at z = mean + sigma * eps, the same eps
    seed_everything(5)
    z = q.mean + torch.exp(0.5 * q.logvar) * torch.randn(40, 3)
    expected = Independent(Bernoulli(logits=model.decode(z)), 1).log_prob(toy_data)
    torch.testing.assert_close(reconstruction, expected)
    (reconstruction - kl).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_default_encoder_keeps_the_books_arithmetic(toy_data):
    """The diagonal Gaussian default computes exactly as chapter 6 always did: the
    encoder's output split into mean and logvar, z = mean + exp(logvar / 2) eps,
    log q by diagonal_gaussian_log_density and the KL by gaussian_kl (bit for bit)."""
    seed_everything(7)
    model = VAE(6, 2, hidden=8)
    seed_everything(8)
    reconstruction, kl = elbo_terms(model, toy_data)
    lw = importance_log_weights(model, toy_data, 4)
    mean, logvar = model.encoder[2](model.encoder[1](model.encoder[0](toy_data))).chunk(2, -1)
    seed_everything(8)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape)
    assert torch.equal(reconstruction, bernoulli_log_likelihood(toy_data, model.decode(z)))
    assert torch.equal(kl, gaussian_kl(mean, torch.exp(logvar), 0.0, 1.0).sum(-1))
    z = reparameterize(mean, logvar, 4)
    log_w = (bernoulli_log_likelihood(toy_data, model.decode(z))
             - 0.5 * (math.log(2 * math.pi) * 2 + (z**2).sum(-1))
             - diagonal_gaussian_log_density(z, mean, logvar))
    assert torch.equal(lw, log_w)


# -- importance-weighted bound --------------------------------------------------------------------


def test_importance_weighted_bound_formula_and_stability(rng):
    lw = rng.normal(size=(50, 3)) * 3
    ref = np.log(np.mean(np.exp(lw), axis=0))
    np.testing.assert_allclose(importance_weighted_bound(lw), ref, rtol=1e-12)
    torch.testing.assert_close(importance_weighted_bound(torch.tensor(lw)), torch.tensor(ref))
    np.testing.assert_allclose(importance_weighted_bound(lw.T, dim=1), ref, rtol=1e-12)
    np.testing.assert_allclose(importance_weighted_bound(lw[:1]), lw[0])      # k = 1
    shifted = importance_weighted_bound(lw - 2000.0)                           # no underflow
    np.testing.assert_allclose(shifted, ref - 2000.0, rtol=1e-12)
    with_zero = np.array([[-np.inf, -np.inf], [0.0, -np.inf]])
    out = importance_weighted_bound(with_zero)
    assert out[0] == pytest.approx(-np.log(2)) and out[1] == -np.inf
    assert importance_weighted_bound(torch.tensor(with_zero))[1] == -torch.inf


@pytest.mark.parametrize("bad, error, message", [
    (np.array([0.0, np.nan]), ValueError, "NaN"),
    (torch.tensor([0.0, float("inf")]), ValueError, r"\+inf"),
    (np.zeros((0, 3)), ValueError, "k = 0"),
    ("abc", TypeError, "numeric"),
])
def test_importance_weighted_bound_rejects_bad_weights(bad, error, message):
    with pytest.raises(error, match=message):
        importance_weighted_bound(bad)


def test_importance_weighted_bound_rejects_bad_dim():
    with pytest.raises(ValueError, match="out of range"):
        importance_weighted_bound(np.zeros((3, 2)), dim=2)
    with pytest.raises(TypeError, match="dim"):
        importance_weighted_bound(np.zeros(3), dim=0.0)


def test_iwae_is_non_decreasing_in_k_and_below_the_evidence(rng):
    """Conjugate Gaussian model: E[IWAE_k] rises with k, stays below log p(x), IWAE_1 = ELBO."""
    model = ConjugateGaussianMean(rng.normal(1.0, 1.0, size=5), 1.0, 0.0, 2.0)
    q_mean, q_var = model.posterior_mean - 0.6, 3.0 * model.posterior_var
    q = Normal(torch.tensor(q_mean, dtype=torch.float64),
               torch.tensor(q_var, dtype=torch.float64).sqrt())
    log_evidence, replicates = model.log_evidence(), 4000
    means, ses = [], []
    for k in (1, 4, 16, 64):
        z = q.sample((k, replicates))
        bound = importance_weighted_bound(model.log_joint(z) - q.log_prob(z), dim=0)
        means.append(bound.mean().item())
        ses.append(bound.std().item() / math.sqrt(replicates))
    assert means[0] == pytest.approx(model.elbo(q_mean, q_var), abs=4 * ses[0])
    assert all(b - a > 0 for a, b in zip(means, means[1:], strict=False))
    assert all(m < log_evidence + 3 * s for m, s in zip(means, ses, strict=True))
    assert log_evidence - means[0] > 10 * (log_evidence - means[-1])        # the gap closes


def test_iwae_is_exact_when_q_is_the_posterior(rng):
    model = ConjugateGaussianMean(rng.normal(size=4), 0.5, 0.0, 1.0)
    z = model.posterior().sample((10, 3))
    bound = importance_weighted_bound(model.log_joint(z) - model.posterior().log_prob(z))
    torch.testing.assert_close(bound, torch.full((3,), model.log_evidence(), dtype=torch.float64))


def test_vae_iwae_bounds_increase_and_meet_the_quadrature(toy_data):
    model = VAE(6, 2, hidden=8)
    exact = grid_log_marginal(model, toy_data, num_points=151)
    bounds = [iwae_bound(model, toy_data, k)[0].mean().item() for k in (1, 10, 100, 2000)]
    assert all(b - a > -0.01 for a, b in zip(bounds, bounds[1:], strict=False))
    assert bounds[-1] == pytest.approx(exact.mean().item(), abs=0.02)
    assert bounds[0] < exact.mean().item()
    iw, elbo = iwae_bound(model, toy_data, 50, max_batch=100)                # chunked path
    assert iw.shape == elbo.shape == (40,) and (iw >= elbo).all()  # Jensen, per sample set


def test_grid_quadrature_is_exact_when_the_decoder_ignores_z(toy_data):
    model = VAE(6, 2, hidden=4)
    with torch.no_grad():
        model.decoder[0].weight.zero_()       # p(x | z) no longer depends on z
    logits = model.decode(torch.zeros(1, 2))[0]
    exact = bernoulli_log_likelihood(toy_data, logits.expand_as(toy_data)).double()
    torch.testing.assert_close(grid_log_marginal(model, toy_data), exact, atol=1e-4, rtol=0)


def test_evaluations_build_no_graph_and_the_quadrature_gradient_does(toy_data):
    """The evaluations return plain tensors (no autograd graph kept alive over a 40 401
    point grid); the quadrature gradient, which shares their grid, still differentiates."""
    from elbo_lib.vae import decoder_gradient_by_quadrature
    model = VAE(6, 2, hidden=4)
    assert not grid_log_marginal(model, toy_data, num_points=21).requires_grad
    assert not any(t.requires_grad for t in iwae_bound(model, toy_data, 3))
    grad = decoder_gradient_by_quadrature(model, toy_data, num_points=21)
    assert grad.shape == (sum(p.numel() for p in model.decoder.parameters()),)
    assert np.abs(grad).max() > 0


def test_importance_log_weights_with_an_explicit_proposal(toy_data):
    model = VAE(6, 2, hidden=8)
    lw = importance_log_weights(model, toy_data, 3, torch.zeros(40, 2), torch.zeros(40, 2))
    assert lw.shape == (3, 40)
    with pytest.raises(ValueError, match="both"):
        importance_log_weights(model, toy_data, 3, mean=torch.zeros(40, 2))
    with pytest.raises(ValueError, match="shape"):
        importance_log_weights(model, toy_data, 3, torch.zeros(4, 2), torch.zeros(4, 2))



def test_evaluations_decode_by_the_sigmoid_form_of_tanh(toy_data):
    """Without gradients the evaluations use tanh(a) = 2 sigmoid(2a) - 1 folded into the
    decoder's weights (elbo_lib.vae.elbo._log_likelihood): the plain log-likelihood to
    round-off, for every shape of z the evaluations pass (one point, a batch, k samples
    of a batch, blocks of several samples); with gradients on, the plain form itself."""
    from elbo_lib.vae import elbo as vae_module
    from elbo_lib.vae import elbo_per_point
    model = VAE(6, 3, hidden=16)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)     # saturated units: the folded bias b2 - W2 1 does real work
    for shape in [(3,), (40, 3), (7, 40, 3), (300, 40, 3)]:
        z = 2 * torch.randn(shape)
        x = toy_data[0] if len(shape) == 1 else toy_data
        with torch.no_grad():
            fast = vae_module._log_likelihood(model, x, z)
            plain = bernoulli_log_likelihood(x, model.decode(z))
        assert fast.shape == plain.shape == shape[:-1]
        assert torch.allclose(fast, plain, rtol=1e-5, atol=1e-4)
    z = torch.randn(5, 40, 3)
    exact = vae_module._log_likelihood(model, toy_data, z)
    assert exact.requires_grad
    assert torch.equal(exact, bernoulli_log_likelihood(toy_data, model.decode(z)))
    # the kernel does not check: the public functions check their inputs and results
    with pytest.raises(ValueError, match="ELBO is not finite"):
        elbo_per_point(_nan_decoder(model), toy_data)


# -- amortisation gap, training, collapse ---------------------------------------------------------


def test_refine_posterior_improves_the_elbo_and_leaves_the_decoder_alone(toy_data):
    model = VAE(6, 2, hidden=8)
    before = [p.detach().clone() for p in model.parameters()]
    mean, logvar, trace = refine_posterior(model, toy_data, num_steps=150, lr=0.05)
    assert mean.shape == logvar.shape == (40, 2) and trace.shape == (150,)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.requires_grad for p in model.parameters())
    encoder_elbo = iwae_bound(model, toy_data, 2000)[1].mean()
    refined_elbo = iwae_bound(model, toy_data, 2000, mean, logvar)[1].mean()
    assert refined_elbo > encoder_elbo + 0.05
    assert refined_elbo < grid_log_marginal(model, toy_data).mean() + 0.01


def test_train_vae_raises_the_elbo_and_is_deterministic(toy_data):
    def run():
        seed_everything(3)
        model = VAE(6, 2, hidden=16)
        return train_vae(model, toy_data, toy_data, num_epochs=30, batch_size=10, lr=0.01)

    first, second = run(), run()
    assert first.as_arrays()["val_elbo"].tolist() == second.as_arrays()["val_elbo"].tolist()
    curves = first.as_arrays()
    assert len(curves["train_elbo"]) == 30 and first.seconds > 0
    assert curves["val_elbo"][-5:].mean() > curves["val_elbo"][:3].mean() + 0.5
    np.testing.assert_allclose(curves["train_elbo"],
                               curves["train_reconstruction"] - curves["train_kl"], rtol=1e-5)


def test_large_beta_collapses_the_posterior(toy_data):
    model = VAE(6, 3, hidden=16)
    train_vae(model, toy_data, toy_data, num_epochs=60, batch_size=10, lr=0.01,
              objective=ELBO(beta=20.0))
    count, variances = active_units(model, toy_data)
    assert count == 0 and variances.shape == (3,)
    assert evaluate_elbo(model, toy_data)["kl"] < 0.05


def test_wake_sleep_trains(toy_data):
    model = VAE(6, 2, hidden=16)
    history = train_wake_sleep(model, toy_data, toy_data, num_epochs=30, batch_size=10, lr=0.01)
    curves = history.as_arrays()
    assert np.all(np.isfinite(curves["val_elbo"]))
    assert curves["val_elbo"][-5:].mean() > curves["val_elbo"][:3].mean() + 0.5


def test_active_units_counts_varying_means(toy_data):
    model = VAE(6, 2, hidden=8)
    with torch.no_grad():
        model.encoder[2].weight[0].zero_()    # the mean of unit 0 no longer depends on x
        model.encoder[2].weight[1].mul_(50)   # unit 1 varies a lot
    count, variances = active_units(model, toy_data)
    assert count == 1 and variances[0] == 0.0 and variances[1] > 0.01
    with pytest.raises(ValueError, match="at least 2"):
        active_units(model, toy_data[:1])


def test_latent_grid_layout():
    grid = latent_grid(5)
    assert grid.shape == (25, 2)
    low, high = Normal(0.0, 1.0).icdf(torch.tensor([0.05, 0.95]))
    torch.testing.assert_close(grid[0], torch.stack([low, high]))     # top-left
    torch.testing.assert_close(grid[-1], torch.stack([high, low]))    # bottom-right
    torch.testing.assert_close(grid[:5, 1], torch.full((5,), high.item()))
    with pytest.raises(ValueError, match="low"):
        latent_grid(5, low=0.9, high=0.1)


# -- bad input ---------------------------------------------------------------------------


BAD_VAE_CALLS = [
    (lambda m, x: VAE(0, 2), ValueError, "num_pixels"),
    (lambda m, x: VAE(6, 2.5), TypeError, "latent_dim"),
    (lambda m, x: m.encode(torch.zeros(3, 5)), ValueError, "6 pixels"),
    (lambda m, x: m.encode(np.zeros((3, 6))), TypeError, "torch.Tensor"),
    (lambda m, x: m.decode(torch.zeros(4, 2)), ValueError, r"shape \(\.\.\., 3\)"),
    (lambda m, x: grid_log_marginal(m, x), ValueError, "2-D latent"),
    (lambda m, x: iwae_bound(m, x, 0), ValueError, "k must be"),
    (lambda m, x: evaluate_elbo("model", x), TypeError, "VAE"),
    (lambda m, x: train_vae(m, x, x, 1, objective=ELBO(beta=0.0)), ValueError, "beta"),
    (lambda m, x: train_wake_sleep(m, x, x, 1, lr=-1.0), ValueError, "lr"),
    (lambda m, x: train_vae(m, x, x, 1, objective="iwae"), TypeError, "VAEObjective"),
    (lambda m, x: ELBO(free_bits=-1.0), ValueError, "free_bits"),
    (lambda m, x: ELBO(warmup_epochs=-1), ValueError, "warmup_epochs"),
    (lambda m, x: as_tensor(np.array([[0.5, 2.0]])), ValueError, r"\[0, 1\]"),
    (lambda m, x: as_tensor(np.zeros(4)), ValueError, "shape"),
    (lambda m, x: reparameterize(torch.zeros(2), torch.zeros(3)), ValueError, "same shape"),
    (lambda m, x: reparameterize([0.0], torch.zeros(1)), TypeError, "tensors"),
    (lambda m, x: reparameterize(torch.zeros(2), torch.zeros(2), num_samples=0),
     ValueError, "num_samples"),
    (lambda m, x: importance_log_weights(m, x, 3, mean=torch.zeros(40, 3)), ValueError,
     "both"),
    (lambda m, x: kl_to_prior(DiagonalGaussianPosterior(torch.zeros(2), torch.zeros(3))),
     ValueError, "same shape"),
]


@pytest.mark.parametrize("call, error, match", BAD_VAE_CALLS)
def test_bad_input_errors(call, error, match, toy_data):
    model = VAE(6, 3, hidden=4)
    with pytest.raises(error, match=match):
        call(model, toy_data)


# -- chapter 6, second half: IWAE training, warm-up, free bits, SNR, aggregate posterior ---------


def test_elbo_per_point_matches_log_weight_elbo(toy_data):
    from elbo_lib.vae import elbo_per_point

    model = VAE(6, 2, hidden=8)
    closed = elbo_per_point(model, toy_data, num_samples=2000)
    _, from_weights = iwae_bound(model, toy_data, 4000)
    assert closed.shape == (40,)
    diff = closed - from_weights
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(40) + 1e-3


def test_train_vae_on_iwae_warmup_free_bits(toy_data):
    for objective in (IWAE(5), ELBO(beta=2.0, warmup_epochs=3), ELBO(free_bits=0.3)):
        model = VAE(6, 2, hidden=8)
        h = train_vae(model, toy_data, toy_data, 15, batch_size=10, lr=0.01,
                      objective=objective)
        assert len(h.val_elbo) == 15 and h.val_elbo[-1] > h.val_elbo[0]
    # free bits far above what collapse would leave: every unit's KL rises to the floor
    model = VAE(6, 3, hidden=8)
    train_vae(model, toy_data, toy_data, 200, batch_size=40, lr=0.02,
              objective=ELBO(beta=8.0, free_bits=0.4))
    np.testing.assert_allclose(kl_per_unit(model, toy_data), 0.4, atol=0.08)


def test_kl_per_unit_sums_to_the_rate(toy_data):
    model = VAE(6, 3, hidden=8)
    _, kl = elbo_terms(model, toy_data)
    np.testing.assert_allclose(kl_per_unit(model, toy_data).sum(), kl.mean().item(),
                               rtol=1e-5)


def test_iwae_decoder_gradient_approaches_the_quadrature_gradient(toy_data):
    from elbo_lib.vae import decoder_gradient_by_quadrature

    model = VAE(6, 2, hidden=8)
    exact = decoder_gradient_by_quadrature(model, toy_data, num_points=101)
    n_dec = sum(p.numel() for p in model.decoder.parameters())
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    assert exact.shape == (n_dec,)
    errors = []
    for k in (1, 100):
        s = gradient_snr(lambda k=k: iwae_objective(model, toy_data, k).mean(),
                         {"encoder": model.encoder.parameters(),
                          "decoder": model.decoder.parameters()}, num_repeats=30)
        assert s.snr["encoder"].shape == (n_enc,) and s.snr["decoder"].shape == (n_dec,)
        assert np.all(s.snr["encoder"] >= 0)
        errors.append(np.linalg.norm(s.mean["decoder"] - exact) / np.linalg.norm(exact))
    assert errors[1] < errors[0] and errors[1] < 0.05
    with pytest.raises(ValueError, match="2-D"):
        decoder_gradient_by_quadrature(VAE(6, 3, 8), toy_data)


def test_aggregate_posterior_decomposition(toy_data):
    model = VAE(6, 2, hidden=8)
    agg = aggregate_posterior(model, toy_data, limit=8.0, num_points=201)
    assert agg.log_density.shape == (201, 201)
    h = agg.axis[1] - agg.axis[0]
    assert np.exp(agg.log_density).sum() * h * h == pytest.approx(1.0, abs=1e-3)
    assert agg.mutual_information + agg.kl_to_prior == pytest.approx(agg.mean_rate, abs=1e-4)
    assert 0 <= agg.mutual_information <= math.log(len(toy_data)) + 1e-6
    # the grid's log q(z) against the mixture of the encoder's Gaussians evaluated
    # directly at every grid point (torch's Normal), also with blocks of a few rows:
    # a transposed grid, a wrong axis' variance or a block offset is off by far more
    with torch.no_grad():
        q = model.encode(toy_data)
        comps = torch.distributions.Normal(q.mean.double(), (0.5 * q.logvar.double()).exp())
        axis = torch.as_tensor(agg.axis)
        z = torch.cartesian_prod(axis, axis)[:, None, :]                   # (G, 1, 2)
        direct = (torch.logsumexp(comps.log_prob(z).sum(-1), dim=1)
                  - math.log(len(toy_data))).reshape(201, 201).numpy()
    assert np.abs(direct - direct.T).max() > 0.1      # asymmetric: a transpose shows
    for max_batch in (2**12, 3 * 201 + 7):
        got = aggregate_posterior(model, toy_data, limit=8.0, num_points=201,
                                  max_batch=max_batch).log_density
        np.testing.assert_allclose(got, direct, rtol=1e-12, atol=1e-10)
    # one image repeated: the aggregate posterior is q(z | x) itself, no information
    same = aggregate_posterior(model, toy_data[:1].expand(5, 6).contiguous(), limit=8.0)
    assert abs(same.mutual_information) < 1e-6
    assert same.kl_to_prior == pytest.approx(same.mean_rate, abs=1e-4)


def test_fit_encoder_keeps_the_decoder_and_inference_gaps(toy_data):
    from elbo_lib.vae import fit_encoder, inference_gaps

    model = VAE(6, 2, hidden=8)
    before = [p.clone() for p in model.decoder.parameters()]
    new, h = fit_encoder(model, toy_data, toy_data, 20, hidden=16)
    assert new.encoder[0].out_features == 16 and new.hidden == 16
    for p, q in zip(before, new.decoder.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert h.val_elbo[-1] > h.val_elbo[0]
    log_px = grid_log_marginal(new, toy_data)
    gaps = inference_gaps(new, toy_data, log_px, num_steps=50, k=500)
    assert gaps["amortisation"] > 0 and gaps["approximation"] > -0.02
    assert gaps["elbo_refined"].shape == (40,) and len(gaps["trace"]) == 50
    with pytest.raises(ValueError, match="log_px"):
        inference_gaps(new, toy_data, log_px[:3])


def test_fano_error_bound():
    from elbo_lib.vae import fano_error_bound

    assert fano_error_bound(0.0, 10) == pytest.approx(0.0, abs=1e-12)
    assert fano_error_bound(math.log(10), 10) == pytest.approx(0.9)
    p = fano_error_bound(0.5, 10)
    h = -p * math.log(p) - (1 - p) * math.log(1 - p) + p * math.log(9)
    assert h == pytest.approx(0.5, abs=1e-9)
    with pytest.raises(ValueError, match="exceed"):
        fano_error_bound(3.0, 10)
    with pytest.raises(ValueError, match="conditional_entropy"):
        fano_error_bound(-0.1, 10)


# -- pluggable encoder families (issue 15): the same train_vae, other q's -----------------


class FullCovarianceEncoder(torch.nn.Module):
    """x -> MultivariateNormal(mean(x), scale_tril=L(x)): a non-diagonal Gaussian q.

    Written only from torch (no elbo_lib): its KL to the prior is torch's registered
    MultivariateNormal closed form."""

    def __init__(self, num_pixels: int, latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.rows, self.cols = torch.tril_indices(latent_dim, latent_dim)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(num_pixels, hidden), torch.nn.Tanh(),
            torch.nn.Linear(hidden, latent_dim + len(self.rows)))

    def forward(self, x):
        out = self.net(x)
        d = self.latent_dim
        low = torch.zeros(*x.shape[:-1], d, d)
        low[..., self.rows, self.cols] = out[..., d:]
        diag = torch.nn.functional.softplus(torch.diagonal(low, dim1=-2, dim2=-1)) + 1e-3
        low = torch.tril(low, -1) + torch.diag_embed(diag)
        return torch.distributions.MultivariateNormal(out[..., :d], scale_tril=low)


class AffineFlowEncoder(torch.nn.Module):
    """A trivial flow on the default Gaussian: z0 ~ the GaussianEncoder's q, then
    z1 = shift + exp(log_scale) z0 and z = A z1 with A unit lower triangular (a shear
    that correlates the units). A TransformedDistribution with cached transforms:
    torch has no closed-form KL for it and no mean."""

    def __init__(self, num_pixels: int, latent_dim: int, hidden: int) -> None:
        super().__init__()
        from elbo_lib.vae import GaussianEncoder

        self.base = GaussianEncoder(num_pixels, latent_dim, hidden)
        self.shift = torch.nn.Parameter(torch.zeros(latent_dim))
        self.log_scale = torch.nn.Parameter(torch.zeros(latent_dim))
        self.mix = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        base = self.base(x)
        d = self.shift.shape[0]
        shear = torch.eye(d) + torch.diag_embed(self.mix.expand(d - 1), offset=-1)
        layers = [torch.distributions.AffineTransform(self.shift, self.log_scale.exp(),
                                                      event_dim=1, cache_size=1),
                  _LinearTransform(shear)]
        return torch.distributions.TransformedDistribution(base, layers)


class _LinearTransform(torch.distributions.Transform):
    """z -> z @ A^T with a unit-lower-triangular A (log-determinant 0)."""

    domain = torch.distributions.constraints.real_vector
    codomain = torch.distributions.constraints.real_vector
    bijective = True

    def __init__(self, matrix):
        super().__init__(cache_size=1)
        self.matrix = matrix

    def _call(self, z):
        return z @ self.matrix.T

    def _inverse(self, y):
        return torch.linalg.solve_triangular(self.matrix, y.unsqueeze(-1),
                                             upper=False).squeeze(-1)

    def log_abs_det_jacobian(self, z, y):
        return torch.zeros(z.shape[:-1])


ENCODER_FAMILIES = {"full covariance": FullCovarianceEncoder, "affine flow": AffineFlowEncoder}


@pytest.fixture(scope="module")
def trained_families():
    """Each family trained by the unchanged train_vae on the same 2-prototype data."""
    gen = np.random.default_rng(12345)
    proto = np.array([[0.9, 0.9, 0.9, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.9, 0.9, 0.9]])
    x = as_tensor((gen.random((40, 6)) < proto[gen.integers(0, 2, 40)]).astype(np.float32))
    out = {}
    for name, encoder in ENCODER_FAMILIES.items():
        seed_everything(11)
        model = VAE(6, 2, hidden=16, encoder=encoder(6, 2, 16))
        history = train_vae(model, x, x, num_epochs=40, batch_size=10, lr=0.01)
        out[name] = (model, history, x)
    return out


@pytest.mark.parametrize("family", ENCODER_FAMILIES)
def test_train_vae_with_a_non_diagonal_encoder_respects_the_exact_evidence(
        family, trained_families):
    """Trained through the unchanged train_vae, a non-diagonal encoder family gives an
    ELBO below log p(x) (2-D quadrature, an independent answer) and IWAE_k estimates
    that rise to it, which holds only if log q(z | x) is the true density of q's samples
    (a flow without its log-determinant, or a wrong Cholesky factor, breaks it)."""
    model, history, x = trained_families[family]
    curves = history.as_arrays()
    assert np.all(np.isfinite(curves["val_elbo"]))
    assert curves["val_elbo"][-5:].mean() > curves["val_elbo"][:3].mean() + 0.5
    log_px = grid_log_marginal(model, x).float()
    seed_everything(12)
    iwae_1000, elbo = iwae_bound(model, x, 1000)
    iwae_5 = iwae_bound(model, x, 5)[0]
    # ELBO estimated from 1000 weights per point: its Monte Carlo sd per point is below
    # 0.02 here; the bound holds for every point and on average
    assert bool((elbo <= log_px + 0.05).all()) and elbo.mean() < log_px.mean()
    assert elbo.mean() < iwae_5.mean() < iwae_1000.mean() + 1e-3
    assert abs(float((log_px - iwae_1000).mean())) < 0.01


def test_full_covariance_encoder_uses_the_closed_form_kl(trained_families):
    model, _, x = trained_families["full covariance"]
    with torch.no_grad():
        q = model.encode(x)
        kl = kl_to_prior(q).double().numpy()
        mean, cov = q.mean.double().numpy(), q.covariance_matrix.double().numpy()
    # KL(N(m, S) || N(0, I)) = (tr S + m^T m - d - log det S) / 2, in NumPy
    exact = 0.5 * (np.trace(cov, axis1=1, axis2=2) + (mean**2).sum(1) - 2
                   - np.linalg.slogdet(cov)[1])
    np.testing.assert_allclose(kl, exact, rtol=1e-4, atol=1e-5)
    assert not np.allclose(cov[:, 0, 1], 0.0, atol=1e-3)   # q really is non-diagonal
    # the Monte Carlo fallback estimates the same number
    with torch.no_grad():
        z = q.rsample((4000,))
        terms = (q.log_prob(z) - Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
                 .log_prob(z)).double().numpy()
    se = terms.std(0) / np.sqrt(4000)
    assert np.all(np.abs(terms.mean(0) - exact) < 4 * se + 1e-4)
    count, variances = active_units(model, x)           # a MultivariateNormal has a mean
    assert variances.shape == (2,) and count == int((variances > 0.01).sum())


def test_flow_encoder_kl_is_monte_carlo_and_variants_train(trained_families):
    model, _, x = trained_families["affine flow"]
    q = model.encode(x)
    with pytest.raises(ValueError, match="no closed-form KL"):
        kl_to_prior(q)
    seed_everything(3)
    z = q.rsample((3,))
    kl = kl_to_prior(q, z)
    expected = (q.log_prob(z) + 0.5 * (2 * math.log(2 * math.pi) + (z**2).sum(-1))).mean(0)
    torch.testing.assert_close(kl, expected)
    h = train_vae(model, x, x, 3, batch_size=10, lr=0.01, objective=IWAE(5))
    assert np.all(np.isfinite(h.val_elbo))
    h = train_wake_sleep(model, x, x, 2, batch_size=10, lr=0.01)
    assert np.all(np.isfinite(h.val_elbo))


@pytest.mark.parametrize("call, match", [
    (lambda m, x: kl_per_unit(m, x), "kl_per_unit needs the diagonal Gaussian"),
    (lambda m, x: aggregate_posterior(m, x, num_points=11),
     "aggregate_posterior needs the diagonal Gaussian"),
    (lambda m, x: refine_posterior(m, x, 2), "refine_posterior needs the diagonal"),
    (lambda m, x: train_vae(m, x, x, 1, objective=ELBO(free_bits=0.1)),
     "ELBO with free_bits needs the diagonal Gaussian"),
    (lambda m, x: active_units(m, x), "active_units needs an encoder family whose q"),
    (lambda m, x: IWAEDReG(3).loss(m, x), "IWAEDReG needs the diagonal Gaussian"),
])
def test_gaussian_only_functions_name_what_they_need(call, match, trained_families):
    model, _, x = trained_families["affine flow"]
    with pytest.raises(TypeError, match=match):
        call(model, x)


class _NotADistribution(torch.nn.Module):
    def forward(self, x):
        return x[:, :2]


class _WrongShape(torch.nn.Module):
    def forward(self, x):
        return Independent(Normal(torch.zeros(len(x), 3), torch.ones(len(x), 3)), 1)


@pytest.mark.parametrize("encoder, error, match", [
    (_NotADistribution(), TypeError, "must return a torch.distributions.Distribution"),
    (_WrongShape(), ValueError, r"event_shape \(2,\)"),
])
def test_encode_checks_the_encoders_distribution(encoder, error, match, toy_data):
    model = VAE(6, 2, hidden=4, encoder=encoder)
    with pytest.raises(error, match=match):
        model.encode(toy_data)


def test_vae_rejects_an_encoder_that_is_not_a_module():
    with pytest.raises(TypeError, match="encoder must be a torch.nn.Module"):
        VAE(6, 2, encoder=lambda x: x)


def test_diagonal_gaussian_posterior_is_the_torch_normal(toy_data):
    mean, logvar = torch.randn(4, 3), torch.randn(4, 3)
    q = DiagonalGaussianPosterior(mean, logvar)
    ref = Independent(Normal(mean, torch.exp(0.5 * logvar)), 1)
    z = q.rsample((5,))
    assert z.shape == (5, 4, 3) and q.batch_shape == (4,) and q.event_shape == (3,)
    torch.testing.assert_close(q.log_prob(z), ref.log_prob(z))
    torch.testing.assert_close(kl_to_prior(q), kl_divergence(
        ref, Independent(Normal(torch.zeros(3), torch.ones(3)), 1)))
    with pytest.raises(ValueError, match="latent axis"):
        DiagonalGaussianPosterior(torch.tensor(0.0), torch.tensor(0.0))


@pytest.mark.parametrize("train", [
    lambda m, x: train_vae(m, x, x, 2, batch_size=10, lr=1e30),
    lambda m, x: train_vae(m, x, x, 2, batch_size=10, lr=1e30, objective=IWAE(3)),
    lambda m, x: train_wake_sleep(m, x, x, 2, batch_size=10, lr=1e30),
])
def test_training_stops_at_the_first_non_finite_loss(train, toy_data):
    model = VAE(6, 2, hidden=4)
    with torch.no_grad():
        model.decoder[2].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"stopped at epoch 1 of 2, step 1: .*(finite|NaN)"):
        train(model, toy_data)


# --------------------------------------------------------------------------------------
# Contract cases (issue 16): every public name of elbo_lib.vae has bad-input cases.
# --------------------------------------------------------------------------------------
from elbo_lib.vae import (  # noqa: E402
    GaussianEncoder,
    TrainingHistory,
    decoder_gradient_by_quadrature,
    elbo_per_point,
    fano_error_bound,
    fit_encoder,
    inference_gaps,
)

_X = torch.tensor((np.random.default_rng(0).random((8, 6)) < 0.5).astype(np.float32))


def _model(latent_dim: int = 2) -> VAE:
    torch.manual_seed(0)
    return VAE(6, latent_dim, hidden=4)


def _with(value, row: int = 0, col: int = 0, x=_X):
    """``x`` with one entry replaced (NaN, a grey level, a 2, ...)."""
    x = x.clone()
    x[row, col] = value
    return x


_NAN_X, _TWO_X, _GREY_X = _with(float("nan")), _with(2.0), _with(0.5)
_TERMS = {"elbo": -1.0, "reconstruction": -0.5, "kl": 0.5}


def _nan_decoder(model: VAE) -> VAE:
    """A model whose decoder outputs NaN: the loss is not finite at the first step."""
    with torch.no_grad():
        model.decoder[2].bias.fill_(float("nan"))
    return model


def _flow_model() -> VAE:
    """A VAE whose q is not the diagonal Gaussian (a planar flow)."""
    from elbo_lib.vae import PlanarFlowEncoder

    torch.manual_seed(0)
    return VAE(6, 2, hidden=4, encoder=PlanarFlowEncoder(6, 2, 1, hidden=4))


def _stack():
    """An object with the attributes of the stack train_replicates passes (one run)."""
    return types.SimpleNamespace(encode=None, decode=None, kl_units=None, noise=None,
                                 latent_dim=2, dtype=torch.float32, objectives=[ELBO()])


class _Custom(VAEObjective):
    """An objective defined outside elbo_lib with a one-model loss only."""

    def _loss(self, model, x, phase, step, steps_per_epoch):
        reconstruction, kl = elbo_terms(model, x)
        return VAEStep(-(reconstruction - kl).mean(), reconstruction, kl)


def _q(mean=None, logvar=None):
    return DiagonalGaussianPosterior(torch.zeros(3, 2) if mean is None else mean,
                                     torch.zeros(3, 2) if logvar is None else logvar)


BAD_INPUTS = {
    "VAE": [
        (lambda: VAE(0, 2), ValueError, r"num_pixels must be >= 1"),
        (lambda: VAE(6, 2.5), TypeError, r"latent_dim must be an integer"),
        (lambda: VAE(6, 2, hidden=0), ValueError, r"hidden must be >= 1"),
        (lambda: VAE(6, 2, encoder=lambda x: x), TypeError, r"encoder must be a torch.nn"),
    ],
    "VAE.encode": [
        (lambda: _model().encode(torch.zeros(3, 5)), ValueError,
         r"x must have 6 pixels in its last axis, got shape \(3, 5\)"),
        (lambda: _model().encode(np.zeros((3, 6))), TypeError, r"x must be a torch.Tensor"),
        (lambda: _model().encode(_NAN_X), ValueError, r"x must contain only finite"),
        (lambda: _model().encode(torch.zeros(0, 6)), ValueError,
         r"x must hold at least one data point"),
    ],
    "VAE.decode": [
        (lambda: _model().decode(torch.zeros(4, 3)), ValueError,
         r"z must be a tensor of shape \(\.\.\., 2\)"),
        (lambda: _model().decode(torch.tensor([[0.0, float("nan")]])), ValueError,
         r"z must contain only finite"),
        (lambda: _model().decode([[0.0, 0.0]]), ValueError, r"z must be a tensor"),
    ],
    "VAE.forward": [
        (lambda: _model()(_NAN_X), ValueError, r"x must contain only finite"),
        (lambda: _model()(torch.zeros(3, 7)), ValueError, r"x must have 6 pixels"),
    ],
    "DiagonalGaussianPosterior": [
        (lambda: DiagonalGaussianPosterior(torch.zeros(2), torch.zeros(3)), ValueError,
         r"mean and logvar must have the same shape"),
        (lambda: DiagonalGaussianPosterior([0.0], torch.zeros(1)), TypeError,
         r"mean and logvar must be tensors"),
        (lambda: DiagonalGaussianPosterior(torch.tensor(0.0), torch.tensor(0.0)), ValueError,
         r"mean and logvar must have a latent axis"),
        (lambda: DiagonalGaussianPosterior(torch.tensor([float("nan")]), torch.zeros(1)),
         ValueError, r"mean must contain only finite"),
        (lambda: DiagonalGaussianPosterior(torch.zeros(1), torch.tensor([float("inf")])),
         ValueError, r"logvar must contain only finite"),
    ],
    "DiagonalGaussianPosterior.rsample": [
        (lambda: _q().rsample((-1,)), ValueError, r"sample_shape must hold sizes >= 0"),
        (lambda: _q().rsample("a"), TypeError, r"sample_shape must be"),
    ],
    "DiagonalGaussianPosterior.sample": [
        (lambda: _q().sample((2.5,)), TypeError, r"sample_shape must be"),
    ],
    "DiagonalGaussianPosterior.log_prob": [
        (lambda: _q().log_prob(torch.zeros(3, 3)), ValueError,
         r"value must have shape \(\.\.\., 2\)"),
        (lambda: _q().log_prob(torch.tensor([[float("nan"), 0.0]])), ValueError,
         r"value must contain only finite"),
        (lambda: _q().log_prob([[0.0, 0.0]]), TypeError, r"value must be a torch.Tensor"),
    ],
    "GaussianEncoder": [
        (lambda: GaussianEncoder(0, 2), ValueError, r"num_pixels must be >= 1"),
        (lambda: GaussianEncoder(6, -2), ValueError, r"latent_dim must be >= 1"),
        (lambda: GaussianEncoder(6, 2, hidden=1.5), TypeError, r"hidden must be an integer"),
    ],
    "GaussianEncoder.forward": [
        (lambda: GaussianEncoder(6, 2)(torch.zeros(3, 5)), ValueError,
         r"x must have 6 pixels in its last axis"),
        (lambda: GaussianEncoder(6, 2)(_NAN_X), ValueError, r"x must contain only finite"),
    ],
    "TrainingHistory.record": [
        (lambda: TrainingHistory().record({"elbo": -1.0}, _TERMS), ValueError,
         r"train must hold the keys"),
        (lambda: TrainingHistory().record(_TERMS, [1.0, 2.0, 3.0]), TypeError,
         r"val must be a mapping"),
        (lambda: TrainingHistory().record(_TERMS, {**_TERMS, "elbo": float("nan")}),
         ValueError, r"val\['elbo'\] must be finite"),
    ],
    "active_units": [
        (lambda: active_units(_model(), _X[:1]), ValueError, r"x .*at least 2 data points"),
        (lambda: active_units(_model(), _X, threshold=0.0), ValueError,
         r"threshold must be a finite number > 0"),
        (lambda: active_units(_model(), _NAN_X), ValueError, r"x must contain only finite"),
        (lambda: active_units("model", _X), TypeError, r"model must be an elbo_lib.vae.VAE"),
    ],
    "aggregate_posterior": [
        (lambda: aggregate_posterior(_model(3), _X), ValueError,
         r"model .*2-D latent space.*latent_dim=3"),
        (lambda: aggregate_posterior(_model(), _X, limit=0.0), ValueError,
         r"limit must be a finite number > 0"),
        (lambda: aggregate_posterior(_model(), _X, num_points=2), ValueError,
         r"num_points must be >= 3"),
        (lambda: aggregate_posterior(_model(), _X, max_batch=0), ValueError,
         r"max_batch must be >= 1"),
        (lambda: aggregate_posterior(_model(), _NAN_X), ValueError,
         r"x must contain only finite"),
    ],
    "decoder_gradient_by_quadrature": [
        (lambda: decoder_gradient_by_quadrature(_model(3), _X), ValueError,
         r"model .*2-D latent space"),
        (lambda: decoder_gradient_by_quadrature(_model(), _X, limit=-1.0), ValueError,
         r"limit must be a finite number > 0"),
        (lambda: decoder_gradient_by_quadrature(_model(), _TWO_X), ValueError,
         r"x must be binary"),
        (lambda: decoder_gradient_by_quadrature(_model(), _NAN_X), ValueError,
         r"x must contain only finite"),
    ],
    "elbo_per_point": [
        (lambda: elbo_per_point(_model(), _X, num_samples=0), ValueError,
         r"num_samples must be >= 1"),
        (lambda: elbo_per_point(_model(), _NAN_X), ValueError, r"x must contain only finite"),
        (lambda: elbo_per_point(_model(), _TWO_X), ValueError, r"x must be binary"),
    ],
    "fano_error_bound": [
        (lambda: fano_error_bound(3.0, 10), ValueError,
         r"conditional_entropy cannot exceed log\(num_classes\)"),
        (lambda: fano_error_bound(-0.1, 10), ValueError,
         r"conditional_entropy must be a finite number >= 0"),
        (lambda: fano_error_bound(float("nan"), 10), ValueError,
         r"conditional_entropy must be a finite number >= 0"),
        (lambda: fano_error_bound("a", 10), TypeError,
         r"conditional_entropy must be a real number"),
        (lambda: fano_error_bound(0.1, 1), ValueError, r"num_classes must be >= 2"),
    ],
    "fit_encoder": [
        (lambda: fit_encoder(_model(), _X, _X, 1, hidden=0), ValueError,
         r"hidden must be >= 1"),
        (lambda: fit_encoder(_model(), _X, _X, 0, hidden=4), ValueError,
         r"num_epochs must be >= 1"),
        (lambda: fit_encoder(_model(), _NAN_X, _X, 1, hidden=4), ValueError,
         r"x_train must contain only finite"),
        (lambda: fit_encoder(_model(), _X, _TWO_X, 1, hidden=4), ValueError,
         r"x_val must be binary"),
        (lambda: fit_encoder(_nan_decoder(_model()), _X, _X, 2, hidden=4, batch_size=4),
         ValueError, r"fit_encoder stopped at epoch 1 of 2, step 1: .*finite.*smaller lr"),
    ],
    "inference_gaps": [
        (lambda: inference_gaps(_model(), _X, torch.zeros(3)), ValueError,
         r"log_px must be a tensor of shape \(8,\)"),
        (lambda: inference_gaps(_model(), _X, torch.full((8,), float("nan"))), ValueError,
         r"log_px must contain only finite"),
        (lambda: inference_gaps(_model(), _X, torch.zeros(8), num_steps=0), ValueError,
         r"num_steps must be >= 1"),
        (lambda: inference_gaps(_model(), _X, torch.zeros(8), k=0), ValueError,
         r"k must be >= 1"),
        (lambda: inference_gaps(_model(), _TWO_X, torch.zeros(8)), ValueError,
         r"x must be binary"),
    ],
    "iwae_objective": [
        (lambda: iwae_objective(_model(), _X, 0), ValueError, r"k must be >= 1"),
        (lambda: iwae_objective(_model(), _NAN_X, 2), ValueError,
         r"x must contain only finite"),
        (lambda: iwae_objective("model", _X, 2), TypeError, r"model must be"),
    ],
    "kl_per_unit": [
        (lambda: kl_per_unit(_model(), _NAN_X), ValueError, r"x must contain only finite"),
        (lambda: kl_per_unit("model", _X), TypeError, r"model must be"),
    ],
    "ELBO": [
        (lambda: ELBO(beta=0.0), ValueError, r"beta must be a finite number > 0"),
        (lambda: ELBO(beta="a"), TypeError, r"beta must be a positive number, got str"),
        (lambda: ELBO(free_bits=-1.0), ValueError, r"free_bits must be a finite number >= 0"),
        (lambda: ELBO(free_bits="a"), TypeError, r"free_bits must be a real number"),
        (lambda: ELBO(warmup_epochs=-1), ValueError, r"warmup_epochs must be >= 0"),
        (lambda: ELBO(warmup_epochs=1.5), TypeError, r"warmup_epochs must be an integer"),
    ],
    "ELBO.kl_schedule": [
        (lambda: ELBO(warmup_epochs=2).kl_schedule(-1, 4), ValueError, r"step must be >= 0"),
        (lambda: ELBO().kl_schedule(0, 0), ValueError, r"steps_per_epoch must be >= 1"),
        (lambda: ELBO().kl_schedule(0.5, 3), TypeError, r"step must be an integer"),
    ],
    "IWAE": [
        (lambda: IWAE(0), ValueError, r"k must be >= 1"),
        (lambda: IWAE(2.5), TypeError, r"k must be an integer"),
    ],
    "VAEObjective.loss": [
        (lambda: ELBO().loss("model", _X), TypeError, r"model must be an elbo_lib.vae.VAE"),
        (lambda: ELBO().loss(_model(), _TWO_X), ValueError, r"x must be binary"),
        (lambda: ELBO().loss(_model(), _X[0]), ValueError, r"x must be a batch of shape"),
        (lambda: WakeSleep().loss(_model(), _X, phase=2), ValueError,
         r"phase must be an index of the objective's 2 phases"),
        (lambda: ELBO().loss(_model(), _X, step=-1), ValueError, r"step must be >= 0"),
        (lambda: ELBO().loss(_model(), _X, steps_per_epoch=0), ValueError,
         r"steps_per_epoch must be >= 1"),
    ],
    "VAEObjective.stacked_loss": [
        (lambda: ELBO().stacked_loss("stack", _X[None]), TypeError,
         r"stack must be the stack of runs train_replicates passes"),
        (lambda: ELBO().stacked_loss(_stack(), _X), ValueError,
         r"x must be a floating tensor of shape \(1, n, D\)"),
        (lambda: ELBO().stacked_loss(_stack(), _X[None], phase=1), ValueError,
         r"phase must be an index"),
    ],
    "as_tensor": [
        (lambda: as_tensor(np.array([[0.5, 2.0]])), ValueError, r"x must contain .*\[0, 1\]"),
        (lambda: as_tensor(np.zeros(4)), ValueError, r"x must have shape \(n, num_pixels\)"),
        (lambda: as_tensor(np.array([[0.5, np.nan]])), ValueError,
         r"x must contain finite"),
        (lambda: as_tensor(np.zeros((0, 4))), ValueError, r"x must have shape"),
        (lambda: as_tensor([["a", "b"]]), TypeError, r"x must be numeric"),
    ],
    "bernoulli_log_likelihood": [
        (lambda: bernoulli_log_likelihood(_TWO_X, torch.zeros(8, 6)), ValueError,
         r"x must be binary \(0 or 1\)"),
        (lambda: bernoulli_log_likelihood(_with(5.0), torch.zeros(8, 6)), ValueError,
         r"x must be binary \(0 or 1\)"),
        (lambda: bernoulli_log_likelihood(_GREY_X, torch.zeros(8, 6)), ValueError,
         r"x must be binary \(0 or 1\)"),
        (lambda: bernoulli_log_likelihood(_NAN_X, torch.zeros(8, 6)), ValueError,
         r"x must contain only finite"),
        (lambda: bernoulli_log_likelihood(_X, torch.full((8, 6), float("nan"))), ValueError,
         r"logits must contain only finite"),
        (lambda: bernoulli_log_likelihood(_X, torch.zeros(8, 5)), ValueError,
         r"logits must end in the shape of x"),
        (lambda: bernoulli_log_likelihood(_X.numpy(), torch.zeros(8, 6)), TypeError,
         r"x must be a torch.Tensor"),
    ],
    "elbo_terms": [
        (lambda: elbo_terms(_model(), _NAN_X), ValueError, r"x must contain only finite"),
        (lambda: elbo_terms(_model(), _TWO_X), ValueError, r"x must be binary"),
        (lambda: elbo_terms("model", _X), TypeError, r"model must be"),
        (lambda: elbo_terms(_model(), torch.zeros(8, 5)), ValueError, r"x must have 6 pixels"),
    ],
    "evaluate_elbo": [
        (lambda: evaluate_elbo(_model(), _TWO_X), ValueError, r"x must be binary"),
        (lambda: evaluate_elbo(_model(), _with(5.0)), ValueError, r"x must be binary"),
        (lambda: evaluate_elbo(_model(), _NAN_X), ValueError, r"x must contain only finite"),
        (lambda: evaluate_elbo(_model(), _X, num_samples=0), ValueError,
         r"num_samples must be >= 1"),
        (lambda: evaluate_elbo("model", _X), TypeError, r"model must be"),
    ],
    "grid_log_marginal": [
        (lambda: grid_log_marginal(_model(3), _X), ValueError, r"model .*2-D latent space"),
        (lambda: grid_log_marginal(_model(), _TWO_X), ValueError, r"x must be binary"),
        (lambda: grid_log_marginal(_model(), _NAN_X), ValueError,
         r"x must contain only finite"),
        (lambda: grid_log_marginal(_model(), _X, max_batch=0), ValueError,
         r"max_batch must be >= 1"),
        (lambda: grid_log_marginal(_model(), _X, limit=float("inf")), ValueError,
         r"limit must be a finite number > 0"),
    ],
    "importance_log_weights": [
        (lambda: importance_log_weights(_model(), _X, 0), ValueError, r"k must be >= 1"),
        (lambda: importance_log_weights(_model(), _X, 3, mean=torch.zeros(8, 2)), ValueError,
         r"give both mean and logvar"),
        (lambda: importance_log_weights(_model(), _X, 3, torch.zeros(4, 2),
                                        torch.zeros(4, 2)), ValueError,
         r"mean and logvar must have shape \(8, 2\)"),
        (lambda: importance_log_weights(_model(), _X, 3, [[0.0, 0.0]] * 8,
                                        torch.zeros(8, 2)), TypeError,
         r"mean and logvar must be tensors"),
        (lambda: importance_log_weights(_model(), _X, 3, torch.full((8, 2), float("nan")),
                                        torch.zeros(8, 2)), ValueError,
         r"mean must contain only finite"),
        (lambda: importance_log_weights(_model(), _NAN_X, 3, torch.zeros(8, 2),
                                        torch.zeros(8, 2)), ValueError,
         r"x must contain only finite"),
    ],
    "iwae_bound": [
        (lambda: iwae_bound(_model(), _X, 0), ValueError, r"k must be >= 1"),
        (lambda: iwae_bound(_model(), _X, 2, max_batch=0), ValueError,
         r"max_batch must be >= 1"),
        (lambda: iwae_bound(_model(), _NAN_X, 2), ValueError, r"x must contain only finite"),
        (lambda: iwae_bound(_model(), _TWO_X, 2), ValueError, r"x must be binary"),
    ],
    "kl_to_prior": [
        (lambda: kl_to_prior("q"), TypeError, r"q must be a torch.distributions"),
        (lambda: kl_to_prior(_q(), z=torch.full((3, 2), float("nan"))), ValueError,
         r"z must contain only finite"),
    ],
    "latent_grid": [
        (lambda: latent_grid(1), ValueError, r"num_points must be >= 2"),
        (lambda: latent_grid(5, low=0.9, high=0.1), ValueError, r"need 0 < low < high < 1"),
        (lambda: latent_grid(5, low=float("nan")), ValueError, r"low must be finite"),
        (lambda: latent_grid(5, low="a"), TypeError, r"low must be a real number"),
        (lambda: latent_grid(5, high=1.0), ValueError, r"need 0 < low < high < 1"),
    ],
    "refine_posterior": [
        (lambda: refine_posterior(_model(), _X, 0), ValueError, r"num_steps must be >= 1"),
        (lambda: refine_posterior(_model(), _X, 2, lr=0.0), ValueError,
         r"lr must be a finite number > 0"),
        (lambda: refine_posterior(_model(), _X, 2, num_samples=0), ValueError,
         r"num_samples must be >= 1"),
        (lambda: refine_posterior(_model(), _NAN_X, 2), ValueError,
         r"x must contain only finite"),
        (lambda: refine_posterior(_model(), _TWO_X, 2), ValueError, r"x must be binary"),
        (lambda: refine_posterior(_nan_decoder(_model()), _X, 2), ValueError,
         r"refine_posterior stopped at step 1 of 2: .*finite.*smaller lr"),
    ],
    "reparameterize": [
        (lambda: reparameterize(torch.zeros(2), torch.zeros(3)), ValueError,
         r"mean and logvar must have the same shape"),
        (lambda: reparameterize([0.0], torch.zeros(1)), TypeError,
         r"mean and logvar must be tensors"),
        (lambda: reparameterize(torch.zeros(2), torch.zeros(2), num_samples=0), ValueError,
         r"num_samples must be >= 1"),
        (lambda: reparameterize(torch.tensor([float("nan")]), torch.zeros(1)), ValueError,
         r"mean must contain only finite"),
        (lambda: reparameterize(torch.zeros(1), torch.tensor([float("nan")])), ValueError,
         r"logvar must contain only finite"),
    ],
    "train_vae": [
        (lambda: train_vae(_model(), _X, _X, 1, objective="elbo"), TypeError,
         r"objective must be an elbo_lib.vae.VAEObjective"),
        (lambda: train_vae(_model(), _X, _X, 1, objective=ELBO), TypeError,
         r"objective must be an elbo_lib.vae.VAEObjective"),
        (lambda: train_vae(_model(), _X, _X, 1, lr=-1.0), ValueError,
         r"lr must be a finite number > 0"),
        (lambda: train_vae(_model(), _X, _X, 0), ValueError, r"num_epochs must be >= 1"),
        (lambda: train_vae(_model(), _X, _X, 1, batch_size=0), ValueError,
         r"batch_size must be >= 1"),
        (lambda: train_vae(_model(), _NAN_X, _X, 1), ValueError,
         r"x_train must contain only finite"),
        (lambda: train_vae(_model(), _X, _NAN_X, 1), ValueError,
         r"x_val must contain only finite"),
        (lambda: train_vae(_model(), _TWO_X, _X, 1), ValueError, r"x_train must be binary"),
        (lambda: train_vae(_model(), _X, torch.zeros(8, 5), 1), ValueError,
         r"x_val must have 6 pixels"),
        # the history must never fill with NaN: a clear stop at the first non-finite loss
        (lambda: train_vae(_nan_decoder(_model()), _X, _X, 2, batch_size=4), ValueError,
         r"train_vae stopped at epoch 1 of 2, step 1: .*finite.*smaller lr"),
    ],
    "train_wake_sleep": [
        (lambda: train_wake_sleep(_model(), _X, _X, 1, lr=-1.0), ValueError,
         r"lr must be a finite number > 0"),
        (lambda: train_wake_sleep(_model(), _NAN_X, _X, 1), ValueError,
         r"x_train must contain only finite"),
        (lambda: train_wake_sleep(_model(), _X, _GREY_X, 1), ValueError,
         r"x_val must be binary"),
        (lambda: train_wake_sleep(_nan_decoder(_model()), _X, _X, 2, batch_size=4),
         ValueError, r"train_wake_sleep \(wake phase\) stopped at epoch 1 of 2, step 1: .*finite"
         r".*smaller lr"),
    ],
}

NO_INPUTS = {
    "AggregatePosterior": "a result object returned by aggregate_posterior",
    "Phase": "a named pair (name, moves) an objective declares in its phases attribute",
    "VAEStep": "a result object (loss, reconstruction, kl) returned by every loss()",
    "VAEObjective": "a base class to subclass; its constructor takes no arguments (the "
                    "cases of loss and stacked_loss are in BAD_INPUTS)",
    "WakeSleep": "its constructor takes no arguments (VAEObjective.loss's cases cover its "
                 "phases)",
    "TrainingHistory": "a result object filled by the training functions (no arguments)",
}


def _same_as_float32(run):
    """``run(dtype)`` for float64 must equal ``run(float32)``: float64 input is converted
    to the model's float32, not rejected."""
    torch.manual_seed(1)
    want = run(torch.float32)
    return want, lambda got: torch.testing.assert_close(got, want, rtol=0, atol=0)


def _encode_mean(dtype):
    return _model().encode(_X.to(dtype)).mean


def _elbo_terms_sum(dtype):
    torch.manual_seed(2)
    reconstruction, kl = elbo_terms(_model(), _X.to(dtype))
    return reconstruction - kl


def _decode(dtype):
    return _model().decode(torch.tensor([[0.3, -1.2]], dtype=dtype))


def _quantiles_of_grid():
    from scipy.stats import norm

    return torch.tensor(norm.ppf([1e-10, 0.5, 1 - 1e-10]), dtype=torch.float32)


EXTREME_INPUTS = {
    "VAE.encode": [(lambda: _encode_mean(torch.float64), _same_as_float32(_encode_mean)[1])],
    "VAE.decode": [(lambda: _decode(torch.float64), _same_as_float32(_decode)[1])],
    "elbo_terms": [(lambda: _elbo_terms_sum(torch.float64),
                    _same_as_float32(_elbo_terms_sum)[1])],
    "latent_grid": [
        # probabilities 1e-10 .. 1 - 1e-10: finite quantiles (-6.36 .. 6.36), not -inf
        (lambda: latent_grid(3, 1e-10, 1 - 1e-10),
         lambda grid: torch.testing.assert_close(
             grid[:3, 0], _quantiles_of_grid(), rtol=1e-6, atol=0)),
    ],
    "bernoulli_log_likelihood": [
        # logits of +-1e30: log p = -1e30 per wrong pixel, 0 per right one
        (lambda: bernoulli_log_likelihood(torch.tensor([[1.0, 0.0, 1.0]]),
                                          torch.tensor([[1e30, -1e30, -1e30]])),
         lambda out: torch.testing.assert_close(out, torch.tensor([-1e30]))),
    ],
    "fano_error_bound": [
        # two classes: the answer p solves h(p) = H(Y | Z) = 1e-300 (p near 1.45e-303)
        (lambda: fano_error_bound(1e-300, 2),
         lambda p: np.testing.assert_allclose(-p * math.log(p) - (1 - p) * math.log1p(-p),
                                              1e-300, rtol=1e-9)),
    ],
}


# -- several runs as one tensor program (train_replicates) --------------------------------

from elbo_lib.vae import fit_encoder as _fit_encoder  # noqa: E402
from elbo_lib.vae import train_replicates  # noqa: E402

_ONE_BY_ONE = {
    "elbo": (lambda m, x: train_vae(m, x, x, 2, batch_size=16), ELBO()),
    "iwae": (lambda m, x: train_vae(m, x, x, 2, batch_size=16, objective=IWAE(5)), IWAE(5)),
    "wake_sleep": (lambda m, x: train_wake_sleep(m, x, x, 2, batch_size=16), WakeSleep()),
    "iwae_dreg": (lambda m, x: train_vae(m, x, x, 2, batch_size=16, objective=IWAEDReG(5)),
                  IWAEDReG(5)),
    "renyi_vr": (lambda m, x: train_vae(m, x, x, 2, batch_size=16,
                                        objective=RenyiVR(0.5, 5)), RenyiVR(0.5, 5)),
}


@pytest.mark.parametrize("method", sorted(_ONE_BY_ONE))
def test_train_replicates_of_one_model_is_the_one_by_one_run(method, toy_data):
    """One model trained as a stack of one follows train_vae (ELBO, IWAE) /
    train_wake_sleep step for step: the same random numbers in the same order, so the
    same parameters up to float32 rounding (a wrong loss, a wrong phase order or a
    missing step would move them by far more)."""
    alone_run, objective = _ONE_BY_ONE[method]
    seed_everything(1)
    alone = VAE(6, 2, hidden=4)
    h_alone = alone_run(alone, toy_data)
    seed_everything(1)
    stacked = VAE(6, 2, hidden=4)
    (h_stacked,) = train_replicates([stacked], toy_data, toy_data, 2, objective=objective,
                                    batch_size=16)
    for (name, a), b in zip(alone.named_parameters(), stacked.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name
    assert np.allclose(h_alone.val_elbo, h_stacked.val_elbo, atol=1e-4)
    assert np.allclose(h_alone.train_kl, h_stacked.train_kl, atol=1e-4)


_VARIANTS = {"beta": ELBO(beta=2.5), "warm-up": ELBO(beta=4.0, warmup_epochs=1),
             "free bits": ELBO(beta=4.0, free_bits=0.3)}


def _alone_and_stacked(objective, toy_data, seed, latent_dim):
    """The same VAE trained by train_vae and, from the same seed, as a stack of one by
    train_replicates: (alone, its history, stacked, its history)."""
    seed_everything(seed)
    alone = VAE(6, latent_dim, hidden=4)
    h_alone = train_vae(alone, toy_data, toy_data, 3, batch_size=16, objective=objective)
    seed_everything(seed)
    stacked = VAE(6, latent_dim, hidden=4)
    (h_stacked,) = train_replicates([stacked], toy_data, toy_data, 3, batch_size=16,
                                    objective=objective)
    return alone, h_alone, stacked, h_stacked


@pytest.mark.parametrize("variant", sorted(_VARIANTS))
def test_train_replicates_variants_are_train_vae(variant, toy_data):
    """beta, KL warm-up and free bits in a stack of one follow train_vae with the same
    objective step for step (a KL weight applied per image instead of per minibatch for
    free bits, a warm-up schedule counted per epoch instead of per step, or beta ignored
    would move the parameters by far more than float32 rounding)."""
    alone, h_alone, stacked, h_stacked = _alone_and_stacked(_VARIANTS[variant], toy_data,
                                                            seed=6, latent_dim=3)
    for (name, a), b in zip(alone.named_parameters(), stacked.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name
    assert np.allclose(h_alone.val_kl, h_stacked.val_kl, atol=1e-4)
    assert np.allclose(h_alone.train_kl, h_stacked.train_kl, atol=1e-4)


def test_train_replicates_beta_per_model(toy_data):
    """A list of objectives gives each model its own KL weight: the model with beta = 3
    in a stack ends where it ends alone with beta = 3, next to a partner with beta = 1
    (one beta for all, or the betas swapped, would not)."""
    torch.manual_seed(0)
    first = VAE(6, 2, hidden=4)
    torch.manual_seed(1)
    partner = VAE(6, 2, hidden=4)
    alone = copy.deepcopy(first)
    seed_everything(7)
    train_replicates([first, partner], toy_data, toy_data, 2, batch_size=16,
                     objective=[ELBO(beta=3.0), ELBO(beta=1.0)])
    seed_everything(7)
    train_replicates([alone, copy.deepcopy(partner)], toy_data, toy_data, 2,
                     batch_size=16, objective=ELBO(beta=3.0))
    for a, b in zip(first.parameters(), alone.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("variant", ["warm-up", "free bits"])
def test_train_replicates_remedy_per_model(variant, toy_data):
    """Warm-up and free bits may differ between the runs of one stack (chapter 6 trains
    its beta sweep and both remedies as one program): the remedy's model ends where it
    ends in a stack whose runs all use the remedy, next to a partner with plain beta = 1
    (one schedule or one floor for the whole stack, the partner's objective applied to
    it, or a floor applied to the partner would not)."""
    remedy = _VARIANTS[variant]
    torch.manual_seed(0)
    first = VAE(6, 3, hidden=4)
    torch.manual_seed(1)
    partner = VAE(6, 3, hidden=4)
    alone, partner_alone = copy.deepcopy(first), copy.deepcopy(partner)
    first_plain, plain_partner = copy.deepcopy(first), copy.deepcopy(partner)
    seed_everything(7)
    train_replicates([first, partner], toy_data, toy_data, 3, batch_size=16,
                     objective=[remedy, ELBO(beta=1.0)])
    seed_everything(7)
    train_replicates([alone, partner_alone], toy_data, toy_data, 3, batch_size=16,
                     objective=remedy)
    seed_everything(7)
    train_replicates([first_plain, plain_partner], toy_data, toy_data, 3,
                     batch_size=16, objective=ELBO(beta=1.0))
    for a, b in zip(first.parameters(), alone.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(partner.parameters(), plain_partner.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    moved = max(float((a - b).detach().abs().max())
                for a, b in zip(partner.parameters(), partner_alone.parameters(),
                                strict=True))
    assert moved > 1e-3           # the remedy would have moved the partner elsewhere


def test_train_replicates_fixed_decoder_is_fit_encoder(toy_data):
    model = VAE(6, 2, hidden=4)
    seed_everything(2)
    alone, h_alone = _fit_encoder(model, toy_data, toy_data, 2, hidden=8, batch_size=16)
    seed_everything(2)
    stacked = VAE(6, 2, hidden=8)
    stacked.decoder = copy.deepcopy(model.decoder)
    (h_stacked,) = train_replicates([stacked], toy_data, toy_data, 2, fixed_decoder=True,
                                    batch_size=16)
    for a, b in zip(alone.parameters(), stacked.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(model.decoder.parameters(), stacked.decoder.parameters(), strict=True):
        assert torch.equal(a, b)               # the decoder never moved
    assert np.allclose(h_alone.val_elbo, h_stacked.val_elbo, atol=1e-4)


def test_train_replicates_runs_are_independent(toy_data):
    """A model's run does not depend on the other models of the stack: the first model
    ends the same next to two different partners (a mean instead of a sum of the
    losses, or any coupling of the models, would change it)."""
    ends = []
    for partner_seed in (3, 4):
        torch.manual_seed(0)
        first = VAE(6, 2, hidden=4)
        torch.manual_seed(partner_seed)
        partner = VAE(6, 2, hidden=4)
        seed_everything(5)
        train_replicates([first, partner], toy_data, toy_data, 3, batch_size=16)
        ends.append((torch.cat([p.reshape(-1) for p in first.parameters()]),
                     torch.cat([p.reshape(-1) for p in partner.parameters()])))
    assert torch.allclose(ends[0][0], ends[1][0], atol=1e-6)
    assert not torch.allclose(ends[0][1], ends[1][1], atol=1e-3)


# -- a new objective from outside elbo_lib trains through the unchanged loops (issue 29)
class CyclicalELBO(ELBO):
    """The ELBO with a cyclical KL schedule (Fu et al. 2019): in every cycle of
    ``cycle`` steps the weight rises linearly from 0 to beta over the first half, then
    stays at beta. Only :meth:`kl_schedule` is new."""

    def __init__(self, beta: float = 1.0, cycle: int = 4) -> None:
        super().__init__(beta)
        self.cycle = cycle

    def kl_schedule(self, step, steps_per_epoch):
        return min(1.0, (step % self.cycle + 1) / (self.cycle / 2))


class TwoSampleELBO(VAEObjective):
    """A new objective written from scratch: the ELBO averaged over two samples per
    image, for one model and for a stack."""

    def _loss(self, model, x, phase, step, steps_per_epoch):
        q = model.encode(x)
        reconstruction = bernoulli_log_likelihood(x, model.decode(q.rsample((2,)))).mean(0)
        kl = kl_to_prior(q)
        return VAEStep(-(reconstruction - kl).mean(), reconstruction, kl)


def test_a_new_schedule_from_outside_trains_through_the_loops(toy_data):
    """A subclass defined here changes only the KL weight; train_vae and train_replicates
    (stack of one) follow it step for step and end away from the constant weight (a
    loop that ignored kl_schedule, or re-implemented the warm-up, would end where
    ELBO(beta) ends)."""
    objective = CyclicalELBO(beta=4.0, cycle=4)
    assert [objective.kl_schedule(t, 3) for t in range(6)] == [0.5, 1.0, 1.0, 1.0, 0.5, 1.0]
    ends = {}
    for name, obj in (("cyclical", objective), ("constant", ELBO(beta=4.0))):
        alone, h_alone, stacked, h_stacked = _alone_and_stacked(obj, toy_data, seed=8,
                                                                latent_dim=2)
        for a, b in zip(alone.parameters(), stacked.parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-5)
        assert np.allclose(h_alone.val_elbo, h_stacked.val_elbo, atol=1e-4)
        ends[name] = torch.cat([p.reshape(-1) for p in alone.parameters()])
    assert not torch.allclose(ends["cyclical"], ends["constant"], atol=1e-3)


def test_a_new_objective_from_outside_trains_with_train_vae(toy_data):
    """An objective with only a one-model loss trains through train_vae and fit_encoder;
    train_replicates refuses it by name (it has no _stacked_loss), before any step."""
    seed_everything(9)
    model = VAE(6, 2, hidden=8)
    h = train_vae(model, toy_data, toy_data, 15, batch_size=10, lr=0.01,
                  objective=TwoSampleELBO())
    assert h.val_elbo[-1] > h.val_elbo[0] + 0.5
    _, h_refit = _fit_encoder(model, toy_data, toy_data, 2, hidden=4,
                              objective=TwoSampleELBO())
    assert np.all(np.isfinite(h_refit.val_elbo))
    with pytest.raises(TypeError, match=r"TwoSampleELBO has no _stacked_loss"):
        train_replicates([VAE(6, 2, hidden=4)], toy_data, toy_data, 1,
                         objective=TwoSampleELBO())


def test_the_public_loss_is_the_hook_the_loop_calls(toy_data):
    """ELBO().loss is minus the mean of elbo_terms' one-sample ELBO at the same draw, and
    IWAE(5).loss minus the mean of iwae_objective (a loss with the sign flipped, a KL
    weighted twice or a sum instead of a mean would differ)."""
    model = VAE(6, 2, hidden=4)
    torch.manual_seed(3)
    out = ELBO().loss(model, toy_data)
    torch.manual_seed(3)
    reconstruction, kl = elbo_terms(model, toy_data)
    torch.testing.assert_close(out.loss, -(reconstruction - kl).mean())
    torch.testing.assert_close(out.reconstruction, reconstruction)
    torch.manual_seed(4)
    iwae_5 = IWAE(5).loss(model, toy_data)
    torch.manual_seed(4)
    torch.testing.assert_close(iwae_5.loss, -iwae_objective(model, toy_data, 5).mean())
    assert ELBO(beta=2.0, warmup_epochs=2).kl_schedule(0, 5) == 0.1
    assert WakeSleep().phases == (Phase("wake", "decoder"), Phase("sleep", "encoder"))
    assert WakeSleep().loss(model, toy_data, phase=1).reconstruction is None


def _two(hidden2: int = 4):
    torch.manual_seed(0)
    return [VAE(6, 2, hidden=4), VAE(6, 2, hidden=hidden2)]


BAD_INPUTS["train_replicates"] = [
    (lambda: train_replicates([], _X, _X, 1), TypeError, r"models must be a non-empty list"),
    (lambda: train_replicates(_model(), _X, _X, 1), TypeError, r"models must be a non-empty"),
    (lambda: train_replicates([_model(), "a"], _X, _X, 1), TypeError,
     r"models must hold elbo_lib.vae.VAE objects, got str"),
    (lambda: train_replicates([_model()] * 2, _X, _X, 1), ValueError,
     r"models must be distinct"),
    (lambda: train_replicates(_two(hidden2=5), _X, _X, 1), ValueError,
     r"models must have parameters of the same shapes"),
    (lambda: train_replicates(_two(), _X, _X, 1, objective="iwae"), TypeError,
     r"objective must be an elbo_lib.vae.VAEObjective"),
    (lambda: train_replicates(_two(), _X, _X, 1, objective=[ELBO()]), ValueError,
     r"objective must be one VAEObjective or one per model \(2\), got 1"),
    (lambda: train_replicates(_two(), _X, _X, 1, objective=[ELBO(), IWAE(2)]), ValueError,
     r"objective must hold objectives of one type that agree"),
    (lambda: train_replicates(_two(), _X, _X, 1,
                              objective=[CyclicalELBO(cycle=4), CyclicalELBO(cycle=2)]),
     ValueError, r"objective must hold objectives of one type that agree"),
    (lambda: train_replicates(_two(), _X, _X, 1, objective=_Custom()), TypeError,
     r"objective _Custom has no _stacked_loss"),
    (lambda: train_replicates(_two(), _X, _X, 1, objective=WakeSleep(), fixed_decoder=True),
     ValueError, r"fixed_decoder=True needs an objective whose phases move the encoder"),
    (lambda: train_replicates(_two(), _X, _X, 1, fixed_decoder=1), TypeError,
     r"fixed_decoder must be a bool"),
    (lambda: train_replicates(_two(), _X, _X, 0), ValueError, r"num_epochs must be >= 1"),
    (lambda: train_replicates(_two(), _NAN_X, _X, 1), ValueError,
     r"x_train must contain only finite"),
    (lambda: train_replicates(_two(), _X, _TWO_X, 1), ValueError, r"x_val must be binary"),
    (lambda: train_replicates([_model(), _model().double()], _X, _X, 1), ValueError,
     r"models must have parameters of one dtype"),
    (lambda: train_replicates([_model(), _nan_decoder(_model())], _X, _X, 2, batch_size=4),
     ValueError, r"train_replicates \(ELBO\) stopped at epoch 1 of 2, step 1: "
                 r"the loss of model 1 is not finite .*smaller lr"),
    (lambda: train_replicates([_model(), _nan_decoder(_model())], _X, _X, 2, batch_size=4,
                              objective=WakeSleep()),
     ValueError, r"train_replicates \(WakeSleep, wake phase\) stopped at epoch 1 of 2, "
                 r"step 1: the loss of model 1 is not finite .*smaller lr"),
]

BAD_INPUTS["fit_encoder"].append(
    (lambda: fit_encoder(_model(), _X, _X, 1, hidden=4, objective=WakeSleep()), ValueError,
     r"fit_encoder holds the decoder fixed: objective must not have a phase that moves"))


# -- issue 34: the second round of bad input (one image, complex, requires grad,
#    divergence and the state it leaves) and extreme-but-valid input against closed forms
def _diverged(train, *args, **kwargs):
    """Run a training call that diverges; return its message and whether the model's
    parameters are those it had before the call."""
    model = _model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError) as info:
        train(model, *args, **kwargs)
    after = model.state_dict()
    return str(info.value), all(torch.equal(before[k], after[k]) for k in before)


def _restored(pattern):
    def check(out):
        message, same = out
        assert re.search(pattern, message), message
        assert same, "the parameters were not put back"
    return check


def _kl_at(logvar, dtype):
    mean = torch.tensor([[0.5, -1.0]], dtype=dtype)
    return kl_to_prior(DiagonalGaussianPosterior(mean, torch.tensor([[logvar, 0.3]],
                                                                    dtype=dtype)))


def _kl_closed_form(logvar):
    lv = np.float64([logvar, 0.3])          # float64 closed form, exp(-800) = 0 there
    return 0.5 * (np.exp(lv) - lv + np.float64([0.5, -1.0]) ** 2 - 1).sum()


def _constant_encoder(logvar):
    model = _model()
    with torch.no_grad():
        model.encoder[2].weight.zero_()
        model.encoder[2].bias.copy_(torch.tensor([0.5, -1.0, logvar, logvar]))
    return model


def _log_weights_at_mean():
    with torch.no_grad():
        model = _model()
        lpx = bernoulli_log_likelihood(_X, model.decode(torch.zeros(8, 2))).double()
    return lpx - math.log(2 * math.pi) - (-math.log(2 * math.pi) + 800.0)


def _tail_check(low, high):
    from scipy.stats import norm

    def check(grid):
        q = torch.unique(grid[:, 0]).double().numpy()
        want = [norm.ppf(low), norm.ppf(0.5 * (low + high)), norm.isf(1.0 - high)]
        np.testing.assert_allclose(q, want, rtol=1e-6)
    return check


_ONE = _X[0]
for _name, _cases in {
    "iwae_bound": [(lambda: iwae_bound(_model(), _ONE, 3), ValueError,
                    r"x must be a batch of shape \(n, num_pixels\), got shape \(6,\)")],
    "grid_log_marginal": [(lambda: grid_log_marginal(_model(), _ONE, num_points=5),
                           ValueError, r"x must be a batch of shape")],
    "train_vae": [(lambda: train_vae(_model(), _ONE, _X, 1), ValueError,
                   r"x_train must be a batch of shape"),
                  (lambda: train_vae(_model(), _X, _X, 20, 4, lr=1e10), ValueError,
                   r"train_vae stopped at epoch 1 of 20, step \d+: .* smaller lr")],
    "train_wake_sleep": [(lambda: train_wake_sleep(_model(), _X, _ONE, 1), ValueError,
                          r"x_val must be a batch of shape"),
                         (lambda: train_wake_sleep(_model(), _X, _X, 20, 4, lr=1e10),
                          ValueError, r"stopped at epoch \d+ of 20, step \d+: .* smaller lr")],
    "VAE.decode": [(lambda: _model().decode(torch.zeros(3, 2, dtype=torch.complex64)),
                    TypeError, r"z must be a real tensor")],
    "DiagonalGaussianPosterior.log_prob": [
        (lambda: _q().log_prob(torch.zeros(3, 2, dtype=torch.complex64)), TypeError,
         r"value must be a real tensor")],
    "reparameterize": [(lambda: reparameterize(torch.zeros(2, dtype=torch.complex64),
                                               torch.zeros(2)), TypeError,
                        r"mean must be a real tensor")],
    "bernoulli_log_likelihood": [
        (lambda: bernoulli_log_likelihood(_X, torch.zeros(8, 6, dtype=torch.complex64)),
         TypeError, r"logits must be a real tensor")],
    "as_tensor": [(lambda: as_tensor(np.zeros((2, 2)) + 0j), TypeError, r"x must be real"),
                  (lambda: as_tensor([["0.5", "1"]]), TypeError, r"x must be numeric"),
                  (lambda: as_tensor([[10**400, 0]]), ValueError, r"x holds an integer")],
}.items():
    BAD_INPUTS.setdefault(_name, []).extend(_cases)

for _name, _cases in {
    "latent_grid": [(lambda low=low: latent_grid(3, low, 0.95), _tail_check(low, 0.95))
                    for low in (1e-16, 1e-17, 1e-300)]
    + [(lambda: latent_grid(3, 0.05, 1 - 2**-53), _tail_check(0.05, 1 - 2**-53))],
    "kl_to_prior": [(lambda lv=lv, dt=dt: _kl_at(lv, dt),
                     lambda out, lv=lv: np.testing.assert_allclose(
                         out.double().numpy(), [_kl_closed_form(lv)], rtol=1e-6))
                    for lv, dt in ((-800.0, torch.float32), (-110.0, torch.float32),
                                   (-800.0, torch.float64), (80.0, torch.float32),
                                   (700.0, torch.float64))],
    "elbo_terms": [(lambda: elbo_terms(_constant_encoder(-110.0), _X)[1],
                    lambda kl: np.testing.assert_allclose(
                        kl.detach().double().numpy(),
                        np.full(8, 0.5 * (110.0 * 2 + 0.25 + 1.0 - 2)), rtol=1e-6))],
    "importance_log_weights": [
        (lambda: importance_log_weights(_model(), _X, 3, torch.zeros(8, 2),
                                        torch.full((8, 2), -800.0)),
         lambda lw: np.testing.assert_allclose(lw.detach().double().numpy(),
                                               _log_weights_at_mean().expand(3, 8).numpy(),
                                               rtol=1e-6))],
    "as_tensor": [(lambda: as_tensor(torch.full((2, 3), 0.5, requires_grad=True)),
                   lambda t: torch.testing.assert_close(t, torch.full((2, 3), 0.5)))],
    "train_vae": [(lambda: _diverged(train_vae, _X, _X, 20, 4, lr=1e10),
                   _restored(r"train_vae stopped at epoch"))],
    "train_wake_sleep": [(lambda: _diverged(train_wake_sleep, _X, _X, 20, 4, lr=1e10),
                          _restored(r"train_wake_sleep \((wake|sleep) phase\) stopped"))],
    "IWAE": [(lambda: _diverged(train_vae, _X, _X, 20, batch_size=4, lr=1e10,
                                objective=IWAE(3)),
              _restored(r"train_vae stopped at epoch"))],
}.items():
    EXTREME_INPUTS.setdefault(_name, []).extend(_cases)


# -- chapter 7's planar-flow encoder family (elbo_lib.vae.flow_encoder; was in elbo_lib.flows)
from elbo_lib.flows import PlanarStackTransform, square_grid  # noqa: E402
from elbo_lib.vae import (  # noqa: E402
    PlanarFlowEncoder,
    check_binary_images,
    log_prior,
    refine_flow_posterior,
    train_flow_vaes,
    vae_elbo_of,
)

_F64 = torch.float64


def _encoder_model(num_layers=1):
    """A model with a flow encoder and a decoder of zero logits (not a VAE: vae_elbo_of
    takes any model with ``decode``)."""
    model = torch.nn.Module()
    model.encoder = PlanarFlowEncoder(4, 2, num_layers, hidden=3)
    model.decode = lambda z: torch.zeros(*z.shape[:-1], 4)
    return model


def _flow_vae():
    torch.manual_seed(0)
    return VAE(4, 2, 3, encoder=PlanarFlowEncoder(4, 2, 2, hidden=3))


def _nan_first(t):
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


_XF = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])

for _name, _cases in {
    "PlanarFlowEncoder": [
        (lambda: PlanarFlowEncoder(0, 2, 1), ValueError, r"num_pixels must be >= 1"),
        (lambda: PlanarFlowEncoder(4, 2, -2), ValueError, r"num_layers must be >= 0"),
        (lambda: PlanarFlowEncoder(4, 2, 1, hidden=0), ValueError, r"hidden must be >= 1"),
    ],
    "PlanarFlowEncoder.forward": [
        (lambda: PlanarFlowEncoder(4, 2, 1)(torch.ones(3, 5)), ValueError,
         r"x must have 4 pixels in its last axis"),
        (lambda: _flow_vae().encoder(_XF.numpy()), TypeError, r"x must be a torch.Tensor"),
        (lambda: _flow_vae().encoder(None), TypeError, r"x must be a torch.Tensor"),
        (lambda: _flow_vae().encoder(_nan_first(_XF)), ValueError, r"x must contain only finite"),
    ],
    "PlanarFlowEncoder.raw_outputs": [
        (lambda: PlanarFlowEncoder(4, 2, 1).raw_outputs(torch.ones(3, 2)), ValueError,
         r"x must have 4 pixels in its last axis"),
    ],
    "PlanarFlowEncoder.posterior": [
        (lambda: PlanarFlowEncoder(4, 2, 1).posterior({"mean": torch.zeros(2)}), TypeError,
         r"params must be a dict"),
        (lambda: (lambda e: e.posterior(dict(e.raw_outputs(_XF),
                                             mean=_nan_first(torch.zeros(3, 2)))))(
            _flow_vae().encoder), ValueError, r"params\['mean'\] \(mean\) must contain"),
    ],
    "vae_elbo_of": [
        (lambda: vae_elbo_of(_encoder_model(), torch.ones(3, 4), "q", 5), TypeError,
         r"q must be a torch Distribution"),
        (lambda: vae_elbo_of(_encoder_model(), torch.ones(3, 4),
                             _encoder_model().encoder(torch.ones(2, 4)), 5),
         ValueError, r"x must be a tensor whose leading shape"),
        (lambda: vae_elbo_of(_encoder_model(), torch.ones(3, 4),
                             _encoder_model().encoder(torch.ones(3, 4)), 0),
         ValueError, r"num_samples must be >= 1"),
        (lambda: vae_elbo_of(None, _XF, _flow_vae().encoder(_XF), 2), TypeError,
         r"model must be an elbo_lib.vae.VAE"),
    ],
    "refine_flow_posterior": [
        (lambda: refine_flow_posterior(torch.nn.Linear(2, 2), torch.zeros(2, 2), 5),
         TypeError, r"model.encoder must be a PlanarFlowEncoder"),
        (lambda: refine_flow_posterior(_encoder_model(), _XF, 2), TypeError,
         r"model must be an elbo_lib.vae.VAE"),
        (lambda: refine_flow_posterior(_flow_vae(), _XF, 0), ValueError,
         r"num_steps must be >= 1"),
        (lambda: refine_flow_posterior(_flow_vae(), _XF, 2, lr=0.0), ValueError,
         r"lr must be"),
        (lambda: refine_flow_posterior(_flow_vae(), _XF.numpy(), 2), TypeError,
         r"x must be a torch.Tensor"),
        (lambda: refine_flow_posterior(_flow_vae(), _XF, 200, lr=1e8), ValueError,
         r"refine_flow_posterior stopped at step \d+ of 200: .* smaller lr"),
        (lambda: refine_flow_posterior(_flow_vae(), _XF, 2, start={"mean": _XF}), TypeError,
         r"start must be a dict with the keys"),
        (lambda: (lambda m: refine_flow_posterior(m, _XF, 2, start={
            **m.encoder.raw_outputs(_XF), "mean": torch.zeros(1, 1)}))(_flow_vae()),
         ValueError, r"start\['mean'\] must have shape"),
    ],
    "train_flow_vaes": [
        (lambda: train_flow_vaes(_flow_vae(), _XF, _XF, 1, [torch.Generator()]), TypeError,
         r"models must be a non-empty list of VAE"),
        (lambda: train_flow_vaes([_flow_vae()], _XF, _XF, 1, []), TypeError,
         r"generators must be a list of 1 torch.Generator"),
        (lambda: (lambda m: train_flow_vaes([m, m], _XF, _XF, 1, [torch.Generator()] * 2))(
            _flow_vae()), ValueError, r"models must be distinct"),
        (lambda: train_flow_vaes([_flow_vae()], _XF + 0.5, _XF, 1, [torch.Generator()]),
         ValueError, r"x_train must be binary"),
        (lambda: train_flow_vaes([_flow_vae()], _XF, _XF, 0, [torch.Generator()]),
         ValueError, r"num_epochs must be >= 1"),
        (lambda: train_flow_vaes([_flow_vae()], _XF, _XF, 3, [torch.Generator()], lr=1e9),
         ValueError, r"train_flow_vaes stopped at epoch \d+ of 3.*smaller lr"),
    ],
    "log_prior": [
        (lambda: log_prior([0.0, 1.0]), TypeError, r"z must be a torch.Tensor"),
        (lambda: log_prior(torch.tensor(0.0)), ValueError, r"z must have a latent axis"),
        (lambda: log_prior(torch.tensor([0.0, float("nan")])), ValueError,
         r"z must contain only finite"),
    ],
    "check_binary_images": [
        (lambda: check_binary_images(_XF + 0.5, 4), ValueError, r"x must be binary"),
        (lambda: check_binary_images(_XF, 5), ValueError, r"x must have 5 pixels"),
        (lambda: check_binary_images(_XF[0], 4), ValueError, r"x must be a batch"),
        (lambda: check_binary_images(_XF, 4, name="x_val", dtype="float"), TypeError,
         r"dtype must be a torch.dtype"),
        (lambda: check_binary_images(_XF, 0), ValueError, r"num_pixels must be >= 1"),
    ],
}.items():
    BAD_INPUTS.setdefault(_name, []).extend(_cases)


def test_log_prior_is_the_standard_normal_density():
    """log_prior against torch's Normal (an independent implementation): rejects a
    missing normaliser or a sum over the wrong axis."""
    z = torch.randn(5, 3, 3, dtype=_F64)
    expected = Independent(Normal(torch.zeros(3, dtype=_F64), torch.ones(3, dtype=_F64)),
                           1).log_prob(z)
    torch.testing.assert_close(log_prior(z), expected, rtol=1e-14, atol=1e-13)


def test_check_binary_images_converts_and_passes_binary_batches():
    out = check_binary_images(_XF.double(), 4, dtype=torch.float32)
    assert out.dtype == torch.float32 and torch.equal(out, _XF)


@pytest.mark.parametrize("num_layers", [0, 3])
def test_planar_flow_encoder_shapes_and_density(num_layers):
    torch.manual_seed(11)
    encoder = PlanarFlowEncoder(6, 2, num_layers, hidden=5).double()
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.rand(4, 6, dtype=_F64)
    q = encoder(x)
    assert tuple(q.batch_shape) == (4,) and tuple(q.event_shape) == (2,)
    z = q.rsample((7,))
    assert z.shape == (7, 4, 2) and q.log_prob(z).shape == (7, 4)
    grid = square_grid(10.0, 301)
    with torch.no_grad():                       # each image's q integrates to 1
        log_q = encoder(x).log_prob(grid.points[:, None, :])        # (G, 4)
    for i in range(4):
        assert abs(grid.log_integral(log_q[:, i])) < 1e-6


def test_planar_flow_encoder_starts_volume_preserving():
    encoder = PlanarFlowEncoder(6, 2, 4, hidden=5).double()
    params = encoder.raw_outputs(torch.rand(3, 6, dtype=_F64))
    t = PlanarStackTransform(params["u"], params["w"], params["b"])
    z = torch.randn(5, 3, 2, dtype=_F64)
    # the biases were set in float32 (before .double()): w^T u = log(e - 1) to 1e-7
    assert float(t.log_abs_det_jacobian(z, t(z)).detach().abs().max()) < 1e-6


def test_refine_flow_posterior_needs_flow_encoder():
    model = torch.nn.Module()
    model.encoder = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match="PlanarFlowEncoder"):
        refine_flow_posterior(model, torch.zeros(2, 2), 5)


def test_refinement_step_is_vae_elbo_of():
    """The unchecked ELBO of a refinement step is the public vae_elbo_of, bit for bit
    (same draws): rejects a kernel that drifted from the checked function."""
    from elbo_lib.vae.flow_encoder import _vae_elbo_of

    model = _flow_vae()
    q = model.encode(_XF)
    torch.manual_seed(3)
    public = vae_elbo_of(model, _XF, q, 5)
    torch.manual_seed(3)
    assert torch.equal(public, _vae_elbo_of(model, _XF, q, 5))


@pytest.mark.parametrize("num_layers", [0, 2])
def test_train_flow_vaes_reproduces_train_vae(num_layers):
    """Each batched run follows its own train_vae trajectory (same draws, same KL form);
    rejects a wrong noise order, a wrong KL (closed form vs Monte Carlo) or a gradient
    that mixes the runs.

    In float64: in float32 the two paths' products round differently on some CPUs
    (AVX-512: batched and single runs of the planar encoder differed by 1.5e-3 after one
    epoch, and no more after three, while AVX2 kernels gave equal bits), because Adam
    divides each gradient by its own root mean square, so a parameter whose gradient is
    round-off takes a step of about lr (1e-3) in a direction the round-off picks. In
    float64 the paths agree to 1e-16 after three epochs; each wrong answer above moves
    the parameters by far more than the tolerance."""
    torch.manual_seed(0)
    x = (torch.rand(40, 6) < 0.4).double()
    models, generators, starts = [], [], []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        models.append(VAE(6, 2, 5, encoder=PlanarFlowEncoder(6, 2, num_layers, hidden=5))
                      .double())
        starts.append(torch.get_rng_state())
        generators.append(torch.Generator().set_state(starts[-1]))
    solo = [copy.deepcopy(m) for m in models]
    histories = train_flow_vaes(models, x[:30], x[30:], 3, generators, batch_size=8)
    for model, alone, generator, start, history in zip(models, solo, generators, starts,
                                                       histories, strict=True):
        torch.set_rng_state(start)
        expected = train_vae(alone, x[:30], x[30:], 3, batch_size=8)
        assert torch.equal(torch.get_rng_state(), generator.get_state())
        for a, b in zip(model.parameters(), alone.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(history.val_elbo, expected.val_elbo, rtol=1e-10, atol=0)


# -- chapter 8's objectives: IWAE_k with the doubly reparameterised gradient, Renyi's bound
def _losses_and_gradients(objective, model, x, seed):
    """The objective's loss on x from the draws of ``seed`` and its gradients in the
    encoder's and the decoder's parameters."""
    torch.manual_seed(seed)
    loss = objective.loss(model, x).loss
    grads = torch.autograd.grad(loss, list(model.parameters()))
    names = [name for name, _ in model.named_parameters()]
    return loss.detach(), {n: g for n, g in zip(names, grads, strict=True)}


def test_dreg_is_iwae_in_value_and_in_the_decoders_gradient(toy_data):
    """For the same draws, IWAEDReG(k)'s loss is IWAE(k)'s and so is its decoder's
    gradient (the sum over samples of w~_j grad log p(x | z_j)); its encoder's gradient
    is another estimate (a DReG that moved the decoder's gradient too, or a loss with
    weights w~_j^2 in value, would fail)."""
    seed_everything(0)
    model = VAE(6, 2, hidden=8)
    iwae_loss, iwae_grads = _losses_and_gradients(IWAE(5), model, toy_data, seed=1)
    dreg_loss, dreg_grads = _losses_and_gradients(IWAEDReG(5), model, toy_data, seed=1)
    torch.testing.assert_close(dreg_loss, iwae_loss)
    for name, grad in iwae_grads.items():
        if name.startswith("decoder."):
            torch.testing.assert_close(dreg_grads[name], grad, rtol=1e-5, atol=1e-7)
        else:
            assert not torch.allclose(dreg_grads[name], grad, atol=1e-3), name


def _stl_iwae_loss(model, x, k):
    """IWAE_k with the score part dropped (sticking the landing; biased for k > 1): the
    plain loss with log q's parameters held fixed and no reweighting of the path."""
    q = model.encode(x)
    z = q.rsample((k,))
    held = DiagonalGaussianPosterior(q.mean.detach(), q.logvar.detach())
    log_w = bernoulli_log_likelihood(x, model.decode(z)) + log_prior(z) - held.log_prob(z)
    return -importance_weighted_bound(log_w, dim=0).mean()


def _encoder_output_gradients(loss_of, model, x):
    """Per-image gradients of loss_of(model, x) (a mean over the images) in the
    encoder's outputs (mean, logvar), times n: one gradient estimate per image."""
    outputs = []
    handle = model.encoder[2].register_forward_hook(lambda mod, inp, out: outputs.append(out))
    try:
        loss = loss_of(model, x)
    finally:
        handle.remove()
    return torch.autograd.grad(loss, outputs[0])[0].double() * len(x)


def test_dreg_encoder_gradient_has_the_iwae_gradients_mean(toy_data):
    """Over 40000 independent draws for one image (the image repeated), the mean of
    IWAEDReG(5)'s gradient in the encoder's outputs (mean, logvar of q) agrees with plain
    IWAE(5)'s within 4.5 standard errors in every coordinate, while the biased
    sticking-the-landing estimate is rejected by the same comparison: the test can
    fail. (The encoder's parameters' gradient is a fixed linear map of these.)"""
    seed_everything(0)
    model = VAE(6, 2, hidden=8)
    with torch.no_grad():
        model.encoder[2].bias[2:] = 0.7       # a q wider than the posterior: bounded w
    x = toy_data[:1].expand(40000, 6)
    grads = {}
    for name, loss_of in (("iwae", lambda m, x: IWAE(5).loss(m, x).loss),
                          ("dreg", lambda m, x: IWAEDReG(5).loss(m, x).loss),
                          ("stl", lambda m, x: _stl_iwae_loss(m, x, 5))):
        torch.manual_seed(7)
        grads[name] = _encoder_output_gradients(loss_of, model, x)

    def z_scores(a, b):
        se = torch.sqrt(a.var(0) / len(a) + b.var(0) / len(b))
        return ((a.mean(0) - b.mean(0)).abs() / se).max().item()

    assert z_scores(grads["dreg"], grads["iwae"]) < 4.5
    assert z_scores(grads["stl"], grads["iwae"]) > 8.0
    # and DReG's estimate is the less noisy one for q's mean (Tucker et al.)
    assert bool((grads["dreg"][:, :2].var(0) < grads["iwae"][:, :2].var(0)).all())


def test_renyi_vr_at_its_limits_is_iwae_and_the_elbo(toy_data):
    """For the same draws: RenyiVR(0, k) is IWAE(k)'s loss and gradient; RenyiVR(1, k) is
    minus the mean of the k log weights (the ELBO's estimate) and alpha -> 1 tends to it;
    at k = 1 every alpha is IWAE(1); and the loss does not decrease with alpha (the
    k-sample bound is a power mean of the weights, non-increasing in alpha)."""
    seed_everything(0)
    model = VAE(6, 2, hidden=8)
    iwae_loss, iwae_grads = _losses_and_gradients(IWAE(5), model, toy_data, seed=2)
    vr_loss, vr_grads = _losses_and_gradients(RenyiVR(0.0, 5), model, toy_data, seed=2)
    torch.testing.assert_close(vr_loss, iwae_loss)
    for name, grad in iwae_grads.items():
        torch.testing.assert_close(vr_grads[name], grad, rtol=1e-5, atol=1e-7)
    torch.manual_seed(2)
    log_w = importance_log_weights(model, toy_data, 5)                 # the same draws
    elbo_estimate = -log_w.mean(0).mean()
    at_one = _losses_and_gradients(RenyiVR(1.0, 5), model, toy_data, seed=2)[0]
    near_one = _losses_and_gradients(RenyiVR(1 - 1e-4, 5), model, toy_data, seed=2)[0]
    torch.testing.assert_close(at_one, elbo_estimate.detach())
    assert abs(float(near_one - at_one)) < 1e-3 < abs(float(iwae_loss - at_one))
    one_sample = _losses_and_gradients(IWAE(1), model, toy_data, seed=3)[0]
    for alpha in (-2.0, 0.5, 3.0):
        torch.testing.assert_close(
            _losses_and_gradients(RenyiVR(alpha, 1), model, toy_data, seed=3)[0],
            one_sample)
    losses = [_losses_and_gradients(RenyiVR(a, 5), model, toy_data, seed=4)[0]
              for a in (-math.inf, -1.0, 0.0, 0.5, 1.0, 2.0)]
    assert all(a <= b + 1e-6 for a, b in itertools.pairwise(losses))
    assert losses[0] < losses[-1] - 0.1


def _test_stack(models, objective):
    """A stack of the given models (each run its own networks), drawing each run's noise
    in turn from torch's global generator, as each model's own loss would."""
    def encode(x):
        qs = [m.encoder(xr) for m, xr in zip(models, x, strict=True)]
        return torch.stack([q.mean for q in qs]), torch.stack([q.logvar for q in qs])

    return types.SimpleNamespace(
        encode=encode,
        decode=lambda z: torch.stack([m.decode(zr) for m, zr in zip(models, z, strict=True)]),
        kl_units=lambda mean, logvar: 0.5 * (logvar.exp() + mean**2 - 1 - logvar),
        noise=lambda *shape: torch.stack([torch.randn(*shape) for _ in models]),
        latent_dim=models[0].latent_dim, dtype=torch.float32,
        objectives=[objective] * len(models))


@pytest.mark.parametrize("objective", [IWAE(4), IWAEDReG(4), RenyiVR(0.5, 4),
                                       RenyiVR(-math.inf, 4)], ids=repr)
def test_stacked_loss_is_each_runs_own_loss(objective, toy_data):
    """For each run of a stack of three, the stacked loss and its gradient in that run's
    parameters equal the run's own loss and gradient at the same draws (a DReG hook
    that scaled one run's samples by another run's weights, or a mean over the runs
    where a sum belongs, would fail)."""
    models = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        models.append(VAE(6, 2, hidden=8))
    x = torch.stack([toy_data[:16], toy_data[16:32], toy_data[24:40]])
    torch.manual_seed(5)
    out = objective.stacked_loss(_test_stack(models, objective), x)
    stacked_grads = torch.autograd.grad(out.loss.sum(), [p for m in models
                                                         for p in m.parameters()])
    torch.manual_seed(5)
    alone = [objective.loss(m, xr) for m, xr in zip(models, x, strict=True)]
    alone_grads = [g for m, a in zip(models, alone, strict=True)
                   for g in torch.autograd.grad(a.loss, list(m.parameters()))]
    torch.testing.assert_close(out.loss.detach(), torch.stack([a.loss for a in alone]).detach())
    torch.testing.assert_close(out.reconstruction.detach(),
                               torch.stack([a.reconstruction.sum() for a in alone]).detach())
    for a, b in zip(stacked_grads, alone_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_new_objectives_train(toy_data):
    """IWAEDReG and RenyiVR raise the validation ELBO through the unchanged train_vae."""
    for objective in (IWAEDReG(5), RenyiVR(0.5, 5)):
        seed_everything(9)
        model = VAE(6, 2, hidden=8)
        h = train_vae(model, toy_data, toy_data, 15, batch_size=10, lr=0.01,
                      objective=objective)
        assert h.val_elbo[-1] > h.val_elbo[0] + 0.5, objective


for _name, _cases in {
    "IWAEDReG": [(lambda: IWAEDReG(0), ValueError, r"k must be >= 1"),
                 (lambda: IWAEDReG(2.5), TypeError, r"k must be an integer")],
    "RenyiVR": [(lambda: RenyiVR(math.nan, 5), ValueError, r"alpha must be finite"),
                (lambda: RenyiVR("a", 5), TypeError, r"alpha must be a real number"),
                (lambda: RenyiVR(0.5, 0), ValueError, r"k must be >= 1"),
                (lambda: RenyiVR(0.5, 2.5), TypeError, r"k must be an integer")],
}.items():
    BAD_INPUTS.setdefault(_name, []).extend(_cases)
