"""Machine-stable printing and glueing of numbers.

The notebooks' outputs are compared by the tests, so every printed or glued number is
rounded to the precision its claim needs (four significant digits by default):
harmless last-bit differences between machines do not fail the book, real changes do.
:func:`fmt` / :func:`fmt_array` print, :func:`glue` stores a rounded value for the
prose, :func:`fmt_below` states a round-off-level quantity as a bound.
"""

from __future__ import annotations

import numpy as np

from elbo_lib._validation import check_positive_int

__all__ = ["Checks", "fmt", "fmt_array", "fmt_below", "fmt_rounded",
           "glue", "round_to"]


def _real(x, name: str) -> float:
    """``x`` as a float: a real scalar (Python, NumPy, 0-d array or tensor), not a str/bool."""
    if (isinstance(x, str | bytes | bool | np.bool_ | list | tuple | dict | set)
            or len(getattr(x, "shape", ())) != 0):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    try:
        return float(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}") from None


def fmt(x, digits: int = 4) -> str:
    """Format a number with ``digits`` significant digits.

    Parameters
    ----------
    x : float
        The number. NaN and infinities are printed as ``nan``, ``inf`` and ``-inf``.
    digits : int
        Significant digits (>= 1).

    Returns
    -------
    str
        For example ``fmt(3.14159) == '3.142'`` and ``fmt(0.000123456) == '0.0001235'``.
        Very large or small magnitudes use scientific notation; ``-0`` prints as ``0``.

    Examples
    --------
    >>> fmt(-12.3456)
    '-12.35'
    """
    digits = check_positive_int(digits, "digits")
    x = _real(x, "x")
    if not np.isfinite(x):
        return str(x)
    out = f"{x:.{digits}g}"
    return "0" if out in ("-0", "0") else out


def fmt_array(values, digits: int = 4) -> str:
    """Format an array of numbers as ``[a, b, ...]`` with :func:`fmt`."""
    digits = check_positive_int(digits, "digits")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"values must be numeric array-like (not ragged), "
                        f"got {type(values).__name__}") from exc
    if arr.ndim == 0:
        return fmt(arr, digits)
    return "[" + ", ".join(fmt_array(v, digits) for v in arr) + "]"


def round_to(x, *, digits: int | None = None, decimals: int | None = None) -> float:
    """Round ``x`` to ``digits`` significant digits or to ``decimals`` decimal places.

    Exactly one of ``digits`` and ``decimals`` is given. The result is a Python
    ``float`` whose ``repr`` is short (``round_to(0.5513224236995268, digits=3)`` is
    ``0.551``), so that a stored value does not carry last-bit noise from the machine.

    Raises
    ------
    ValueError
        If both or neither of ``digits`` / ``decimals`` are given, ``digits < 1``, or
        ``x`` is not finite.
    """
    if (digits is None) == (decimals is None):
        raise ValueError("give exactly one of digits= and decimals=")
    x = _real(x, "x")
    if not np.isfinite(x):
        raise ValueError(f"x must be finite, got {x}")
    if digits is not None:
        digits = check_positive_int(digits, "digits")
        out = float(f"{x:.{digits}g}")
        if not np.isfinite(out):
            raise ValueError(f"x = {x!r} rounded to {digits} digits overflows float64")
    else:
        if isinstance(decimals, bool) or not isinstance(decimals, (int, np.integer)):
            raise TypeError(f"decimals must be an int, got {type(decimals).__name__}")
        out = round(x, int(decimals))
    return 0.0 if out == 0 else out


def fmt_rounded(x, *, digits: int | None = None, decimals: int | None = None) -> str:
    """``x`` rounded and printed with exactly the digits it has.

    A float's ``repr`` cannot say how many digits were kept: 88.8 rounded to two
    significant digits is the float ``89.0``, whose ``repr`` claims a third digit, and
    0.49996 rounded to three is ``0.5``, which hides two. This prints ``'89'`` and
    ``'0.500'``. A number that rounding did not change prints in its shortest form
    (``fmt_rounded(0.35, digits=4) == '0.35'``, not ``'0.3500'``): it is exact.

    Parameters
    ----------
    x : float
        A finite real number.
    digits, decimals : int
        Significant digits or decimal places (exactly one of them), as in
        :func:`round_to`.

    Returns
    -------
    str

    Examples
    --------
    >>> fmt_rounded(88.8, digits=2), fmt_rounded(24.98, digits=3), fmt_rounded(2.0, digits=3)
    ('89', '25.0', '2')
    """
    rounded = round_to(x, digits=digits, decimals=decimals)
    if rounded == float(x):  # exact at this precision: shortest form
        return fmt(rounded, 15)
    if decimals is not None:
        return f"{rounded:.{max(int(decimals), 0)}f}"
    magnitude = int(np.floor(np.log10(abs(rounded)))) if rounded != 0 else 0
    if rounded != 0 and not -5 <= magnitude < 15:
        return f"{rounded:.{digits - 1}e}"
    return f"{rounded:.{max(digits - 1 - magnitude, 0)}f}"


