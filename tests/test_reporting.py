import numpy as np
import pytest

from elbo_lib.reporting import Checks, fmt, fmt_array, fmt_below, fmt_rounded, glue, round_to


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
    assert stored == {"a": "0.551", "b": 7, "c": "1.235", "d": "words"}


@pytest.mark.parametrize("x, kw, text", [
    (88.8, {"digits": 2}, "89"),          # the float 89.0 would print a false '.0'
    (152.7, {"digits": 3}, "153"),
    (24.98, {"digits": 3}, "25.0"),       # the float 25.0 is right here, by luck
    (0.49996, {"digits": 3}, "0.500"),    # the float 0.5 would hide two digits
    (99.96, {"digits": 3}, "100"),        # rounding carries into a new digit
    (0.35, {"digits": 4}, "0.35"),        # exact at this precision: shortest form
    (2.0, {"digits": 3}, "2"),
    (-0.0001234567, {"digits": 2}, "-0.00012"),
    (1.23456e-7, {"digits": 3}, "1.23e-07"),
    (3.14159, {"decimals": 2}, "3.14"),
    (2.999, {"decimals": 2}, "3.00"),
    (0.004, {"decimals": 2}, "0.00"),
])
def test_fmt_rounded_prints_the_digits_it_has(x, kw, text):
    assert fmt_rounded(x, **kw) == text


def test_glue_stores_the_digits_it_has(monkeypatch):
    import myst_nb
    from myst_nb.core.variables import format_plain_text

    stored = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, v, display: stored.update({name: v}))
    assert glue("jump", 88.8, digits=2) == 89.0
    # what {glue:text} shows on the page: myst-nb reads the stored repr back
    assert format_plain_text(repr(stored["jump"]), "") == "89"
    glue("half", 0.49996, digits=3)
    assert format_plain_text(repr(stored["half"]), "") == "0.500"


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


# ------------------------------------------------------------------ Checks (issue 29, item 6)
def _checks(*adds):
    checks = Checks()
    for add in adds:
        add(checks)
    return checks


def test_checks_table_shows_stable_results():
    checks = _checks(
        lambda c: c.close("identity", -3.0 + 4e-16, -3.0, atol=1e-10, against="closed form"),
        lambda c: c.close("relative", [100.0, 200.0], [100.5, 199.0], rtol=0.01,
                          against="enumeration"),
        lambda c: c.below("gap", [0.081234, 0.09321], 0.14, against="co-trained gap"),
        lambda c: c.above("rise", 2.5, 1.0, against="first step", digits=2),
        lambda c: c.holds("ordering", True, against="table", shown="2.3 > 0.4"),
    )
    table = checks.table()
    assert len(checks) == 5
    # the values shown do not depend on the last bits: the bound met, or 3 digits
    assert repr(table).splitlines() == [
        "5 claims hold:",
        "- identity: |Δ| ≤ 1e-10 (against closed form)",
        "- relative: |Δ| ≤ 0.01·|ref| (against enumeration)",
        "- gap: max 0.0932 < 0.14 (against co-trained gap)",
        "- rise: 2.5 > 1 (against first step)",
        "- ordering: 2.3 > 0.4 (against table)",
    ]
    html = table._repr_html_()
    assert html.count("<tr>") == 6 and "<caption>5 claims hold</caption>" in html
    assert "&gt; 0.4" in html   # cells are escaped


@pytest.mark.parametrize("add, why", [
    # a difference just outside the margin, a NaN, the wrong side of a bound, a NaN value
    (lambda c: c.close("x", 1.0 + 2e-10, 1.0, atol=1e-10, against="a"), r"max \|Δ\| = 2"),
    (lambda c: c.close("x", [1.0, np.nan], 1.0, atol=1.0, against="a"), r"x \(against a\)"),
    (lambda c: c.close("x", 1.2, 1.0, rtol=0.1, atol=0.05, against="a"), r"allowed 0.05"),
    (lambda c: c.below("x", [0.1, 0.2], 0.15, against="a"), r"value 0.2 < bound 0.15"),
    (lambda c: c.above("x", 0.1, 0.1, against="a"), r"value 0.1 > bound 0.1 is False"),
    (lambda c: c.below("x", np.nan, 1.0, against="a"), r"1 of 2 claims"),
    (lambda c: c.holds("x", False, against="a", shown="s"), r"x \(against a\): shown: s"),
])
def test_a_claim_that_does_not_hold_fails_the_table(add, why):
    checks = _checks(lambda c: c.close("fine", 1.0, 1.0, atol=1e-12, against="b"), add)
    with pytest.raises(AssertionError, match=why):
        checks.table()


