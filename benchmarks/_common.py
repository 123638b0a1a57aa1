"""Timing discipline, machine description and small helpers shared by every comparison."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Config:
    """What a run measures and how often.

    Attributes
    ----------
    smoke : bool
        Tiny sizes (seconds), for CI; results go to a scratch folder.
    repeats : int
        Timed repeats per measurement (the median is reported); >= 5 in a full run.
    warmup : int
        Untimed calls before the repeats (caches, lazy imports, BLAS thread start-up).
    seed : int
        Seed of every data set (NumPy ``default_rng``) and of torch.
    """

    smoke: bool = False
    repeats: int = 5
    warmup: int = 1
    seed: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class Timing:
    """Median and spread of repeated wall-clock timings (seconds)."""

    median: float
    minimum: float
    maximum: float
    times: list[float]
    result: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "min_s": self.minimum, "max_s": self.maximum,
                "times_s": self.times}


def measure(functions: dict[str, Callable[[], Any]], config: Config,
            warmup: int | None = None) -> dict[str, Timing]:
    """Time several functions fairly: warm-up, then interleaved repeats, median of each.

    Every function is first called ``warmup`` times untimed (default ``config.warmup``;
    a sweep may pass 0 for its larger sizes once the same code ran warm at a smaller one).
    Then the repeats alternate between the functions (A B A B ...), so that a burst of
    background load hits both sides alike instead of one side only. Each call is timed with
    :func:`time.perf_counter`; the result of the last call is kept for accuracy checks.
    """
    if config.repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {config.repeats}")
    results: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning etc. must not cost time per call
        for name, fn in functions.items():
            for _ in range(config.warmup if warmup is None else warmup):
                results[name] = fn()
        times: dict[str, list[float]] = {name: [] for name in functions}
        for _ in range(config.repeats):
            for name, fn in functions.items():
                start = time.perf_counter()
                results[name] = fn()
                times[name].append(time.perf_counter() - start)
    return {name: Timing(statistics.median(t), min(t), max(t), t, results[name])
            for name, t in times.items()}


def peer(package: str, *modules: str):
    """The peer library ``package`` (its submodules ``modules`` imported), or None.

    The peers (hmmlearn, Pyro) are pinned in ``benchmarks/requirements.txt``, not in the
    book's requirements: CI does not install them, and a comparison without its peer
    times our side only and says so. ``BENCH_WITHOUT_PEERS=1`` hides them (tests).
    """
    import importlib

    if os.environ.get("BENCH_WITHOUT_PEERS") == "1":
        return None
    try:
        for name in modules:
            importlib.import_module(name)
        return importlib.import_module(package)
    except ImportError:
        return None


def loglog_slope(sizes, times) -> float:
    """Least-squares slope of log(time) against log(size): the empirical scaling exponent."""
    sizes, times = np.asarray(sizes, float), np.asarray(times, float)
    if sizes.size < 2:
        return float("nan")
    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def ratio(ours: float, reference: float) -> float:
    """ours / reference (< 1 means ours is faster)."""
    return float(ours / reference) if reference > 0 else float("nan")


def row(comparison: str, case: str, params: dict[str, Any], *, ours: Timing | float,
        reference_name: str = "", reference: Timing | float | None = None,
        ours_iters: int | None = None, ref_iters: int | None = None,
        agreement: str = "", agreement_value: float | None = None,
        target: str = "", met: bool | None = None, notes: str = "") -> dict[str, Any]:
    """One line of the results table (a flat dict, the same keys for every comparison)."""
    ours_s = ours.median if isinstance(ours, Timing) else float(ours)
    ref_s = (None if reference is None
             else reference.median if isinstance(reference, Timing) else float(reference))
    out = {
        "comparison": comparison,
        "case": case,
        "size": " ".join(f"{k}={v:g}" if isinstance(v, int | float) else f"{k}={v}"
                         for k, v in params.items()),
        "params": params,
        "ours_s": ours_s,
        "reference": reference_name,
        "ref_s": ref_s,
        "ratio": None if ref_s is None else ratio(ours_s, ref_s),
        "ours_iters": ours_iters,
        "ref_iters": ref_iters,
        "ours_per_iter_s": ours_s / ours_iters if ours_iters else None,
        "ref_per_iter_s": (ref_s / ref_iters if ref_iters and ref_s is not None else None),
        "agreement": agreement,
        "agreement_value": agreement_value,
        "target": target,
        "met": met,
        "notes": notes,
        "ours_times_s": ours.times if isinstance(ours, Timing) else [ours_s],
        "ref_times_s": (reference.times if isinstance(reference, Timing)
                        else None if reference is None else [ref_s]),
    }
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas_info() -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return []
    keep = ("user_api", "internal_api", "num_threads", "version", "threading_layer")
    return [{k: info.get(k) for k in keep} for info in threadpool_info()]


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_description() -> dict[str, Any]:
    """CPU, cores, load, library versions and thread pools of this run."""
    import matplotlib
    import scipy
    import sklearn
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "torch": torch.__version__,
        "matplotlib": matplotlib.__version__,
        "torch_threads": torch.get_num_threads(),
        "pyro-ppl": _dist_version("pyro-ppl"),
        "hmmlearn": _dist_version("hmmlearn"),
        "blas": _blas_info(),
        "load_average_start": [round(x, 2) for x in load],
    }
