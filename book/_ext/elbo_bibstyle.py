"""Sphinx extension of the ELBO book: author-year labels on the bibliography page.

Citations in the text read "[Bishop, 2006]" (``bibtex_reference_style: author_year``);
with this style the bibliography lists the same label, "[Bishop, 2006]", instead of
pybtex's default alpha label "[Bis06]", sorted by author, year and title.
Selected in ``_config.yml`` with ``bibtex_default_style: elbo_author_year``.

A BibTeX author list that ends in "and others" reads "Pedregosa et al." in the label
and "F. Pedregosa et al." in the entry (pybtex would print "and others").
"""

from __future__ import annotations

from collections import Counter
from string import ascii_lowercase

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.template import FieldIsMissing, join, node, sentence


def _is_others(person) -> bool:
    """BibTeX's "and others" is parsed as a person whose last name is "others"."""
    return (person.last_names == ["others"] and not person.first_names
            and not person.middle_names and not person.prelast_names)


@node
def _names_et_al(children, context, role, **kwargs):
    """pybtex's ``names`` template, with a trailing "others" written "et al."."""
    if children:
        raise ValueError(children)
    try:
        persons = list(context["entry"].persons[role])
    except KeyError:
        raise FieldIsMissing(role, context["entry"]) from None
    others = bool(persons) and _is_others(persons[-1])
    if others:
        persons = persons[:-1]
    style = context["style"]
    formatted = [style.format_name(person, style.abbreviate_names) for person in persons]
    text = join(**kwargs)[formatted].format_data(context)
    return Text(text, " et al.") if others else text


def _last_name(person) -> str:
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


def _author_year(entry) -> str:
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    others = bool(persons) and _is_others(persons[-1])
    names = [_last_name(p) for p in persons if not _is_others(p)]
    if not names:
        who = entry.key
    elif len(names) == 1:
        who = f"{names[0]} et al." if others else names[0]
    elif len(names) == 2 and not others:
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

    def format_names(self, role, as_sentence=True):
        formatted = _names_et_al(role, sep=", ", sep2=" and ", last_sep=", and ")
        return sentence[formatted] if as_sentence else formatted


def setup(app):
    register_plugin("pybtex.style.labels", "elbo_author_year", AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", "elbo_author_year", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