def test_a_round_off_level_value_can_be_shown_by_its_bound_only():
    checks = Checks()
    checks.above("monotone", [-3.1e-15, 0.2], -1e-9, against="r", show_value=False)
    checks.below("small", 2.2e-16, 1e-12, against="r", show_value=False)
    assert [row[2] for row in checks.table().rows] == ["every value > -1e-09",
                                                       "value < 1e-12"]
    checks.above("fails", [-2e-9, 0.2], -1e-9, against="r", show_value=False)
    with pytest.raises(AssertionError, match=r"value -2e-09 > bound -1e-09 is False"):
        checks.table()


def test_a_table_without_claims_is_an_error():
    with pytest.raises(ValueError, match="no claims were checked"):
        Checks().table()


def test_the_table_digits_are_the_default():
    checks = Checks(digits=2)
    checks.below("a", 0.081234, 0.14, against="r")
    checks.below("b", 0.081234, 0.14, against="r", digits=4)
    assert [row[2] for row in checks.table().rows] == ["0.081 < 0.14", "0.08123 < 0.14"]


def test_checks_compare_elementwise_and_broadcast():
    checks = _checks(lambda c: c.close("rows", [[1.0, 2.0], [1.0, 2.0]], [1.0, 2.0],
                                       atol=1e-12, against="ref"))
    assert len(checks.table().rows) == 1
    with pytest.raises(AssertionError, match="value 0.3 < bound 0.25 is False"):
        _checks(lambda c: c.below("b", [0.1, 0.3], [0.2, 0.25], against="r")).table()


