"""Every figure's image gets its caption as alt text.

A figure made from a notebook's output (myst-nb) has an image node without ``alt``, and
Sphinx's HTML writer then writes the file's path as the alt text
(``alt="../_images/cd95...64.png"``): a screen reader reads out a hash, and a reader
whose image did not load sees one. This extension sets ``alt`` of each image inside a
figure that has none (or whose alt is its own path) to the figure's caption as plain
text, its formulas turned from TeX into words a reader can follow (``\\mathrm{KL}(q \\,\\|\\,
p)`` -> ``KL(q || p)``). An alt the author wrote (the Performance page's) is kept.
(tests/test_browser.py: test_figure_images_have_their_caption_as_alt_text.)
"""

from __future__ import annotations

import re

from docutils import nodes
from sphinx.application import Sphinx

# TeX that is layout, not content: dropped.
_DROP = re.compile(r"\\(?:mathcal|mathrm|mathbb|mathbf|boldsymbol|operatorname|text|textrm|"
                   r"mathit|left|right|big|Big|bigg|Bigg|displaystyle)(?![A-Za-z])|\\[,;:! ]|"
                   r"\\q?quad(?![A-Za-z])")
_WORDS = {r"\|": "||", r"\mid": "|", r"\cdot": "·", r"\times": "×", r"\le": "≤",
          r"\leq": "≤", r"\ge": "≥", r"\geq": "≥", r"\approx": "≈", r"\sim": "~",
          r"\to": "→", r"\infty": "∞", r"\sum": "sum", r"\log": "log", r"\exp": "exp",
          r"\ldots": "...", r"\dots": "..."}
_GREEK = ("alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa "
          "lambda mu nu xi pi rho sigma tau upsilon phi varphi chi psi omega Gamma Delta "
          "Theta Lambda Xi Pi Sigma Phi Psi Omega").split()
_GREEK_CHARS = "αβγδεεζηθθικλμνξπρστυφφχψωΓΔΘΛΞΠΣΦΨΩ"


def tex_to_words(tex: str) -> str:
    """A formula's TeX as plain text for alt text (not a full TeX reader)."""
    text = _DROP.sub(" ", tex)
    for name, char in zip(_GREEK, _GREEK_CHARS, strict=True):
        text = re.sub(rf"\\{name}(?![A-Za-z])", char, text)
    for cmd, word in sorted(_WORDS.items(), key=lambda kv: -len(kv[0])):
        if cmd[-1].isalpha():
            text = re.sub(re.escape(cmd) + r"(?![A-Za-z])", word, text)
        else:
            text = text.replace(cmd, word)
    text = re.sub(r"\\([A-Za-z]+)", r"\1", text)  # any other command: its name
    text = text.replace("{", "").replace("}", "").replace("\\", "")
    return re.sub(r"\s+", " ", text).strip()


def caption_text(caption: nodes.caption) -> str:
    parts = []
    for node in caption.findall(lambda n: isinstance(n, (nodes.Text, nodes.math))):
        if isinstance(node, nodes.math):
            parts.append(tex_to_words(node.astext()))
        elif not any(isinstance(a, nodes.math) for a in _ancestors(node, caption)):
            parts.append(node.astext())
    return re.sub(r"\s+", " ", "".join(parts)).strip()


def _ancestors(node: nodes.Node, stop: nodes.Node):
    node = node.parent
    while node is not None and node is not stop:
        yield node
        node = node.parent


def add_alt_text(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    for figure in doctree.findall(nodes.figure):
        captions = [c for c in figure.children if isinstance(c, nodes.caption)]
        if not captions:
            continue
        alt = caption_text(captions[0])
        if not alt:
            continue
        for image in figure.findall(nodes.image):
            current = image.get("alt", "")
            uri = image.get("uri", "")
            if not current or current == uri or current.endswith(uri.rsplit("/", 1)[-1]):
                image["alt"] = alt


def setup(app: Sphinx) -> dict:
    app.connect("doctree-resolved", add_alt_text)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
