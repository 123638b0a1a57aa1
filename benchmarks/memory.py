"""Peak memory of EM (chapter 2) and of the IWAE evaluation (chapter 6), against n and k.

Every measurement runs in a fresh Python process (``python -m benchmarks.memory``), so
that one measurement's allocations and the allocator's cached pages cannot hide the next
one's. The process builds its data, then records two numbers around the one call:

- **traced peak**: the peak of ``tracemalloc`` during the call (NumPy reports its array
  allocations to it; torch does not, so this is reported for EM only);
- **RSS peak increment**: the resident set's high-water mark during the call (Linux
  ``VmHWM``, reset just before the call by writing 5 to ``/proc/self/clear_refs``) minus
  the resident set just before it. This counts everything: NumPy, BLAS and torch buffers.

EM: ``GaussianMixtureEM`` with the default E-step, with the chunked E-step
(``chunk_size=65536``) and scikit-learn's ``GaussianMixture``, on the benchmark's
mixture with d = 16, K = 10 (the largest case) for n from 1e4 to 1e6, 3 iterations from
the same start (the peak is reached in the first). IWAE: ``iwae_bound`` at k from 10 to
5000 on the 270 test digits (a VAE of chapter 6's shape; the weights do not change the
memory), and at k = 1000 on 270 to 4320 points (the test set tiled); the k-sweep is
repeated with glibc's dynamic mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``), which
separates the algorithm's own peak from heap fragmentation. The growth is the log-log
slope of the peak against n or k.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks._common import ROOT, Config, loglog_slope, row

TITLE = "Peak memory: EM against n (d = 16, K = 10), IWAE against k and n"
EQUALITY = (
    "Each measurement in a fresh process, after the data are built: the peak traced by "
    "`tracemalloc` (NumPy's allocations) and the resident set's high-water mark minus the "
    "resident set just before the call (Linux `VmHWM`, reset first). EM: 3 iterations from "
    "the same start (ours with the default E-step and with the chunked one, "
    "`chunk_size=65536`; scikit-learn's `GaussianMixture`). IWAE: `iwae_bound` with its "
    "default chunking (16,384 samples per decoder call), the $k$-sweep also with glibc's "
    "dynamic mmap threshold fixed (`MALLOC_MMAP_THRESHOLD_=131072`). Growth: the log-log "
    "slope of the peak against $n$ or $k$.")
CHUNK = 65_536
#: glibc raises its mmap threshold after large frees (up to 32 MB), so that later large
#: buffers come from the heap, which fragments; fixing it shows the algorithm's own peak.
MMAP_THRESHOLD = 131_072
EM_D, EM_K, EM_ITERS = 16, 10, 3


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes (0 where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_call(fn) -> dict:
    """Traced and RSS peak increments (bytes) of one call of ``fn``."""
    import tracemalloc

    gc.collect()
    reset = _reset_peak()
    rss_before = _status("VmRSS")
    tracemalloc.start()
    fn()
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss_peak = _status("VmHWM")
    return {"traced_peak_bytes": traced,
            "rss_peak_increment_bytes": (rss_peak - rss_before) if reset else None}


def _worker(spec: dict) -> dict:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _measure(spec)


def _measure(spec: dict) -> dict:
    if spec["kind"] == "em":
        from benchmarks.gmm import make_problem

        n = spec["n"]
        X, weights, means, precisions = make_problem(
            n, EM_D, EM_K, np.random.default_rng([spec["seed"], n, EM_D, EM_K]))
        kw = {"weights_init": weights, "means_init": means, "precisions_init": precisions,
              "max_iter": EM_ITERS, "tol": 0.0, "reg_covar": 1e-6}
        if spec["impl"] == "sklearn":
            import warnings

            from sklearn.mixture import GaussianMixture
            warnings.simplefilter("ignore")
            model = GaussianMixture(EM_K, covariance_type="full", n_init=1,
                                    init_params="random_from_data", random_state=0, **kw)
        else:
            from elbo_lib.em import GaussianMixtureEM
            model = GaussianMixtureEM(EM_K, chunk_size=CHUNK if spec["impl"] == "chunked"
                                      else None, **kw)
        out = measure_call(lambda: model.fit(X))
        out["data_bytes"] = X.nbytes
        return out
    import torch

    from elbo_lib import seed_everything
    from elbo_lib.datasets import binarize, load_digits_split
    from elbo_lib.vae import VAE, as_tensor, iwae_bound

    rng = seed_everything(spec["seed"])
    data = load_digits_split(rng)
    x = as_tensor(binarize(data.x_test, rng)).repeat(spec["tile"], 1)
    model = VAE(x.shape[1], latent_dim=2, hidden=128)
    iwae_bound(model, x[:4], 2)  # load the kernels before measuring
    out = measure_call(lambda: iwae_bound(model, x, spec["k"]))
    out["data_bytes"] = x.numel() * x.element_size()
    out["torch_threads"] = torch.get_num_threads()
    return out


def _spawn(spec: dict, fresh: bool = True) -> dict:
    if not fresh:  # smoke mode: in this process (fast; peaks then include earlier caches)
        return _worker(spec)
    env = {**os.environ, **spec.get("env", {})}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", json.dumps(spec)],
                          cwd=ROOT, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker {spec} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mb(x):
    return None if x is None else x / 2**20


def run(config: Config) -> dict:
    if config.smoke:
        ns, ks, tiles = (2_000, 8_000), (10, 100), (1, 2)
    else:
        ns, ks, tiles = (10_000, 30_000, 100_000, 300_000, 1_000_000), \
            (10, 100, 1000, 5000), (1, 4, 16)
    rows, results = [], {"em": {}, "iwae_k": {}, "iwae_n": {}}
    spawned = 0

    def spawn(spec):  # smoke mode: only the first measurement in a fresh process
        nonlocal spawned
        spawned += 1
        return _spawn(spec, fresh=not config.smoke or spawned == 1)

    for impl in ("ours", "chunked", "sklearn"):
        for n in ns:
            r = spawn({"kind": "em", "impl": impl, "n": n, "seed": config.seed})
            results["em"].setdefault(impl, []).append({"n": n, **r})
    for k in ks:
        r = spawn({"kind": "iwae", "k": k, "tile": 1, "seed": config.seed})
        results["iwae_k"].setdefault("ours", []).append({"k": k, **r})
    if not config.smoke:  # the same with glibc's dynamic mmap threshold switched off
        for k in ks:
            r = spawn({"kind": "iwae", "k": k, "tile": 1, "seed": config.seed,
                       "env": {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}})
            results["iwae_k"].setdefault("fixed", []).append({"k": k, **r})
    k_n = 1000 if not config.smoke else 100
    for tile in tiles:
        r = spawn({"kind": "iwae", "k": k_n, "tile": tile, "seed": config.seed})
        results["iwae_n"].setdefault("ours", []).append({"n": 270 * tile, "k": k_n, **r})

    growth = {}
    label = {"ours": "EM, default E-step", "chunked": "EM, chunked E-step",
             "sklearn": "EM, scikit-learn"}
    for impl, items in results["em"].items():
        sizes = [m["n"] for m in items]
        growth[f"em_{impl}_traced"] = loglog_slope(sizes, [m["traced_peak_bytes"]
                                                           for m in items])
        for m in items:
            rows.append(_memory_row(label[impl], {"n": m["n"], "d": EM_D, "K": EM_K}, m))
    for key, axis, variant in (("iwae_k", "k", "ours"), ("iwae_k", "k", "fixed"),
                               ("iwae_n", "n", "ours")):
        items = results[key].get(variant)
        if not items:
            continue
        name = f"{key}_rss" + ("_fixed_mmap_threshold" if variant == "fixed" else "")
        growth[name] = loglog_slope([m[axis] for m in items],
                                    [max(m["rss_peak_increment_bytes"] or 0, 1)
                                     for m in items])
        case = f"IWAE, {axis}-sweep" + (", fixed mmap threshold" if variant == "fixed" else "")
        for m in items:
            rows.append(_memory_row(case, {"n": m.get("n", 270), "k": m["k"]}, m))
    return {"name": "memory", "title": TITLE, "equality": EQUALITY, "rows": rows,
            "extra": {"growth": growth, "chunk_size": CHUNK, "em_iterations": EM_ITERS}}


def _memory_row(case: str, params: dict, m: dict) -> dict:
    out = row("memory", case, params, ours=float("nan"), agreement="", notes="")
    out["ours_s"] = None
    out["ours_times_s"] = []
    out["memory"] = {"traced_peak_mb": _mb(m["traced_peak_bytes"]),
                     "rss_peak_increment_mb": _mb(m["rss_peak_increment_bytes"]),
                     "data_mb": _mb(m["data_bytes"])}
    return out


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
