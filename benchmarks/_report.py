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


def _versions(machine: dict, keys) -> str:
    return ", ".join(str(machine.get(k) or "not installed") for k in keys)


def _machine_md(machine: dict, meta: dict) -> list[str]:
    blas = sorted({f"{b.get('internal_api')} {b.get('version')}"
                   for b in machine.get("blas", []) if b.get("version")})
    threads = sorted({b.get("num_threads") for b in machine.get("blas", [])} - {None})
    pools = (f"every BLAS / OpenMP pool at {', '.join(map(str, threads))} thread(s)"
             if threads else "unknown")
    load = (machine.get("load_average_start") or [None])[0]
    load_end = (meta.get("load_average_end") or [None])[0]
    items = [
        ("Date", machine["date_utc"]),
        ("CPU", f"{machine['cpu']}, {machine['cores']} cores"),
        ("Python", machine["python"]),
        ("NumPy, SciPy, scikit-learn", _versions(machine, ("numpy", "scipy",
                                                           "scikit-learn"))),
        ("torch, Pyro, hmmlearn", _versions(machine, ("torch", "pyro-ppl", "hmmlearn"))),
        ("Threads", f"{pools} ({', '.join(blas)}); torch "
                    f"{machine.get('torch_threads_in_run', '?')} in the VI and VAE runs"),
        ("Load average (1 min), start / end", f"{_num(load)} / {_num(load_end)}"),
        ("Timing", f"{meta['warmup']} warm-up call, then the median of "
                   f"{meta['repeats']} interleaved repeats"),
        ("Mode", "smoke (tiny sizes, not a measurement)" if meta["smoke"] else "full"),
        ("Wall time of the run", f"{meta['wall_s']:.0f} s"),
    ]
    out = ["| | |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in items]
    if meta.get("warning"):
        out += ["", f"**Note:** {meta['warning']}"]
    return out


def _size(params: dict) -> str:
    """'n = 100,000, d = 16' (thousands separated; plain text, narrow)."""
    def fmt(v):
        if isinstance(v, bool) or not isinstance(v, int | float):
            return str(v)
        return f"{v:,}" if float(v).is_integer() else f"{v:g}"
    return ", ".join(f"{k} = {fmt(v)}" for k, v in params.items())


#: Per comparison: header of the peer's time column and of the agreement column.
_HEADERS = {
    "gmm": ("scikit-learn (s)", "Δ (nats/pt)"),
    "sparse": ("sparse_encode (s)", "excess"),
    "cavi": ("scikit-learn (s)", "ARI"),
    "hmm": ("hmmlearn (s)", "Δ log p(x)"),
    "vi": ("Pyro (s/step)", "fixed-q \\|z\\|"),
    "vae": ("reference (s)", "Δ (nats)"),
}


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _sci(value: float) -> str:
    """5.0×10⁻⁷: scientific notation that a table cell cannot break at the exponent."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}×10{str(int(exponent)).translate(_SUPERSCRIPT)}"


def _agreement(name: str, value) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if name == "cavi" else f"{value:.2f}" if name == "vi" \
        else _sci(value)


def _split_params(rows: list[dict]) -> tuple[list[str], dict]:
    """Parameters that vary between the rows, and those that are the same in all of them."""
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    same = {k: rows[0]["params"].get(k) for k in keys
            if len({repr(r["params"].get(k)) for r in rows}) == 1 and len(rows) > 1}
    return [k for k in keys if k not in same], same


def _timing_table(section: dict) -> list[str]:
    name, rows = section["name"], section["rows"]
    peer_h, agree_h = _HEADERS.get(name, ("reference (s)", "agreement"))
    with_iters = any(r["ours_iters"] is not None and r["ref_iters"] is not None for r in rows)
    varying, same = _split_params(rows)
    head = ["case", "size", "ours (s)" if name != "vi" else "ours (s/step)", peer_h, "ratio"]
    head += ["iters"] if with_iters else []
    head += [agree_h]
    out = ([f"In every row: {_size(same)}.", ""] if same else []) + [
        "| " + " | ".join(head) + " |",
        "| --- | --- | " + " | ".join(["---:"] * (len(head) - 2)) + " |"]
    for r in rows:
        cells = [r["case"], _size({k: r["params"][k] for k in varying if k in r["params"]}),
                 _num(r["ours_s"]),
                 _num(r["ref_s"]) if r["ref_s"] is not None else "not run",
                 f"**{_num(r['ratio'])}**" if r["ratio"] is not None else ""]
        if with_iters:
            same = r["ours_iters"] == r["ref_iters"]
            cells.append("" if r["ours_iters"] is None else str(r["ours_iters"]) if same
                         else f"{r['ours_iters']} / {r['ref_iters']}")
        cells.append(_agreement(name, r["agreement_value"]))
        out.append("| " + " | ".join(_cell(c) if i < 2 else c for i, c in enumerate(cells))
                   + " |")
    return out


def _facts(section: dict) -> list[str]:
    """The section's recorded extras, as sentences (never as a key = value dump)."""
    name, extra, rows = section["name"], section.get("extra") or {}, section["rows"]
    out = []
    if extra.get("skipped"):
        out.append(f"*Peer not run:* {extra['skipped']}.")
    if name == "gmm" and extra.get("large_iterations"):
        big = rows[-1]
        out.append(f"The last row runs exactly {extra['large_iterations']} iterations on both "
                   f"sides (tolerance 0) with `chunk_size={extra['large_chunk_size']:,}`; "
                   f"our default E-step took {_num(extra['large_default_e_step_s'])} s on "
                   f"the same data ({_size(big['params'])}).")
    if name == "sparse" and "fista_tol" in extra:
        excess = [float(x.split()[2].rstrip(",")) for r in rows
                  for x in r["notes"].split("; ") if x.startswith("excess ours")]
        out.append(f"Penalty $\\lambda = {_num(extra['lam'])}$; calibrated FISTA tolerance "
                   f"{_num(extra['fista_tol'])}; our largest relative excess "
                   f"{max(excess):.1e}; largest relative duality gap of the reference "
                   f"solves {extra['reference_max_relative_duality_gap']:.1e}.")
    if name == "hmm" and extra.get("slope_T_ours") is not None:
        ref = extra.get("slope_T_reference")
        out.append(f"Fitted log-log slope of the forward-backward time in $T$: ours "
                   f"{_num(extra['slope_T_ours'])}"
                   + (f", hmmlearn {_num(ref)}" if ref is not None else "") + ".")
        gam = [float(r["notes"].split()[-1]) for r in rows
               if r["notes"].startswith("max |gamma diff|")]
        if gam:
            out.append(f"Largest difference of the posterior marginals $\\gamma$: "
                       f"{max(gam):.1e}.")
    if name == "vi" and "pyro_elbo" in extra:
        out += ["", "| after {steps} steps | ours | Pyro |".format(**extra),
                "| --- | ---: | ---: |",
                f"| ELBO reached (± s.e.) | {extra['ours_elbo']:.2f} ± "
                f"{extra['ours_elbo_se']:.2f} | {extra['pyro_elbo']:.2f} ± "
                f"{extra['pyro_elbo_se']:.2f} |",
                f"| time of the whole fit (s) | {_num(extra['ours_full_fit_s'])} | "
                f"{_num(extra['pyro_full_fit_s'])} |",
                f"| ELBO of one fixed $q$ | {extra['fixed_q_ours']:.2f} | "
                f"{extra['fixed_q_pyro']:.2f} |", "",
                f"The two estimates of the same fixed $q$ differ by "
                f"{abs(extra['fixed_q_z']):.2f} standard errors of their difference "
                f"(s.e. of each {extra['fixed_q_se']:.3f} nats). Pyro {extra['pyro']} with "
                f"its default argument validation "
                f"{'on' if extra.get('pyro_validation') else 'off'}; ours validates too."]
    if name == "vae" and "limit" in extra:
        out += _limit_md(extra["limit"])
    if name == "vae" and extra.get("limit_sweep"):
        out += _limit_sweep_md(extra["limit_sweep"])
    if name == "memory":
        out += _memory_md(section)
    if name == "book":
        out += _book_md(rows)
    return out


def _limit_md(limit: dict) -> list[str]:
    out = ["", f"**Fraction of the machine's limit** (float32, {limit['torch_threads']} torch "
               f"thread; the core's GEMM peak at {limit['peak_shape']}³: "
               f"{limit['peak_gflops']:.0f} GFLOP/s).", "",
           "| work | GFLOP | side | GFLOP/s | of GEMMs at these shapes | of the peak |",
           "| --- | ---: | --- | ---: | ---: | ---: |"]
    for key, label in (("epoch", "VAE epoch"), ("iwae", "IWAE evaluation")):
        item = limit[key]
        for side, v in item["sides"].items():
            out.append(f"| {label} | {item['flops'] / 1e9:.3g} | {side} | "
                       f"{v['gflops']:.3g} | {100 * v['fraction_of_gemm_at_shapes']:.2g} % | "
                       f"{100 * v['fraction_of_peak']:.2g} % |")
        out.append(f"| {label}: matrix products alone | {item['flops'] / 1e9:.3g} | "
                   f"`torch.mm` | {item['gemm_only_gflops']:.3g} | 100 % | "
                   f"{100 * item['gemm_only_gflops'] / limit['peak_gflops']:.2g} % |")
    return out


def _limit_sweep_md(sweep: list[dict]) -> list[str]:
    """Fraction of an epoch spent in its matrix products, hidden width x batch size."""
    batches = sorted({r["batch"] for r in sweep})
    widths = sorted({r["hidden"] for r in sweep})
    cell = {(r["hidden"], r["batch"]): r for r in sweep}
    out = ["", "**When does the epoch become arithmetic-bound?** Fraction of one training "
               "epoch's time spent in its matrix products (the same products alone over the "
               "epoch; 1 = arithmetic-bound), and in brackets the epoch's GFLOP/s, by hidden "
               "width (rows) and batch size (columns):", "",
           "| hidden | " + " | ".join(f"batch {b}" for b in batches) + " |",
           "| ---: | " + " | ".join("---:" for _ in batches) + " |"]
    for h in widths:
        out.append(f"| {h} | " + " | ".join(
            f"{100 * cell[h, b]['fraction']:.2g} % ({cell[h, b]['epoch_gflops']:.2g})"
            if (h, b) in cell else "" for b in batches) + " |")
    return out


def _memory_md(section: dict) -> list[str]:
    rows = section["rows"]
    em = [r for r in rows if r["case"].startswith("EM")]
    iwae = [r for r in rows if r["case"].startswith("IWAE")]
    out = []
    if em:
        _, same = _split_params(em)
        out += [f"EM ({_size(same)}), 3 iterations; peaks of the fit beyond the data:", "",
                "| fit | $n$ | data (MB) | traced peak (MB) | RSS peak (MB) |",
                "| --- | ---: | ---: | ---: | ---: |"]
        for r in em:
            m = r["memory"]
            out.append(f"| {r['case'].removeprefix('EM, ').removesuffix(' E-step')} | "
                       f"{r['params']['n']:,} | {_num(m['data_mb'])} | "
                       f"{_num(m['traced_peak_mb'])} | {_num(m['rss_peak_increment_mb'])} |")
        out.append("")
    if iwae:
        out += ["IWAE evaluation (`iwae_bound`; torch's allocations are not traced, so the "
                "resident set is the measure):", "",
                "| sweep | $n$ | $k$ | RSS peak (MB) |", "| --- | ---: | ---: | ---: |"]
        for r in iwae:
            label = ("$k$, mmap threshold fixed" if "fixed" in r["case"]
                     else f"${r['case'].split(', ')[1].split('-')[0]}$")
            out.append(f"| {label} | {r['params']['n']:,} | {r['params']['k']:,} | "
                       f"{_num(r['memory']['rss_peak_increment_mb'])} |")
    g = (section.get("extra") or {}).get("growth", {})
    if g:
        out += ["", "Growth (log-log slope of the peak): EM traced peak against $n$: default "
                f"E-step {_num(g.get('em_ours_traced'))}, chunked "
                f"{_num(g.get('em_chunked_traced'))}, scikit-learn "
                f"{_num(g.get('em_sklearn_traced'))}; IWAE RSS peak against $k$ "
                f"{_num(g.get('iwae_k_rss'))}"
                + (f" (with the mmap threshold fixed "
                   f"{_num(g['iwae_k_rss_fixed_mmap_threshold'])})"
                   if "iwae_k_rss_fixed_mmap_threshold" in g else "")
                + f" and against $n$ {_num(g.get('iwae_n_rss'))}."]
    return out


def _book_md(rows: list[dict]) -> list[str]:
    out = ["| notebook | wall (s) | CPU (s) | CPU < 90 s | nbval |",
           "| --- | ---: | ---: | --- | --- |"]
    for r in rows:
        passed = r["notes"].startswith(("passed", "all passed"))
        cpu = r.get("cpu_s")
        within = ("" if cpu is None or r["case"] == "total"
                  else ("yes" if cpu < 90 else "**no**"))
        out.append(f"| {r['case']} | {_num(r['ours_s'])} | "
                   f"{'' if cpu is None else _num(cpu)} | {within} | "
                   f"{'passed' if passed else '**failed**'} |")
    return out


def _section_md(section: dict) -> list[str]:
    out = [f"### {section['title']}", "", f"*Equal work and accuracy.* {section['equality']}", ""]
    rows = section["rows"]
    extra = section.get("extra") or {}
    if not rows:
        return out + [f"*Not run:* {extra.get('skipped', 'no rows')}.", ""]
    if section["name"] not in ("memory", "book"):
        out += _timing_table(section) + [""]
    lines, paragraph = [], []
    for line in _facts(section) + [""]:  # consecutive sentences form one paragraph
        if line and not line.startswith(("|", "**")):
            paragraph.append(line)
            continue
        if paragraph:
            lines += [" ".join(paragraph), ""]
            paragraph = []
        if line or (lines and lines[-1]):
            lines.append(line)
    return out + lines


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
                       f"{_num(worst['ratio'])} (worst: {worst['case']}, "
                       f"{_size(worst['params'])}).")
        elif section["name"] == "hmm":
            extra = section.get("extra", {})
            out.append(f"- Forward-backward linear in $T$: fitted log-log slope "
                       f"{_num(extra.get('slope_T_ours'))}; target {verdict}.")
        elif section["name"] == "book":
            total = rows[-1]
            chapters = rows[:-1]
            over = [r["case"] for r in chapters if not r["met"]]
            out.append(f"- The whole book under nbval: {_num(total['ours_s'])} s wall in total; "
                       f"target *{total['target']}* "
                       f"{'met' if total['met'] else '**not met**'}. Every chapter under "
                       f"{chapters[0]['target'] if chapters else 'its CPU goal'}: "
                       + ("met." if not over else f"**not met** ({', '.join(over)})."))
    return (["### Targets", ""] + out + [""]) if out else []


