"""Repository-wide pytest plugin: nbval compares numbers in text outputs with a tolerance.

nbval re-executes every notebook in ``chapters/`` and compares each cell's outputs with the
committed ones. Exact text comparison fails on a machine whose CPU picks other BLAS/MKL
kernels (last-bit differences), so this plugin replaces nbval's output comparison
(``IPyNbCell.compare_outputs`` of nbval 0.11.0, copied below with one change) by a
number-aware one. This file is the root ``conftest.py``, so pytest loads it for every run
in the repository, including ``pytest chapters/NN_x.ipynb``.

The rule (also in CONTRIBUTING.md, "Portability"):

* Text outputs -- streams (``stdout``, ``stderr``) and every ``text/plain`` mime type,
  including myst-nb glue's ``application/papermill.record/text/plain`` -- are split into
  numbers and the text between them (after nbval's sanitize rules). The text between the
  numbers must be identical, the count of numbers equal, and each pair of numbers ``a``
  (committed) and ``b`` (fresh) must satisfy ``|a - b| <= atol + rtol * max(|a|, |b|)``.
* Default ``rtol = 1e-9``, ``atol = 0``. With ``atol = 0`` a zero matches only a zero: a
  printed ``0`` against ``1e-17`` fails, because the comparison cannot know the data's
  scale. Round-off-level values are printed as bounds (``max |error| < 1e-12: True``),
  never as values.
* Every other output (other mime types, error names and values) is compared exactly, as
  nbval does; images are not compared (nbval's default).
* A cell may loosen its tolerance only with cell metadata
  ``"tolerance": {"rtol": <float>, "atol": <float, optional>, "why": "<measured reason>",
  "seeds": {"runs": <int>, "seed_sets": <int>, "largest_change": <float>,
  "run_spread": <float>}}``. Only a result of training or non-convex optimisation may be
  loosened, and only by what its seeds measured: each printed statistic is over
  ``runs`` >= 5 runs, it was recomputed under ``seed_sets`` >= 3 sets of training seeds
  (``elbo_lib.training_seed``) and moved by at most ``largest_change`` (relative), and
  single runs differ by ``run_spread`` (relative; the spread of the cell's noisiest
  statistic, (max - min) / |median| over its runs).
  ``rtol`` must lie in [largest_change, run_spread]: wide enough for other seeds (and
  so other CPUs), never wider than the spread it documents.
  A malformed entry (no non-empty ``why``, unknown keys, a negative or non-finite value,
  ``rtol >= 1``, no ``seeds`` record or one that ``rtol`` does not fit, or a tolerance on
  a cell whose output is not compared) fails that cell.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

DEFAULT_RTOL = 1e-9
DEFAULT_ATOL = 0.0

#: The nbval whose ``IPyNbCell.compare_outputs`` this plugin copies and whose internals it
#: uses (``IPyNbCell``, ``NbCellError``, ``transform_streams_for_comparison``, the cell's
#: ``options``/``config``/``sanitize_outputs``/``format_output_compare``, ...).
NBVAL_VERSION = "0.11.0"

# A decimal number with an optional sign, fraction and exponent: "-12", "0.5", ".5", "3.",
# "6.668e-18". Everything between two numbers is text and must match exactly.
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")

_TOLERANCE_KEYS = {"rtol", "atol", "why", "seeds"}
_SEEDS_KEYS = {"runs", "seed_sets", "largest_change", "run_spread"}
_MAX_REPORTED = 8


def is_numeric_key(key: str) -> bool:
    """Whether the output field ``key`` is text whose numbers are compared with a tolerance."""
    return key in ("stdout", "stderr") or key.endswith("text/plain")


def split_numbers(text: str) -> tuple[list[str], list[str]]:
    """Split ``text`` into the text pieces between numbers and the numbers (as strings).

    ``len(pieces) == len(numbers) + 1``; joining them alternately gives back ``text``.
    """
    pieces, numbers, start = [], [], 0
    for match in NUMBER.finditer(text):
        pieces.append(text[start:match.start()])
        numbers.append(match.group())
        start = match.end()
    pieces.append(text[start:])
    return pieces, numbers


def numbers_close(ref: str, test: str, rtol: float, atol: float) -> tuple[bool, float, float]:
    """Compare two printed numbers: ``(ok, |difference|, allowed difference)``."""
    if ref == test:
        return True, 0.0, 0.0
    a, b = float(ref), float(test)
    diff = abs(a - b)
    allowed = atol + rtol * max(abs(a), abs(b))
    return bool(diff <= allowed), diff, allowed  # nan/inf differences fail


def _line_of(text: str, pos: int) -> tuple[int, str]:
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line_end = len(text) if line_end < 0 else line_end
    return text.count("\n", 0, pos) + 1, text[line_start:line_end]


def compare_text(ref: str, test: str, rtol: float, atol: float) -> list[str]:
    """Compare two text outputs number-aware; return the explanation lines ([] if equal)."""
    if ref == test:
        return []
    ref_pieces, ref_numbers = split_numbers(ref)
    test_pieces, test_numbers = split_numbers(test)
    if len(ref_numbers) != len(test_numbers):
        return [f"the reference has {len(ref_numbers)} numbers, the test output "
                f"{len(test_numbers)}"]
    for i, (rp, tp) in enumerate(zip(ref_pieces, test_pieces, strict=True)):
        if rp != tp:
            ref_pos = sum(len(p) for p in ref_pieces[:i]) + sum(map(len, ref_numbers[:i]))
            test_pos = sum(len(p) for p in test_pieces[:i]) + sum(map(len, test_numbers[:i]))
            ref_line_no, ref_line = _line_of(ref, ref_pos)
            _, test_line = _line_of(test, test_pos)
            return [f"the text between the numbers differs (line {ref_line_no}):",
                    f"  reference: {ref_line!r}", f"  test:      {test_line!r}"]
    lines, pos = [], 0
    for i, (rn, tn) in enumerate(zip(ref_numbers, test_numbers, strict=True)):
        pos += len(ref_pieces[i])
        ok, diff, allowed = numbers_close(rn, tn, rtol, atol)
        if not ok:
            if len(lines) < _MAX_REPORTED:
                line_no, line = _line_of(ref, pos)
                lines.append(f"line {line_no}: reference {rn} vs test {tn}: |difference| "
                             f"{diff:.3g} > allowed {allowed:.3g}    in {line.strip()!r}")
            else:
                lines.append("... (more differing numbers not shown)")
                break
        pos += len(rn)
    return lines


def cell_tolerance(metadata) -> tuple[float, float, str | None, str | None]:
    """``(rtol, atol, why, problem)`` for a cell: its metadata entry or the default.

    ``problem`` is a message when the entry is malformed (the default is then returned).
    """
    entry = metadata.get("tolerance") if metadata is not None else None
    if entry is None:
        return DEFAULT_RTOL, DEFAULT_ATOL, None, None

    def bad(message):
        return DEFAULT_RTOL, DEFAULT_ATOL, None, (
            f"invalid cell metadata 'tolerance' {entry!r}: {message}; expected "
            '{"rtol": <float>, "atol": <float, optional>, "why": "<measured reason>", '
            '"seeds": {"runs": <int >= 5>, "seed_sets": <int >= 3>, '
            '"largest_change": <float>, "run_spread": <float>}}')

    if not isinstance(entry, dict):
        return bad("it must be an object")
    unknown = set(entry) - _TOLERANCE_KEYS
    if unknown:
        return bad(f"unknown keys {sorted(unknown)}")
    why = entry.get("why")
    if not isinstance(why, str) or not why.strip():
        return bad("'why' (the measured reason for loosening) is missing or empty")
    if "rtol" not in entry:
        return bad("'rtol' is missing")
    values = {}
    for key in ("rtol", "atol"):
        value = entry.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return bad(f"'{key}' must be a number")
        if not math.isfinite(value) or value < 0:
            return bad(f"'{key}' must be finite and >= 0")
        values[key] = float(value)
    if values["rtol"] >= 1:
        return bad("'rtol' >= 1 accepts any number of the same sign: it compares nothing")
    problem = _seeds_problem(entry.get("seeds"), values["rtol"])
    if problem:
        return bad(problem)
    return values["rtol"], values["atol"], why.strip(), None


def _seeds_problem(seeds, rtol: float) -> str | None:
    """Why a tolerance's ``seeds`` record does not justify ``rtol`` (None if it does)."""
    if not isinstance(seeds, dict):
        return ("'seeds' is missing: only a result over several runs may be loosened, by "
                "the change measured under other training seeds")
    if set(seeds) != _SEEDS_KEYS:
        return f"'seeds' must have exactly the keys {sorted(_SEEDS_KEYS)}"
    for key, minimum in (("runs", 5), ("seed_sets", 3)):
        value = seeds[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            return f"'seeds.{key}' must be an int >= {minimum}, got {value!r}"
    for key in ("largest_change", "run_spread"):
        value = seeds[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and value >= 0):
            return f"'seeds.{key}' must be a finite number >= 0, got {value!r}"
    if rtol < seeds["largest_change"]:
        return (f"'rtol' {rtol:g} is below the change measured under other seeds "
                f"({seeds['largest_change']:g}): the cell would fail on them")
    if rtol > seeds["run_spread"]:
        return (f"'rtol' {rtol:g} is larger than the spread between runs it documents "
                f"({seeds['run_spread']:g})")
    return None


def _describe_tolerance(rtol: float, atol: float, why: str | None) -> str:
    if why is None:
        return f"rtol={rtol:g}, atol={atol:g} (the default)"
    return f"rtol={rtol:g}, atol={atol:g} (cell metadata 'tolerance', why: {why})"


def _make_numeric_cell_class():
    from nbval.plugin import IPyNbCell, NbCellError, transform_streams_for_comparison

    class NumericIPyNbCell(IPyNbCell):
        """nbval's notebook cell item with the number-aware output comparison."""

        def runtest(self):
            rtol, atol, why, problem = cell_tolerance(self.cell.metadata)
            if problem is None and "tolerance" in self.cell.metadata and (
                    not self.options["check"] or self.options["skip"]):
                problem = ("cell metadata 'tolerance' on a cell whose output is not compared "
                           "(nbval-ignore-output / nbval-skip)")
            if problem is None:
                super().runtest()
                return
            try:  # execute the cell anyway, so that the following cells see its state
                super().runtest()
            except NbCellError:
                pass
            self.raise_cell_error(problem)

        def compare_outputs(self, test, ref, skip_compare=None):
            # nbval 0.11.0's IPyNbCell.compare_outputs; only the value comparison at the
            # end differs (numbers in text outputs within the cell's tolerance).
            skip_compare = skip_compare or self.parent.skip_compare
            test = transform_streams_for_comparison(test)
            ref = transform_streams_for_comparison(ref)
            cc = self.colors
            testing_outs = defaultdict(list)
            reference_outs = defaultdict(list)
            for outs, flat in ((ref, reference_outs), (test, testing_outs)):
                for output in outs:
                    for key in output.keys():
                        if key in skip_compare:
                            continue
                        if key == "data":
                            for data_key in output[key].keys():
                                if data_key not in skip_compare:
                                    flat[data_key].append(
                                        self.sanitize(output[key][data_key]))
                        else:
                            flat[key].append(self.sanitize(output[key]))

            self.comparison_traceback = []
            ref_keys, test_keys = set(reference_outs), set(testing_outs)
            if ref_keys - test_keys:
                self.comparison_traceback.append(
                    cc.FAIL + f"Missing output fields from running code: {ref_keys - test_keys}"
                    + cc.ENDC)
                return False
            if test_keys - ref_keys:
                self.comparison_traceback.append(
                    cc.FAIL + f"Unexpected output fields from running code: "
                    f"{test_keys - ref_keys}" + cc.ENDC)
                return False

            rtol, atol, why, _ = cell_tolerance(self.cell.metadata)
            for key, ref_values in reference_outs.items():
                test_values = testing_outs[str(key)]
                if len(test_values) != len(ref_values):
                    self.comparison_traceback.append(
                        cc.OKBLUE + f'dissimilar number of outputs for key "{key}": '
                        f"{len(ref_values)} in the reference, {len(test_values)} in the test"
                        + cc.ENDC)
                    return False
                for ref_out, test_out in zip(ref_values, test_values, strict=True):
                    if ref_out == test_out:
                        continue
                    if is_numeric_key(key) and isinstance(ref_out, str) and isinstance(
                            test_out, str):
                        explanation = compare_text(ref_out, test_out, rtol, atol)
                        if not explanation:
                            continue
                        self.comparison_traceback.append(
                            cc.OKBLUE + f" mismatch '{key}', numbers compared with "
                            + _describe_tolerance(rtol, atol, why) + ":" + cc.FAIL)
                        self.comparison_traceback.extend("  " + line for line in explanation)
                        self.comparison_traceback.append(cc.ENDC)
                    self.format_output_compare(key, ref_out, test_out)
                    return False
            return True

    return NumericIPyNbCell


def check_nbval_version(version: str) -> None:
    """Refuse to compare notebooks with an nbval this plugin was not written for.

    The plugin replaces a copy of nbval's own comparison; with another nbval the copy
    would silently diverge from the nbval around it. Raises ``pytest.UsageError`` (pytest
    stops at start-up with the message) unless ``version`` is ``NBVAL_VERSION``.
    """
    if version != NBVAL_VERSION:
        import pytest

        raise pytest.UsageError(
            f"conftest.py's number-aware comparison is a modified copy of nbval "
            f"{NBVAL_VERSION}'s IPyNbCell.compare_outputs, but nbval {version} is installed: "
            f"install nbval=={NBVAL_VERSION} (requirements.txt), or re-check the copy "
            f"against nbval {version} and change NBVAL_VERSION")


def pytest_configure(config):
    """At start-up, before any notebook runs: the nbval version check (``--nbval``)."""
    if not (config.getoption("nbval", default=False)
            or config.getoption("nbval_lax", default=False)):
        return
    try:
        import nbval
    except ImportError:  # nbval not installed: pytest itself rejects --nbval
        return
    check_nbval_version(getattr(nbval, "__version__", "unknown"))


def pytest_collection_modifyitems(session, config, items):
    """Give every nbval cell item the number-aware comparison (items are made by nbval)."""
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval not installed: nothing to do
        return
    numeric_cls = None
    for item in items:
        if type(item) is IPyNbCell:
            numeric_cls = numeric_cls or _make_numeric_cell_class()
            item.__class__ = numeric_cls
