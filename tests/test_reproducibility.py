import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from elbo_lib import seed_everything, training_seed
from elbo_lib.reproducibility import TORCH_THREADS


def _draws(seed):
    rng = seed_everything(seed)
    legacy = np.random.rand(2)  # noqa: NPY002 - checks the legacy global state is seeded too
    return (rng.normal(size=3), legacy, random.random(), torch.randn(3).numpy())


def test_same_seed_same_draws_everywhere():
    a, b = _draws(7), _draws(7)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_different_seed_different_draws():
    a, b = _draws(7), _draws(8)
    assert not np.array_equal(a[0], b[0])
    assert not np.array_equal(a[3], b[3])


def test_torch_is_deterministic_and_single_threaded():
    seed_everything(0)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == TORCH_THREADS


def test_torch_determinism_without_importing_inductor():
    """In a fresh interpreter the deterministic switch is on and torch._inductor (1.9 s of
    imports that only torch.compile needs) was not imported to set it."""
    code = ("import sys, torch; from elbo_lib import seed_everything; seed_everything(0); "
            "print(torch.are_deterministic_algorithms_enabled(), "
            "'torch._inductor.config' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out == ["True", "False"]


@pytest.mark.parametrize("bad, err", [(-1, ValueError), (1.5, TypeError), ("0", TypeError),
                                      (True, TypeError)])
def test_bad_seed(bad, err):
    with pytest.raises(err, match="seed"):
        seed_everything(bad)


# ------------------------------------------------------------------ contract (issue 16)
# Contract cases (issue 16): every public name of elbo_lib.reproducibility has bad-input cases.
BAD_INPUTS = {
    "seed_everything": [
        (lambda: seed_everything(-1), ValueError, r"seed must be >= 0"),
        (lambda: seed_everything(1.5), TypeError, r"seed must be an integer"),
        (lambda: seed_everything("0"), TypeError, r"seed must be an integer"),
        (lambda: seed_everything(None), TypeError, r"seed must be an integer"),
        (lambda: seed_everything(2**32), ValueError, r"seed must be <= 2\*\*32 - 1"),
    ],
    "training_seed": [
        (lambda: training_seed(-1), ValueError, r"seed must be >= 0"),
        (lambda: training_seed(1.5), TypeError, r"seed must be an integer"),
        (lambda: training_seed("1"), TypeError, r"seed must be an integer"),
    ],
}

EXTREME_INPUTS = {
    "seed_everything": [
        (lambda: seed_everything(2**32 - 1).integers(0, 2**31, size=3),
         lambda out: np.testing.assert_array_equal(
             out, np.random.default_rng(2**32 - 1).integers(0, 2**31, size=3))),
    ],
}


def test_training_seed_shift(monkeypatch):
    """training_seed is the chapter's seed unless ELBO_TRAINING_SEED_SHIFT shifts it
    (make test-portable's configuration that re-runs trained results from other seeds)."""
    from elbo_lib.reproducibility import SEED_SHIFT_VARIABLE

    monkeypatch.delenv(SEED_SHIFT_VARIABLE, raising=False)
    assert training_seed(3) == 3
    monkeypatch.setenv(SEED_SHIFT_VARIABLE, "1000")
    assert training_seed(3) == 1003
    for bad in ("-1", "x", "1.5"):
        monkeypatch.setenv(SEED_SHIFT_VARIABLE, bad)
        with pytest.raises(ValueError, match="ELBO_TRAINING_SEED_SHIFT must be"):
            training_seed(3)
