import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal

from elbo_lib.bounds import monte_carlo_elbo
from elbo_lib.models import ConjugateGaussianMean


@pytest.fixture
def model(rng):
    return ConjugateGaussianMean(rng.normal(1.0, 1.0, size=10), 1.0, 0.0, 2.0)


def _q(m, v):
    return Normal(torch.tensor(m, dtype=torch.float64), torch.tensor(v, dtype=torch.float64) ** 0.5)


def test_mc_elbo_is_unbiased_within_standard_error(model):
    torch.manual_seed(0)
    est, se = monte_carlo_elbo(model.log_joint, _q(0.5, 0.3), 20_000, return_std_error=True)
    exact = model.elbo(0.5, 0.3)
    assert abs(est.item() - exact) < 4 * se.item()
    assert 0 < se.item() < 0.1


def test_mc_elbo_is_exact_at_the_posterior(model):
    """At q = p(z|x), log p(x,z) - log q(z) = log p(x) for every z: zero variance."""
    torch.manual_seed(0)
    est, se = monte_carlo_elbo(model.log_joint, model.posterior(), 5, return_std_error=True)
    assert est.item() == pytest.approx(model.log_evidence(), abs=1e-10)
    assert se.item() < 1e-10


def test_mc_elbo_pathwise_gradient_matches_closed_form(model):
    torch.manual_seed(0)
    mean = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    q = Normal(mean, torch.tensor(0.5, dtype=torch.float64))
    monte_carlo_elbo(model.log_joint, q, 50_000).backward()
    h = 1e-6
    fd = (model.elbo(0.2 + h, 0.25) - model.elbo(0.2 - h, 0.25)) / (2 * h)
    # d ELBO / d mean is linear in z here, so the estimator's error is small
    assert mean.grad.item() == pytest.approx(fd, abs=0.05)


def test_mc_elbo_without_rsample_has_no_gradient(model):
    mean = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    q = Normal(mean, torch.tensor(0.5, dtype=torch.float64))
    est = monte_carlo_elbo(model.log_joint, q, 10, reparameterize=False)
    est.backward()  # only through log q(z): the score term
    assert mean.grad is not None


def test_mc_elbo_multivariate_q():
    q = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)

    def log_joint(z):
        return Independent(Normal(torch.zeros(3), torch.ones(3)), 1).log_prob(z)

    assert monte_carlo_elbo(log_joint, q, 7).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("args, err, msg", [
    ((lambda z: z, "q", 10), TypeError, "Distribution"),
    (("f", Normal(0.0, 1.0), 10), TypeError, "callable"),
    ((lambda z: z, Normal(0.0, 1.0), 0), ValueError, "num_samples"),
    ((lambda z: z, Normal(0.0, 1.0), 2.5), TypeError, "num_samples"),
    ((lambda z: z, Normal(torch.zeros(2), torch.ones(2)), 10), ValueError, "batch_shape"),
    ((lambda z: z.sum(), Normal(0.0, 1.0), 10), ValueError, "shape"),
    ((lambda z: z * np.inf, Normal(0.0, 1.0), 10), ValueError, "finite"),
])
def test_mc_elbo_bad_input(args, err, msg):
    with pytest.raises(err, match=msg):
        monte_carlo_elbo(*args)


def test_mc_elbo_rsample_required():
    with pytest.raises(ValueError, match="rsample"):
        monte_carlo_elbo(lambda z: z, Bernoulli(torch.tensor(0.5)), 10)
    with pytest.raises(ValueError, match="num_samples"):
        monte_carlo_elbo(lambda z: z, Normal(0.0, 1.0), 1, return_std_error=True)


