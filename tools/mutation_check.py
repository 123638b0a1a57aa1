"""Does the number-aware nbval comparison still catch real changes? A mutation check.

Each mutation changes one line of elbo_lib in a temporary copy of the repository (the
working tree, copied without .git and build output), and runs pytest --nbval on the chapter
that uses that code, with the copy on PYTHONPATH so that the kernel imports the mutated
library. It reports the cells that fail with the mutation, the cells that fail without it
(the baseline, same copy, same configuration), and the difference. A mutation is caught
when it makes at least one more cell fail.

    python tools/mutation_check.py                 # every mutation, this machine's kernels
    python tools/mutation_check.py --mutation jacobi --kernels avx2

Mutations (issue 12):
  kl-weight  ConjugateGaussianMean.elbo weights the KL-to-prior term by 1.001 (chapter 1)
  fista      FISTA's momentum step multiplied by 1.001 (chapter 3)
  jacobi     cavi_gaussian updates all coordinates from the previous sweep (Jacobi)
             instead of from the latest values (Gauss-Seidel) (chapter 4)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from portability import CONFIGS, config_env  # noqa: E402


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    file: str
    old: str
    new: str
    chapter: str


MUTATIONS = [
    Mutation(
        "kl-weight", "KL-to-prior term of ConjugateGaussianMean.elbo weighted by 1.001",
        "elbo_lib/models.py",
        "return self.expected_log_likelihood(mean_q, var_q) - self.kl_to_prior(mean_q, var_q)",
        "return self.expected_log_likelihood(mean_q, var_q) - 1.001 * self.kl_to_prior("
        "mean_q, var_q)",
        "chapters/01_elbo.ipynb"),
    Mutation(
        "fista", "FISTA's momentum step multiplied by 1.001",
        "elbo_lib/sparse_coding/proximal_gradient.py",
        "beta = (t - 1.0) / t_new",
        "beta = 1.001 * (t - 1.0) / t_new",
        "chapters/03_map_sparse_coding.ipynb"),
    Mutation(
        "jacobi", "cavi_gaussian: Jacobi sweeps instead of Gauss-Seidel",
        "elbo_lib/mean_field/gaussian.py",
        "        for j in range(mean.size):  # over coordinates (factors), not data points\n"
        "            others = precision[j] @ (m - mean) - precision[j, j] * (m[j] - mean[j])\n",
        "        m_prev = m.copy()  # Jacobi: every coordinate from the previous sweep\n"
        "        for j in range(mean.size):  # over coordinates (factors), not data points\n"
        "            others = (precision[j] @ (m_prev - mean)\n"
        "                      - precision[j, j] * (m_prev[j] - mean[j]))\n",
        "chapters/04_mean_field.ipynb"),
]

_IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "_build", "_output", "__pycache__",
                                 ".pytest_cache", ".hypothesis", ".jupyter_cache", "*.egg-info")


def copy_repo(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=_IGNORE)
    return dest


def apply(mutation: Mutation, repo: Path) -> None:
    path = repo / mutation.file
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise SystemExit(f"mutation {mutation.name}: expected the target text exactly once in "
                         f"{mutation.file}, found it {count} times; update tools/mutation_check.py")
    path.write_text(text.replace(mutation.old, mutation.new))


def failing_cells(repo: Path, chapter: str, env: dict[str, str]) -> tuple[list[int], int, float]:
    """Run nbval on one chapter of ``repo``: (failing cell numbers, number of cells, seconds)."""
    env = {**env, "PYTHONPATH": str(repo)}
    where = subprocess.run([sys.executable, "-c", "import elbo_lib; print(elbo_lib.__file__)"],
                           cwd=repo / "chapters", env=env, capture_output=True, text=True)
    if not where.stdout.strip().startswith(str(repo)):
        raise SystemExit(f"the kernel would import elbo_lib from {where.stdout.strip()!r}, "
                         f"not from the copy {repo}")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "-rf", "--color=no", chapter], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode not in (0, 1) or not re.search(r"\d+ passed|\d+ failed", summary):
        raise SystemExit(f"pytest did not run {chapter} (exit {proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    failed = sorted({int(n) for n in re.findall(r"FAILED \S+::Cell (\d+)", proc.stdout)})
    total = sum(int(n) for n in re.findall(r"(\d+) (?:passed|failed|skipped)", summary))
    return failed, total, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutation", action="append", choices=[m.name for m in MUTATIONS])
    parser.add_argument("--kernels", default="native",
                        choices=["native", *[c.name for c in CONFIGS]],
                        help="kernel configuration (tools/portability.py); default native")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.mutation or m.name in args.mutation]
    if args.kernels == "native":
        env = {k: v for k, v in os.environ.items()
               if k not in ("OPENBLAS_CORETYPE", "ATEN_CPU_CAPABILITY",
                            "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")}
    else:
        env = config_env(next(c for c in CONFIGS if c.name == args.kernels))
    caught_all = True
    rows = []
    with tempfile.TemporaryDirectory(prefix="elbo-mutation-") as tmp:
        base = copy_repo(Path(tmp) / "base")
        baselines = {}
        for mutation in chosen:
            if mutation.chapter not in baselines:
                baselines[mutation.chapter] = failing_cells(base, mutation.chapter, env)
            base_failed, total, base_s = baselines[mutation.chapter]
            repo = copy_repo(Path(tmp) / mutation.name)
            apply(mutation, repo)
            failed, _, seconds = failing_cells(repo, mutation.chapter, env)
            new = sorted(set(failed) - set(base_failed))
            caught_all &= bool(new)
            rows.append((mutation, total, base_failed, failed, new, base_s + seconds))
            print(f"{mutation.name}: {mutation.what} ({mutation.chapter}, {total} cells, "
                  f"kernels {args.kernels}): {len(failed)} cells fail (cells {failed}); "
                  f"without the mutation {len(base_failed)} (cells {base_failed}); "
                  f"newly failing {len(new)} (cells {new}); {seconds:.0f} s", flush=True)
    print("\nmutation   chapter                              cells  baseline  mutated  new")
    for mutation, total, base_failed, failed, new, _ in rows:
        print(f"{mutation.name:10} {mutation.chapter:36} {total:5} {len(base_failed):9} "
              f"{len(failed):8} {len(new):4}")
    print("every mutation caught" if caught_all else "SOME MUTATION NOT CAUGHT")
    return 0 if caught_all else 1


if __name__ == "__main__":
    sys.exit(main())
