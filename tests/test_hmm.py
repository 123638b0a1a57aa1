"""Tests of elbo_lib.hmm (chapter 2): forward-backward, Viterbi and Baum-Welch."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from elbo_lib.em import match_components
from elbo_lib.hmm import (
    GaussianHMM,
    chain_entropy,
    enumerate_posterior,
    forward_backward,
    sample_gaussian_hmm,
    viterbi,
)

PI = np.array([0.5, 0.3, 0.2])
A = np.array([[0.90, 0.05, 0.05], [0.10, 0.80, 0.10], [0.05, 0.15, 0.80]])
MEANS = np.array([[-2.0, 0.0], [0.0, 1.5], [2.5, -1.0]])
COVS = np.stack([0.5 * np.eye(2), np.array([[0.4, 0.2], [0.2, 0.3]]), 0.6 * np.eye(2)])


def _random_hmm(rng, K, T, d=1, zeros=False):
    pi = rng.dirichlet(np.ones(K))
    trans = rng.dirichlet(np.ones(K), size=K)
    if zeros:  # forbid some transitions (log A = -inf), keep rows stochastic
        trans[0, -1] = 0.0
        trans /= trans.sum(axis=1, keepdims=True)
    means = rng.normal(scale=2.0, size=(K, d))
    covs = np.stack([np.eye(d) * s for s in rng.uniform(0.3, 1.5, K)])
    X, _ = sample_gaussian_hmm(pi, trans, means, covs, T, rng)
    log_b = np.stack([multivariate_normal(means[k], covs[k]).logpdf(X).reshape(T)
                      for k in range(K)], axis=1)
    with np.errstate(divide="ignore"):
        return np.log(pi), np.log(trans), log_b


@pytest.mark.parametrize("seed,K,T,zeros", [(0, 2, 10, False), (1, 3, 8, False),
                                            (2, 3, 7, True), (3, 4, 6, False),
                                            (4, 2, 1, False)])
def test_forward_backward_equals_enumeration(seed, K, T, zeros):
    rng = np.random.default_rng(seed)
    log_pi, log_A, log_b = _random_hmm(rng, K, T, d=2, zeros=zeros)
    ll, gamma, xi_sum, xi = forward_backward(log_pi, log_A, log_b, return_pairwise=True)
    ref = enumerate_posterior(log_pi, log_A, log_b)
    assert abs(ll - ref["log_likelihood"]) < 1e-10
    assert np.max(np.abs(gamma - ref["gamma"])) < 1e-10
    if T > 1:
        assert np.max(np.abs(xi - ref["xi"])) < 1e-10
        np.testing.assert_allclose(xi_sum, ref["xi"].sum(axis=0), atol=1e-10)
    assert abs(chain_entropy(gamma, xi) - ref["entropy"]) < 1e-10
    path, log_joint = viterbi(log_pi, log_A, log_b)
    assert abs(log_joint - ref["map_log_joint"]) < 1e-10
    np.testing.assert_array_equal(path, ref["map_path"])


def test_extreme_emissions_stay_finite():
    rng = np.random.default_rng(0)
    T, K = 3000, 3
    log_b = rng.uniform(-5000.0, -1000.0, size=(T, K))  # densities far below 1e-300
    ll, gamma, xi_sum = forward_backward(np.log(PI), np.log(A), log_b)
    assert np.isfinite(ll) and ll < -1000.0 * T
    np.testing.assert_allclose(gamma.sum(axis=1), 1.0, atol=1e-12)
    assert abs(xi_sum.sum() - (T - 1)) < 1e-8


def test_sampler_statistics():
    rng = np.random.default_rng(1)
    X, z = sample_gaussian_hmm(PI, A, MEANS, COVS, 20_000, rng)
    counts = np.zeros((3, 3))
    np.add.at(counts, (z[:-1], z[1:]), 1)
    assert np.max(np.abs(counts / counts.sum(axis=1, keepdims=True) - A)) < 0.02
    for k in range(3):
        assert np.max(np.abs(X[z == k].mean(axis=0) - MEANS[k])) < 0.05


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(3)
    X, z = sample_gaussian_hmm(PI, A, MEANS, COVS, 1500, rng)
    model = GaussianHMM(3, rng=rng, tol=1e-6, max_iter=300).fit(X)
    return X, z, model


def test_baum_welch_monotone_and_tight(fitted):
    _, _, model = fitted
    ll = model.log_likelihood_
    assert model.converged_ and ll.shape == (model.n_iter_ + 1,)
    assert np.all(np.diff(ll) >= -1e-8)
    assert np.max(np.abs(model.elbo_after_e_step_ - ll[:-1])) < 1e-10 * np.abs(ll).max()
    assert np.all(model.elbo_after_m_step_ >= model.elbo_after_e_step_ - 1e-8)
    assert np.all(model.elbo_after_m_step_ <= ll[1:] + 1e-8)


def test_baum_welch_recovers_truth(fitted):
    X, z, model = fitted
    perm = match_components(MEANS, model.means_)
    assert np.max(np.abs(model.means_[perm] - MEANS)) < 0.1
    assert np.max(np.abs(model.transmat_[np.ix_(perm, perm)] - A)) < 0.05
    assert np.max(np.abs(model.covariances_[perm] - COVS)) < 0.1
    states = np.argsort(perm)[model.predict(X)]
    assert np.mean(states == z) > 0.95
    gamma = model.posterior(X)
    np.testing.assert_allclose(gamma.sum(axis=1), 1.0, atol=1e-12)
    assert abs(model.score(X) * len(X) - model.log_likelihood_[-1]) < 1e-8


def test_one_dimensional_input_and_defaults():
    rng = np.random.default_rng(0)
    X, _ = sample_gaussian_hmm([0.5, 0.5], [[0.95, 0.05], [0.05, 0.95]], [[-3.0], [3.0]],
                               [[[1.0]], [[1.0]]], 400, rng)
    model = GaussianHMM(2, rng=0).fit(X[:, 0])
    assert np.allclose(np.sort(model.means_[:, 0]), [-3.0, 3.0], atol=0.3)


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: forward_backward(np.log(PI), np.log(A * 1.1), np.zeros((4, 3))), ValueError,
     "rows? of exp\\(log_A\\) must sum to 1"),
    (lambda: forward_backward(np.log([0.5, 0.5]), np.log(A), np.zeros((4, 3))), ValueError,
     "log_pi must have shape"),
    (lambda: forward_backward(np.log(PI), np.log(A), np.full((4, 3), np.nan)), ValueError,
     "finite"),
    (lambda: enumerate_posterior(np.log(PI), np.log(A), np.zeros((30, 3))), ValueError,
     "too large"),
    (lambda: forward_backward(np.log(PI), np.log(A[:2]), np.zeros((4, 3))), ValueError,
     "shape"),
    (lambda: GaussianHMM(3, rng=0).fit(np.zeros((2, 1))), ValueError, "at least"),
    (lambda: GaussianHMM(2, rng=0).fit(np.array([0.0, np.inf, 1.0])), ValueError, "finite"),
    (lambda: GaussianHMM(2, transmat_init=[[1.0, 0.0]], rng=0).fit(np.arange(10.0)),
     ValueError, "transmat_init"),
    (lambda: GaussianHMM(2.0, rng=0).fit(np.arange(10.0)), TypeError, "integer"),
    (lambda: GaussianHMM(2, tol=-1.0, rng=0).fit(np.arange(10.0)), ValueError, ">= 0"),
    (lambda: GaussianHMM(2).fit(np.arange(10.0)), TypeError, "rng"),
    (lambda: GaussianHMM(2).posterior(np.arange(5.0)), ValueError, "not fitted"),
    (lambda: sample_gaussian_hmm(PI, A, MEANS, COVS, 5, "seed"), TypeError, "Generator"),
    (lambda: sample_gaussian_hmm(PI, A * 1.1, MEANS, COVS, 5, 0), ValueError, "summing to 1"),
])
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()



def test_scaled_and_log_space_paths_agree():
    from elbo_lib.hmm.posterior import _forward_backward_log, _forward_backward_scaled

    rng = np.random.default_rng(7)
    log_pi, log_A, log_b = _random_hmm(rng, 4, 300, d=2, zeros=True)
    fast = _forward_backward_scaled(log_pi, log_A, log_b, pairwise=True)
    lean = _forward_backward_scaled(log_pi, log_A, log_b, pairwise=False)
    slow = _forward_backward_log(log_pi, log_A, log_b)
    assert fast is not None and lean is not None and lean[3] is None
    assert abs(fast[0] - slow[0]) < 1e-9
    np.testing.assert_allclose(fast[1], slow[1], atol=1e-10)
    np.testing.assert_allclose(fast[3], slow[2], atol=1e-10)
    # the sum over t without the (T-1, K, K) array equals the sum of the full array
    np.testing.assert_allclose(lean[2], slow[2].sum(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fast[2], slow[2].sum(axis=0), rtol=1e-10, atol=1e-10)
    # start in state 0, which moves to state 1 almost surely, but at t = 1 state 1 emits
    # with density e^-2000 relative to state 0: the scaled message underflows and the
    # log-space path must take over, still matching enumeration
    log_b = np.zeros((3, 2))
    log_b[1] = [0.0, -2000.0]
    log_pi = np.log([1.0, 1e-300]) - np.log1p(1e-300)
    log_A = np.log([[1e-300, 1.0], [0.5, 0.5]])
    log_A -= np.logaddexp.reduce(log_A, axis=1, keepdims=True)
    assert _forward_backward_scaled(log_pi, log_A, log_b, pairwise=False) is None
    ll, gamma, _ = forward_backward(log_pi, log_A, log_b)
    ref = enumerate_posterior(log_pi, log_A, log_b)
    assert abs(ll - ref["log_likelihood"]) < 1e-10 * abs(ll)
    assert np.max(np.abs(gamma - ref["gamma"])) < 1e-10


def _numpy_loop_forward_backward(log_pi, log_A, log_B):
    """The library's forward-backward before issue 32: a NumPy loop over t (reference)."""
    T, K = log_B.shape
    A_ = np.exp(log_A)
    shift = log_B.max(axis=1)
    B = np.exp(log_B - shift[:, None])
    alpha, c = np.empty((T, K)), np.empty(T)
    v = np.exp(log_pi) * B[0]
    for t in range(T):
        if t > 0:
            v = (alpha[t - 1] @ A_) * B[t]
        c[t] = v.sum()
        alpha[t] = v / c[t]
    beta = np.ones((T, K))
    for t in range(T - 2, -1, -1):
        beta[t] = (A_ @ (B[t + 1] * beta[t + 1])) / c[t + 1]
    right = (B[1:] * beta[1:]) / c[1:, None]
    xi = alpha[:-1, :, None] * A_[None] * right[:, None, :]
    return float(np.log(c).sum() + shift.sum()), alpha * beta, xi


