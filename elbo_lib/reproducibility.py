"""One seeding helper for the whole book (used at the top of every chapter)."""

from __future__ import annotations

import os
import random
import sys

import numpy as np

from elbo_lib._validation import check_positive_int

__all__ = ["SEED_SHIFT_VARIABLE", "TORCH_THREADS", "seed_everything", "training_seed"]

#: Threads torch may use. Fixed so that results do not depend on the reader's core count.
TORCH_THREADS = 1

#: Environment variable that shifts every :func:`training_seed` (unset: no shift).
SEED_SHIFT_VARIABLE = "ELBO_TRAINING_SEED_SHIFT"


def training_seed(seed: int) -> int:
    """The seed of a trained result: ``seed`` plus the shift in ``$ELBO_TRAINING_SEED_SHIFT``.

    A number from training is a statement about many runs, so its printed claim must
    survive other seeds. Chapters seed their training with
    ``seed_everything(training_seed(1))``; with the variable unset that is seed 1 and
    the committed outputs, and ``make test-portable`` sets it (one of its configurations)
    so that nbval re-runs every trained result from other starting points and compares
    it with the committed outputs within the tolerance measured over seeds.

    Parameters
    ----------
    seed : int
        The chapter's seed, >= 0.

    Returns
    -------
    int
        ``seed + shift``.

    Raises
    ------
    ValueError
        If the variable is set to anything but a non-negative integer.
    """
    seed = check_positive_int(seed, "seed", minimum=0)
    raw = os.environ.get(SEED_SHIFT_VARIABLE, "").strip()
    if not raw:
        return seed
    if not raw.isdigit():
        raise ValueError(f"${SEED_SHIFT_VARIABLE} must be a non-negative integer, "
                         f"got {raw!r}")
    return seed + int(raw)


def seed_everything(seed: int = 0) -> np.random.Generator:
    """Seed Python, NumPy and PyTorch, and make PyTorch deterministic.

    Every chapter calls this once, in its first code cell, so that two executions of
    a notebook print identical text on any machine.

    Parameters
    ----------
    seed : int
        Seed in [0, 2**32 - 1].

    Returns
    -------
    numpy.random.Generator
        A fresh ``default_rng(seed)``; chapters draw all their NumPy randomness from it.

    Notes
    -----
    PyTorch is seeded only if it is installed. Its intra-op thread count is fixed at
    :data:`TORCH_THREADS`, because floating-point reductions split over a different
    number of threads add up in a different order.
    """
    seed = check_positive_int(seed, "seed", minimum=0)
    if seed > 2**32 - 1:   # numpy's legacy global seed is 32-bit
        raise ValueError(f"seed must be <= 2**32 - 1, got {seed}")
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - legacy global state, for third-party code using it
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is in requirements.txt
        return np.random.default_rng(seed)
    torch.manual_seed(seed)
    switch = getattr(torch._C, "_set_deterministic_algorithms", None)
    if switch is None or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True)
    else:
        # The switch that torch.use_deterministic_algorithms(True) sets for every eager
        # operation. The public call also imports torch._inductor, only to set the flag
        # torch.compile reads (the book never compiles): 1.9 s in every chapter that
        # trains nothing with torch.optim (whose first step imports it anyway).
        switch(True)
    torch.set_num_threads(TORCH_THREADS)
    return np.random.default_rng(seed)
