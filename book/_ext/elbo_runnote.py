"""Every chapter page says how to run its notebook outside the book (issue 33, item 6).

A notebook downloaded from a chapter page (the theme's download button, ``.ipynb``)
imports the book's library, ``elbo_lib``, which is not on PyPI: without it the first code
cell fails. Under the title of every page made from a notebook this extension puts a
short note with the one command that makes ``elbo_lib`` importable, the same set-up
``make book`` does: in a clone of the repository, in a Python 3.11 virtual environment,
``python -m pip install -r requirements.txt -e .`` (the pinned libraries of
``requirements.txt`` and ``elbo_lib`` in editable mode from ``pyproject.toml``). A
notebook reads no file of the repository, so after that it runs from any folder.

The note is one ``div.elbo-run-note`` of inline text (no ``<p>``: elbo.js and the browser
test take the size of body text from the page's first paragraph); elbo.css sets it in
small print and leaves it out of the printed book. ``COMMAND`` is the single source of the
command: tests/test_browser.py checks that every chapter page shows it, and that the
files it names exist in the repository with what the command needs from them.
"""

from __future__ import annotations

from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx

COMMAND = "python -m pip install -r requirements.txt -e ."


def _note(notebook: str, docname: str) -> nodes.container:
    note = nodes.container(classes=["elbo-run-note"])
    note["ids"] = ["elbo-run-note"]
    xref = addnodes.pending_xref("", refdomain="std", reftype="doc",
                                 reftarget="/book/how_to_use", refdoc=docname,
                                 refexplicit=True,
                                 refwarn=True)
    xref += nodes.inline("", "How to run and verify this book")
    text = nodes.inline()  # a text element: Sphinx writes links only inside one
    note += text
    text += [
        nodes.strong("", "Run this notebook yourself."),
        nodes.Text(" The download button at the top of the page gives it as "),
        nodes.literal("", notebook),
        nodes.Text(". It imports the book's library "),
        nodes.literal("", "elbo_lib"),
        nodes.Text(": in a clone of the book's repository, in a Python 3.11 virtual "
                   "environment, "),
        nodes.literal("", COMMAND, classes=["elbo-run-command"]),
        nodes.Text(" installs it with the pinned versions of everything the chapters use; "
                   "the notebook then runs from any folder ("),
        xref,
        nodes.Text(")."),
    ]
    return note


def add_run_note(app: Sphinx, doctree: nodes.document) -> None:
    docname = app.env.docname
    source = Path(app.env.doc2path(docname))
    if source.suffix != ".ipynb":
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None or not section.children or not isinstance(section[0], nodes.title):
        return
    section.insert(1, _note(source.name, docname))


def setup(app: Sphinx) -> dict:
    app.connect("doctree-read", add_run_note)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
