"""The input contract of elbo_lib (issue 16), as one table-driven test.

Every ``tests/test_<module>.py`` defines, at module level, ``BAD_INPUTS`` (and, where valid
but extreme input matters, ``EXTREME_INPUTS``) for the public names of ``elbo_lib.<module>``:

* ``BAD_INPUTS[name]``: a list of ``(call, exception type, message regex)``: ``call()``
  must raise that exception type (a ``TypeError`` or ``ValueError`` at the boundary) with a
  message matching the regex, and the regex must mention an argument of ``name``;
* ``EXTREME_INPUTS[name]``: a list of ``(call, check)``: ``check(call())`` raises
  ``AssertionError`` when the answer is wrong (compare with an independent answer);
* ``NO_INPUTS[name]``: a reason, only for a class a reader never constructs (a result
  object returned by a function).

``name`` is a public function or class (its constructor) of the module, or
``"Class.method"`` for a public method that takes arguments. This module runs every case
as its own test (id ``<module>.<name>[i]``) and, per library module, fails when a public
name has no ``BAD_INPUTS`` entry, so a new function cannot ship without its cases.

A failing case says what kind of failure it is, so the probe of issue 16 can be counted:
``[unclear error]`` (wrong exception type or a message that does not match),
``[silent NaN/inf]`` (no exception, a non-finite result), ``[wrong result]`` (no exception
and a finite result for bad input, or a failed check of an extreme input), ``[hang]``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import pkgutil
import re
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import elbo_lib

TESTS = Path(__file__).resolve().parent
#: Seconds a single case may run before it counts as a hang.
CASE_TIMEOUT = 120


# ---------------------------------------------------------------------------------------
# what the library exposes
# ---------------------------------------------------------------------------------------
def library_modules() -> list[str]:
    """Every module of elbo_lib (``_validation`` included: the library's internal API)."""
    return sorted(m.name for m in pkgutil.iter_modules(elbo_lib.__path__)
                  if not m.name.startswith("_") or m.name == "_validation")


def _public_objects(module) -> dict[str, object]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(module).items() if not n.startswith("_")
                 and (inspect.isfunction(obj) or inspect.isclass(obj))
                 and obj.__module__ == module.__name__]
    return {n: getattr(module, n) for n in names
            if inspect.isfunction(getattr(module, n)) or inspect.isclass(getattr(module, n))}


def _takes_arguments(func, bound: bool = False) -> bool:
    """Whether ``func`` has a parameter a caller passes (beyond ``self`` when ``bound``)."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return True
    return len(params) > (1 if bound else 0)


def public_names(module_name: str) -> dict[str, object]:
    """``{name: object}``: public functions and classes that take arguments, and
    ``Class.method`` for public methods (static and class methods included) with arguments.

    A function without parameters (``set_theme()``) has no input to get wrong."""
    module = importlib.import_module(f"elbo_lib.{module_name}")
    out = {}
    for name, obj in _public_objects(module).items():
        if inspect.isfunction(obj) and not _takes_arguments(obj):
            continue
        out[name] = obj
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(member, staticmethod | classmethod):
                    if _takes_arguments(member.__func__,
                                        bound=isinstance(member, classmethod)):
                        out[f"{name}.{attr}"] = member.__func__
                elif inspect.isfunction(member) and _takes_arguments(member, bound=True):
                    out[f"{name}.{attr}"] = member
    return out


def _argument_names(module_name: str, name: str) -> set[str] | None:
    """Parameter names of ``name`` (for a method: of the method and of its class); None
    when it takes ``**kwargs`` (then the caller chooses the names)."""
    module = importlib.import_module(f"elbo_lib.{module_name}")
    head, _, method = name.partition(".")
    obj = getattr(module, head)
    targets = [obj] + ([getattr(obj, method)] if method else [])
    names: set[str] = set()
    for target in targets:
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):
            continue
        if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return None
        names |= {p for p in sig.parameters if p != "self"}
        if dataclasses.is_dataclass(target):
            names |= {f.name for f in dataclasses.fields(target)}
    return names


# ---------------------------------------------------------------------------------------
# the cases, from every tests/test_*.py that defines them
# ---------------------------------------------------------------------------------------
def _case_modules() -> dict[str, object]:
    """``{library module: test module}`` for every test file that declares cases."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    found = {}
    for path in sorted(TESTS.glob("test_*.py")):
        if path.stem == "test_contract":
            continue
        text = path.read_text()
        if not re.search(r"^(BAD_INPUTS|EXTREME_INPUTS|NO_INPUTS)\b", text, re.M):
            continue  # import only the modules that declare cases
        found[path.stem.removeprefix("test_")] = importlib.import_module(path.stem)
    return found


