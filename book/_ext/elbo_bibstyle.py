"""Sphinx extension of the ELBO book: author-year labels on the bibliography page.

Citations in the text read "[Bishop, 2006]" (``bibtex_reference_style: author_year``);
with this style the bibliography lists the same label, "[Bishop, 2006]", instead of
pybtex's default alpha label "[Bis06]", sorted by author, year and title.
Selected in ``_config.yml`` with ``bibtex_default_style: elbo_author_year``.
"""

from __future__ import annotations

from collections import Counter
from string import ascii_lowercase

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle


def _last_name(person) -> str:
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


def _author_year(entry) -> str:
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last_name(p) for p in persons]
    if not names:
        who = entry.key
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    """Labels "Author, 2006", "Author and Other, 2006", "Author et al., 2006"; a, b if equal."""

    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [_author_year(e) for e in entries]
        counts, seen = Counter(labels), Counter()
        for label in labels:
            if counts[label] > 1:
                yield f"{label}{ascii_lowercase[seen[label]]}"
                seen[label] += 1
            else:
                yield label


class AuthorYearStyle(UnsrtStyle):
    default_label_style = "elbo_author_year"
    default_sorting_style = "author_year_title"


def setup(app):
    register_plugin("pybtex.style.labels", "elbo_author_year", AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", "elbo_author_year", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