@pytest.mark.parametrize("seed,K,T,zeros", [(10, 2, 1, False), (11, 3, 2, False),
                                            (12, 4, 500, True), (13, 8, 2000, False),
                                            (14, 16, 300, True), (15, 64, 200, False),
                                            (16, 5, 20_000, False)])
def test_compiled_recursions_equal_numpy_loop(seed, K, T, zeros):
    # the compiled kernel against the NumPy loop it replaced: log p(x) to 1e-10 relative
    # (absolute 1e-10 where |log p(x)| < 1), the marginals to 1e-10 absolute
    rng = np.random.default_rng(seed)
    log_pi, log_A, log_b = _random_hmm(rng, K, T, d=2, zeros=zeros)
    ll, gamma, xi_sum, xi = forward_backward(log_pi, log_A, log_b, return_pairwise=True)
    ll_ref, gamma_ref, xi_ref = _numpy_loop_forward_backward(log_pi, log_A, log_b)
    assert abs(ll - ll_ref) <= 1e-10 * max(1.0, abs(ll_ref))
    assert np.max(np.abs(gamma - gamma_ref)) < 1e-10
    assert xi.shape == xi_ref.shape == (T - 1, K, K)
    if T > 1:
        assert np.max(np.abs(xi - xi_ref)) < 1e-10
    np.testing.assert_allclose(xi_sum, xi_ref.sum(axis=0), rtol=1e-10, atol=1e-10)
    assert forward_backward(log_pi, log_A, log_b)[0] == ll


