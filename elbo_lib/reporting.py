"""Machine-stable printing of numbers.

The notebooks are compared text-for-text by nbval, so every printed number is rounded
to the precision its claim needs (four significant digits by default): harmless
last-bit differences between machines do not fail the book, real changes do.
"""

from __future__ import annotations

import numpy as np

from elbo_lib._validation import check_positive_int


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
    x = float(x)
    if not np.isfinite(x):
        return str(x)
    out = f"{x:.{digits}g}"
    return "0" if out in ("-0", "0") else out


def fmt_array(values, digits: int = 4) -> str:
    """Format an array of numbers as ``[a, b, ...]`` with :func:`fmt`."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        return fmt(arr, digits)
    return "[" + ", ".join(fmt_array(v, digits) for v in arr) + "]"
