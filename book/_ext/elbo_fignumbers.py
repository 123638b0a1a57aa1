"""Figures on pages outside the numbered chapters are numbered page by page.

Sphinx numbers figures (tables, listings) by chapter under ``numfig``: "Figure 2.3" is
the third figure of chapter 2. A page with no chapter number (the landing page, the
Performance page in the back matter) has no section number to number by, so Sphinx
numbers all such pages' figures with ONE counter running through the whole book: the
landing page's figure is "Figure 1" and the Performance page's five are "Figure 2" to
"Figure 6", numbers a reader of that page cannot place. After Sphinx has assigned the
numbers (``env-get-updated``), this extension numbers the figures of each unnumbered
page on their own, from 1, in the order Sphinx gave them; chapter figures are untouched.
``{numref}`` to such a figure then reads "Figure 3" of its own page.
(tests/test_browser.py: test_unnumbered_pages_number_their_own_figures.)
"""

from __future__ import annotations

from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment


def renumber_unnumbered_pages(app: Sphinx, env: BuildEnvironment) -> list[str]:
    changed = []
    for docname, by_type in env.toc_fignumbers.items():
        if env.toc_secnumbers.get(docname):
            continue  # a numbered chapter: "Figure N.M" as Sphinx made it
        touched = False
        for numbers in by_type.values():
            order = sorted(numbers, key=numbers.__getitem__)
            for k, fig_id in enumerate(order, start=1):
                if numbers[fig_id] != (k,):
                    numbers[fig_id] = (k,)
                    touched = True
        if touched:
            changed.append(docname)
    return changed  # these pages are written again


def setup(app: Sphinx) -> dict:
    # After sphinx's own TocTreeCollector (priority 500) has assigned the numbers.
    app.connect("env-get-updated", renumber_unnumbered_pages, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
