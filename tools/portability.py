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
cores, and prints their times. It exits non-zero if anything fails. A configuration
whose kernels compute exactly the bits of this machine's own (the probe hashes them; on an
AVX2 machine the avx2 configuration) would repeat `make test`'s run and is skipped, saying
why; ``--all`` runs it anyway.

    python tools/portability.py                          # every other-CPU configuration
    python tools/portability.py --config native --tests  # what `make test` runs
    python tools/portability.py --config native --config avx2 --config avx \
        --tests                                          # one pool (`make test-all`, CI)
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
import hashlib, json, threadpoolctl, numpy as np, torch
blas = [(i.get("architecture"), i["num_threads"]) for i in threadpoolctl.threadpool_info()
        if i["internal_api"] == "openblas"]
torch.ones(64, 64) @ torch.ones(64, 64)  # initialise MKL: its warnings would go to stderr
# The bits these kernels compute: a hash of the kinds of operation the chapters use
# (torch and NumPy matrix products at several sizes and both precisions, torch's
# vectorised elementwise kernels and reductions, LAPACK factorisations, one backward
# pass). Two configurations with the same hash compute the same bits here.
torch.manual_seed(0)
rng = np.random.default_rng(0)
digest = hashlib.sha256()
def add(value):
    if isinstance(value, torch.Tensor):
        value = value.detach().numpy()
    digest.update(np.ascontiguousarray(value).tobytes())
for n in (7, 33, 64, 257):
    for dtype in (torch.float32, torch.float64):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for value in (a @ b, torch.exp(a), torch.log1p(a.abs()), torch.tanh(a),
                      torch.nn.functional.softplus(a), torch.sigmoid(a), a.sum(0),
                      torch.logsumexp(a, 1), torch.bmm(a.expand(3, n, n), b.expand(3, n, n)),
                      torch.linalg.cholesky(a @ a.T + n * torch.eye(n, dtype=dtype))):
            add(value)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    for value in (a @ b, a.astype(np.float32) @ b.astype(np.float32), a.sum(0), np.exp(a),
                  np.linalg.cholesky(a @ a.T + n * np.eye(n)), np.linalg.solve(a, b)):
        add(value)
layer, x = torch.nn.Linear(50, 40), torch.randn(128, 50)
torch.tanh(layer(x)).sum().backward()
add(layer.weight.grad)
from elbo_lib import training_seed
print(json.dumps({"openblas": blas, "torch": torch.backends.cpu.get_cpu_capability(),
                  "seed_shift": training_seed(0), "bits": digest.hexdigest()[:16]}))
"""

_SWITCHES = ("OPENBLAS_CORETYPE", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",
             "OPENBLAS_NUM_THREADS", "ELBO_TRAINING_SEED_SHIFT")


def config_env(config: KernelConfig) -> dict[str, str]:
    """The process environment for ``config``: inherited, minus other switches, plus its own."""
    env = {k: v for k, v in os.environ.items() if k not in _SWITCHES}
    env.update(config.env)
    return env


_PROBED: dict[str, tuple[dict | None, str | None]] = {}


def _probe_output(config: KernelConfig) -> tuple[dict | None, str | None]:
    """Run the probe under ``config`` once: (what it found, None) or (None, the problem)."""
    if config.name not in _PROBED:
        _PROBED[config.name] = _run_probe(config)
    return _PROBED[config.name]


def _run_probe(config: KernelConfig) -> tuple[dict | None, str | None]:
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=config_env(config), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return None, f"the probe failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
    if proc.stderr.strip():  # e.g. an MKL deprecation warning would reach notebook output
        return None, f"the configuration prints to stderr: {proc.stderr.strip()[:300]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), None


def probe(config: KernelConfig) -> str | None:
    """Check in a fresh interpreter that ``config`` switches the kernels; a problem or None."""
    if config is NATIVE:
        return None
    found, problem = _probe_output(config)
    if problem:
        return problem
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


def same_as_native(config: KernelConfig) -> str | None:
    """Why ``config`` would repeat `make test`'s native run exactly here, or None.

    A configuration imitates another CPU by capping the instruction sets the kernels
    may use. On a CPU whose own best kernels are the capped ones (an AVX2 machine under
    the avx2 configuration) nothing changes: the same kernels compute the same bits, and
    the nbval run would repeat `make test`'s. The probe's hash of those bits (matrix
    products, elementwise kernels, factorisations, a backward pass; see _PROBE) decides,
    with the seeds and the kernel names; any difference and the configuration runs.
    """
    if config is NATIVE or config.env.get("ELBO_TRAINING_SEED_SHIFT", "0") != "0":
        return None
    mine, problem = _probe_output(config)
    native, problem_native = _probe_output(NATIVE)
    if problem or problem_native:
        return None
    if (mine["bits"], mine["torch"], mine["openblas"]) == (
            native["bits"], native["torch"], native["openblas"]):
        return (f"this machine's own kernels are these (OpenBLAS {native['openblas'][0][0]}, "
                f"torch {native['torch']}, identical bits {native['bits']}): "
                "`make test` verified them")
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
        targets: list[str], skip_native: bool = True) -> list[tuple]:
    """Probe every configuration, then run every (configuration, notebook) pair.

    ``jobs`` pairs run at once: each is one pytest process whose notebook kernel is
    single-threaded (seed_everything) apart from OpenBLAS, so on 2 cores two jobs take
    about half the wall time of one. A configuration that computes the same bits as
    this machine's own kernels is skipped when ``skip_native`` (see same_as_native).
    Returns one row per configuration:
    ``(config, passed, wall seconds summed over its notebooks, CPU seconds, status)``.
    """
    runnable = []
    rows = {}
    for config in configs:
        settings = " ".join(f"{k}={v}" for k, v in config.env.items())
        print(f"== {config.name}: {settings}\n   imitates {config.imitates}", flush=True)
        problem = probe(config)
        same = None if problem or not skip_native else same_as_native(config)
        if problem:
            print(f"   FAILED before testing: {problem}", flush=True)
            rows[config.name] = (config, False, 0.0, 0.0, "FAILED (probe)")
        elif same:
            print(f"   skipped: {same} (--all runs it anyway)", flush=True)
            rows[config.name] = (config, True, 0.0, 0.0, "skipped: same bits as native")
        else:
            runnable.append(config)
    # Longest job first keeps both workers busy to the end instead of leaving one long job
    # alone: the library tests (with the book build) first, then the chapters from the last
    # (later chapters train models and take longest) to the first.
    order = ([TESTS] if TESTS in targets else []) + [t for t in reversed(targets)
                                                    if t != TESTS]
    # The library tests do not depend on the kernels' last bits the way the notebooks'
    # outputs do: with several configurations in one pool they run once, under the first.
    tests_config = runnable[0] if runnable else None
    pairs = [(c, nb) for nb in order for c in runnable
             if nb != TESTS or c is tests_config]
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
        expected = sum(1 for c, _ in pairs if c is config)
        passed = all(r["returncode"] == 0 for r in mine) and len(mine) == expected
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
    parser.add_argument("--all", action="store_true",
                        help="also run a configuration whose kernels compute the same bits "
                             "as this machine's own (skipped by default: `make test` ran them)")
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
    results = run(chosen, pytest_args, args.jobs, targets, skip_native=not args.all)
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
