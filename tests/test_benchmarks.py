"""The benchmarks' smoke mode runs and writes a well-formed results table.

Timings are never asserted (they depend on the machine and its load); what is checked is
that every comparison runs, agrees with its reference, and is reported completely.
"""

import csv
import json
import math
import re

import pytest

from benchmarks import COMPARISONS, hmm, vi
from benchmarks.__main__ import RESULTS, main, parse_args
from benchmarks._common import Config, loglog_slope, measure, peer
from benchmarks._report import CSV_COLUMNS

HAVE_PEERS = {"hmm": peer("hmmlearn", "hmmlearn.hmm") is not None,
              "vi": peer("pyro", "pyro.infer") is not None}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return main(["--smoke", "--out", str(out)])


def test_smoke_writes_every_file(smoke):
    out = smoke["out"]
    for name in ("results.json", "results.csv", "results.md", "em_scaling.png",
                 "fista_scaling.png", "hmm_length.png", "hmm_states.png", "memory_em.png"):
        assert (out / name).stat().st_size > 0, name


def test_json_has_machine_and_every_comparison(smoke):
    data = json.loads((smoke["out"] / "results.json").read_text())
    machine = data["machine"]
    for key in ("cpu", "cores", "python", "numpy", "scipy", "scikit-learn", "torch", "blas",
                "date_utc"):
        assert machine[key] not in (None, "", []), key
    assert [c["name"] for c in data["comparisons"]] == list(COMPARISONS)
    for c in data["comparisons"]:
        assert c["title"] and len(c["equality"]) > 50, c["name"]
    assert data["run"]["smoke"] is True
    assert data["run"]["repeats"] >= 1


def test_rows_are_complete_and_results_agree(smoke):
    rows = [r for s in smoke["sections"] for r in s["rows"]]
    names = {r["comparison"] for r in rows}
    assert names == set(COMPARISONS) - {"book"}  # the book is not executed in smoke mode
    for r in rows:
        if r["comparison"] == "memory":
            continue
        assert r["ours_s"] > 0 and math.isfinite(r["ours_s"])
        if r["comparison"] in HAVE_PEERS and not HAVE_PEERS[r["comparison"]]:
            assert r["ref_s"] is None and r["ratio"] is None  # peer not installed
            continue
        assert r["ref_s"] > 0 and r["ratio"] == pytest.approx(r["ours_s"] / r["ref_s"])
        assert r["agreement"] and r["agreement_value"] is not None
    by = {(r["comparison"], r["case"], r["size"]): r for r in rows}
    for (name, _, _), r in by.items():
        if name == "gmm":  # equal work: the same iterations to the same answer
            assert r["ours_iters"] == r["ref_iters"]
            assert r["agreement_value"] < 1e-8
        if name == "sparse":  # both reach the accuracy target
            assert r["agreement_value"] <= 1e-6
        if name == "hmm" and HAVE_PEERS["hmm"]:  # same log p(x) as hmmlearn
            assert r["agreement_value"] < 1e-8
        if name == "vi" and HAVE_PEERS["vi"]:  # Pyro's estimate within Monte Carlo error
            assert r["agreement_value"] < 4.0
        if name == "cavi":
            assert r["agreement_value"] > 0.9  # adjusted Rand index


def test_limit_and_memory_are_recorded(smoke):
    sections = {s["name"]: s for s in smoke["sections"]}
    limit = sections["vae"]["extra"]["limit"]
    assert limit["torch_threads"] == 1 and limit["peak_gflops"] > 0
    for key in ("epoch", "iwae"):
        assert limit[key]["flops"] > 0
        for side in limit[key]["sides"].values():
            assert 0 < side["fraction_of_peak"] < 1
    mem = sections["memory"]
    cases = {r["case"] for r in mem["rows"]}
    assert {"EM, default E-step", "EM, chunked E-step", "EM, scikit-learn"} <= cases
    for r in mem["rows"]:
        assert r["memory"]["traced_peak_mb"] > 0 and r["memory"]["data_mb"] > 0
    sweep = sections["vae"]["extra"]["limit_sweep"]
    assert {(r["hidden"], r["batch"]) for r in sweep} == {(32, 16), (32, 64), (128, 16),
                                                          (128, 64)}
    for r in sweep:  # the products alone cannot take longer than the epoch that contains them
        assert 0 < r["fraction"] < 1 and r["flops"] > 0
    md = (smoke["out"] / "results.md").read_text()
    assert "Fraction of the machine's limit" in md and "| chunked | " in md
    assert "When does the epoch become arithmetic-bound?" in md


