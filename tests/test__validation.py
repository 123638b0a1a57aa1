"""Tests of elbo_lib._validation: the shared input checks (the library's internal API)."""

from __future__ import annotations

import numpy as np
import torch

from elbo_lib._validation import (
    MAX_COUNT,
    as_float_array,
    as_generator,
    as_numeric_array,
    as_tensor,
    check_broadcast,
    check_bsc_batch_inputs,
    check_bsc_inputs,
    check_enumerable,
    check_finite_tensor,
    check_fit_controls,
    check_int,
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


def test_numpy_side_conversion_detaches_requires_grad_tensors_and_keeps_values():
    # the policy of issue 34 (CONTRIBUTING.md, the library): a NumPy-side argument that
    # requires grad is detached, with the values a plain array of the same numbers gives
    t = torch.tensor([[0.5, -1.25]], dtype=torch.float64, requires_grad=True)
    out = as_float_array(t, "x", ndim=2)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_array_equal(out, [[0.5, -1.25]])
    f32 = torch.tensor([0.1], dtype=torch.float32, requires_grad=True)
    assert as_float_array(f32, "x")[0] == float(np.float32(0.1))
    # an array that is already float64 is returned as it is (no copy at the boundary)
    a = np.ones(3)
    assert as_float_array(a, "x") is a and as_numeric_array(a, "x") is a
    # a subclass becomes a plain array, as np.asarray makes it (a masked array's data)
    masked = np.ma.masked_array([1.0, 2.0], mask=[False, True])
    assert type(as_float_array(masked, "x")) is np.ndarray
    # boolean data of one or more dimensions are 0/1 values
    np.testing.assert_array_equal(as_float_array(np.array([True, False]), "x"), [1.0, 0.0])


def test_numpy_integers_are_ints_and_counts_are_bounded():
    assert check_positive_int(np.int64(3), "n") == 3 and type(check_int(np.uint8(3), "n")) is int
    assert check_positive_int(MAX_COUNT, "n") == 2**32 - 1
    assert check_positive_int(2**40, "n", maximum=None) == 2**40
    assert check_positive(np.int64(2), "s") == 2.0 and check_real(np.float32(0.5), "t") == 0.5
    assert as_generator(np.int64(7)).integers(100) == np.random.default_rng(7).integers(100)
    # a 0-d real array or tensor is its number (a reduction's result, a scalar tensor)
    assert check_positive(np.array(2.5), "s") == 2.5 and check_int(np.array(3), "n") == 3
    assert check_real(torch.tensor(-0.5, requires_grad=True), "t") == -0.5
    assert check_positive_int(torch.tensor(4), "n") == 4


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
        # issue 34: complex, strings, a bare bool, ints beyond float range, by name
        (lambda: as_float_array(np.array([1.0 + 2.0j]), "x"), TypeError,
         r"x must be real, got complex values"),
        (lambda: as_float_array([1.0, 2j], "x"), TypeError, r"x must be real, got complex"),
        (lambda: as_float_array(torch.tensor([1j]), "x"), TypeError,
         r"x must be real, got a complex tensor"),
        (lambda: as_float_array(np.array(["1.5"]), "x"), TypeError,
         r"x must be numeric array-like, got an array of <U3"),
        (lambda: as_float_array(True, "x"), TypeError, r"x must be numeric array-like, got bool"),
        (lambda: as_float_array([1.0, 10**400], "x"), ValueError,
         r"x holds an integer beyond the range of float64"),
        (lambda: as_float_array(np.array([1.0, None]), "x"), ValueError,
         r"x must contain only finite"),
        (lambda: as_float_array(np.array([1.0, "a"], dtype=object), "x"), TypeError,
         r"x must be numeric array-like of real numbers, got str"),
        (lambda: as_float_array(np.array(["1.5"], dtype=object), "x"), TypeError,
         r"x must be numeric array-like of real numbers, got str"),
        (lambda: as_float_array([1.0, 10**400, 1j], "x"), TypeError,
         r"x must be numeric array-like of real numbers, got complex"),
    ],
    "as_numeric_array": [
        (lambda: as_numeric_array("1.0", "x"), TypeError, r"x must be numeric array-like, got str"),
        (lambda: as_numeric_array(np.array([1j]), "x"), TypeError, r"x must be real"),
        (lambda: as_numeric_array([10**400], "x"), ValueError, r"x holds an integer beyond"),
        (lambda: as_numeric_array(np.array(["2026-01-01"], dtype="datetime64[D]"), "x"),
         TypeError, r"x must be numeric array-like, got an array of datetime64"),
        (lambda: as_numeric_array(torch.ones(2, dtype=torch.complex64), "x"), TypeError,
         r"x must be real, got a complex tensor"),
    ],
    "check_int": [
        (lambda: check_int(np.array(2.5), "value"), TypeError, r"value must be an integer"),
        (lambda: check_int(torch.tensor(True), "value"), TypeError, r"value must be an integer"),
        (lambda: check_int(np.array([3]), "value"), TypeError, r"value must be an integer, "
         r"got ndarray"),
        (lambda: check_int(True, "value"), TypeError, r"value must be an integer, got bool"),
        (lambda: check_int(np.bool_(True), "value"), TypeError, r"value must be an integer"),
        (lambda: check_int(1.0, "value"), TypeError, r"value must be an integer, got float"),
        (lambda: check_int("1", "value"), TypeError, r"value must be an integer, got str"),
        (lambda: check_int(-1, "value", minimum=0), ValueError, r"value must be >= 0, got -1"),
        (lambda: check_int(5, "value", maximum=4), ValueError, r"value must be <= 4, got 5"),
    ],
    "as_generator": [
        (lambda: as_generator(None), TypeError, r"rng must be a numpy.random.Generator"),
        (lambda: as_generator(True), TypeError, r"rng must be .*got bool"),
        (lambda: as_generator(1.5), TypeError, r"rng must be .*got float"),
        (lambda: as_generator(-1), ValueError, r"rng must be .*an int seed >= 0, got -1"),
        (lambda: as_generator(np.int64(-3)), ValueError, r"rng must be .*>= 0, got -3"),
        (lambda: as_generator(np.random.RandomState(0)), TypeError,
         r"rng must be .*got RandomState"),
    ],
    "check_positive": [
        (lambda: check_positive(0.0, "value"), ValueError, r"value must be a finite number > 0"),
        (lambda: check_positive(np.nan, "value"), ValueError, r"value must be a finite"),
        (lambda: check_positive(True, "value"), TypeError, r"value must be a positive number"),
        (lambda: check_positive([1.0, -1.0], "value", allow_array=True), ValueError,
         r"value must be > 0 everywhere"),
        (lambda: check_positive(np.True_, "value"), TypeError, r"value must be a positive number"),
        (lambda: check_positive("1.0", "value"), TypeError, r"value must be a positive number, "
         r"got str"),
        (lambda: check_positive(1 + 0j, "value"), TypeError, r"value must be a positive number, "
         r"got complex"),
        (lambda: check_positive(10**400, "value"), ValueError,
         r"value must be a positive number within float range, got an integer of 401 digits"),
        (lambda: check_positive(True, "value", allow_array=True), TypeError,
         r"value must be numeric array-like, got bool"),
        (lambda: check_positive(np.array([2 + 0j]), "value", allow_array=True), TypeError,
         r"value must be real"),
    ],
    "check_positive_int": [
        (lambda: check_positive_int(0, "value"), ValueError, r"value must be >= 1, got 0"),
        (lambda: check_positive_int(2.0, "value"), TypeError, r"value must be an integer"),
        (lambda: check_positive_int(1, "value", minimum=2), ValueError, r"value must be >= 2"),
        (lambda: check_positive_int(2**63, "value"), ValueError,
         r"value must be <= 2\*\*32 - 1, got 9223372036854775808"),
        (lambda: check_positive_int(np.uint64(2**63), "value"), ValueError,
         r"value must be <= 2\*\*32 - 1"),
        (lambda: check_positive_int(np.int64(0), "value"), ValueError, r"value must be >= 1"),
    ],
    "check_nonnegative": [
        (lambda: check_nonnegative(-1e-300, "value"), ValueError,
         r"value must be a finite number >= 0"),
        (lambda: check_nonnegative(np.inf, "value"), ValueError, r"value must be a finite"),
        (lambda: check_nonnegative("0", "value"), TypeError, r"value must be a real number"),
        (lambda: check_nonnegative(-(10**400), "value"), ValueError,
         r"value must be a real number >= 0 within float range"),
        (lambda: check_nonnegative(False, "value"), TypeError, r"value must be a real number "
         r">= 0, got bool"),
    ],
    "check_real": [
        (lambda: check_real(np.nan, "value"), ValueError, r"value must be finite"),
        (lambda: check_real(None, "value"), TypeError, r"value must be a real number"),
        (lambda: check_real(2j, "value"), TypeError, r"value must be a real number, got complex"),
        (lambda: check_real(torch.tensor(1j), "value"), TypeError, r"value must be a real "
         r"number, got Tensor"),
        (lambda: check_real(np.array([0.5]), "value"), TypeError, r"value must be a real "
         r"number, got ndarray"),
        (lambda: check_real(10**400, "value"), ValueError, r"value must be a real number within "
         r"float range"),
        (lambda: check_real(np.complex128(1), "value"), TypeError, r"value must be a real "
         r"number, got complex"),
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
        (lambda: as_tensor(torch.tensor([1 + 1j]), "x"), TypeError,
         r"x must be real, got a complex tensor"),
        (lambda: as_tensor(np.array([1j]), "x"), TypeError, r"x must be real, got complex"),
        (lambda: as_tensor([10**400], "x"), ValueError, r"x holds an integer beyond"),
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