def test_baum_welch_elbo_trace_equals_chain_entropy_bound():
    # the fit takes H[q_t] = log p(x | theta_{t-1}) - E_q[log p(x, z | theta_{t-1})];
    # recompute both half-step bounds from the per-step pairwise marginals with
    # chain_entropy, at the parameters of fits stopped after 0, 1, 2, ... iterations
    rng = np.random.default_rng(5)
    X, _ = sample_gaussian_hmm(PI, A, MEANS, COVS, 400, rng)
    init = {"startprob_init": np.full(3, 1 / 3), "transmat_init": np.full((3, 3), 1 / 3),
            "means_init": MEANS + 0.7, "covariances_init": COVS * 2.0}
    n = 4
    model = GaussianHMM(3, tol=0.0, max_iter=n, **init).fit(X)
    params = [(init["startprob_init"], init["transmat_init"], init["means_init"],
               init["covariances_init"])]
    for stop in range(1, n + 1):
        m = GaussianHMM(3, tol=0.0, max_iter=stop, **init).fit(X)
        params.append((m.startprob_, m.transmat_, m.means_, m.covariances_))

    def bound(gamma, xi, theta):
        pi, trans, means, covs = theta
        log_b = model.emission_log_prob(X, means, covs)
        with np.errstate(divide="ignore"):
            log_pi, log_A = np.log(pi), np.log(trans)
        e = (gamma[0] @ np.where(gamma[0] > 0, log_pi, 0.0)
             + np.sum(np.where(xi > 0, xi * np.where(xi > 0, log_A, 0.0), 0.0))
             + np.sum(gamma * log_b))
        return e + chain_entropy(gamma, xi)

    for t in range(1, n + 1):
        pi, trans, means, covs = params[t - 1]
        with np.errstate(divide="ignore"):
            ll, gamma, _, xi = forward_backward(np.log(pi), np.log(trans),
                                                model.emission_log_prob(X, means, covs),
                                                return_pairwise=True)
        scale = abs(ll)
        assert abs(model.log_likelihood_[t - 1] - ll) < 1e-10 * scale
        assert abs(model.elbo_after_e_step_[t - 1] - bound(gamma, xi, params[t - 1])) \
            < 1e-10 * scale
        assert abs(model.elbo_after_m_step_[t - 1] - bound(gamma, xi, params[t])) \
            < 1e-10 * scale


