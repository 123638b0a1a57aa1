"""Execute the book's chapter notebooks in place, reproducibly (``make execute``).

``python tools/execute_notebooks.py chapters/01_elbo.ipynb ...`` runs each notebook top to
bottom in a fresh ``python3`` kernel started in the notebook's folder (as nbval and
jupyter-book do), stores the outputs, and writes nothing that changes from run to run:
no per-cell timing metadata, a fixed kernelspec, no authoring-tool metadata, and
printed text merged into one output per stream. Re-running
it on an unchanged book therefore leaves ``git diff chapters/`` empty of text changes.

Tooling, not part of the library: it lives outside ``elbo_lib``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def execute_notebook(path: str | Path, timeout: int = 600) -> float:
    """Execute one notebook in place and return the wall-clock seconds it took.

    Parameters
    ----------
    path : str or Path
        An ``.ipynb`` file.
    timeout : int
        Seconds any one cell may run.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist or is not an ``.ipynb`` file.
    nbclient.exceptions.CellExecutionError
        If a cell raises; the notebook on disk is left unchanged.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    if path.suffix != ".ipynb" or not path.is_file():
        raise FileNotFoundError(f"not a notebook file: {path}")
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    cell_seconds.clear()
    for index, cell in enumerate(nb.cells):
        stamps = cell.metadata.pop("execution", None) or {}
        if "iopub.execute_input" in stamps and "shell.execute_reply" in stamps:
            cell_seconds.append((_seconds_between(stamps["iopub.execute_input"],
                                                  stamps["shell.execute_reply"]), index))
        if cell.cell_type == "code":
            cell.outputs = coalesce_streams(cell.outputs)
    nbformat.write(nb, path)
    return elapsed


#: (seconds, cell index) of every code cell of the last executed notebook (wall clock).
cell_seconds: list[tuple[float, int]] = []


def _seconds_between(start: str, end: str) -> float:
    from datetime import datetime
    return (datetime.fromisoformat(end.replace("Z", "+00:00"))
            - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()


def coalesce_streams(outputs: list) -> list:
    """Merge consecutive stream outputs of the same name (stdout / stderr) into one.

    How a cell's printed text is split into chunks depends on when the kernel flushed,
    not on what was printed; merging makes the stored notebook independent of that
    timing (nbval compares the merged text too).
    """
    merged: list = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if (out.get("output_type") == "stream" and prev is not None
                and prev.get("output_type") == "stream" and prev.get("name") == out.get("name")):
            prev["text"] = "".join(prev["text"]) + "".join(out["text"])
        else:
            merged.append(out)
    return merged


def main(argv: list[str] | None = None) -> int:
    """Command line: execute every notebook given, stop at the first failure."""
    paths = sys.argv[1:] if argv is None else list(argv)
    show_cells = "--cell-times" in paths
    paths = [p for p in paths if p != "--cell-times"]
    if not paths:
        print("usage: python tools/execute_notebooks.py [--cell-times] NOTEBOOK.ipynb [...]",
              file=sys.stderr)
        return 2
    for p in paths:
        print(f"executing {p} ...", end=" ", flush=True)
        print(f"{execute_notebook(p):.1f} s")
        if show_cells:  # the slowest cells, where a chapter's time goes
            for seconds, index in sorted(cell_seconds, reverse=True)[:10]:
                print(f"  cell {index:3d}: {seconds:7.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
