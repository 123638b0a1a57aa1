"""Tests of elbo_lib._validation: the shared input checks (the library's internal API)."""

from __future__ import annotations

import numpy as np
import torch

from elbo_lib._validation import (
    as_float_array,
    as_generator,
    as_tensor,
    check_broadcast,
    check_bsc_batch_inputs,
    check_bsc_inputs,
    check_enumerable,
    check_finite_tensor,
    check_fit_controls,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_probability_rows,
    check_real,
    check_spd,
    check_symmetric,
    power_of_two_scale,
)

_W = np.array([[1.0, 0.0], [0.5, 1.0], [0.0, -1.0]])
_B = np.zeros(2)


def test_as_float_array_converts_float32_and_lists():
    out = as_float_array(np.array([1.5, 2.5], dtype=np.float32), "x", ndim=1)
    assert out.dtype == np.float64 and out.tolist() == [1.5, 2.5]


def test_as_tensor_keeps_float32_tensors_and_their_graph():
    x = torch.ones(2, dtype=torch.float32, requires_grad=True)
    out = as_tensor(x, "x")
    assert out is x
    assert as_tensor([1, 2], "x").dtype == torch.float64


def test_check_spd_returns_the_cholesky_factor():
    c = np.array([[4.0, 2.0], [2.0, 3.0]])
    _, chol = check_spd(c, "c")
    np.testing.assert_allclose(chol @ chol.T, c, rtol=1e-15)