@pytest.mark.parametrize("lengths", [[1, 40, 2, 57], [100], [1] * 5 + [95]])
def test_many_sequences_equal_one_call_per_sequence(lengths):
    rng = np.random.default_rng(21)
    log_pi, log_A, log_b = _random_hmm(rng, 4, sum(lengths), d=2, zeros=True)
    ll, gamma, xi_sum, xi = forward_backward(log_pi, log_A, log_b, return_pairwise=True,
                                             lengths=lengths)
    edges = np.cumsum([0, *lengths])
    parts = [forward_backward(log_pi, log_A, log_b[a:b], return_pairwise=True)
             for a, b in zip(edges[:-1], edges[1:], strict=True)]
    assert abs(ll - sum(p[0] for p in parts)) < 1e-10 * abs(ll)
    np.testing.assert_allclose(gamma, np.concatenate([p[1] for p in parts]), atol=1e-12)
    np.testing.assert_allclose(xi_sum, sum(p[2] for p in parts), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(xi, np.concatenate([p[3] for p in parts]), atol=1e-12)
    assert xi.shape == (sum(lengths) - len(lengths), 4, 4)
    # a sequence that underflows on the scaled path is redone in log space, alone
    bad = np.zeros((3, 2))
    bad[1] = [0.0, -2000.0]
    lp = np.log([1.0, 1e-300]) - np.log1p(1e-300)
    la = np.log([[1e-300, 1.0], [0.5, 0.5]])
    la -= np.logaddexp.reduce(la, axis=1, keepdims=True)
    stacked = np.concatenate([np.zeros((4, 2)), bad])
    ll2, gamma2, _ = forward_backward(lp, la, stacked, lengths=[4, 3])
    ref = [enumerate_posterior(lp, la, stacked[:4]), enumerate_posterior(lp, la, bad)]
    assert abs(ll2 - ref[0]["log_likelihood"] - ref[1]["log_likelihood"]) < 1e-10 * abs(ll2)
    np.testing.assert_allclose(gamma2, np.concatenate([r["gamma"] for r in ref]),
                               atol=1e-10)


def test_baum_welch_on_many_sequences():
    rng = np.random.default_rng(8)
    lengths = [int(n) for n in rng.integers(5, 60, size=30)]
    X, _ = sample_gaussian_hmm(PI, A, MEANS, COVS, sum(lengths), rng)
    init = {"means_init": MEANS + 0.3, "covariances_init": COVS * 1.5}
    model = GaussianHMM(3, tol=1e-8, max_iter=200, **init).fit(X, lengths=lengths)
    ll = model.log_likelihood_
    assert np.all(np.diff(ll) >= -1e-8)
    assert np.max(np.abs(model.elbo_after_e_step_ - ll[:-1])) < 1e-10 * np.abs(ll).max()
    assert np.all(model.elbo_after_m_step_ <= ll[1:] + 1e-8)
    # the final log-likelihood is the sum over the sequences, each scored alone
    edges = np.cumsum([0, *lengths])
    per_sequence = sum(model.score(X[a:b]) * (b - a)
                       for a, b in zip(edges[:-1], edges[1:], strict=True))
    assert abs(ll[-1] - per_sequence) < 1e-9 * abs(ll[-1])
    assert abs(model.score(X, lengths) * len(X) - ll[-1]) < 1e-9 * abs(ll[-1])
    # at the fixed point pi is the mean posterior of the first steps
    gamma = model.posterior(X, lengths)
    np.testing.assert_allclose(model.startprob_, gamma[edges[:-1]].mean(axis=0), atol=1e-5)
    path = model.predict(X, lengths)
    np.testing.assert_array_equal(path[edges[1]:edges[2]], model.predict(X[edges[1]:edges[2]]))
    # one length equal to T is the single-sequence fit
    one = GaussianHMM(3, tol=0.0, max_iter=3, **init)
    np.testing.assert_array_equal(one.fit(X, lengths=[len(X)]).log_likelihood_,
                                  GaussianHMM(3, tol=0.0, max_iter=3, **init).fit(X)
                                  .log_likelihood_)


# ---------------------------------------------------------------------------------------
# Contract cases (issue 16): every public name of elbo_lib.hmm has bad-input cases.
# ---------------------------------------------------------------------------------------
_LP, _LA = np.log(PI), np.log(A)
_LB = np.zeros((4, 3))
_X_SEQ = sample_gaussian_hmm(PI, A, MEANS, COVS, 30, 0)[0]
_GAMMA = np.full((3, 2), 0.5)
_XI = np.full((2, 2, 2), 0.25)


def _hmm_fitted():
    return GaussianHMM(3, rng=0, max_iter=3).fit(_X_SEQ)


def _fit_two_steps():
    X = np.array([[0.0], [1.0]])
    return GaussianHMM(2, rng=0).fit(X), X


def _assert_two_step_fit(out):
    model, X = out
    ll = model.log_likelihood_
    assert np.all(np.isfinite(ll)) and np.all(np.diff(ll) >= -1e-9), ll
    np.testing.assert_allclose(model.transmat_.sum(axis=1), 1.0, rtol=1e-12)
    # the final log-likelihood is the enumerated one at the fitted parameters
    with np.errstate(divide="ignore"):
        ref = enumerate_posterior(np.log(model.startprob_), np.log(model.transmat_),
                                  model.emission_log_prob(X))["log_likelihood"]
    np.testing.assert_allclose(ll[-1], ref, rtol=1e-10)


BAD_INPUTS = {
    "forward_backward": [
        (lambda: forward_backward(_LP, np.log(A * 1.1), _LB), ValueError,
         r"every row of exp\(log_A\) must sum to 1"),
        (lambda: forward_backward(np.log([0.5, 0.5]), _LA, _LB), ValueError,
         r"log_pi must have shape \(3,\)"),
        (lambda: forward_backward(_LP, _LA, np.full((4, 3), np.nan)), ValueError,
         r"log_B must contain only finite"),
        (lambda: forward_backward(_LP, _LA[:2], _LB), ValueError,
         r"log_A must have shape \(3, 3\)"),
        (lambda: forward_backward("pi", _LA, _LB), TypeError, r"log_pi must be numeric"),
        (lambda: forward_backward(np.array([0.0, np.nan, 0.0]), _LA, _LB), ValueError,
         r"log_pi must be log-probabilities"),
        (lambda: forward_backward(_LP, _LA, np.zeros((0, 3))), ValueError,
         r"log_B must not be empty"),
        (lambda: forward_backward(_LP, _LA, _LB, lengths=[2, 3]), ValueError,
         r"lengths must sum to the number of steps T=4, got 5"),
        (lambda: forward_backward(_LP, _LA, _LB, lengths=[4, 0]), ValueError,
         r"lengths must be >= 1 each"),
        (lambda: forward_backward(_LP, _LA, _LB, lengths=[2.0, 2.0]), TypeError,
         r"lengths must be a non-empty 1-D sequence of integers"),
        (lambda: forward_backward(_LP, _LA, _LB, lengths=[[1, 3]]), TypeError,
         r"lengths must be a non-empty 1-D sequence of integers"),
    ],
    "enumerate_posterior": [
        (lambda: enumerate_posterior(_LP, _LA, np.zeros((30, 3))), ValueError,
         r"log_B has T=30 steps: enumeration over K\^T = 3\^30 sequences is too large"),
        (lambda: enumerate_posterior(_LP + 1.0, _LA, _LB), ValueError,
         r"exp\(log_pi\) must sum to 1"),
    ],
    "chain_entropy": [
        (lambda: chain_entropy(np.full((3, 2), 2.0), _XI), ValueError,
         r"gamma must be >= 0 with rows summing to 1"),
        (lambda: chain_entropy(_GAMMA, np.full((2, 2, 2), 0.5)), ValueError,
         r"xi must be >= 0 with every xi_t summing to 1"),
        (lambda: chain_entropy(_GAMMA, np.array([[[0.5, 0.5], [0.0, 0.0]]] * 2)),
         ValueError, r"xi must be consistent with gamma"),
        (lambda: chain_entropy(_GAMMA, np.full((2, 2, 2), np.nan)), ValueError,
         r"xi must contain only finite"),
        (lambda: chain_entropy(_GAMMA, _XI[:1]), ValueError,
         r"xi must have shape \(2, 2, 2\)"),
    ],
    "viterbi": [
        (lambda: viterbi(_LP, _LA, np.zeros((4, 2))), ValueError,
         r"log_pi must have shape \(2,\)"),
        (lambda: viterbi(_LP, np.full((3, 3), np.inf), _LB), ValueError,
         r"log_A must be log-probabilities"),
    ],
    "sample_gaussian_hmm": [
        (lambda: sample_gaussian_hmm(PI, A, MEANS, -COVS, 5, 0), ValueError,
         r"covariances\[0\] must be positive definite"),
        (lambda: sample_gaussian_hmm(PI, A, MEANS, COVS, 0, 0), ValueError,
         r"num_steps must be >= 1"),
        (lambda: sample_gaussian_hmm(PI, A, MEANS, COVS, 5, "seed"), TypeError,
         r"rng must be a numpy.random.Generator"),
        (lambda: sample_gaussian_hmm(PI, A * 1.1, MEANS, COVS, 5, 0), ValueError,
         r"transmat must be >= 0 with rows summing to 1"),
        (lambda: sample_gaussian_hmm(PI[:2], A, MEANS, COVS, 5, 0), ValueError,
         r"startprob must have shape \(3,\)"),
    ],
    "GaussianHMM": [
        (lambda: GaussianHMM(2.0, rng=0).fit(_X_SEQ), TypeError,
         r"num_states must be an integer"),
        (lambda: GaussianHMM(0, rng=0).fit(_X_SEQ), ValueError, r"num_states must be >= 1"),
        (lambda: GaussianHMM(2, tol=-1.0, rng=0).fit(_X_SEQ), ValueError,
         r"tol must be a finite number >= 0"),
        (lambda: GaussianHMM(2).fit(_X_SEQ), TypeError, r"rng must be"),
        (lambda: GaussianHMM(2, transmat_init=[[1.0, 0.0]], rng=0).fit(_X_SEQ), ValueError,
         r"transmat_init must have shape \(2, 2\)"),
        (lambda: GaussianHMM(2, covariances_init=-np.stack([np.eye(2)] * 2), rng=0
                             ).fit(_X_SEQ), ValueError,
         r"covariances_init\[0\] must be positive definite"),
        (lambda: GaussianHMM(2, means_init=np.zeros((2, 3)), rng=0).fit(_X_SEQ), ValueError,
         r"means_init must have shape \(2, 2\)"),
    ],
    "GaussianHMM.fit": [
        (lambda: GaussianHMM(3, rng=0).fit(np.zeros((2, 1))), ValueError,
         r"X must have at least max\(2, num_states\) = 3 steps, got T=2"),
        (lambda: GaussianHMM(2, rng=0).fit(np.array([0.0, np.inf, 1.0])), ValueError,
         r"X must contain only finite"),
        (lambda: GaussianHMM(2, rng=0).fit(np.zeros((3, 2, 2))), ValueError,
         r"X must have 1 or 2 dimension"),
        (lambda: GaussianHMM(2, rng=0).fit(_X_SEQ, lengths=[10, 10]), ValueError,
         r"lengths must sum to the number of steps T=30, got 20"),
        (lambda: GaussianHMM(2, rng=0).fit(_X_SEQ, lengths=[]), TypeError,
         r"lengths must be a non-empty 1-D sequence of integers"),
    ],
    "GaussianHMM.emission_log_prob": [
        (lambda: GaussianHMM(2).emission_log_prob(_X_SEQ), ValueError,
         r"call fit\(X\) first"),
        (lambda: _hmm_fitted().emission_log_prob(_X_SEQ[:, :1]), ValueError,
         r"X has 1 features, the model has 2"),
        (lambda: _hmm_fitted().emission_log_prob(_X_SEQ, covariances=-COVS), ValueError,
         r"covariances\[0\] must be positive definite"),
    ],
    "GaussianHMM.posterior": [
        (lambda: GaussianHMM(2).posterior(np.arange(5.0)), ValueError,
         r"call fit\(X\) first"),
        (lambda: _hmm_fitted().posterior(np.full((4, 2), np.nan)), ValueError,
         r"X must contain only finite"),
    ],
    "GaussianHMM.score": [
        (lambda: _hmm_fitted().score(_X_SEQ[:, :1]), ValueError, r"X has 1 features"),
    ],
    "GaussianHMM.predict": [
        (lambda: GaussianHMM(2).predict(np.arange(5.0)), ValueError, r"call fit\(X\) first"),
        (lambda: _hmm_fitted().predict("X"), TypeError, r"X must be numeric"),
    ],
}

EXTREME_INPUTS = {
    "GaussianHMM.fit": [(_fit_two_steps, _assert_two_step_fit)],
    "forward_backward": [
        # emissions of scale 1e300 between states: finite, and equal to enumeration
        (lambda: (forward_backward(_LP, _LA, np.array([[0.0, -1e300, -1e300]] * 4)),
                  enumerate_posterior(_LP, _LA, np.array([[0.0, -1e300, -1e300]] * 4))),
         lambda out: np.testing.assert_allclose(out[0][0], out[1]["log_likelihood"],
                                                rtol=1e-12)),
    ],
}


# -- issue 34: the one conversion at the boundary for log-probabilities
BAD_INPUTS["forward_backward"] = BAD_INPUTS.get("forward_backward", []) + [
    (lambda: forward_backward(np.log(PI).astype(str), np.log(A), np.zeros((4, 3))),
     TypeError, r"log_pi must be numeric array-like of log-probabilities"),
    (lambda: forward_backward(np.log(PI), np.log(A) + 0j, np.zeros((4, 3))), TypeError,
     r"log_A must be real"),
    (lambda: forward_backward([10**400, 0, 0], np.log(A), np.zeros((4, 3))), ValueError,
     r"log_pi holds an integer beyond the range of float64"),
]


def _fb_of_tensor():
    import torch

    return forward_backward(torch.tensor(np.log(PI), requires_grad=True), np.log(A),
                            np.zeros((4, 3)))[1]


EXTREME_INPUTS.setdefault("forward_backward", []).append(
    # a tensor that requires grad is detached: the answer of its values
    (_fb_of_tensor, lambda gamma: np.testing.assert_allclose(
        gamma, forward_backward(np.log(PI), np.log(A), np.zeros((4, 3)))[1], rtol=0)))
