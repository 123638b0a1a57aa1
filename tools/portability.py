"""Run nbval over every chapter under kernel configurations, as a pool of pytest runs.

`make test` runs this with ``--config native --tests``: the library tests (tests/) and
nbval over every chapter on this machine's own kernels, each notebook its own pytest run,
two at a time on two cores, longest first. `make test-portable` runs it with its default
configurations, which imitate other CPUs.

NumPy/SciPy's OpenBLAS and torch (its own vectorised ATen kernels and MKL) pick their
kernels by CPU features, so another CPU computes other last bits. On one x86-64 machine
these environment variables switch the kernels to those an older or different CPU would
use (CONTRIBUTING.md, "Portability", records what each one changes in the pinned builds).
For each configuration this script first checks in a fresh interpreter that the switch
took effect (OpenBLAS core type, torch's CPU capability), then runs pytest --nbval over
every notebook in chapters/ (the committed outputs, the number-aware comparison of the
root conftest.py), one pytest run per (configuration, notebook), two at a time on two
cores, and prints their times. It exits non-zero if anything fails.

    python tools/portability.py                          # every other-CPU configuration
    python tools/portability.py --config native --tests  # what `make test` runs
    python tools/portability.py --list
    python tools/portability.py --config avx2 chapters/06_vae.ipynb   # one notebook
    python tools/portability.py --config avx2 -- -x      # arguments after -- go to pytest
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
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


# This machine's own kernels (no switch): what `make test` verifies. Not probed.
NATIVE = KernelConfig("native", "this machine's own kernels", {}, "", "")


CONFIGS = [
    KernelConfig(
        "avx2", "an AVX2 CPU without AVX-512 (Intel Haswell to Comet Lake, AMD Zen)",
        {"OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2",
         "MKL_ENABLE_INSTRUCTIONS": "AVX2"}, "Haswell", "AVX2"),
    # ... and other training seeds: every trained result (seeded by training_seed) starts
    # from other points, as chaotic training on another CPU effectively does
    KernelConfig(
        "avx", "an AVX CPU without AVX2 (Intel Sandy/Ivy Bridge), and other training seeds",
        {"OPENBLAS_CORETYPE": "Sandybridge", "ATEN_CPU_CAPABILITY": "default",
         "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ELBO_TRAINING_SEED_SHIFT": "1000"},
        "Sandybridge", "DEFAULT"),
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
from elbo_lib import training_seed
print(json.dumps({"openblas": blas, "torch": torch.backends.cpu.get_cpu_capability(),
                  "seed_shift": training_seed(0)}))
"""

_SWITCHES = ("OPENBLAS_CORETYPE", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",
             "OPENBLAS_NUM_THREADS", "ELBO_TRAINING_SEED_SHIFT")


def config_env(config: KernelConfig) -> dict[str, str]:
    """The process environment for ``config``: inherited, minus other switches, plus its own."""
    env = {k: v for k, v in os.environ.items() if k not in _SWITCHES}
    env.update(config.env)
    return env


def probe(config: KernelConfig) -> str | None:
    """Check in a fresh interpreter that ``config`` switches the kernels; a problem or None."""
    if config is NATIVE:
        return None
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
    shift = int(config.env.get("ELBO_TRAINING_SEED_SHIFT", "0"))
    if found["seed_shift"] != shift:
        return f"training seeds not shifted: training_seed(0) = {found['seed_shift']}, " \
               f"expected {shift}"
    threads = config.env.get("OPENBLAS_NUM_THREADS")
    if threads and [n for _, n in found["openblas"]] != [int(threads)]:
        return f"OpenBLAS threads {found['openblas']}, expected {threads}"
    return None


TESTS = "tests"  # the job that runs the library tests (tests/) instead of a notebook


def notebooks() -> list[str]:
    found = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "chapters").glob("*.ipynb"))
    if not found:
        raise SystemExit("no notebooks in chapters/")
    return found


def _summary_line(text: str) -> str:
    """pytest's last line ('12 passed in 3.4s'), without its '=' padding."""
    lines = [line.strip(" =") for line in text.strip().splitlines() if line.strip(" =")]
    return lines[-1] if lines else "(no output)"