def write_markdown(path: Path, machine: dict, sections: list[dict], meta: dict) -> None:
    lines = ["### Machine and run", ""] + _machine_md(machine, meta) + [""]
    lines += _targets_md(sections)
    lines += ["### Summary of the ratios", "",
              "Our time over the peer's: below 1 means ours is faster.", "",
              "| comparison | case | size | ratio |", "| --- | --- | --- | ---: |"]
    for section in sections:
        for r in section["rows"]:
            if r["ratio"] is not None:
                cells = [section["name"], r["case"], _size(r["params"]), _num(r["ratio"])]
                lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    for section in sections:
        lines += _section_md(section)
    path.write_text("\n".join(lines))


# ------------------------------------------------------------------------------ figures
def _loglog(ax, sizes, values, label, marker, color):
    sizes, values = np.asarray(sizes, float), np.asarray(values, float)
    slope = loglog_slope(sizes, values)
    ax.plot(sizes, values, marker=marker, color=color, label=f"{label} (slope {slope:.2f})")
    return slope


def _rows(sections, name, case=None):
    for s in sections:
        if s["name"] == name:
            return [r for r in s["rows"] if case is None or r["case"] == case]
    return []


def _plot_pair(ax, sizes, ours, peer, peer_label, colors):
    _loglog(ax, sizes, ours, "ours (elbo_lib)", "o", colors[0])
    if peer is not None and all(v is not None for v in peer):
        _loglog(ax, sizes, peer, peer_label, "s", colors[1])


