"""`make test-portable`: nbval over every chapter under kernel configurations of other CPUs.

NumPy/SciPy's OpenBLAS and torch (its own vectorised ATen kernels and MKL) pick their
kernels by CPU features, so another CPU computes other last bits. On one x86-64 machine
these environment variables switch the kernels to those an older or different CPU would
use (CONTRIBUTING.md, "Portability", records what each one changes in the pinned builds).
For each configuration this script first checks in a fresh interpreter that the switch
took effect (OpenBLAS core type, torch's CPU capability), then runs pytest --nbval over
every notebook in chapters/ (the committed outputs, the number-aware comparison of the
root conftest.py) as a separate pytest run, and prints its time. It exits non-zero if any
configuration fails.

    python tools/portability.py              # every configuration
    python tools/portability.py --list
    python tools/portability.py --config avx2 -- -x   # one; extra args go to pytest
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class KernelConfig:
    name: str
    imitates: str
    env: dict[str, str]
    openblas: str  # the architecture threadpoolctl must then report for OpenBLAS
    torch: str     # torch.backends.cpu.get_cpu_capability() must then report this


CONFIGS = [
    KernelConfig(
        "avx2", "an AVX2 CPU without AVX-512 (Intel Haswell to Comet Lake, AMD Zen)",
        {"OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2",
         "MKL_ENABLE_INSTRUCTIONS": "AVX2"}, "Haswell", "AVX2"),
    KernelConfig(
        "avx", "an AVX CPU without AVX2 (Intel Sandy/Ivy Bridge)",
        {"OPENBLAS_CORETYPE": "Sandybridge", "ATEN_CPU_CAPABILITY": "default",
         "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, "Sandybridge", "DEFAULT"),
    KernelConfig(
        "sse4", "an SSE4.2 CPU (Intel Nehalem), MKL in its conditional-reproducibility mode, "
        "OpenBLAS on one thread",
        {"OPENBLAS_CORETYPE": "Nehalem", "ATEN_CPU_CAPABILITY": "default",
         "MKL_CBWR": "COMPATIBLE", "OPENBLAS_NUM_THREADS": "1"}, "Nehalem", "DEFAULT"),
]

_PROBE = """
import json, threadpoolctl, torch
blas = [(i.get("architecture"), i["num_threads"]) for i in threadpoolctl.threadpool_info()
        if i["internal_api"] == "openblas"]
torch.ones(64, 64) @ torch.ones(64, 64)  # initialise MKL: its warnings would go to stderr
print(json.dumps({"openblas": blas, "torch": torch.backends.cpu.get_cpu_capability()}))
"""

_SWITCHES = ("OPENBLAS_CORETYPE", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",
             "OPENBLAS_NUM_THREADS")


def config_env(config: KernelConfig) -> dict[str, str]:
    """The process environment for ``config``: inherited, minus other switches, plus its own."""
    env = {k: v for k, v in os.environ.items() if k not in _SWITCHES}
    env.update(config.env)
    return env


def probe(config: KernelConfig) -> str | None:
    """Check in a fresh interpreter that ``config`` switches the kernels; a problem or None."""
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=config_env(config), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return f"the probe failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
    if proc.stderr.strip():  # e.g. an MKL deprecation warning would reach notebook output
        return f"the configuration prints to stderr: {proc.stderr.strip()[:300]}"
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    archs = [arch for arch, _ in found["openblas"]]
    if archs != [config.openblas] or found["torch"] != config.torch:
        return (f"kernels not switched: OpenBLAS {archs} (expected [{config.openblas!r}]), "
                f"torch {found['torch']} (expected {config.torch})")
    threads = config.env.get("OPENBLAS_NUM_THREADS")
    if threads and [n for _, n in found["openblas"]] != [int(threads)]:
        return f"OpenBLAS threads {found['openblas']}, expected {threads}"
    return None


def notebooks() -> list[str]:
    found = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "chapters").glob("*.ipynb"))
    if not found:
        raise SystemExit("no notebooks in chapters/")
    return found


def _child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # pytest and its notebook kernels
    return usage.ru_utime + usage.ru_stime


def run(config: KernelConfig, pytest_args: list[str]) -> tuple[bool, float, float, str]:
    settings = " ".join(f"{k}={v}" for k, v in config.env.items())
    print(f"\n== {config.name}: {settings}\n   imitates {config.imitates}", flush=True)
    start, cpu_start = time.perf_counter(), _child_cpu_seconds()
    problem = probe(config)
    if problem:
        print(f"   FAILED before testing: {problem}", flush=True)
        return False, time.perf_counter() - start, _child_cpu_seconds() - cpu_start, "probe"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rf",
           *pytest_args, *notebooks()]
    proc = subprocess.run(cmd, env=config_env(config), cwd=ROOT)
    seconds, cpu = time.perf_counter() - start, _child_cpu_seconds() - cpu_start
    # exit 0: all passed; anything else (1 failed, 2 interrupted, 5 nothing collected, ...)
    # is a failure of this configuration
    status = "passed" if proc.returncode == 0 else f"FAILED (pytest exit {proc.returncode})"
    print(f"== {config.name}: {status} in {seconds:.0f} s ({cpu:.0f} s CPU)", flush=True)
    return proc.returncode == 0, seconds, cpu, status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", choices=[c.name for c in CONFIGS],
                        help="run only this configuration (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the configurations")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    if args.list:
        for c in CONFIGS:
            print(f"{c.name:6} {' '.join(f'{k}={v}' for k, v in c.env.items())}\n"
                  f"       imitates {c.imitates}")
        return 0
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        print(f"test-portable: these kernel switches are for x86-64; this machine is "
              f"{machine}: nothing run (make test verified this machine's own kernels)")
        return 0
    chosen = [c for c in CONFIGS if not args.config or c.name in args.config]
    results = [(c, *run(c, args.pytest_args)) for c in chosen]
    print("\n== test-portable summary (wall time; CPU time of pytest and its kernels)")
    for config, _, seconds, cpu, status in results:
        print(f"   {config.name:6} {status:28} {seconds:6.0f} s  {cpu:6.0f} s CPU")
    total = sum(seconds for _, _, seconds, _, _ in results)
    ok = all(passed for _, passed, _, _, _ in results)
    print(f"   {'all passed' if ok else 'SOME FAILED'} in {total:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
