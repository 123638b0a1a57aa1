"""Largest relative change of the printed numbers, cell by cell, between executed notebooks.

The measurement behind a cell's ``tolerance`` (CONTRIBUTING.md, "Loosening one cell"):
execute a chapter under several sets of training seeds, then

    ELBO_TRAINING_SEED_SHIFT=1000 python tools/execute_notebooks.py copy1000.ipynb  # ...
    python tools/compare_outputs.py chapters/07_flows.ipynb copy1000.ipynb copy2000.ipynb

prints, for every code cell whose text outputs differ, the largest relative change of
any number in them (split as the nbval comparison of the root conftest.py splits them),
or that the text between the numbers differs (which no tolerance accepts).

Tooling, not part of the library.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import is_numeric_key, split_numbers  # noqa: E402  (the root conftest.py)


def compared_text(cell: dict) -> str:
    """The text outputs of a code cell that the nbval comparison splits into numbers."""
    parts = []
    for output in cell.get("outputs", []):
        if "text" in output:
            parts.append("".join(output["text"]))
        for key, value in output.get("data", {}).items():
            if is_numeric_key(key):
                parts.append("".join(value))
    return "\n".join(parts)


def largest_changes(reference: dict, other: dict) -> list[tuple[int, str]]:
    """``(cell index, verdict)`` for every code cell whose compared text differs."""
    rows = []
    for index, (a, b) in enumerate(zip(reference["cells"], other["cells"], strict=True)):
        if a["cell_type"] != "code":
            continue
        text_a, text_b = compared_text(a), compared_text(b)
        if text_a == text_b:
            continue
        (words_a, nums_a), (words_b, nums_b) = split_numbers(text_a), split_numbers(text_b)
        if words_a != words_b or len(nums_a) != len(nums_b):
            rows.append((index, "the text between the numbers differs"))
            continue
        worst, where = 0.0, ("", "")
        for x, y in zip(nums_a, nums_b, strict=True):
            fx, fy = float(x), float(y)
            change = abs(fx - fy) / max(abs(fx), abs(fy)) if fx or fy else 0.0
            if change > worst:
                worst, where = change, (x, y)
        rows.append((index, f"largest relative change {worst:.3g} ({where[0]} vs {where[1]})"))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(__doc__)
        return 2
    reference = json.loads(Path(args[0]).read_text())
    for path in args[1:]:
        print(f"== {path}")
        for index, verdict in largest_changes(reference, json.loads(Path(path).read_text())):
            print(f"cell {index}: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