def _run_job(config: KernelConfig, notebook: str, pytest_args: list[str]) -> dict:
    """pytest (--nbval) on one notebook, or on tests/, under one configuration."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rf",
           *pytest_args, notebook]
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.Popen(cmd, env=config_env(config), cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, text=True)
        # wait4: this pytest's own resource usage, including its notebook kernels
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    return {"config": config, "notebook": notebook, "returncode": proc.returncode,
            "seconds": time.perf_counter() - start,
            "cpu": usage.ru_utime + usage.ru_stime, "output": text}


def run(configs: list[KernelConfig], pytest_args: list[str], jobs: int,
        targets: list[str]) -> list[tuple]:
    """Probe every configuration, then run every (configuration, notebook) pair.

    ``jobs`` pairs run at once: each is one pytest process whose notebook kernel is
    single-threaded (seed_everything) apart from OpenBLAS, so on 2 cores two jobs take
    about half the wall time of one. Returns one row per configuration:
    ``(config, passed, wall seconds summed over its notebooks, CPU seconds, status)``.
    """
    runnable = []
    rows = {}
    for config in configs:
        settings = " ".join(f"{k}={v}" for k, v in config.env.items())
        print(f"== {config.name}: {settings}\n   imitates {config.imitates}", flush=True)
        problem = probe(config)
        if problem:
            print(f"   FAILED before testing: {problem}", flush=True)
            rows[config.name] = (config, False, 0.0, 0.0, "FAILED (probe)")
        else:
            runnable.append(config)
    # Longest job first keeps both workers busy to the end instead of leaving one long job
    # alone: the library tests (with the book build) first, then the chapters from the last
    # (later chapters train models and take longest) to the first.
    order = ([TESTS] if TESTS in targets else []) + [t for t in reversed(targets)
                                                    if t != TESTS]
    pairs = [(c, nb) for nb in order for c in runnable]
    results = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(_run_job, c, nb, pytest_args) for c, nb in pairs]
        for future in as_completed(futures):
            r = future.result()
            results.append(r)
            ok = r["returncode"] == 0
            verdict = "passed" if ok else f"FAILED (pytest exit {r['returncode']})"
            print(f"-- {r['config'].name:6} {r['notebook']:38} {verdict} "
                  f"in {r['seconds']:.0f} s ({r['cpu']:.0f} s CPU): "
                  f"{_summary_line(r['output'])}", flush=True)
            if not ok:  # exit 1 failed, 2 interrupted, 5 nothing collected, ...
                print(r["output"][-20000:], flush=True)
    for config in runnable:
        mine = [r for r in results if r["config"] is config]
        passed = all(r["returncode"] == 0 for r in mine) and len(mine) == len(targets)
        failed = [r["notebook"] for r in mine if r["returncode"] != 0]
        status = "passed" if passed else "FAILED: " + ", ".join(Path(f).stem for f in failed)
        rows[config.name] = (config, passed, sum(r["seconds"] for r in mine),
                             sum(r["cpu"] for r in mine), status)
    return [rows[c.name] for c in configs]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append",
                        choices=[NATIVE.name] + [c.name for c in CONFIGS],
                        help="run only this configuration (repeatable; default: every "
                             "configuration but native)")
    parser.add_argument("--tests", action="store_true",
                        help="also run the library tests (tests/) as one more job")
    parser.add_argument("notebooks", nargs="*", metavar="notebook",
                        help="run only these notebooks (default: every chapter)")
    parser.add_argument("--list", action="store_true", help="list the configurations")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="notebook runs at once (default: 2, or 1 on a 1-core machine)")
    argv = sys.argv[1:] if argv is None else list(argv)
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.list:
        for c in CONFIGS:
            print(f"{c.name:6} {' '.join(f'{k}={v}' for k, v in c.env.items())}\n"
                  f"       imitates {c.imitates}")
        return 0
    chosen = ([c for c in [NATIVE, *CONFIGS] if c.name in args.config] if args.config
              else CONFIGS)
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64") and chosen != [NATIVE]:
        print(f"test-portable: these kernel switches are for x86-64; this machine is "
              f"{machine}: nothing run (make test verified this machine's own kernels)")
        return 0
    unknown = [nb for nb in args.notebooks if nb not in notebooks()]
    if unknown:
        parser.error(f"not a chapter notebook: {', '.join(unknown)} (choose from "
                     f"{', '.join(notebooks())})")
    targets = ([TESTS] if args.tests else []) + (args.notebooks or notebooks())
    start = time.perf_counter()
    results = run(chosen, pytest_args, args.jobs, targets)
    print(f"\n== summary ({args.jobs} job(s) at once; per configuration the wall and CPU "
          "time of its pytest runs, summed)")
    for config, _, seconds, cpu, status in results:
        print(f"   {config.name:6} {status:40} {seconds:6.0f} s  {cpu:6.0f} s CPU")
    ok = all(passed for _, passed, _, _, _ in results)
    print(f"   {'all passed' if ok else 'SOME FAILED'} in {time.perf_counter() - start:.0f} s "
          "wall")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
