"""The Performance page's summary of the ratios, one table per comparison (issue 33).

``benchmarks/results/results.md`` (written by ``python -m benchmarks``, included by
book/performance.md) summarises every ratio in ONE table, ``comparison | case | size |
ratio``, 55 rows whose first column repeats the same six words (gmm, sparse, cavi, hmm,
vi, vae): about six screens on a phone, with the ratio, the number the table is for,
scrolled off its right edge. This extension splits that table, when the page is read,
into one table per comparison, in the order of first appearance, each headed by the title
of the section that details it (a link to it) and without the repeated column:
``case | size | ratio``. Rows, cells and numbers are copied as they are; nothing is
recomputed. A table whose header row is empty (the "Machine and run" facts: Markdown
needs a header row) loses it. A table with any other header is left alone, and so is this
one if its
header changes (tests/test_browser.py then finds the 4-column summary again and its
test of the split fails).
"""

from __future__ import annotations

from docutils import nodes
from sphinx.application import Sphinx

PAGE = "book/performance"
HEADER = ["comparison", "case", "size", "ratio"]
# The first words of the section of results.md that details each comparison.
SECTIONS = {"gmm": "EM for Gaussian mixtures", "sparse": "FISTA", "cavi": "CAVI",
            "hmm": "Hidden Markov models", "vi": "Black-box VI", "vae": "VAE"}


def _cells(row: nodes.row) -> list[str]:
    return [entry.astext().strip() for entry in row.children]


def _split(table: nodes.table, sections: dict[str, nodes.section]) -> list[nodes.Element]:
    tgroup = next(iter(table.findall(nodes.tgroup)))
    colspecs = [c for c in tgroup.children if isinstance(c, nodes.colspec)]
    head_row = next(iter(tgroup.findall(nodes.thead))).children[0]
    groups: dict[str, list[nodes.row]] = {}
    for row in next(iter(tgroup.findall(nodes.tbody))).children:
        groups.setdefault(_cells(row)[0], []).append(row)
    tables = []
    for name, rows in groups.items():
        new = nodes.table(classes=list(table["classes"]) + ["elbo-summary-part"])
        # Headed by a rubric, not a caption: a captioned table would be numbered
        # ("Table 3") like a figure, which no other table of the page is.
        section = sections.get(name)
        rubric = nodes.rubric(classes=["elbo-summary-part"])
        if section is not None and section["ids"]:
            link = nodes.reference("", "", internal=True, refid=section["ids"][0])
            link += nodes.Text(section[0].astext())
            rubric += link
        else:
            rubric += nodes.Text(name)
        tables.append(rubric)
        group = nodes.tgroup(cols=len(colspecs) - 1)
        group += [c.deepcopy() for c in colspecs[1:]]
        thead = nodes.thead()
        head = nodes.row()
        head += [e.deepcopy() for e in head_row.children[1:]]
        thead += head
        tbody = nodes.tbody()
        for row in rows:
            copy = nodes.row()
            copy += [e.deepcopy() for e in row.children[1:]]
            tbody += copy
        group += [thead, tbody]
        new += group
        tables.append(new)
    return tables


def split_summary(app: Sphinx, doctree: nodes.document) -> None:
    if app.env.docname != PAGE:
        return
    sections = {}
    for section in doctree.findall(nodes.section):
        heading = section[0].astext() if section.children else ""
        for name, start in SECTIONS.items():
            if heading.startswith(start) and name not in sections:
                sections[name] = section
    for table in list(doctree.findall(nodes.table)):
        thead = next(iter(table.findall(nodes.thead)), None)
        if thead is not None and not any(_cells(thead.children[0])):
            # "Machine and run" is a two-column list of facts: Markdown needs a header
            # row, which here is empty ("| | |"); the page shows none.
            thead.parent.remove(thead)
            continue
        if thead is None or _cells(thead.children[0]) != HEADER:
            continue
        table.replace_self(_split(table, sections))


def setup(app: Sphinx) -> dict:
    app.connect("doctree-read", split_summary)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
