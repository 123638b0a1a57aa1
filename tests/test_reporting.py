import numpy as np
import pytest

from elbo_lib.reporting import fmt, fmt_array


@pytest.mark.parametrize("x, digits, want", [
    (3.14159265, 4, "3.142"), (-12.3456, 4, "-12.35"), (0.000123456, 4, "0.0001235"),
    (1234567.0, 4, "1.235e+06"), (-0.0, 4, "0"), (-1e-20, 2, "-1e-20"), (2.0, 4, "2"),
    (np.inf, 4, "inf"), (np.nan, 4, "nan"),
])
def test_fmt(x, digits, want):
    assert fmt(x, digits) == want


def test_fmt_hides_last_bit_noise():
    assert fmt(0.1 + 0.2) == fmt(0.3)


def test_fmt_array_nested():
    assert fmt_array([[1.23456, 2], [3, -4.5]], 3) == "[[1.23, 2], [3, -4.5]]"


def test_fmt_bad_digits():
    with pytest.raises(ValueError, match="digits"):
        fmt(1.0, 0)
