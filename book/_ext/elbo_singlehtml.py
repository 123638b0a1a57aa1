"""The single-page HTML build (``make pdf``) gets every HTML visitor of the other extensions.

Sphinx gives a builder's translator the node handlers registered under the builder's
name and, only when there are none, those registered under its format ("html"). The
extensions register their nodes for ``html``; sphinx-exercise also registers its nodes
for ``singlehtml``, so after it the single-page build saw no other extension's handlers
and stopped at the landing page's first card (sphinx-design's
``PassthroughTextElement``: "departing unknown node type"). This extension gives the
``singlehtml`` builder the ``html`` handlers too, its own (sphinx-exercise's) first.
"""

from __future__ import annotations

from sphinx.application import Sphinx


def _share_html_handlers(app: Sphinx) -> None:
    if app.builder.name != "singlehtml":
        return
    handlers = app.registry.translation_handlers
    merged = dict(handlers.get("html", {}))
    merged.update(handlers.get("singlehtml", {}))
    handlers["singlehtml"] = merged


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", _share_html_handlers)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