CASE_MODULES = _case_modules()


def _table(module_name: str, table: str) -> dict:
    return getattr(CASE_MODULES.get(module_name), table, {}) or {}


def _bad_cases():
    for module_name in sorted(CASE_MODULES):
        for name, cases in _table(module_name, "BAD_INPUTS").items():
            for i, case in enumerate(cases):
                yield pytest.param(module_name, name, case, id=f"{module_name}.{name}[{i}]")


def _extreme_cases():
    for module_name in sorted(CASE_MODULES):
        for name, cases in _table(module_name, "EXTREME_INPUTS").items():
            for i, case in enumerate(cases):
                yield pytest.param(module_name, name, case, id=f"{module_name}.{name}[{i}]")


class _Hang(Exception):
    pass


def _run(call):
    """``call()`` with a time limit (a hang is a failure of the contract too)."""
    def alarm(signum, frame):
        raise _Hang

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(CASE_TIMEOUT)
    try:
        return call()
    except _Hang:
        pytest.fail(f"[hang] no answer within {CASE_TIMEOUT} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _non_finite(value) -> bool:
    """Whether a result holds NaN or inf anywhere (arrays, tensors, tuples, dicts, objects)."""
    if isinstance(value, torch.Tensor):
        return value.is_floating_point() and not bool(torch.isfinite(value.detach()).all())
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "fc" and not bool(np.isfinite(value).all())
    if isinstance(value, float | np.floating):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_non_finite(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(_non_finite(getattr(value, f.name)) for f in dataclasses.fields(value))
    if hasattr(value, "__dict__") and not inspect.ismodule(value):
        return any(_non_finite(v) for k, v in vars(value).items() if not k.startswith("_"))
    return False


@pytest.mark.parametrize(("module_name", "name", "case"), list(_bad_cases()))
def test_bad_input_is_rejected_clearly(module_name, name, case):
    call, error, pattern = case
    assert error in (TypeError, ValueError), "bad input raises TypeError or ValueError"
    args = _argument_names(module_name, name)
    word = r"(?<![A-Za-z0-9_]){}(?![A-Za-z0-9_])"
    assert args is None or any(re.search(word.format(re.escape(a)), pattern) for a in args), (
        f"the message regex {pattern!r} must mention an argument of {name} "
        f"({sorted(args or ())})")
    try:
        out = _run(call)
    except error as exc:
        if not re.search(pattern, str(exc)):
            pytest.fail(f"[unclear error] {type(exc).__name__}: {exc!s:.300} "
                        f"does not match {pattern!r}")
        return
    except Exception as exc:  # noqa: BLE001 - the point is to classify it
        pytest.fail(f"[unclear error] expected {error.__name__} matching {pattern!r}, got "
                    f"{type(exc).__name__}: {exc!s:.300}")
    kind = "[silent NaN/inf]" if _non_finite(out) else "[wrong result]"
    pytest.fail(f"{kind} no exception; returned {out!r:.200}")


@pytest.mark.parametrize(("module_name", "name", "case"), list(_extreme_cases()))
def test_extreme_input_gets_a_right_answer(module_name, name, case):
    call, check = case
    try:
        out = _run(call)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"[unclear error] valid input raised {type(exc).__name__}: {exc!s:.300}")
    try:
        check(out)
    except AssertionError as exc:
        nan = _non_finite(out) or "nan location mismatch" in str(exc)
        kind = "[silent NaN/inf]" if nan else "[wrong result]"
        pytest.fail(f"{kind} {exc!s:.400}")


# ---------------------------------------------------------------------------------------
# coverage: every public name has cases
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("module_name", library_modules())
def test_every_public_name_has_bad_input_cases(module_name):
    names = public_names(module_name)
    bad = _table(module_name, "BAD_INPUTS")
    exempt = _table(module_name, "NO_INPUTS")
    unknown = sorted((set(bad) | set(exempt) | set(_table(module_name, "EXTREME_INPUTS")))
                     - set(names))
    assert not unknown, f"cases for names that elbo_lib.{module_name} does not expose: {unknown}"
    for name, reason in exempt.items():
        assert inspect.isclass(names[name]) and isinstance(reason, str) and reason, (
            f"NO_INPUTS may only exempt a class, with a reason: {name}")
    missing = sorted(n for n in names if n not in exempt and not bad.get(n))
    assert not missing, (f"public names of elbo_lib.{module_name} without BAD_INPUTS cases "
                         f"(tests/test_{module_name}.py): {missing}")
