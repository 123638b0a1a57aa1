"""The number-aware nbval comparison (root conftest.py), tested through nbval itself.

A small notebook is written whose committed outputs differ from what its cells print in
the ways that matter: kernel-level noise (last bits, glue reprs) must pass; a 1e-3 relative
change of a number, a changed integer, a changed word, a changed count of numbers must
fail; a loosened cell accepts what its tolerance says and no more. pytest + nbval run it in
a subprocess with the repository's conftest.py and sanitize file, exactly as `make test`.
"""

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]

WHY = "measured: float32 training, differs in the 4th digit under other training seeds"
SEEDS = {"runs": 5, "seed_sets": 3, "largest_change": 5e-4, "run_spread": 0.01}

# (name, code the cell runs, committed stdout, cell metadata, expected outcome)
STDOUT_CASES = [
    ("last_bit", 'print("ELBO -1.8359147840934906 nats")', "ELBO -1.8359147840934902 nats\n",
     {}, "passed"),
    ("relative_1e-14", "print(0.25 * (1 + 1e-14))", "0.25\n", {}, "passed"),
    ("sanitized_address", 'print("object at 0x7f3a2b")', "object at 0x55d1e0\n", {}, "passed"),
    ("relative_1e-3", 'print("mean 0.5005")', "mean 0.5\n", {}, "failed"),
    ("relative_1e-8", 'print("bound 2.00000002")', "bound 2\n", {}, "failed"),
    ("integer", 'print("iterations: 41")', "iterations: 42\n", {}, "failed"),
    ("word", 'print("converged: True")', "converged: False\n", {}, "failed"),
    ("count", 'print("values 1.0 2.0")', "values 1.0 2.0 3.0\n", {}, "failed"),
    ("sign", 'print("slope -0.5")', "slope 0.5\n", {}, "failed"),
    ("zero_vs_roundoff", 'print("mean 1e-17")', "mean 0\n", {}, "failed"),
    ("negative_zero", 'print("mean -0.0")', "mean 0\n", {}, "passed"),
    ("loosened_inside", 'print("loss 1.001")', "loss 1.000\n",
     {"tolerance": {"rtol": 1e-3, "why": WHY, "seeds": SEEDS}}, "passed"),
    ("loosened_outside", 'print("loss 1.0011")', "loss 1.000\n",
     {"tolerance": {"rtol": 1e-3, "why": WHY, "seeds": SEEDS}}, "failed"),
    ("loosened_word", 'print("lost 1.0")', "loss 1.0\n",
     {"tolerance": {"rtol": 1e-3, "why": WHY, "seeds": SEEDS}}, "failed"),
    ("atol_inside", 'print("mean -1.4e-17")', "mean 6.7e-18\n",
     {"tolerance": {"rtol": 0, "atol": 1e-15, "why": WHY,
                    "seeds": {**SEEDS, "largest_change": 0}}}, "passed"),
    ("atol_outside", 'print("mean 2e-15")', "mean 6.7e-18\n",
     {"tolerance": {"rtol": 0, "atol": 1e-15, "why": WHY,
                    "seeds": {**SEEDS, "largest_change": 0}}}, "failed"),
    ("no_why", 'print("loss 1.0")', "loss 1.0\n", {"tolerance": {"rtol": 1e-3}}, "failed"),
    ("no_seeds", 'print("loss 1.0")', "loss 1.0\n", {"tolerance": {"rtol": 1e-3, "why": WHY}},
     "failed"),
    ("rtol_beyond_run_spread", 'print("loss 1.0")', "loss 1.0\n",
     {"tolerance": {"rtol": 0.02, "why": WHY, "seeds": SEEDS}}, "failed"),
    ("rtol_below_seed_change", 'print("loss 1.0")', "loss 1.0\n",
     {"tolerance": {"rtol": 1e-4, "why": WHY, "seeds": SEEDS}}, "failed"),
    ("too_few_runs", 'print("loss 1.0")', "loss 1.0\n",
     {"tolerance": {"rtol": 1e-3, "why": WHY, "seeds": {**SEEDS, "runs": 1}}}, "failed"),
    ("empty_why", 'print("loss 1.0")', "loss 1.0\n", {"tolerance": {"rtol": 1e-3, "why": " "}},
     "failed"),
    ("unknown_key", 'print("loss 1.0")', "loss 1.0\n",
     {"tolerance": {"rtol": 1e-3, "rol": 1, "why": WHY, "seeds": SEEDS}}, "failed"),
    ("ignored_with_tolerance", 'print("took 3.2 s")', "took 1.1 s\n",
     {"tags": ["nbval-ignore-output"],
      "tolerance": {"rtol": 1e-3, "why": WHY, "seeds": SEEDS}}, "failed"),
    ("ignored", 'print("took 3.2 s")', "took 1.1 s\n", {"tags": ["nbval-ignore-output"]},
     "passed"),
]


def _stream(text, name="stdout"):
    return nbformat.v4.new_output("stream", name=name, text=text)


def _glue_output(name, text):
    return nbformat.v4.new_output(
        "display_data", data={"application/papermill.record/text/plain": text},
        metadata={"scrapbook": {"mime_prefix": "application/papermill.record/", "name": name}})


