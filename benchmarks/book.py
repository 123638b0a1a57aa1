"""The whole book: wall-clock time of every notebook under nbval, and the total.

Each notebook is verified exactly as ``make test`` does it
(``python -m pytest chapters/NN.ipynb``, which picks up ``--nbval --nbval-current-env``
and the sanitize file from ``pyproject.toml``), in a fresh process, once: the time
includes the pytest start-up and the kernel start, i.e. what a reader waits for. A
notebook is run once rather than 5 times because the whole book must fit in the
benchmark's time budget; the target is a total under 5 minutes on the 2-core machine.

Besides the wall-clock time, the CPU time of the run (user + system of pytest and the
kernel it starts, from ``getrusage(RUSAGE_CHILDREN)``) is recorded: it is what a chapter
costs whatever else the machine is doing, and the book's goal is under 90 s per chapter.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import ROOT, Config, row

TITLE = "The whole book: execution time of every notebook under nbval"
EQUALITY = (
    "Each notebook runs once under `python -m pytest chapters/NN.ipynb` (nbval, as in "
    "`make test`) in a fresh process; time includes pytest and kernel start-up. "
    "The notes give pytest's summary line (every notebook must pass).")
TARGET_TOTAL_S = 300.0


def notebooks(root: Path = ROOT) -> list[Path]:
    """The chapters' notebooks, in book order."""
    return sorted((root / "chapters").glob("*.ipynb"))


#: The per-chapter CPU goal under nbval (seconds).
TARGET_CPU_S = 90.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_notebook(path: Path, timeout: float = 900.0) -> tuple[float, float, bool, str]:
    """Run one notebook under nbval; return (wall s, CPU s, passed, pytest summary line).

    The CPU time counts pytest and every process it waited for (the kernel included).
    """
    cpu0 = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", str(path.relative_to(ROOT)), "-q"],
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    seconds = time.perf_counter() - start
    cpu = _children_cpu() - cpu0
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    return seconds, cpu, proc.returncode == 0, lines[-1] if lines else proc.stderr[-200:]


def run(config: Config) -> dict:
    if config.smoke:
        return {"name": "book", "title": TITLE, "equality": EQUALITY, "rows": [],
                "extra": {"skipped": "smoke mode does not execute the notebooks"}}
    rows, total, total_cpu, all_passed = [], 0.0, 0.0, True
    for path in notebooks():
        seconds, cpu, passed, summary = time_notebook(path)
        total += seconds
        total_cpu += cpu
        all_passed &= passed
        rows.append(row("book", path.stem, {"notebook": path.name}, ours=seconds,
                        agreement="nbval", agreement_value=None,
                        target=f"CPU < {TARGET_CPU_S:.0f} s", met=cpu < TARGET_CPU_S,
                        notes=("passed: " if passed else "FAILED: ") + summary))
        rows[-1]["cpu_s"] = cpu
    rows.append(row("book", "total", {"notebooks": len(rows)}, ours=total,
                    agreement="nbval", target=f"total < {TARGET_TOTAL_S:.0f} s",
                    met=total < TARGET_TOTAL_S,
                    notes="all passed" if all_passed else "some notebooks FAILED"))
    rows[-1]["cpu_s"] = total_cpu
    return {"name": "book", "title": TITLE, "equality": EQUALITY, "rows": rows,
            "extra": {"total_s": total, "all_passed": all_passed}}
