"""Write the results: JSON (everything), CSV (one row per measurement), Markdown, figures."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import loglog_slope

CSV_COLUMNS = ("comparison", "case", "size", "ours_s", "reference", "ref_s", "ratio",
               "ours_iters", "ref_iters", "ours_per_iter_s", "ref_per_iter_s", "agreement",
               "agreement_value", "target", "met", "notes")


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}g}"


def _cell(text: str) -> str:
    """A Markdown table cell: escape the pipes (e.g. in |x - y|)."""
    return str(text).replace("|", "\\|")


def _clean(obj):
    """JSON-safe copy (NaN -> None, NumPy scalars -> Python)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, machine: dict, sections: list[dict], meta: dict) -> None:
    path.write_text(json.dumps(_clean({"machine": machine, "run": meta, "comparisons": sections}),
                               indent=1) + "\n")


def write_csv(path: Path, sections: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for section in sections:
            for r in section["rows"]:
                writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})


def _machine_md(machine: dict, meta: dict) -> list[str]:
    blas = "; ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('user_api')}, "
                     f"{b.get('num_threads')} thread(s))" for b in machine.get("blas", []))
    items = [
        ("Date", machine["date_utc"]),
        ("CPU", f"{machine['cpu']}, {machine['cores']} cores"),
        ("Platform", machine["platform"]),
        ("Python", machine["python"]),
        ("Libraries", ", ".join(f"{k} {machine[k]}" for k in
                                ("numpy", "scipy", "scikit-learn", "torch", "matplotlib"))),
        ("BLAS / OpenMP pools during the run", blas or "unknown"),
        ("torch threads", "1 on both sides of the VAE comparison (seed_everything)"),
        ("Load average (1, 5, 15 min) at start / end",
         f"{machine['load_average_start']} / {meta.get('load_average_end')}"),
        ("Timing", f"{meta['warmup']} warm-up call(s), then median of {meta['repeats']} "
                   "interleaved repeats (time.perf_counter); the book: one run per notebook"),
        ("Mode", "smoke (tiny sizes, not a measurement)" if meta["smoke"] else "full"),
        ("Wall time of the whole benchmark run", f"{meta['wall_s']:.0f} s"),
    ]
    out = ["| | |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in items]
    if meta.get("warning"):
        out += ["", f"**Note:** {meta['warning']}"]
    return out


def _section_md(section: dict) -> list[str]:
    out = [f"### {section['title']}", "", f"*Equal work and accuracy.* {section['equality']}", ""]
    rows = section["rows"]
    if not rows:
        out += [f"*Not run:* {section.get('extra', {}).get('skipped', 'no rows')}", ""]
        return out
    out += ["| case | size | ours (s) | reference | ref (s) | ratio ours/ref | iters ours/ref "
            "| per iter ours/ref (ms) | agreement | value | target | met | notes |",
            "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | --- | --- "
            "| --- |"]
    for r in rows:
        iters = ("" if r["ours_iters"] is None else
                 f"{r['ours_iters']}/{'' if r['ref_iters'] is None else r['ref_iters']}")
        per = ("" if r["ours_per_iter_s"] is None else
               f"{_num(1e3 * r['ours_per_iter_s'])}/"
               f"{'' if r['ref_per_iter_s'] is None else _num(1e3 * r['ref_per_iter_s'])}")
        val = r["agreement_value"]
        val = "" if val is None else (f"{val:.4f}" if r["agreement"].startswith("adjusted")
                                      else f"{val:.1e}")
        cells = [r["case"], r["size"], _num(r["ours_s"]), r["reference"], _num(r["ref_s"]),
                 f"**{_num(r['ratio'])}**" if r["ratio"] is not None else "", iters, per,
                 r["agreement"], val, r["target"], "" if r["met"] is None else _num(r["met"]),
                 r["notes"]]
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    extra = section.get("extra") or {}
    if extra:
        out += ["", "Also recorded: " + ", ".join(
            f"{k} = {_num(v) if isinstance(v, float) else v}" for k, v in extra.items()) + "."]
    return out + [""]


def _targets_md(sections: list[dict]) -> list[str]:
    """The issue's targets, each with the numbers that decide it (computed, never typed)."""
    out = []
    for section in sections:
        rows = [r for r in section["rows"] if r["target"]]
        if not rows:
            continue
        met = all(r["met"] for r in rows)
        verdict = "met" if met else "**not met**"
        if section["name"] in ("gmm", "sparse"):
            worst = max(rows, key=lambda r: r["ratio"])
            out.append(f"- {section['title']}: target *{rows[0]['target']}* {verdict}; "
                       f"ratios {_num(min(r['ratio'] for r in rows))} to "
                       f"{_num(worst['ratio'])} (worst: {worst['case']}, {worst['size']}).")
        elif section["name"] == "hmm":
            extra = section.get("extra", {})
            out.append(f"- Forward-backward linear in T: fitted log-log slope "
                       f"{_num(extra.get('slope_T_ours'))} (reference "
                       f"{_num(extra.get('slope_T_reference'))}); target {verdict}.")
        elif section["name"] == "book":
            out.append(f"- The whole book under nbval: {_num(rows[-1]['ours_s'])} s in total; "
                       f"target *{rows[-1]['target']}* {verdict}.")
    return (["### Targets", ""] + out + [""]) if out else []


def write_markdown(path: Path, machine: dict, sections: list[dict], meta: dict) -> None:
    lines = ["### Machine and run", ""] + _machine_md(machine, meta) + [""]
    lines += _targets_md(sections)
    lines += ["### Summary of the ratios (ours / reference; below 1 means ours is faster)", ""]
    lines += ["| comparison | case | size | ours (s) | ratio | target | met |",
              "| --- | --- | --- | ---: | ---: | --- | --- |"]
    for section in sections:
        for r in section["rows"]:
            if r["ratio"] is not None or r["target"]:
                cells = [section["name"], r["case"], r["size"], _num(r["ours_s"]),
                         _num(r["ratio"]),
                         r["target"], "" if r["met"] is None else _num(r["met"])]
                lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    for section in sections:
        lines += _section_md(section)
    path.write_text("\n".join(lines))


# ------------------------------------------------------------------------------ figures
def _loglog(ax, sizes, times, label, marker="o"):
    sizes, times = np.asarray(sizes, float), np.asarray(times, float)
    slope = loglog_slope(sizes, times)
    ax.plot(sizes, times, marker=marker, label=f"{label} (slope {slope:.2f})")
    return slope


def _rows(sections, name, case=None):
    for s in sections:
        if s["name"] == name:
            return [r for r in s["rows"] if case is None or r["case"] == case]
    return []


def write_figures(folder: Path, sections: list[dict]) -> list[Path]:
    """Log-log scaling figures for EM, FISTA and forward-backward, with fitted slopes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from elbo_lib.plotting import set_theme

    set_theme()
    written = []

    em = _rows(sections, "gmm", "n-sweep")
    if len(em) >= 2:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        n = [r["params"]["n"] for r in em]
        d, k = em[0]["params"]["d"], em[0]["params"]["K"]
        _loglog(axes[0], n, [r["ours_s"] for r in em], "ours (elbo_lib)")
        _loglog(axes[0], n, [r["ref_s"] for r in em], "scikit-learn", "s")
        _loglog(axes[1], n, [r["ours_per_iter_s"] for r in em], "ours (elbo_lib)")
        _loglog(axes[1], n, [r["ref_per_iter_s"] for r in em], "scikit-learn", "s")
        axes[0].set(title=f"EM to convergence (d={d}, K={k})", ylabel="time (s)")
        axes[1].set(title="EM time per iteration", ylabel="time per iteration (s)")
        for ax in axes:
            ax.set(xscale="log", yscale="log", xlabel="number of points n")
            ax.legend()
        written.append(_save(fig, folder / "em_scaling.png"))

    sp = _rows(sections, "sparse")
    if sp:
        fig, ax = plt.subplots()
        cd = [r for r in sp if r["case"].endswith("lasso_cd")]
        lars = [r for r in sp if r["case"].endswith("lasso_lars")]
        b = [r["params"]["batch"] for r in cd]
        _loglog(ax, b, [r["ours_s"] for r in cd], "ours: FISTA (restart)")
        _loglog(ax, b, [r["ref_s"] for r in cd], "sparse_encode lasso_cd", "s")
        _loglog(ax, [r["params"]["batch"] for r in lars], [r["ref_s"] for r in lars],
                "sparse_encode lasso_lars", "^")
        ax.set(xscale="log", yscale="log", xlabel="batch size (signals)",
               ylabel="time to 1e-6 relative accuracy (s)",
               title="Lasso sparse coding of whitened 8x8 patches (128 atoms)")
        ax.legend()
        written.append(_save(fig, folder / "fista_scaling.png"))

    t_rows, k_rows = _rows(sections, "hmm", "T-sweep"), _rows(sections, "hmm", "K-sweep")
    if t_rows and k_rows:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        T = [r["params"]["T"] for r in t_rows]
        _loglog(axes[0], T, [r["ours_s"] for r in t_rows], "ours (elbo_lib)")
        _loglog(axes[0], T, [r["ref_s"] for r in t_rows], "reference: scaled recursions", "s")
        K = [r["params"]["K"] for r in k_rows]
        _loglog(axes[1], K, [r["ours_s"] for r in k_rows], "ours (elbo_lib)")
        _loglog(axes[1], K, [r["ref_s"] for r in k_rows], "reference: scaled recursions", "s")
        axes[0].set(title=f"Forward-backward vs length (K={t_rows[0]['params']['K']})",
                    xlabel="sequence length T")
        axes[1].set(title=f"Forward-backward vs states (T={k_rows[0]['params']['T']})",
                    xlabel="number of states K")
        for ax in axes:
            ax.set(xscale="log", yscale="log", ylabel="time (s)")
            ax.legend()
        axes[1].set_xticks(K, labels=[str(k) for k in K])
        axes[1].minorticks_off()
        written.append(_save(fig, folder / "hmm_scaling.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