# Contract cases (issue 16): every public name of elbo_lib._validation has bad-input cases;
# the name passed is the argument name the message must carry.
BAD_INPUTS = {
    "check_finite_tensor": [
        (lambda: check_finite_tensor([1.0], "t"), TypeError,
         r"t must be a torch.Tensor, got list"),
        (lambda: check_finite_tensor(torch.tensor([1.0, float("nan")]), "t"), ValueError,
         r"t must contain only finite values \(no NaN or inf\), got 1 non-finite of 2"),
        (lambda: check_finite_tensor(torch.tensor([float("-inf")]), "t"), ValueError,
         r"t must contain only finite"),
    ],
    "power_of_two_scale": [
        (lambda: power_of_two_scale(["a"]), TypeError, r"x must be numeric"),
        (lambda: power_of_two_scale([1.0, np.nan]), ValueError, r"x must contain only finite"),
        (lambda: power_of_two_scale([]), ValueError, r"x must not be empty"),
    ],
    "as_float_array": [
        (lambda: as_float_array("a", "x"), TypeError, r"x must be numeric array-like, got str"),
        (lambda: as_float_array([[1.0]], "x", ndim=1), ValueError,
         r"x must have 1 dimension\(s\), got shape \(1, 1\)"),
        (lambda: as_float_array([], "x"), ValueError, r"x must not be empty"),
        (lambda: as_float_array([np.nan], "x"), ValueError, r"x must contain only finite"),
        (lambda: as_float_array([[1.0], [1.0, 2.0]], "x"), TypeError, r"x must be numeric"),
    ],
    "as_generator": [
        (lambda: as_generator(None), TypeError, r"rng must be a numpy.random.Generator"),
        (lambda: as_generator(True), TypeError, r"rng must be .*got bool"),
        (lambda: as_generator(1.5), TypeError, r"rng must be .*got float"),
    ],
    "check_positive": [
        (lambda: check_positive(0.0, "value"), ValueError, r"value must be a finite number > 0"),
        (lambda: check_positive(np.nan, "value"), ValueError, r"value must be a finite"),
        (lambda: check_positive(True, "value"), TypeError, r"value must be a positive number"),
        (lambda: check_positive([1.0, -1.0], "value", allow_array=True), ValueError,
         r"value must be > 0 everywhere"),
    ],
    "check_positive_int": [
        (lambda: check_positive_int(0, "value"), ValueError, r"value must be >= 1, got 0"),
        (lambda: check_positive_int(2.0, "value"), TypeError, r"value must be an integer"),
        (lambda: check_positive_int(1, "value", minimum=2), ValueError, r"value must be >= 2"),
    ],
    "check_nonnegative": [
        (lambda: check_nonnegative(-1e-300, "value"), ValueError,
         r"value must be a finite number >= 0"),
        (lambda: check_nonnegative(np.inf, "value"), ValueError, r"value must be a finite"),
        (lambda: check_nonnegative("0", "value"), TypeError, r"value must be a real number"),
    ],
    "check_real": [
        (lambda: check_real(np.nan, "value"), ValueError, r"value must be finite"),
        (lambda: check_real(None, "value"), TypeError, r"value must be a real number"),
    ],
    "check_probability_rows": [
        (lambda: check_probability_rows([0.5, 0.6], "p"), ValueError,
         r"p must be >= 0 with rows summing to 1"),
        (lambda: check_probability_rows([1.5, -0.5], "p"), ValueError, r"p must be >= 0"),
        (lambda: check_probability_rows([0.5, 0.5], "p", shape=(3,)), ValueError,
         r"p must have shape \(3,\)"),
    ],
    "check_symmetric": [
        (lambda: check_symmetric([[1.0, 2.0], [0.0, 1.0]], "mats"), ValueError,
         r"mats must be symmetric"),
        (lambda: check_symmetric(np.zeros((2, 3)), "mats"), ValueError,
         r"mats must be square matrices"),
        (lambda: check_symmetric(np.eye(2), "mats", shape=(3, 3)), ValueError,
         r"mats must have 2 dimension|mats must have shape \(3, 3\)"),
    ],
    "check_spd": [
        (lambda: check_spd(-np.eye(2), "mats"), ValueError, r"mats must be positive definite"),
        (lambda: check_spd(np.stack([np.eye(2), -np.eye(2)]), "mats"), ValueError,
         r"mats\[1\] must be positive definite"),
    ],
    "check_bsc_inputs": [
        (lambda: check_bsc_inputs(np.zeros(2), _W, _B, 1.0), ValueError,
         r"weights must have shape \(len\(v\), n_latent\) = \(2, n\)"),
        (lambda: check_bsc_inputs(np.zeros(3), _W, np.zeros(3), 1.0), ValueError,
         r"bias must have length n_latent = 2"),
        (lambda: check_bsc_inputs(np.zeros(3), _W, _B, 0.0), ValueError,
         r"noise_precision must be > 0"),
    ],
    "check_bsc_batch_inputs": [
        (lambda: check_bsc_batch_inputs(np.zeros((4, 2)), _W, _B, 1.0), ValueError,
         r"weights must have shape \(n_visible, n_latent\) with n_visible = 2"),
        (lambda: check_bsc_batch_inputs(np.zeros((4, 3)), _W, _B, [1.0]), TypeError,
         r"noise_precision must be a positive number"),
    ],
    "as_tensor": [
        (lambda: as_tensor("a", "x"), TypeError, r"x must be a torch.Tensor or numeric"),
        (lambda: as_tensor(torch.tensor([0.0, float("inf")]), "x"), ValueError,
         r"x must contain only finite"),
        (lambda: as_tensor([np.nan], "x"), ValueError, r"x must contain only finite"),
    ],
    "check_broadcast": [
        (lambda: check_broadcast(mean=np.zeros(3), var=np.ones(2)), ValueError,
         r"mean \(3,\) and var \(2,\) must broadcast to one shape"),
    ],
    "check_enumerable": [
        (lambda: check_enumerable(np.zeros(17), 16, "bias"), ValueError,
         r"bias has n_latent = 17 entries: enumeration over 2\^n_latent codes needs "
         r"n_latent <= 16"),
    ],
    "check_fit_controls": [
        (lambda: check_fit_controls(-1.0, 0.0, 10), ValueError, r"tol must be a finite number"),
        (lambda: check_fit_controls(0.0, np.nan, 10), ValueError, r"reg_covar must be a finite"),
        (lambda: check_fit_controls(0.0, 0.0, 0), ValueError, r"max_iter must be >= 1"),
    ],
}


def test_power_of_two_scale_is_exact_and_leaves_ordinary_data_alone():
    # independent answer: 2**(e-1) from math.frexp of the largest magnitude
    import math

    for value in (3e200, 1e-250, -7e120):
        m, e = math.frexp(abs(value))
        assert power_of_two_scale([value, 0.0]) == 2.0 ** (e - 1)
        assert 1.0 <= abs(value) / power_of_two_scale([value]) < 2.0
    assert power_of_two_scale([1e-30, 5.0, 1e30]) == 1.0
    np.testing.assert_array_equal(power_of_two_scale([[1e200], [1.0]], axis=1),
                                  [2.0 ** (math.frexp(1e200)[1] - 1), 1.0])
