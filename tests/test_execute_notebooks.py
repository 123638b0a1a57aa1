import nbformat
import pytest

from tools.execute_notebooks import KERNELSPEC, coalesce_streams, execute_notebook, main


def test_execute_notebook_is_reproducible(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["jupytext"] = {"x": 1}
    nb.cells = [nbformat.v4.new_code_cell("import os\nprint(os.path.basename(os.getcwd()))"),
                nbformat.v4.new_code_cell("1 + 1")]
    path = tmp_path / "demo.ipynb"
    nbformat.write(nb, path)
    execute_notebook(path)
    first = path.read_text()
    execute_notebook(path)
    assert path.read_text() == first
    out = nbformat.read(path, as_version=4)
    assert out.metadata["kernelspec"] == KERNELSPEC and "jupytext" not in out.metadata
    assert out.cells[0].outputs[0]["text"] == f"{tmp_path.name}\n"  # runs in its folder
    assert out.cells[1].outputs[0]["data"]["text/plain"] == "2"
    assert all("execution" not in c.metadata for c in out.cells)


def test_execute_notebook_bad_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a notebook"):
        execute_notebook(tmp_path / "missing.ipynb")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(FileNotFoundError):
        execute_notebook(tmp_path / "x.txt")


def test_main_usage():
    assert main([]) == 2


def test_coalesce_streams_merges_only_neighbours_of_the_same_stream():
    outs = [{"output_type": "stream", "name": "stdout", "text": "a\n"},
            {"output_type": "stream", "name": "stdout", "text": ["b\n", "c"]},
            {"output_type": "stream", "name": "stderr", "text": "e"},
            {"output_type": "display_data", "data": {}},
            {"output_type": "stream", "name": "stdout", "text": "d"}]
    got = coalesce_streams(outs)
    assert [o.get("name") for o in got] == ["stdout", "stderr", None, "stdout"]
    assert got[0]["text"] == "a\nb\nc" and got[3]["text"] == "d"