def _cells():
    """(name, cell, expected) for every case, in notebook order."""
    cases = []
    for name, code, committed, metadata, expected in STDOUT_CASES:
        cases.append((name, code, [_stream(committed)], metadata, expected))
    # myst-nb glue stores the float's repr: last-bit noise passes, a real change fails
    glue = "from myst_nb import glue\nglue({!r}, {}, display=False)"
    cases += [
        ("glue_repr", glue.format("a", "0.5513224236995268"),
         [_glue_output("a", "0.551322423699527")], {}, "passed"),
        ("glue_repr_1e-3", glue.format("b", "27.29038919613243 * 1.001"),
         [_glue_output("b", "27.29038919613243")], {}, "failed"),
        ("execute_result", "1.0000000000000002", [nbformat.v4.new_output(
            "execute_result", data={"text/plain": "1.0"}, execution_count=1)], {}, "passed"),
        ("stderr", 'import sys\nprint("loss 3.0000000000000004", file=sys.stderr)',
         [_stream("loss 3.0\n", "stderr")], {}, "passed"),
        ("stderr_word", 'import sys\nprint("warning 3.0", file=sys.stderr)',
         [_stream("warnings 3.0\n", "stderr")], {}, "failed"),
    ]
    out = []
    for name, code, outputs, metadata, expected in cases:
        cell = nbformat.v4.new_code_cell(code, metadata=metadata, outputs=outputs,
                                         execution_count=1)
        out.append((name, cell, expected))
    return out


@pytest.fixture(scope="module")
def nbval_run(tmp_path_factory):
    """Run pytest --nbval (subprocess) on the case notebook once; map case -> report."""
    case_dir = tmp_path_factory.mktemp("nbval_cases")
    cases = _cells()
    nb = nbformat.v4.new_notebook(cells=[cell for _, cell, _ in cases])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, case_dir / "cases.ipynb")
    (case_dir / "conftest.py").write_text((ROOT / "conftest.py").read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--nbval",
         "--nbval-current-env", f"--nbval-sanitize-with={ROOT / 'nbval_sanitize.cfg'}",
         "-v", "-rf", "--color=no", "cases.ipynb"],
        cwd=case_dir, capture_output=True, text=True, timeout=300)
    outcomes = dict(re.findall(r"cases(?:\.|::)ipynb::Cell (\d+) (PASSED|FAILED)", proc.stdout))
    return {name: (expected, outcomes.get(str(i)), i) for i, (name, _, expected)
            in enumerate(cases)}, proc.stdout


def test_every_case_is_reported(nbval_run):
    results, stdout = nbval_run
    missing = [name for name, (_, got, _) in results.items() if got is None]
    assert not missing, f"no outcome for {missing}:\n{stdout[-3000:]}"


@pytest.mark.parametrize("name", [c[0] for c in STDOUT_CASES] + [
    "glue_repr", "glue_repr_1e-3", "execute_result", "stderr", "stderr_word"])
def test_case(nbval_run, name):
    results, stdout = nbval_run
    expected, got, _ = results[name]
    assert got is not None, stdout[-3000:]
    assert got.lower() == expected, f"case {name}: expected {expected}, got {got}"


def _failure_section(stdout, cell):
    """The failure report of one cell from pytest's output."""
    match = re.search(rf"_+ cases\.ipynb::Cell {cell} _+\n(.*?)(?=\n_+ cases\.ipynb::Cell|\n=+ )",
                      stdout, re.S)
    assert match, f"no failure report for cell {cell}"
    return match.group(1)


def test_failure_message_shows_numbers_and_tolerance(nbval_run):
    results, stdout = nbval_run
    report = _failure_section(stdout, results["relative_1e-3"][2])
    assert "numbers compared with rtol=1e-09, atol=0 (the default)" in report
    assert "reference 0.5 vs test 0.5005" in report
    loosened = _failure_section(stdout, results["loosened_outside"][2])
    assert "rtol=0.001, atol=0 (cell metadata 'tolerance', why: measured:" in loosened
    assert "reference 1.000 vs test 1.0011" in loosened
    assert "differs (line 1)" in _failure_section(stdout, results["word"][2])
    assert "the reference has 3 numbers, the test output 2" in _failure_section(
        stdout, results["count"][2])


def test_malformed_tolerance_messages(nbval_run):
    results, stdout = nbval_run
    assert "'why' (the measured reason for loosening) is missing or empty" in _failure_section(
        stdout, results["no_why"][2])
    assert "unknown keys ['rol']" in _failure_section(stdout, results["unknown_key"][2])
    assert "'seeds' is missing" in _failure_section(stdout, results["no_seeds"][2])
    assert "larger than the spread between runs" in _failure_section(
        stdout, results["rtol_beyond_run_spread"][2])
    assert "below the change measured under other seeds" in _failure_section(
        stdout, results["rtol_below_seed_change"][2])
    assert "'seeds.runs' must be an int >= 5" in _failure_section(
        stdout, results["too_few_runs"][2])
    assert "on a cell whose output is not compared" in _failure_section(
        stdout, results["ignored_with_tolerance"][2])


def test_nbval_version_is_checked_at_start_up():
    """Another nbval stops pytest before any notebook runs, naming both versions."""
    import importlib.util

    import nbval

    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    assert nbval.__version__ == conftest.NBVAL_VERSION  # the pinned one passes
    conftest.check_nbval_version(conftest.NBVAL_VERSION)
    with pytest.raises(pytest.UsageError, match=r"copy of nbval 0\.11\.0.*nbval 0\.12\.1"):
        conftest.check_nbval_version("0.12.1")
