import numpy as np
import pytest

from elbo_lib.reporting import fmt, fmt_array, fmt_below, glue, round_to


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


@pytest.mark.parametrize("x, kw, want", [
    (0.5513224236995268, {"digits": 3}, 0.551), (0.551322423699527, {"digits": 3}, 0.551),
    (27.29038919613243, {"decimals": 2}, 27.29), (-1e-20, {"decimals": 3}, 0.0),
    (123456.0, {"digits": 2}, 120000.0),
])
def test_round_to(x, kw, want):
    out = round_to(x, **kw)
    assert out == want and type(out) is float and repr(out) == repr(want)


@pytest.mark.parametrize("kw, err, msg", [
    ({}, ValueError, "exactly one"), ({"digits": 2, "decimals": 2}, ValueError, "exactly one"),
    ({"digits": 0}, ValueError, "digits"), ({"decimals": 1.5}, TypeError, "decimals"),
])
def test_round_to_bad_arguments(kw, err, msg):
    with pytest.raises(err, match=msg):
        round_to(1.0, **kw)


def test_round_to_rejects_nan():
    with pytest.raises(ValueError, match="finite"):
        round_to(float("nan"), digits=3)


def test_glue_stores_rounded_values(monkeypatch):
    import myst_nb

    stored = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, v, display: stored.update({name: v}))
    assert glue("a", np.float64(0.5513224236995268), digits=3) == 0.551
    assert glue("b", np.int64(7)) == 7 and type(stored["b"]) is int
    assert glue("c", 1.23456789) == 1.235  # 4 significant digits by default
    assert glue("d", "words") == "words"
    assert stored == {"a": 0.551, "b": 7, "c": 1.235, "d": "words"}


@pytest.mark.parametrize("name, value, kw, err", [
    ("", 1.0, {}, TypeError), ("x", True, {}, TypeError), ("x", [1.0], {}, TypeError),
    ("x", 3, {"digits": 2}, ValueError), ("x", float("inf"), {}, ValueError),
])
def test_glue_bad_input(name, value, kw, err):
    with pytest.raises(err):
        glue(name, value, **kw)


def test_fmt_below():
    assert fmt_below(3e-16, 1e-12) == "max |error| < 1e-12: True"
    assert fmt_below(2e-3, 1e-6, "gap") == "gap < 1e-06: False"
    with pytest.raises(ValueError, match="bound"):
        fmt_below(1.0, 0.0)
