"""Run every comparison and write the results table and figures.

Usage::

    python -m benchmarks                 # full run -> benchmarks/results/ (~10 minutes)
    python -m benchmarks --smoke         # tiny sizes, seconds -> benchmarks/_scratch/
    python -m benchmarks --only gmm,hmm  # a subset -> benchmarks/_scratch/ unless --out

Every comparison runs in this one process on the same machine, with the same BLAS
thread count for both sides (``--blas-threads``, default 1, as torch in the book).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

from benchmarks import COMPARISONS
from benchmarks._common import ROOT, Config, machine_description
from benchmarks._report import write_csv, write_figures, write_json, write_markdown

RESULTS = ROOT / "benchmarks" / "results"
SCRATCH = ROOT / "benchmarks" / "_scratch"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes that finish in seconds (CI); writes to the scratch "
                             "folder, never to benchmarks/results/")
    parser.add_argument("--only", default="",
                        help=f"comma-separated subset of {','.join(COMPARISONS)}")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: benchmarks/results for a full run of "
                             "everything, benchmarks/_scratch otherwise)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per measurement (default 5; 3 in smoke mode)")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS/OpenMP threads for both sides (0 = library default)")
    parser.add_argument("--render-only", action="store_true",
                        help="do not measure: rewrite results.md, results.csv and the figures "
                             "from the results.json already in the output folder")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="FOLDER",
                        help="do not measure: combine the results.json of runs of disjoint "
                             "subsets (--only) on this machine into --out, in the usual order")
    parser.add_argument("--note", default="",
                        help="a remark printed with the machine description (e.g. load)")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.only.split(",") if s.strip()] or list(COMPARISONS)
    unknown = sorted(set(names) - set(COMPARISONS))
    if unknown:
        parser.error(f"unknown comparison(s) {unknown}; choose from {list(COMPARISONS)}")
    args.names = names
    if args.repeats is None:
        args.repeats = 3 if args.smoke else 5
    if args.repeats < 1 or (not args.smoke and args.repeats < 5):
        parser.error(f"--repeats must be >= 5 for a measured run (>= 1 with --smoke), "
                     f"got {args.repeats}")
    if args.out is None:
        args.out = RESULTS if (not args.smoke and names == list(COMPARISONS)) else SCRATCH
    if args.smoke and args.out.resolve() == RESULTS.resolve() and not args.render_only:
        parser.error("a smoke run must not overwrite the committed results; use another --out")
    return args


def render(out: Path) -> None:
    """Rewrite the Markdown, CSV and figures from ``out/results.json`` (no measurement)."""
    import json

    data = json.loads((out / "results.json").read_text())
    write_csv(out / "results.csv", data["comparisons"])
    write_markdown(out / "results.md", data["machine"], data["comparisons"], data["run"])
    write_figures(out, data["comparisons"])


def merge(folders: list[Path], out: Path) -> dict:
    """Combine runs of disjoint subsets into one results.json (machine of the first run)."""
    import json

    runs = [json.loads((f / "results.json").read_text()) for f in folders]
    sections = {c["name"]: c for run in runs for c in run["comparisons"]}
    if sum(len(run["comparisons"]) for run in runs) != len(sections):
        raise SystemExit("--merge: the runs overlap (a comparison appears twice)")
    order = [name for name in COMPARISONS if name in sections]
    meta = dict(runs[0]["run"])
    meta.update(comparisons=order, wall_s=sum(run["run"]["wall_s"] for run in runs),
                load_average_end=runs[-1]["run"]["load_average_end"],
                command=" && ".join(run["run"]["command"] for run in runs),
                warning=" ".join(dict.fromkeys(run["run"].get("warning", "") for run in runs)))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", runs[0]["machine"], [sections[n] for n in order], meta)
    render(out)
    return {"out": out}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.merge:
        merge(args.merge, args.out)
        print(f"[benchmarks] merged {len(args.merge)} run(s) into {args.out}", flush=True)
        return {"out": args.out}
    if args.render_only:
        render(args.out)
        print(f"[benchmarks] re-rendered {args.out} from results.json", flush=True)
        return {"out": args.out}
    config = Config(smoke=args.smoke, repeats=args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    from threadpoolctl import threadpool_limits

    # import every module (and so load every BLAS / OpenMP library) BEFORE limiting the
    # thread pools: threadpoolctl only limits the libraries already loaded
    modules = {name: importlib.import_module(f"benchmarks.{name}") for name in args.names}
    import scipy.linalg  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import torch

    start = time.perf_counter()
    limits = threadpool_limits(limits=args.blas_threads) if args.blas_threads > 0 else None
    try:
        machine = machine_description()
        sections = []
        for name in args.names:
            t0 = time.perf_counter()
            print(f"[benchmarks] {name} ...", flush=True)
            section = modules[name].run(config)
            section["seconds"] = time.perf_counter() - t0
            sections.append(section)
            for r in section["rows"]:
                ratio = "" if r["ratio"] is None else f" ratio {r['ratio']:.2f}"
                what = (f"ours {r['ours_s']:.4g} s{ratio}" if r["ours_s"] is not None else
                        ", ".join(f"{k} {v:.3g}" for k, v in r.get("memory", {}).items()
                                  if v is not None))
                print(f"  {r['case']:<32} {r['size']:<28} {what}", flush=True)
            print(f"  ({section['seconds']:.1f} s)", flush=True)
        machine["torch_threads_in_run"] = torch.get_num_threads()  # seed_everything's
    finally:
        if limits is not None:
            limits.restore_original_limits()
    load_end = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    meta = {"smoke": args.smoke, "repeats": config.repeats, "warmup": config.warmup,
            "seed": config.seed, "blas_threads": args.blas_threads or "library default",
            "comparisons": args.names, "wall_s": time.perf_counter() - start,
            "load_average_end": load_end, "warning": args.note,
            "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None
                                                          else argv)}
    write_json(args.out / "results.json", machine, sections, meta)
    write_csv(args.out / "results.csv", sections)
    write_markdown(args.out / "results.md", machine, sections, meta)
    figures = write_figures(args.out, sections)
    print(f"[benchmarks] wrote {args.out}/results.json, results.csv, results.md and "
          f"{len(figures)} figure(s) in {meta['wall_s']:.0f} s", flush=True)
    return {"out": args.out, "sections": sections, "machine": machine, "meta": meta}


if __name__ == "__main__":
    main()
