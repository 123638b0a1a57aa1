"""Tests of elbo_lib.coordinate_ascent: the one loop of EM and CAVI."""

from __future__ import annotations

import numpy as np
import pytest

from elbo_lib.coordinate_ascent import AscentTrace, coordinate_ascent


def _two_block_quadratic(max_iter=100, tol=1e-12):
    """Coordinate ascent on f(a, b) = -(a^2 + b^2 - 1.6 a b) + a: optimum by a 2x2 solve."""
    state = {"a": 0.0, "b": 0.0, "values": []}

    def f():
        a, b = state["a"], state["b"]
        return -(a * a + b * b - 1.6 * a * b) + a

    def update_a():
        state["a"] = (1.0 + 1.6 * state["b"]) / 2.0
        return f()

    def update_b():
        state["b"] = 1.6 * state["a"] / 2.0
        state["values"].append(f())
        return f()

    def stop():
        v = state["values"]
        return len(v) > 1 and v[-1] - v[-2] < tol

    trace = coordinate_ascent({"a": update_a, "b": update_b}, stop=stop, max_iter=max_iter,
                              initial_bound=f())
    return trace, state


def test_reaches_the_joint_maximiser_and_records_every_step():
    trace, state = _two_block_quadratic()
    exact = np.linalg.solve([[2.0, -1.6], [-1.6, 2.0]], [1.0, 0.0])  # the gradient's zero
    np.testing.assert_allclose([state["a"], state["b"]], exact, atol=1e-5)
    assert trace.converged and trace.step_names == ("a", "b")
    assert trace.bounds.shape == (trace.n_iter, 2)
    steps = trace.half_steps
    assert steps.shape == (1 + 2 * trace.n_iter,) and steps[0] == 0.0
    assert np.all(np.diff(steps) >= -1e-15)           # every step is an exact block maximiser
    np.testing.assert_array_equal(trace.after("b"), trace.bounds[:, 1])


def test_max_iter_without_convergence_and_unevaluated_steps():
    calls = []
    trace = coordinate_ascent({"x": lambda: calls.append(1), "y": lambda: 2.0},
                              stop=lambda: False, max_iter=3)
    assert len(calls) == 3 and trace.n_iter == 3 and not trace.converged
    assert np.isnan(trace.initial_bound) and np.all(np.isnan(trace.after("x")))
    np.testing.assert_array_equal(trace.half_steps, [np.nan, 2.0] * 3)
    assert "n_iter=3" in repr(trace)


def test_em_and_cavi_share_the_result_type():
    from elbo_lib.em import GaussianMixtureEM, incremental_em
    from elbo_lib.hmm import GaussianHMM
    from elbo_lib.mean_field import cavi_normal_gamma
    from elbo_lib.models import NormalGamma

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(40, 1)), rng.normal(size=(40, 1)) + 5])
    fits = [GaussianMixtureEM(2, rng=0).fit(X).trace_,
            incremental_em(X, 2, num_blocks=4, num_sweeps=2, rng=0).trace_,
            GaussianHMM(2, rng=0).fit(X).trace_,
            cavi_normal_gamma(X[:, 0], NormalGamma(0.0, 1.0, 2.0, 2.0)).trace]
    assert all(isinstance(t, AscentTrace) for t in fits)
    assert fits[0].step_names == fits[2].step_names == ("E", "M")
    assert fits[3].step_names == ("mu", "tau")


BAD_INPUTS = {
    "coordinate_ascent": [
        (lambda: coordinate_ascent({}, stop=lambda: True, max_iter=1), TypeError, "steps"),
        (lambda: coordinate_ascent([lambda: 0.0], stop=lambda: True, max_iter=1), TypeError,
         "steps"),
        (lambda: coordinate_ascent({"E": 1.0}, stop=lambda: True, max_iter=1), TypeError,
         "steps"),
        (lambda: coordinate_ascent({"E": lambda: 0.0}, stop=None, max_iter=1), TypeError,
         "stop"),
        (lambda: coordinate_ascent({"E": lambda: 0.0}, stop=lambda: True, max_iter=0),
         ValueError, "max_iter"),
        (lambda: coordinate_ascent({"E": lambda: 0.0}, stop=lambda: True, max_iter=1.5),
         TypeError, "max_iter"),
    ],
    "AscentTrace.after": [
        (lambda: coordinate_ascent({"E": lambda: 0.0}, stop=lambda: True,
                                   max_iter=1).after("M"), ValueError, "step"),
    ],
}
NO_INPUTS = {"AscentTrace": "result object of coordinate_ascent; readers never build one"}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_inputs_listed(name):
    assert BAD_INPUTS[name]