# ------------------------------------------------------------------ contract (issue 16)
# Contract cases (issue 16): every public name of elbo_lib.reporting has bad-input cases.
BAD_INPUTS = {
    "fmt": [
        (lambda: fmt("3.5"), TypeError, r"x must be a real number, got str"),
        (lambda: fmt([1.0, 2.0]), TypeError, r"x must be a real number, got list"),
        (lambda: fmt(True), TypeError, r"x must be a real number, got bool"),
        (lambda: fmt(1.0, 0), ValueError, r"digits must be >= 1"),
        (lambda: fmt(1.0, 2.5), TypeError, r"digits must be an integer"),
    ],
    "fmt_array": [
        (lambda: fmt_array("abc"), TypeError, r"values must be numeric array-like"),
        (lambda: fmt_array([[1.0], [1.0, 2.0]]), TypeError, r"values must be numeric array"),
        (lambda: fmt_array([], 0), ValueError, r"digits must be >= 1"),
    ],
    "round_to": [
        (lambda: round_to(float("nan"), digits=3), ValueError, r"x must be finite"),
        (lambda: round_to("1.5", digits=3), TypeError, r"x must be a real number, got str"),
        (lambda: round_to(1.0), ValueError, r"exactly one of digits= and decimals="),
        (lambda: round_to(1.0, decimals=1.5), TypeError, r"decimals must be an int"),
        # rounding the largest float up to 3 digits leaves float64's range: say so
        (lambda: round_to(1.7976931348623157e308, digits=3), ValueError,
         r"x = 1.797.*e\+308 rounded to 3 digits overflows"),
    ],
    "glue": [
        (lambda: glue("", 1.0), TypeError, r"name must be a non-empty str"),
        (lambda: glue("x", True), TypeError, r"value of 'x' is a bool"),
        (lambda: glue("x", float("inf")), ValueError, r"value of 'x' must be finite, got inf"),
        (lambda: glue("x", float("nan"), digits=3), ValueError, r"value of 'x' must be finite"),
        (lambda: glue("x", 3, digits=2), ValueError, r"'x' is an integer: do not give digits"),
        (lambda: glue("x", [1.0]), TypeError, r"value of 'x' must be a number or a str"),
    ],
    "fmt_below": [
        (lambda: fmt_below(1.0, 0.0), ValueError, r"bound must be a positive finite number"),
        (lambda: fmt_below(1.0, "1e-12"), TypeError, r"bound must be a real number, got str"),
        (lambda: fmt_below(float("nan"), 1e-12), ValueError, r"value must not be NaN"),
        (lambda: fmt_below("1e-16", 1e-12), TypeError, r"value must be a real number, got str"),
        (lambda: fmt_below(1e-16, 1e-12, name=3), TypeError, r"name must be a str"),
    ],
    "fmt_rounded": [
        (lambda: fmt_rounded(float("inf"), digits=3), ValueError, r"x must be finite"),
        (lambda: fmt_rounded("1.5", digits=3), TypeError, r"x must be a real number, got str"),
        (lambda: fmt_rounded(1.0), ValueError, r"exactly one of digits= and decimals="),
        (lambda: fmt_rounded(1.0, digits=0), ValueError, r"digits must be >= 1"),
        (lambda: fmt_rounded(1.0, decimals=1.5), TypeError, r"decimals must be an int"),
    ],

    "Checks.close": [
        (lambda: Checks().close("c", 1.0, 1.0, against="a"), ValueError, r"give atol or rtol"),
        (lambda: Checks().close("c", 1.0, 1.0, atol=-1.0, against="a"), ValueError,
         r"atol must be a finite number >= 0"),
        (lambda: Checks().close("c", 1.0, 1.0, rtol="0.1", against="a"), TypeError,
         r"rtol must be a real number"),
        (lambda: Checks().close("c", [1.0, 2.0], [1.0, 2.0, 3.0], atol=1.0, against="a"),
         ValueError, r"value and reference must broadcast"),
        (lambda: Checks().close("", 1.0, 1.0, atol=1.0, against="a"), ValueError,
         r"claim must not be empty"),
        (lambda: Checks().close("c", 1.0, 1.0, atol=1.0, against=3), TypeError,
         r"against must be a str"),
    ],
    "Checks.below": [
        (lambda: Checks().below("c", [], 1.0, against="a"), ValueError,
         r"value must not be empty"),
        (lambda: Checks().below("c", 1.0, 2.0, against="a", digits=0), ValueError,
         r"digits must be >= 1"),
        (lambda: Checks().below(None, 1.0, 2.0, against="a"), TypeError,
         r"claim must be a str"),
    ],
    "Checks.above": [
        (lambda: Checks().above("c", 1.0, 0.0, against="a", show_value=1), TypeError,
         r"show_value must be a bool"),
        (lambda: Checks().above("c", 1.0, 0.0, against=" "), ValueError,
         r"against must not be empty"),
        (lambda: Checks().above("c", 1.0, 0.0, against="a", digits=2.5), TypeError,
         r"digits must be an integer"),
    ],
    "Checks.holds": [
        (lambda: Checks().holds("c", 1, against="a", shown="s"), TypeError,
         r"ok must be a bool, got int"),
        (lambda: Checks().holds("c", True, against="a", shown=""), ValueError,
         r"shown must not be empty"),
    ],
    "Checks": [
        (lambda: Checks(digits=0), ValueError, r"digits must be >= 1"),
        (lambda: Checks(digits=18), ValueError, r"digits must be <= 17"),
        (lambda: Checks(digits="3"), TypeError, r"digits must be an integer"),
    ],
}

EXTREME_INPUTS = {
    "fmt": [
        (lambda: (fmt(1.7e308), fmt(5e-324), fmt(np.float32(0.1), 3)),
         lambda out: _equal(out, ("1.7e+308", "4.941e-324", "0.1"))),
    ],
    "round_to": [
        (lambda: (round_to(1.7e308, digits=2), round_to(5e-324, decimals=2),
                  round_to(-5e-324, digits=1)),
         lambda out: _equal(out, (1.7e308, 0.0, -5e-324))),
    ],
    "fmt_below": [
        (lambda: (fmt_below(float("inf"), 1e-12), fmt_below(0.0, 5e-324)),
         lambda out: _equal(out, ("max |error| < 1e-12: False",
                                  "max |error| < 4.94066e-324: True"))),
    ],
}


def _equal(out, want):
    assert out == want, f"{out!r} != {want!r}"