def test_book_table_reports_cpu_against_the_goal():
    from benchmarks._common import row
    from benchmarks._report import _book_md, _targets_md
    from benchmarks.book import TARGET_CPU_S
    rows = []
    for case, wall, cpu in (("01_elbo", 40.0, 31.0), ("06_vae", 150.0, 131.0)):
        rows.append(row("book", case, {"notebook": case}, ours=wall, agreement="nbval",
                        target=f"CPU < {TARGET_CPU_S:.0f} s", met=cpu < TARGET_CPU_S,
                        notes="passed: 1 passed"))
        rows[-1]["cpu_s"] = cpu
    rows.append(row("book", "total", {"notebooks": 2}, ours=190.0, agreement="nbval",
                    target="total < 300 s", met=True, notes="all passed"))
    rows[-1]["cpu_s"] = 162.0
    md = "\n".join(_book_md(rows))
    assert "| 01_elbo | 40 | 31 | yes | passed |" in md
    assert "| 06_vae | 150 | 131 | **no** | passed |" in md
    targets = "\n".join(_targets_md([{"name": "book", "title": "book", "rows": rows}]))
    assert "**not met** (06_vae)" in targets


def test_peers_are_skipped_cleanly_when_missing(monkeypatch):
    monkeypatch.setenv("BENCH_WITHOUT_PEERS", "1")
    config = Config(smoke=True, repeats=1, warmup=0)
    sections = [hmm.run(config), vi.run(config)]
    for s in sections:
        assert "not installed" in s["extra"]["skipped"]
        assert s["rows"] and all(r["ref_s"] is None and r["ratio"] is None
                                 for r in s["rows"])
        assert all(r["ours_s"] > 0 for r in s["rows"])


def test_csv_and_markdown_are_well_formed(smoke):
    with (smoke["out"] / "results.csv").open() as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == sum(len(s["rows"]) for s in smoke["sections"])
    md = (smoke["out"] / "results.md").read_text()
    assert "### Machine and run" in md and "| CPU |" in md
    for s in smoke["sections"]:
        assert f"### {s['title']}" in md
    table = [ln for ln in md.splitlines() if ln.startswith("| gmm |")]
    assert len(table) == len([r for r in rows if r["comparison"] == "gmm"])
    # every table row has as many cells as its header, and no table is wide
    lines = md.splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith("| ---") or ln.startswith("| :--"):
            cells = len(re.findall(r"(?<!\\)\|", lines[i - 1]))
            assert cells <= 8, lines[i - 1]  # at most 7 columns
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert len(re.findall(r"(?<!\\)\|", lines[j])) == cells, lines[j]
                j += 1
    # no raw dumps of recorded values, no ASCII math
    assert "Also recorded" not in md and "None" not in md
    assert "||" not in md and not re.search(r"(?<!\\)sigma\^2|->", md)


def test_smoke_never_writes_to_the_committed_results():
    assert parse_args(["--smoke"]).out != RESULTS
    with pytest.raises(SystemExit):
        parse_args(["--smoke", "--out", str(RESULTS)])
    with pytest.raises(SystemExit):
        parse_args(["--repeats", "3"])  # a measured run needs >= 5 repeats
    with pytest.raises(SystemExit):
        parse_args(["--only", "nonsense"])


def test_measure_and_slope():
    calls = []
    t = measure({"a": lambda: calls.append(1) or len(calls)}, Config(repeats=5, warmup=2))
    assert len(calls) == 7 and len(t["a"].times) == 5 and t["a"].result == 7
    assert t["a"].minimum <= t["a"].median <= t["a"].maximum
    assert loglog_slope([10, 100, 1000], [2.0, 20.0, 200.0]) == pytest.approx(1.0)
    assert loglog_slope([10, 100], [1.0, 100.0]) == pytest.approx(2.0)


def test_merge_combines_disjoint_runs(smoke, tmp_path):
    data = json.loads((smoke["out"] / "results.json").read_text())
    for name, keep in (("a", {"gmm", "hmm"}), ("b", {"sparse"})):
        (tmp_path / name).mkdir()
        part = dict(data, comparisons=[c for c in data["comparisons"] if c["name"] in keep])
        (tmp_path / name / "results.json").write_text(json.dumps(part))
    main(["--merge", str(tmp_path / "b"), str(tmp_path / "a"), "--out", str(tmp_path / "m")])
    merged = json.loads((tmp_path / "m" / "results.json").read_text())
    assert [c["name"] for c in merged["comparisons"]] == ["gmm", "sparse", "hmm"]
    assert (tmp_path / "m" / "results.md").stat().st_size > 0
    with pytest.raises(SystemExit):  # overlapping runs are refused
        main(["--merge", str(tmp_path / "a"), str(tmp_path / "a"), "--out",
              str(tmp_path / "x")])