def glue(name: str, value, *, digits: int | None = None, decimals: int | None = None):
    """Glue a value for the chapter's prose, rounded to the precision the prose shows.

    A thin wrapper over :func:`myst_nb.glue` with ``display=False``: myst-nb stores the
    value's ``repr``, which the tests compare, so a float is stored rounded (4
    significant digits unless ``digits`` or ``decimals`` says otherwise) and a
    machine's last bits never reach the notebook. A float is stored as the string
    :func:`fmt_rounded` prints, so that the page shows the digits it has (``'89'``,
    not the ``89.0`` of a float's ``repr``). Integers (Python or NumPy) are
    stored as ``int``, strings as they are. Use in a code cell tagged ``remove-cell``
    and reference it in markdown as ``{glue:text}`name```.

    Parameters
    ----------
    name : str
        The glue key (unique within the notebook).
    value : float, int or str
    digits, decimals : int, optional
        Significant digits or decimal places of a float (at most one of them).

    Returns
    -------
    float, int or str
        The value glued: the rounded float (its text is stored), the int or the str.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"value of {name!r} is a bool: glue a number or a str")
    if isinstance(value, str):
        stored = returned = value
    elif isinstance(value, (int, np.integer)):
        if digits is not None or decimals is not None:
            raise ValueError(f"{name!r} is an integer: do not give digits/decimals")
        stored = returned = int(value)
    else:
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"value of {name!r} must be a number or a str, "
                            f"got {type(value).__name__}") from None
        if not np.isfinite(x):
            raise ValueError(f"value of {name!r} must be finite, got {x}")
        if digits is None and decimals is None:
            digits = 4
        returned = round_to(x, digits=digits, decimals=decimals)
        stored = fmt_rounded(x, digits=digits, decimals=decimals)
    from myst_nb import glue as _myst_glue

    _myst_glue(name, stored, display=False)
    return returned


def fmt_below(value, bound: float, name: str = "max |error|") -> str:
    """State that a round-off-level quantity is below a bound, without printing it.

    ``fmt_below(3e-16, 1e-12)`` is ``'max |error| < 1e-12: True'``: the statement is the
    same on every machine, whereas the value itself is last-bit noise.
    """
    bound = _real(bound, "bound")
    if not np.isfinite(bound) or bound <= 0:
        raise ValueError(f"bound must be a positive finite number, got {bound}")
    value = _real(value, "value")
    if np.isnan(value):
        raise ValueError("value must not be NaN (a NaN error is not below any bound)")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    return f"{name} < {bound:g}: {bool(value < bound)}"


# ---------------------------------------------------------------------------------------
# A chapter's Checks section: claims, each against an independent answer, as one table
# ---------------------------------------------------------------------------------------
class Checks:
    """The claims a chapter's Checks section verifies, each against an independent answer.

    Every claim is recorded with what it was checked against (a closed form, an
    enumeration, quadrature, a well-kept library) and the margin it had to meet;
    :meth:`table` raises ``AssertionError`` naming every claim that does not hold and
    otherwise returns the table, which a notebook displays (HTML for the reader, plain
    text for the tests). What the table shows is machine-stable: a round-off-level
    difference is shown as the bound it met (``|Δ| ≤ 1e-10``), never as its last bits,
    and compared values at ``digits`` significant digits.

    Examples
    --------
    >>> checks = Checks()
    >>> checks.close("log p(x) = ELBO + KL", -3.0 + 1e-15, -3.0, atol=1e-10,
    ...              against="closed-form evidence")
    >>> checks.below("amortisation gap", 0.082, 0.14, against="co-trained gap")
    >>> len(checks.table().rows)
    2
    """

    def __init__(self, digits: int = 3) -> None:
        #: significant digits of the values :meth:`below` and :meth:`above` show
        self.digits = check_positive_int(digits, "digits", maximum=17)
        self.rows: list[tuple[str, str, str, bool, str]] = []

    def __len__(self) -> int:
        return len(self.rows)

    @staticmethod
    def _text(value, name: str) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
        if not value.strip():
            raise ValueError(f"{name} must not be empty")
        return value.strip()

    def _add(self, claim, against, shown: str, ok: bool, detail: str) -> None:
        self.rows.append((self._text(claim, "claim"), self._text(against, "against"),
                          shown, bool(ok), detail))

    def close(self, claim: str, value, reference, *, atol: float = 0.0, rtol: float = 0.0,
              against: str) -> None:
        """Claim that ``value`` equals the independent ``reference`` within a margin.

        Holds when ``max |value - reference| <= atol + rtol * |reference|`` (elementwise,
        arrays broadcast); a NaN anywhere fails. Shown as the bound met, ``|Δ| ≤ atol``
        or ``|Δ| ≤ rtol·|ref|`` (both when both are given).
        """
        value = np.asarray(value, dtype=float)
        reference = np.asarray(reference, dtype=float)
        try:
            diff = np.abs(np.broadcast_arrays(value, reference)[0] - reference)
        except ValueError:
            raise ValueError(f"value and reference must broadcast, got shapes {value.shape} "
                             f"and {reference.shape}") from None
        margins = []
        for name, tol in (("atol", atol), ("rtol", rtol)):
            tol = _real(tol, name)
            if not (np.isfinite(tol) and tol >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {tol}")
            margins.append(tol)
        atol, rtol = margins
        if atol == 0 and rtol == 0:
            raise ValueError("give atol or rtol (> 0): equality of floats to the last bit "
                             "is not a claim that survives another CPU")
        allowed = atol + rtol * np.abs(reference)
        ok = diff.size > 0 and not np.any(np.isnan(diff)) and bool(np.all(diff <= allowed))
        parts = ([f"{atol:g}"] if atol else []) + ([f"{rtol:g}·|ref|"] if rtol else [])
        worst = float(np.nanmax(diff)) if diff.size and not np.all(np.isnan(diff)) else np.nan
        self._add(claim, against, "|Δ| ≤ " + " + ".join(parts), ok,
                  f"max |Δ| = {worst!r}, allowed {atol!r} + {rtol!r}·|ref|")

    def below(self, claim: str, value, bound, *, against: str,
              digits: int | None = None, show_value: bool = True) -> None:
        """Claim ``value < bound`` (every element), shown at ``digits`` significant digits
        (default: the table's); where ``value`` has several elements, the one nearest
        to failing is shown. With ``show_value=False`` only the bound is shown (for a
        value at round-off level, whose digits differ between machines)."""
        self._order(claim, value, bound, against, digits, "<", show_value)

    def above(self, claim: str, value, bound, *, against: str,
              digits: int | None = None, show_value: bool = True) -> None:
        """Claim ``value > bound`` (every element), shown as :meth:`below` shows it."""
        self._order(claim, value, bound, against, digits, ">", show_value)

    def _order(self, claim, value, bound, against, digits, sign, show_value) -> None:
        if not isinstance(show_value, bool):
            raise TypeError(f"show_value must be a bool, got {type(show_value).__name__}")
        digits = self.digits if digits is None else check_positive_int(digits, "digits",
                                                                       maximum=17)
        value = np.asarray(value, dtype=float)
        bound = np.asarray(bound, dtype=float)
        if value.size == 0:
            raise ValueError("value must not be empty")
        holds = value < bound if sign == "<" else value > bound
        ok = not np.any(np.isnan(value)) and bool(np.all(holds))
        # the element nearest to failing is the one shown
        gap = (bound - value) if sign == "<" else (value - bound)
        gap, value_b, bound_b = np.broadcast_arrays(gap, value, bound)
        i = np.unravel_index(np.nanargmin(gap) if not np.all(np.isnan(gap)) else 0, gap.shape)
        many = "max " if sign == "<" else "min "
        label = many if value.size > 1 else ""
        shown = (f"{label}{fmt(value_b[i], digits)} {sign} {fmt(bound_b[i], digits)}"
                 if show_value else
                 f"{'every value' if value.size > 1 else 'value'} {sign} "
                 f"{fmt(bound_b[i], digits)}")
        self._add(claim, against, shown, ok,
                  f"value {float(value_b[i])!r} {sign} bound {float(bound_b[i])!r} is {ok}")

    def holds(self, claim: str, ok, *, against: str, shown: str) -> None:
        """Claim a condition the caller computed (``ok``), shown as the text ``shown``.

        For claims that are not one comparison (an ordering of several numbers, a shape
        of a curve); ``shown`` must state what was compared, machine-stably.
        """
        if not isinstance(ok, bool | np.bool_):
            raise TypeError(f"ok must be a bool, got {type(ok).__name__}")
        self._add(claim, against, self._text(shown, "shown"), bool(ok), f"shown: {shown}")

    def table(self) -> CheckTable:
        """The table of claims; raises ``AssertionError`` naming every claim that does not hold."""
        if not self.rows:
            raise ValueError("no claims were checked")
        failed = [f"{claim} (against {against}): {detail}"
                  for claim, against, _, ok, detail in self.rows if not ok]
        if failed:
            raise AssertionError(f"{len(failed)} of {len(self.rows)} claims do not hold:\n  "
                              + "\n  ".join(failed))
        return CheckTable([(claim, against, shown) for claim, against, shown, _, _ in self.rows])


class CheckTable:
    """A table of claims that hold: HTML for the reader, plain text for the tests."""

    columns = ("claim", "checked against", "result")

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        self.rows = rows

    def __repr__(self) -> str:
        lines = [f"{len(self.rows)} claims hold:"]
        lines += [f"- {claim}: {shown} (against {against})" for claim, against, shown in self.rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from html import escape

        head = "".join(f"<th>{c}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in (claim, against, shown))
            + "</tr>" for claim, against, shown in self.rows)
        return (f'<table class="elbo-checks"><caption>{len(self.rows)} claims hold'
                f"</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