def write_figures(folder: Path, sections: list[dict]) -> list[Path]:
    """Single-panel log-log figures (at most 6.5 in wide), with fitted slopes in the legends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from elbo_lib.plotting import PALETTE, set_theme

    set_theme()
    colors = sns.color_palette(PALETTE, 6)
    written = []

    em = _rows(sections, "gmm", "n-sweep")
    if len(em) >= 2:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        n = [r["params"]["n"] for r in em]
        d, k = em[0]["params"]["d"], em[0]["params"]["K"]
        _plot_pair(ax, n, [1e3 * r["ours_per_iter_s"] for r in em],
                   [1e3 * r["ref_per_iter_s"] for r in em], "scikit-learn", colors)
        ax.set(xscale="log", yscale="log", xlabel="number of points $n$",
               ylabel="time per EM iteration (ms)",
               title=f"EM, full covariances ($d = {d}$, $K = {k}$)")
        ax.legend(loc="upper left")
        written.append(_save(fig, folder / "em_scaling.png"))

    sp = _rows(sections, "sparse")
    if sp:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        cd = [r for r in sp if r["case"].endswith("lasso_cd")]
        lars = [r for r in sp if r["case"].endswith("lasso_lars")]
        b = [r["params"]["batch"] for r in cd]
        _loglog(ax, b, [r["ours_s"] for r in cd], "ours: FISTA", "o", colors[0])
        _loglog(ax, b, [r["ref_s"] for r in cd], "sparse_encode, lasso_cd", "s", colors[1])
        _loglog(ax, [r["params"]["batch"] for r in lars], [r["ref_s"] for r in lars],
                "sparse_encode, lasso_lars", "^", colors[2])
        ax.set(xscale="log", yscale="log", xlabel="batch size (signals)",
               ylabel="time to $10^{-6}$ relative accuracy (s)",
               title="Lasso codes of whitened $8 \\times 8$ patches (128 atoms)")
        ax.legend(loc="upper left")
        written.append(_save(fig, folder / "fista_scaling.png"))

    for case, key, fixed, fname, xlabel in (
            ("forward-backward, T-sweep", "T", "K", "hmm_length.png", "sequence length $T$"),
            ("forward-backward, K-sweep", "K", "T", "hmm_states.png",
             "number of states $K$")):
        hr = _rows(sections, "hmm", case)
        if len(hr) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4))
        x = [r["params"][key] for r in hr]
        _plot_pair(ax, x, [r["ours_s"] for r in hr], [r["ref_s"] for r in hr],
                   "hmmlearn", colors)
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="time (s)",
               title=f"Forward-backward, ${fixed} = {hr[0]['params'][fixed]:,}$")
        if key == "K":
            ax.set_xticks(x, labels=[str(v) for v in x])
            ax.minorticks_off()
        ax.legend(loc="upper left")
        written.append(_save(fig, folder / fname))

    mem = _rows(sections, "memory")
    em_mem = {case: [r for r in mem if r["case"] == case]
              for case in ("EM, default E-step", "EM, chunked E-step", "EM, scikit-learn")}
    if all(len(v) >= 2 for v in em_mem.values()):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for (case, rs), color, marker in zip(em_mem.items(), colors, "os^", strict=False):
            _loglog(ax, [r["params"]["n"] for r in rs],
                    [r["memory"]["traced_peak_mb"] for r in rs],
                    case.removeprefix("EM, "), marker, color)
        rs = em_mem["EM, default E-step"]
        ax.plot([r["params"]["n"] for r in rs], [r["memory"]["data_mb"] for r in rs],
                color="0.4", linestyle="--", label="the data $X$ itself")
        ax.set(xscale="log", yscale="log", xlabel="number of points $n$",
               ylabel="peak memory of the fit (MB)",
               title=f"EM peak memory ($d = {rs[0]['params']['d']}$, "
                     f"$K = {rs[0]['params']['K']}$)")
        ax.legend(loc="upper left")
        written.append(_save(fig, folder / "memory_em.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from elbo_lib.plotting import legend_overlaps

    fig.tight_layout()
    problems = legend_overlaps(fig)
    if problems:  # move the legend outside, below the axes
        for ax in fig.axes:
            if ax.get_legend() is not None:
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
        fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
