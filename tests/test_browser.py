"""The rendered book as a reader meets it, checked in a real (headless) Chromium.

The book built by the session fixture ``built_html`` (warnings are errors, as in
``make book``) is served on 127.0.0.1 and every page of it is opened in Debian's
Chromium driven by Playwright. For every page the browser must show:

* math typeset by the offline MathJax (``mjx-container`` elements, no MathJax error,
  no raw ``$$``, ``\\begin{``, ``\\(`` or TeX command left in the visible text), with the
  book-wide macros (``\\E``, ``\\KL``, ``\\ELBO``, ...) taken from ``_config.yml``;
* every ``<img>`` loaded (``naturalWidth > 0``);
* no failed request, no HTTP error, no request to any host but localhost, no console
  error and no uncaught JavaScript exception;
* navigation that works: the sidebar lists every page of the table of contents, the
  previous/next links follow its order, and every link to the book itself (sidebar,
  prev/next, cross-references, citations, equation references, the ``.ipynb`` download)
  answers HTTP 200 and, when it has a ``#fragment``, lands on an element with that id;
* no horizontal scrolling of the page at laptop width (1366 px);
* on chapters: the download button offers the chapter's ``.ipynb`` and clicking it
  downloads a valid notebook; exercise solutions are collapsed until clicked;
  ``hide-input`` cells are collapsed.

What a reader sees, as a textbook (issue 13), on every page:

* nothing that belongs to the tests: no figure summary printed as text
  (``axes 0: '...'; x: ...``), no nbval marker (``NBVAL_``) anywhere, no ``glue(`` call in
  code a reader sees unfolded, no progress bar (tqdm), no empty output box;
* at 1366 px no code cell (folded ones opened) and no table that scrolls sideways, and no
  inline formula running past the column;
* display math at least the size of the body text; h3 lighter and smaller than h2; running
  text at a measure of about 60-85 characters;
* on chapters, every figure in a numbered caption "Figure N.M" (N the chapter), numbered
  in order;
* no line that starts with punctuation belonging to the formula before it, or ends with
  the "(" of the formula after it, at 1366 px and at 390 px;
* at 390x844 (a phone) the page does not scroll sideways, every display formula fits or
  scrolls in its own box with a visible cue (and nothing around it cuts it), the
  chapter-list button opens
  the primary sidebar and a chapter link in it navigates to that chapter, and the
  page-contents button opens the secondary sidebar; at 1366 px the sidebar button hides
  the sidebar and shows it again.

On a phone and everywhere (issue 33): at 390 px a tap on any figure opens it at full
resolution over the page (Escape closes it; Enter opens it from the keyboard), a table
wider than the column scrolls with the scroll cue and its short cells stay on one line,
no number in printed output is split over two lines, the previous / next titles are
whole, and a tap in the page-contents drawer closes it; every figure's image has its
caption as alt text (never a file path); solution and aside title bars span their box;
links have one colour (AA contrast, underlined); pages outside the chapters number their
figures from 1; every chapter page says, under its title, the one command that makes
``elbo_lib`` importable for its downloaded notebook (and that command installs every
package the notebooks and ``elbo_lib`` import); the Performance page's summary of the
ratios is one table per comparison whose ratios a phone shows without scrolling; no table
has an empty header row. With ``ELBO_BOOK_PDF=<file>`` (``make pdf`` sets it) the whole-book PDF
is checked with pdftotext / pdfimages: every chapter on its own sheet in order, with all
its figures, numbered equations and solutions.

With ``ELBO_SCREENSHOTS=1`` a full-page screenshot of every page at both widths is saved
under ``tests/_output/screenshots/`` (``<page>__1366.png``, ``<page>__390.png``) so a
person can look at it; they are off by default because no test reads them and they cost
about 90 s of the run (5 to 8 s per chapter page and width). Failures name the page,
the element (code cell number and section, the formula's TeX, the table's first header)
and what is wrong. Without ``/usr/bin/chromium`` the tests are skipped with a message
saying how to install it. Set ``ELBO_BOOK_HTML=book/_build/html`` to check an existing
build instead of building the book.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("ELBO_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = ROOT / "tests" / "_output" / "screenshots"
TAKE_SCREENSHOTS = os.environ.get("ELBO_SCREENSHOTS", "") not in ("", "0")
VIEWPORT = {"width": 1366, "height": 900}  # a normal laptop screen
PHONE = {"width": 390, "height": 844}  # a phone held upright
# Flags for headless Chromium on a machine with no network (see the machine notes):
# without the background-networking ones Chromium keeps trying to reach Google.
# The host-resolver rule makes any request to a host other than localhost fail at once,
# so a CDN dependency shows up as a failed, non-local request instead of a hang.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
MACROS = {"E", "KL", "ELBO", "N", "R", "given"}  # defined once, in _config.yml
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
INSTALL_HINT = ("headless Chromium is not installed at /usr/bin/chromium: install it with "
                "`apt-get update && apt-get install -y chromium chromium-driver` "
                "(.ci/run does this) to run the real-browser tests")


def _toc_pages() -> list[str]:
    """The HTML pages of the book in reading order, from ``_toc.yml``."""
    toc = (ROOT / "_toc.yml").read_text()
    root = re.search(r"^root:\s*(\S+)", toc, re.M).group(1)
    files = re.findall(r"^\s*-?\s*file:\s*(\S+)", toc, re.M)
    return [f"{p.removesuffix('.md').removesuffix('.ipynb')}.html" for p in [root, *files]]


TOC_PAGES = _toc_pages()
# index.html redirects to the root page; genindex and search come with every Sphinx build.
PAGES = ["index.html", *TOC_PAGES, "genindex.html", "search.html"]
CHAPTERS = [p for p in TOC_PAGES if p.startswith("chapters/")]
# A chapter's sections on pages of their own (``sections:`` under a chapter in _toc.yml):
# Sphinx numbers their heading, figures and equations on from the chapter's ("7.11.",
# Figure 7.5, (7.4)), so their numbers run on with a start of their own.
SECTION_PAGES = [f"{p}.html" for p in re.findall(
    r"^\s{8,}- file:\s*(chapters/\S+)", (ROOT / "_toc.yml").read_text(), re.M)]


def _numbered_on(numbers: list[str], template: str) -> list[str]:
    """What ``numbers`` should be: ``template`` formatted with k = 1, 2, ..., or, on a
    section page, with k running on from the first number's."""
    first = re.search(r"(\d+)\D*$", numbers[0]) if numbers else None
    start = int(first.group(1)) if first else 1
    return [template.format(k=k) for k in range(start, start + len(numbers))]
# The sidebar buttons are tried on the second chapter, following its link to the third.
NAV_PAGE, NAV_TARGET = CHAPTERS[1], CHAPTERS[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=INSTALL_HINT),
]


# --------------------------------------------------------------------------------------
# What the browser saw on one page


@dataclass
class Visit:
    page: str
    url: str = ""
    final_url: str = ""
    status: int | None = None
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    http_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)  # gathered in the page by COLLECT_JS
    reader: dict = field(default_factory=dict)  # gathered by READER_JS (issue 13)
    code_scroll: list[str] = field(default_factory=list)  # code that scrolls, folds opened
    phone: dict = field(default_factory=dict)  # READER_JS and layout at 390 px
    sidebar: dict = field(default_factory=dict)  # the sidebar buttons, on NAV_PAGE only
    dropdowns: list[dict] = field(default_factory=list)
    download: dict | None = None
    screenshot: Path | None = None
    seconds: float = 0.0
    error: str = ""  # the browser could not finish looking at this page


COLLECT_JS = r"""
() => {
  const main = document.querySelector('main') || document.body;
  // Visible prose: the page minus code, program output, scripts and typeset math.
  const prose = main.cloneNode(true);
  prose.querySelectorAll('pre, code, script, style, mjx-container, .highlight, '
      + '.cell_output, .output, textarea, .headerlink').forEach(e => e.remove());
  const abs = (a) => a.href;
  const links = (sel) => [...document.querySelectorAll(sel)].map(abs).filter(h => h);
  const doc = document.documentElement;
  return {
    title: document.title,
    h1: (document.querySelector('article.bd-article h1') || {textContent: ''}).textContent
        .replace(/#\s*$/, '').trim(),
    mathjax_script: !!document.querySelector("script[src*='mathjax']"),
    math_elements: document.querySelectorAll('.math').length,
    mjx: document.querySelectorAll('mjx-container').length,
    mjx_errors: [...document.querySelectorAll('mjx-merror, [data-mjx-error]')]
        .map(e => e.getAttribute('data-mjx-error') || e.textContent).slice(0, 5),
    unprocessed_math: [...document.querySelectorAll('.math')]
        .filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80))
        .slice(0, 5),
    macros: Object.keys((window.MathJax && MathJax.config && MathJax.config.tex
        && MathJax.config.tex.macros) || {}),
    prose: prose.textContent,
    images: [...document.images].map(i => ({src: i.currentSrc || i.src,
        width: i.naturalWidth, complete: i.complete})),
    all_links: links('a[href]'),
    sidebar_links: links('.bd-sidebar-primary nav.bd-links a[href]'),
    content_links: links('article.bd-article a[href]'),
    prev: links('.prev-next-area a.left-prev'),
    next: links('.prev-next-area a.right-next'),
    download_links: links('.dropdown-download-buttons a[href]'),
    eqnos: [...document.querySelectorAll('article.bd-article .math .eqno')]
        .map(e => e.firstChild ? e.firstChild.textContent.trim() : ''),
    hide_input_open: [...document.querySelectorAll('details.hide')].map(d => d.open),
    scroll_width: doc.scrollWidth,
    client_width: doc.clientWidth,
    // Display formulas that still need a scroll bar after elbo.js scaled them to fit.
    wide_math: [...document.querySelectorAll('mjx-container[display="true"]')]
        .filter(m => m.clientWidth > 0 && m.scrollWidth > m.clientWidth + 1)
        .map(m => {
          let tex = m.parentElement.textContent;
          try { tex = MathJax.startup.document.getMathItemsWithin(m)[0].math; } catch (e) {}
          return `${m.scrollWidth} px > ${m.clientWidth} px: `
             + tex.replace(/\s+/g, ' ').trim().slice(0, 70);
        }),
  };
}
"""


READER_JS = r"""
() => {
  const main = document.querySelector('article.bd-article') || document.body;
  const shown = e => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length)
      && getComputedStyle(e).visibility !== 'hidden';
  const clip = (t, n) => t.replace(/\s+/g, ' ').trim().slice(0, n);
  const cells = [...main.querySelectorAll('div.cell')];
  // Where an element is, in words a person can find on the page.
  const where = (el) => {
    const cell = el.closest('div.cell');
    const sec = el.closest('section');
    const h = sec && sec.querySelector('h1, h2, h3, h4');
    const heading = h ? clip(h.textContent.replace(/#$/, ''), 60) : '(top)';
    if (!cell) return `in "${heading}"`;
    const code = cell.querySelector('.cell_input pre');
    return `code cell ${cells.indexOf(cell) + 1} in "${heading}"`
        + (code ? ` (starting "${clip(code.textContent, 40)}")` : '');
  };
  const tex = (m) => {
    try {
      const items = MathJax.startup.document.getMathItemsWithin(m);
      if (items.length) return clip(items[0].math, 70);
    } catch (e) { /* no MathJax on this page */ }
    return clip(m.textContent, 70);
  };
  const px = (e) => parseFloat(getComputedStyle(e).fontSize);
  const firstP = main.querySelector('section p') || main.querySelector('p');
  const bodyPx = firstP ? px(firstP) : 16;

  // --- test plumbing on the page
  const SUMMARY = /^['"]?axes \d+: .*; x: |^\s+line .*: \d+ pts; y /m;
  const TQDM = /\d+%\|[^|\n]*\|\s*\d+\/\d+|\d+(\.\d+)?\s*it\/s\]/;
  const plumbing = [];
  main.querySelectorAll('.cell_output .output').forEach(o => {
    if (!shown(o)) return;
    const text = o.textContent;
    if (SUMMARY.test(text)) plumbing.push(`${where(o)}: a figure summary printed as text: `
        + `"${clip(text.split('\n').find(l => SUMMARY.test(l)) || '', 80)}"`);
    if (TQDM.test(text)) plumbing.push(`${where(o)}: a progress bar: "${clip(text, 80)}"`);
    if (/NBVAL_/.test(text)) plumbing.push(`${where(o)}: an nbval marker in the output`);
    if (!text.trim() && !o.querySelector('img, svg, table, iframe, mjx-container'))
      plumbing.push(`${where(o)}: an empty output box`);
  });
  main.querySelectorAll('.cell_input pre, div.highlight pre').forEach(pre => {
    const code = pre.textContent;
    if (/NBVAL_/.test(code)) plumbing.push(`${where(pre)}: an nbval marker in the code `
        + `("${clip(code.match(/.*NBVAL_.*/)[0], 60)}"); use the cell tag instead`);
    const glue = code.match(/^\s*(?:myst_nb\.)?glue\(.*$/m);
    if (glue && shown(pre) && pre.closest('.cell_input'))
      plumbing.push(`${where(pre)}: a glue call in visible code ("${clip(glue[0], 60)}"); `
          + `glue in a cell tagged remove-cell`);
  });

  // --- tables wider than the column
  const colRight = main.getBoundingClientRect().right;
  const wideTables = [];
  main.querySelectorAll('table').forEach(t => {
    if (!shown(t)) return;
    const box = t.parentElement;
    const over = Math.max(box.scrollWidth - box.clientWidth, t.scrollWidth - t.clientWidth,
                          t.getBoundingClientRect().right - colRight);
    if (over > 1) {
      const head = t.querySelector('th, td');
      wideTables.push(`${where(t)}: the table headed "${clip(head ? head.textContent : '', 40)}"`
          + ` is ${Math.round(over)} px wider than its column`);
    }
  });

  // --- math sizes, inline formulas past the column
  const smallMath = [], longInline = [];
  main.querySelectorAll('mjx-container[display="true"]').forEach(m => {
    if (shown(m) && px(m) < bodyPx - 0.25)
      smallMath.push(`${px(m).toFixed(1)} px < ${bodyPx} px: ${tex(m)}`);
  });
  main.querySelectorAll('mjx-container:not([display="true"])').forEach(m => {
    if (!shown(m) || m.closest('.cell_output, table')) return;
    const r = m.getBoundingClientRect();
    if (r.right > colRight + 1)
      longInline.push(`${where(m)}: "${tex(m)}" runs ${Math.round(r.right - colRight)} px `
          + `past the column`);
  });

  // --- figures and their captions
  const figures = [...main.querySelectorAll('.cell_output img, figure img')].filter(shown)
      .map(img => {
        const fig = img.closest('figure');
        const num = fig && fig.querySelector('figcaption .caption-number');
        // The caption's words before its first formula (typeset math has no text).
        const text = fig && fig.querySelector('figcaption .caption-text');
        let lead = '';
        if (text) for (const n of text.childNodes) {
          if (n.nodeType === 1 && (n.matches('.math, mjx-container')
                                   || n.querySelector('mjx-container'))) break;
          lead += n.textContent;
        }
        return {where: where(img), number: num ? clip(num.textContent, 20) : null,
                caption: fig && fig.querySelector('figcaption')
                    ? clip(fig.querySelector('figcaption').textContent, 60) : null,
                alt: img.getAttribute('alt'), src: img.getAttribute('src'),
                caption_lead: clip(lead, 200)};
      });

  // --- title bars of solutions and asides: the bar spans its box (between the borders)
  const titleBars = [];
  main.querySelectorAll('.admonition > .admonition-title').forEach(t => {
    if (!shown(t)) return;
    const box = t.parentElement, cs = getComputedStyle(box);
    const inner = box.getBoundingClientRect().width - parseFloat(cs.borderLeftWidth)
        - parseFloat(cs.borderRightWidth);
    const w = t.getBoundingClientRect().width;
    if (w < inner - 2)
      titleBars.push(`${where(t)}: the title bar "${clip(t.textContent, 40)}" is `
          + `${Math.round(w)} px wide in a ${Math.round(inner)} px box`);
  });

  // --- headings and measure
  const style = (sel) => {
    const e = main.querySelector(sel);
    if (!e) return null;
    const cs = getComputedStyle(e);
    return {weight: parseInt(cs.fontWeight, 10), size: parseFloat(cs.fontSize)};
  };
  const canvas = document.createElement('canvas').getContext('2d');
  let measure = null;
  const paras = [...main.querySelectorAll('section > p')].filter(shown);
  if (paras.length) {
    const widest = paras.reduce((a, b) => (b.clientWidth > a.clientWidth ? b : a));
    const cs = getComputedStyle(widest);
    canvas.font = `${cs.fontStyle} ${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
    const sample = paras.map(p => {
      const c = p.cloneNode(true);
      c.querySelectorAll('mjx-container, code, .math').forEach(e => e.remove());
      return c.textContent;
    }).join(' ').replace(/\s+/g, ' ').slice(0, 4000);
    if (sample.length > 200)
      measure = Math.round(widest.clientWidth / (canvas.measureText(sample).width / sample.length));
  }

  // --- punctuation parted from its formula by a line break
  const parted = [];
  const charRect = (node, i) => {
    const r = document.createRange();
    r.setStart(node, i); r.setEnd(node, i + 1);
    return r.getBoundingClientRect();
  };
  const textAfter = (el, forward) => {
    const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
    walker.currentNode = el;
    let n = el;
    while ((n = forward ? walker.nextNode() : walker.previousNode())) {
      if (el.contains(n) || n.parentElement.closest('mjx-container')) continue;
      if (n.textContent.length) return n;
    }
    return null;
  };
  main.querySelectorAll('mjx-container:not([display="true"])').forEach(m => {
    if (!shown(m) || m.closest('.cell_output, table, figcaption')) return;
    const box = m.closest('span.math') || m;
    const r = m.getBoundingClientRect();
    const next = textAfter(box, true);
    if (next && /^[,.;:!?)]/.test(next.textContent)) {
      const c = charRect(next, 0);
      if (c.height && c.top >= r.bottom - 2)
        parted.push(`"${next.textContent[0]}" starts a line after ${tex(m)} (${where(m)})`);
    }
    const prev = textAfter(box, false);
    if (prev && /\($/.test(prev.textContent)) {
      const c = charRect(prev, prev.textContent.length - 1);
      if (c.height && c.bottom <= r.top + 2)
        parted.push(`"(" ends a line before ${tex(m)} (${where(m)})`);
    }
  });

  // --- the sidebar: the book's title once (the title link), not again as an entry
  const brand = document.querySelector('.bd-sidebar-primary .logo__title');
  const bookTitle = brand ? clip(brand.textContent, 80) : null;
  const titles = bookTitle ? [...document.querySelectorAll(
      '.bd-sidebar-primary .logo__title, .bd-sidebar-primary nav.bd-links a')]
      .filter(e => shown(e) && clip(e.textContent, 80) === bookTitle).length : 0;

  return {sidebar_title: bookTitle, sidebar_title_count: titles,
          plumbing, wide_tables: wideTables, small_math: smallMath, long_inline: longInline,
          figures, h2: style('section h2'), h3: style('section h3'), measure,
          parted: parted.slice(0, 20), body_px: bodyPx, title_bars: titleBars,
          admonitions: main.querySelectorAll('.admonition > .admonition-title').length};
}
"""

CODE_SCROLL_JS = r"""
() => {
  // Open every folded cell (as a reader clicking "Show code cell source" would) and list
  // the code that scrolls sideways, with its longest line.
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const main = document.querySelector('article.bd-article') || document.body;
  const cells = [...main.querySelectorAll('div.cell')];
  return [...main.querySelectorAll('pre')].filter(pre => !pre.closest('.cell_output'))
    .filter(pre => pre.clientWidth > 0 && pre.scrollWidth > pre.clientWidth + 1)
    .map(pre => {
      const lines = pre.textContent.split('\n');
      const longest = lines.reduce((a, b) => (b.length > a.length ? b : a), '');
      const cell = pre.closest('div.cell');
      const sec = pre.closest('section');
      const h = sec && sec.querySelector('h1, h2, h3, h4');
      const heading = h ? h.textContent.replace(/#$/, '').trim().slice(0, 60) : '(top)';
      const what = cell ? `code cell ${cells.indexOf(cell) + 1}` : 'code block';
      return `${what} in "${heading}" scrolls ${pre.scrollWidth - pre.clientWidth} px: `
           + `longest line ${longest.length} characters: "${longest.trim().slice(0, 50)}"`;
    });
}
"""


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"data", "blob", "about"} or parts.hostname in LOCAL_HOSTS


def _settle(page) -> None:
    """Wait until MathJax has typeset the page (and elbo.js has run) and images are in."""
    if page.locator("script[src*='mathjax']").count():
        page.wait_for_function(
            "() => window.MathJax && MathJax.startup && MathJax.startup.promise",
            timeout=60_000)
        page.evaluate("() => MathJax.startup.promise")  # resolves once typeset
    page.evaluate("""async () => {
        document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager');
        await Promise.all([...document.images].map(i => i.decode().catch(() => null)));
        await document.fonts.ready;
    }""")


def _shot_name(page_path: str, width: int) -> Path:
    return SCREENSHOTS / f"{page_path.removesuffix('.html').replace('/', '__')}__{width}.png"


def _visit(context, base: str, page_path: str) -> Visit:
    visit = Visit(page=page_path, url=base + page_path)
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and visit.console_errors.append(m.text))
    page.on("pageerror", lambda e: visit.page_errors.append(str(e)))
    page.on("requestfailed",
            lambda r: visit.failed_requests.append(f"{r.url} ({r.failure})"))
    page.on("request", lambda r: _is_local(r.url) or visit.external_requests.append(r.url))
    page.on("response",
            lambda r: r.status >= 400 and visit.http_errors.append(f"{r.status} {r.url}"))
    try:
        response = page.goto(visit.url, wait_until="load", timeout=60_000)
        visit.status = response.status if response else None
        if page_path == "index.html":  # a meta-refresh to the root page
            page.wait_for_url(re.compile(r".*/book/intro\.html.*"), wait_until="load",
                              timeout=60_000)  # generous: the first page of a cold browser
        visit.final_url = page.url
        _settle(page)
        visit.facts = page.evaluate(COLLECT_JS)
        visit.reader = page.evaluate(READER_JS)
        visit.reader["links"] = page.evaluate(LINK_COLOUR_JS)
        visit.reader["run_note"] = page.evaluate(RUN_NOTE_JS)
        visit.reader["tables"] = page.evaluate(SUMMARY_TABLES_JS)
        if TAKE_SCREENSHOTS and page_path != "index.html":  # index.html: the root page
            visit.screenshot = _shot_name(page_path, VIEWPORT["width"])
            page.screenshot(path=str(visit.screenshot), full_page=True,
                            animations="disabled", timeout=120_000)
        if page_path in CHAPTERS:
            visit.dropdowns = _exercise_dropdowns(page)
            visit.download = _download_notebook(page)
        visit.code_scroll = page.evaluate(CODE_SCROLL_JS)  # opens every folded cell
        if page_path == NAV_PAGE:
            visit.sidebar["laptop"] = _laptop_sidebar_toggle(page)
    except Exception as err:  # reported by every test of this page, not a crash of all
        visit.error = f"{type(err).__name__}: {err}"
    finally:
        page.close()
    return visit


def _visit_phone(context, base: str, visit: Visit) -> None:
    """The same page at 390 px: a screenshot, the reader checks, sideways scrolling."""
    if visit.page == "index.html":
        return
    page = context.new_page()
    try:
        page.goto(base + visit.page, wait_until="load", timeout=60_000)
        _settle(page)
        visit.phone = page.evaluate(READER_JS)
        visit.phone["scroll_width"], visit.phone["client_width"] = page.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        visit.phone["cut_math"] = page.evaluate(CUT_MATH_JS)
        visit.phone["tables"] = page.evaluate(PHONE_TABLES_JS)
        visit.phone["outputs"] = page.evaluate(PHONE_OUTPUT_JS)
        visit.phone["footer"] = page.evaluate(PHONE_FOOTER_JS)
        visit.phone["run_note"] = page.evaluate(RUN_NOTE_JS)
        visit.phone["tables_read"] = page.evaluate(SUMMARY_TABLES_JS)
        if TAKE_SCREENSHOTS:
            shot = _shot_name(visit.page, PHONE["width"])
            page.screenshot(path=str(shot), full_page=True, animations="disabled",
                            timeout=120_000)
            visit.phone["screenshot"] = str(shot)
        visit.phone["zoom"] = _figure_zoom(page)  # after the screenshot: it clicks
        if visit.page == NAV_PAGE:  # last: it leaves the page
            visit.sidebar["phone"] = _phone_navigation(page, base, NAV_TARGET)
    except Exception as err:
        visit.phone = {"error": f"{type(err).__name__}: {err}"}
    finally:
        page.close()


CUT_MATH_JS = r"""
() => {
  // A display formula wider than its box must scroll in that box (overflow-x auto or
  // scroll) and show a cue that it does (elbo.css: shadows drawn as background gradients);
  // and no ancestor may cut the box itself.
  const out = [];
  document.querySelectorAll('article.bd-article mjx-container[display="true"]').forEach(m => {
    if (!(m.offsetWidth || m.offsetHeight)) return;
    let tex = m.parentElement.textContent;
    try { tex = MathJax.startup.document.getMathItemsWithin(m)[0].math; } catch (e) {}
    tex = tex.replace(/\s+/g, ' ').trim().slice(0, 60);
    const cs = getComputedStyle(m);
    if (m.scrollWidth > m.clientWidth + 1) {
      if (!['auto', 'scroll'].includes(cs.overflowX))
        out.push(`cut, does not scroll (overflow-x ${cs.overflowX}): ${tex}`);
      else if (!cs.backgroundImage.includes('gradient'))
        out.push(`scrolls without a cue: ${tex}`);
    }
    const r = m.getBoundingClientRect();
    for (let e = m.parentElement; e && e !== document.body; e = e.parentElement) {
      const er = e.getBoundingClientRect();
      if (getComputedStyle(e).overflowX !== 'visible' && r.right > er.right + 1) {
        out.push(`box cut by ${e.tagName.toLowerCase()}.${e.className}: ${tex}`);
        break;
      }
    }
  });
  return out;
}
"""


# Shared by the phone checks below: the lines a piece of text occupies on the screen
# (text nodes only, not typeset math), counted from the tops of its boxes.
LINES_JS = r"""
  const linesOf = (range) => {
    const tops = [...range.getClientRects()].filter(r => r.width > 0 && r.height > 0)
        .map(r => r.top).sort((a, b) => a - b);
    let lines = 0, last = -1e9;
    tops.forEach(t => { if (t - last > 4) { lines += 1; last = t; } });
    return lines;
  };
  const textNodes = (root) => {
    const out = [];
    const w = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    let n;
    while ((n = w.nextNode())) if (!n.parentElement.closest('mjx-container')) out.push(n);
    return out;
  };
  // The lines the text of an element occupies (its text nodes' boxes only: the boxes of
  // a <p> or <code> around the text start a few pixels higher than the text).
  const linesOfText = (root) => {
    const tops = [];
    textNodes(root).forEach(n => {
      if (!n.textContent.trim()) return;
      const r = document.createRange();
      r.selectNodeContents(n);
      [...r.getClientRects()].filter(x => x.width > 0 && x.height > 0)
          .forEach(x => tops.push(x.top));
    });
    tops.sort((a, b) => a - b);
    let lines = 0, last = -1e9;
    tops.forEach(t => { if (t - last > 4) { lines += 1; last = t; } });
    return lines;
  };
  const clip = (t, n) => t.replace(/\s+/g, ' ').trim().slice(0, n);
  const scrolls = (e) => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX);
  const cue = (e) => getComputedStyle(e).backgroundImage.includes('gradient');
  const cutBy = (box) => {
    const r = box.getBoundingClientRect();
    for (let e = box.parentElement; e && e !== document.body; e = e.parentElement) {
      const er = e.getBoundingClientRect();
      if (getComputedStyle(e).overflowX !== 'visible'
          && (r.right > er.right + 1 || r.left < er.left - 1))
        return `${e.tagName.toLowerCase()}.${e.className}`;
    }
    return null;
  };
"""

PHONE_TABLES_JS = r"""
() => {
""" + LINES_JS + r"""
  // A table wider than the column scrolls in its own box with the scroll cue (elbo.css),
  // nothing around that box cuts it, and a short cell (at most 40 characters, no math)
  // stays on one line instead of wrapping into three or four.
  const main = document.querySelector('article.bd-article');
  if (!main) return [];
  const out = [];
  const colRight = main.getBoundingClientRect().right;
  main.querySelectorAll('table').forEach(t => {
    if (!(t.offsetWidth || t.offsetHeight)) return;
    const name = `the table headed "${clip((t.querySelector('th, td') || t).textContent, 30)}"`;
    let box = t.parentElement;
    while (box !== main && !scrolls(box)) box = box.parentElement;
    if (box === main) {
      const over = t.getBoundingClientRect().right - colRight;
      if (over > 1) out.push(`${name} runs ${Math.round(over)} px past the column and does `
                             + `not scroll`);
    } else {
      const over = box.scrollWidth - box.clientWidth;
      if (over > 1 && !cue(box))
        out.push(`${name} scrolls ${over} px with no cue (its right-hand columns hidden)`);
      const by = cutBy(box);
      if (by) out.push(`${name}: its scrolling box is cut by ${by}`);
    }
    t.querySelectorAll('td').forEach(td => {
      const text = clip(td.textContent, 200);
      if (!text || text.length > 40 || td.querySelector('mjx-container')) return;
      const lines = linesOfText(td);
      if (lines > 1) out.push(`${name}: the cell "${text}" wraps into ${lines} lines`);
    });
  });
  return out;
}
"""

PHONE_OUTPUT_JS = r"""
() => {
""" + LINES_JS + r"""
  // Program output on a phone: no number is split over two lines ("1e-" / "3"), and an
  // output wider than the column scrolls in its box with the scroll cue.
  const main = document.querySelector('article.bd-article');
  if (!main) return [];
  const out = [];
  const cells = [...main.querySelectorAll('div.cell')];
  const NUMBER = /[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?%?/g;
  main.querySelectorAll('div.cell_output pre').forEach(pre => {
    if (!(pre.offsetWidth || pre.offsetHeight)) return;
    const cell = pre.closest('div.cell');
    const name = `output of code cell ${cells.indexOf(cell) + 1}`;
    const split = [];
    textNodes(pre).forEach(node => {
      for (const m of node.textContent.matchAll(NUMBER)) {
        if (m[0].length < 2) continue;
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        if (linesOf(range) > 1) split.push(m[0]);
      }
    });
    if (split.length)
      out.push(`${name}: ${split.length} numbers split over two lines, e.g. "${split[0]}"`);
    const over = pre.scrollWidth - pre.clientWidth;
    if (over > 1 && !(scrolls(pre) && cue(pre)))
      out.push(`${name}: ${over} px of it hidden with no scroll cue`);
    const by = cutBy(pre);
    if (by) out.push(`${name}: cut by ${by}`);
  });
  return out;
}
"""

PHONE_FOOTER_JS = r"""
() => {
""" + LINES_JS + r"""
  // The previous / next titles: wholly on the screen, not cut by any box around them,
  // and wrapped at spaces (no word broken over two lines).
  const out = [];
  const width = document.documentElement.clientWidth;
  document.querySelectorAll('.prev-next-area a .prev-next-title').forEach(t => {
    if (!(t.offsetWidth || t.offsetHeight)) return;
    const name = `"${clip(t.textContent, 60)}"`;
    const r = t.getBoundingClientRect();
    if (r.right > width + 1 || r.left < -1) out.push(`${name} runs off the screen`);
    if (t.scrollWidth > t.clientWidth + 1) out.push(`${name} overflows its own box`);
    const by = cutBy(t);
    if (by) out.push(`${name} is cut by ${by}`);
    textNodes(t).forEach(node => {
      for (const m of node.textContent.matchAll(/\S+/g)) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        if (linesOf(range) > 1) out.push(`${name}: the word "${m[0]}" is broken over lines`);
      }
    });
  });
  return out;
}
"""

RUN_NOTE_JS = r"""
() => {
  // The note under a chapter's title (book/_ext/elbo_runnote.py): its text, whether it is
  // shown, its command, and whether the command is whole on the screen (one line, inside
  // the text column).
  const main = document.querySelector('article.bd-article');
  const n = main && main.querySelector('div.elbo-run-note');
  if (!n) return null;
  const cmd = n.querySelector('code.elbo-run-command');
  const col = main.getBoundingClientRect();
  let whole = false;
  if (cmd) {
    const rects = [...cmd.getClientRects()].filter(r => r.width > 0);
    whole = rects.length === 1 && rects[0].right <= col.right + 1 && rects[0].left >= col.left - 1;
  }
  const h1 = main.querySelector('h1');
  return {text: n.textContent.replace(/\s+/g, ' ').trim(),
          shown: !!(n.offsetWidth || n.offsetHeight),
          after_title: !!h1 && h1.closest('section') === n.parentElement
              && !!(h1.compareDocumentPosition(n) & Node.DOCUMENT_POSITION_FOLLOWING),
          command: cmd ? cmd.textContent.replace(/\s+/g, ' ').trim() : null,
          command_whole: whole};
}
"""

SUMMARY_TABLES_JS = r"""
() => {
  // Every table of the page: its header cells, body rows, heading (the rubric just before
  // it, or its caption) and the link in it,
  // and (for the summary's parts) whether the ratio column is on the screen without
  // scrolling.
  const main = document.querySelector('article.bd-article');
  if (!main) return [];
  const col = main.getBoundingClientRect();
  return [...main.querySelectorAll('table')].map(t => {
    const heads = [...t.querySelectorAll('thead th')].map(h => h.textContent.trim());
    const box = t.closest('.pst-scrollable-table-container') || t;
    const before = box.previousElementSibling;  // the part's heading (a rubric)
    const cap = before && before.matches('p.rubric') ? before : t.querySelector('caption');
    const link = cap && cap.querySelector('a[href^="#"]');
    const last = [...t.querySelectorAll('tbody tr')].map(r => r.lastElementChild);
    const br = box.getBoundingClientRect();
    return {heads, rows: t.querySelectorAll('tbody tr').length,
            part: t.classList.contains('elbo-summary-part'),
            caption: cap ? cap.textContent.replace(/\s+/g, ' ').trim() : null,
            target: link ? link.getAttribute('href').slice(1) : null,
            target_found: !!(link && document.getElementById(link.getAttribute('href').slice(1))),
            last_column_on_screen: last.every(td => {
              const r = td.getBoundingClientRect();
              return r.right <= Math.min(br.right, col.right) + 1;
            })};
  });
}
"""


LINK_COLOUR_JS = r"""
() => {
  // Every visible link in the text (not the heading anchors, not figure images): its
  // colour, whether it is underlined, its contrast against the background it sits on
  // (translucent backgrounds, e.g. table stripes, composited) and against the body text.
  const main = document.querySelector('article.bd-article');
  if (!main) return {links: [], text: null};
  const parse = (c) => {
    const v = (c.match(/[\d.]+/g) || []).map(Number);
    return v.length >= 3 ? [v[0], v[1], v[2], v.length > 3 ? v[3] : 1] : [0, 0, 0, 0];
  };
  const background = (e) => {
    const layers = [];
    for (; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    let rgb = [255, 255, 255];
    layers.reverse().forEach(([r, g, b, a]) => {
      rgb = [r * a + rgb[0] * (1 - a), g * a + rgb[1] * (1 - a), b * a + rgb[2] * (1 - a)];
    });
    return rgb;
  };
  const lum = ([r, g, b]) => {
    const f = (x) => { x /= 255; return x <= 0.04045 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const contrast = (a, b) => {
    const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05);
  };
  const firstP = main.querySelector('section p') || main.querySelector('p');
  const text = firstP ? parse(getComputedStyle(firstP).color).slice(0, 3) : [34, 40, 50];
  const links = [];
  main.querySelectorAll('a[href]').forEach(a => {
    if (a.matches('.headerlink, .image-reference, .btn, .sd-stretched-link')) return;
    if (!(a.offsetWidth || a.offsetHeight) || !a.textContent.trim()) return;
    const cs = getComputedStyle(a);
    const colour = parse(cs.color).slice(0, 3);
    const bg = background(a);
    links.push({text: a.textContent.replace(/\s+/g, ' ').trim().slice(0, 30),
                in_table: !!a.closest('table'), colour: `rgb(${colour.join(', ')})`,
                underlined: cs.textDecorationLine.includes('underline'),
                contrast: Math.round(100 * contrast(colour, bg)) / 100,
                distance_from_text: Math.round(Math.hypot(...colour.map((c, i) => c - text[i])))});
  });
  return {links, text: `rgb(${text.join(', ')})`};
}
"""

ZOOM_STATE_JS = r"""
() => {
  const d = [...document.querySelectorAll('dialog')].find(x => x.open && x.querySelector('img'));
  if (!d) return {open: false};
  const img = d.querySelector('img');
  const r = img.getBoundingClientRect();
  return {open: true, src: img.currentSrc || img.src, complete: img.complete,
          natural: img.naturalWidth, width: r.width,
          hidden_past_edge: d.scrollWidth > d.clientWidth + 1
              && !['auto', 'scroll'].includes(getComputedStyle(d).overflowX)};
}
"""


def _wait_zoom(page, open_: bool) -> None:
    """Wait (at most 2 s) until a figure's zoom dialog is open, or closed: polling the page
    instead of sleeping a fixed time. A timeout, or the page navigating away, returns
    quietly: the checks that follow report what went wrong."""
    shown = "[...document.querySelectorAll('dialog')].some(d => d.open && d.querySelector('img'))"
    try:
        page.wait_for_function(f"() => {'' if open_ else '!'}{shown}", timeout=2_000)
    except Exception:  # playwright's TimeoutError, or an Error when the tap navigated
        pass


def _figure_zoom(page) -> list[str]:
    """Every figure at 390 px: a tap opens its image at full resolution over the page
    (without leaving it), Escape closes it; the first also opens from the keyboard."""
    problems: list[str] = []
    selector = "article.bd-article figure img, article.bd-article div.cell_output img"
    start = page.url
    figures = page.locator(selector)
    for i in range(figures.count()):
        img = figures.nth(i)
        if not img.is_visible():
            continue
        src = img.evaluate("i => i.currentSrc || i.src")
        name = f"figure {i + 1} ({src.rsplit('/', 1)[-1][:16]})"
        img.click()
        _wait_zoom(page, True)
        if page.url != start:
            problems.append(f"{name}: a tap leaves the page for {page.url.rsplit('/', 1)[-1]}")
            page.goto(start, wait_until="load", timeout=60_000)
            _settle(page)
            figures = page.locator(selector)
            continue
        state = page.evaluate(ZOOM_STATE_JS)
        if not state["open"]:
            problems.append(f"{name}: a tap does not open it")
            continue
        page.wait_for_function("() => [...document.querySelectorAll('dialog[open] img')]"
                               ".every(i => i.complete)", timeout=10_000)
        state = page.evaluate(ZOOM_STATE_JS)
        if state["src"] != src:
            problems.append(f"{name}: the dialog shows {state['src']}")
        if state["width"] < state["natural"] - 1:
            problems.append(f"{name}: shown {state['width']:.0f} px wide, not at its full "
                            f"{state['natural']} px")
        if state["hidden_past_edge"]:
            problems.append(f"{name}: the full-size image is cut at the dialog's edge")
        page.keyboard.press("Escape")
        _wait_zoom(page, False)
        if page.evaluate(ZOOM_STATE_JS)["open"]:
            problems.append(f"{name}: Escape does not close it")
            page.evaluate("() => document.querySelectorAll('dialog[open]')"
                          ".forEach(d => d.close())")
    if figures.count():
        first = figures.first
        focused = first.evaluate("""i => { const t = i.closest('a[href]') || i; t.focus();
                                           return document.activeElement === t; }""")
        if not focused:
            problems.append("figure 1 cannot take the keyboard focus")
        else:
            page.keyboard.press("Enter")
            _wait_zoom(page, True)
            if page.url != start:
                problems.append("figure 1: Enter leaves the page")
            elif not page.evaluate(ZOOM_STATE_JS)["open"]:
                problems.append("figure 1: Enter on the focused figure does not open it")
            else:
                page.keyboard.press("Escape")
                _wait_zoom(page, False)
    return problems


SIDEBAR_JS = r"""
(which) => {
  // The primary sidebar is hidden on a laptop (theme class, invisible) or shown in a
  // dialog on a phone; report what a reader would see.
  const side = document.querySelector('#pst-' + which + '-sidebar');
  const dialog = document.querySelector('#pst-' + which + '-sidebar-modal');
  const shown = e => !!e && !!(e.offsetWidth || e.offsetHeight)
      && getComputedStyle(e).visibility !== 'hidden' && getComputedStyle(e).opacity !== '0';
  const box = dialog && dialog.open ? dialog : side;
  return {dialog_open: !!(dialog && dialog.open), sidebar_shown: shown(side),
          links: box ? [...box.querySelectorAll('a[href]')].filter(shown)
              .map(a => ({href: a.href, text: a.textContent.trim()})) : []};
}
"""


def _visible_toggle(page, cls: str):
    """The sidebar button a reader can see (the theme also has hidden ones)."""
    buttons = page.locator(f"button.{cls}")
    for i in range(buttons.count()):
        if buttons.nth(i).is_visible():
            return buttons.nth(i)
    return None


DROPDOWN_STATE_JS = r"""
() => [...document.querySelectorAll('.admonition.dropdown')].map(box => {
  const body = [...box.children].filter(e => !e.classList.contains('admonition-title'));
  const shown = e => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length)
      && getComputedStyle(e).visibility !== 'hidden';
  return {title: box.querySelector('.admonition-title').textContent.trim(),
          parts: body.length, shown: body.filter(shown).length};
})
"""


def _exercise_dropdowns(page) -> list[dict]:
    """Each dropdown admonition: is its body hidden at first, shown after a click?"""
    before = page.evaluate(DROPDOWN_STATE_JS)
    titles = page.locator(".admonition.dropdown > .admonition-title")
    for i in range(titles.count()):
        titles.nth(i).click()  # a real mouse click on the title, as a reader does
    page.wait_for_timeout(100)
    after = page.evaluate(DROPDOWN_STATE_JS)
    return [{"title": b["title"], "hidden_before": b["parts"] > 0 and b["shown"] == 0,
             "shown_after_click": a["parts"] > 0 and a["shown"] == a["parts"]}
            for b, a in zip(before, after, strict=True)]


def _download_notebook(page) -> dict:
    """Click the download button, then its .ipynb entry, and read what arrives."""
    button = page.locator(".dropdown-download-buttons button").first
    if not button.count():
        return {"error": "no download button"}
    button.click()
    item = page.locator(".dropdown-download-buttons a[href$='.ipynb']").first
    if not item.count():
        return {"error": "the download menu has no .ipynb entry"}
    item.wait_for(state="visible", timeout=5_000)
    href = item.evaluate("a => a.href")
    # The link opens a new tab (target=_blank) in which the file arrives as a download.
    downloads = []

    def grab(download) -> None:
        downloads.append(download)

    def on_tab(tab) -> None:
        tab.on("download", grab)

    page.context.on("page", on_tab)
    page.on("download", grab)
    item.click()
    for _ in range(100):
        if downloads:
            break
        page.wait_for_timeout(100)
    page.context.remove_listener("page", on_tab)
    page.remove_listener("download", grab)
    for tab in page.context.pages:
        if tab is not page:
            tab.close()
    if not downloads:
        return {"href": href, "error": "clicking the .ipynb entry downloaded nothing in 10 s"}
    text = Path(downloads[0].path()).read_text()
    filename = downloads[0].suggested_filename
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as err:
        return {"href": href, "filename": filename, "error": f"not JSON: {err}"}
    return {"href": href, "filename": filename, "nbformat": nb.get("nbformat"),
            "cells": len(nb.get("cells", []))}


def _phone_navigation(page, base: str, target: str) -> dict:
    """On an open page at 390 px: the contents button opens the page's contents; the
    chapter-list button opens the chapter list, and its link to `target` navigates."""
    out: dict = {"start": page.url.removeprefix(base), "target": target}
    try:
        contents = _visible_toggle(page, "secondary-toggle")
        if contents is None:
            out["contents"] = {"error": "no visible button opens the page contents"}
        else:
            contents.click()
            page.wait_for_timeout(400)
            out["contents"] = page.evaluate(SIDEBAR_JS, "secondary")
            # A tap on an entry of the page's contents: the drawer closes and the page is
            # at that section.
            entry = page.locator("#pst-secondary-sidebar-modal a[href^='#']")
            visible = [entry.nth(i) for i in range(entry.count()) if entry.nth(i).is_visible()]
            if visible:
                link = visible[min(2, len(visible) - 1)]
                hash_ = link.evaluate("a => a.hash")
                link.click()
                page.wait_for_timeout(400)
                out["contents_tap"] = {
                    "hash": hash_, "landed_hash": page.evaluate("() => location.hash"),
                    "dialog_open": page.evaluate(SIDEBAR_JS, "secondary")["dialog_open"]}
            if page.evaluate(SIDEBAR_JS, "secondary")["dialog_open"]:
                page.keyboard.press("Escape")
                page.wait_for_timeout(200)
        out["before"] = page.evaluate(SIDEBAR_JS, "primary")
        button = _visible_toggle(page, "primary-toggle")
        if button is None:
            out["error"] = "no visible button opens the chapter list"
            return out
        button.click()
        page.wait_for_timeout(400)
        out["after"] = page.evaluate(SIDEBAR_JS, "primary")
        link = page.locator(f"#pst-primary-sidebar-modal a[href$='{Path(target).name}']")
        if out["after"]["dialog_open"] and link.count() and link.first.is_visible():
            link.first.click()
            page.wait_for_url(re.compile(re.escape(target) + r"(#.*)?$"), timeout=30_000)
        out["landed"] = page.url.removeprefix(base)
    except Exception as err:
        out["error"] = f"{type(err).__name__}: {err}"
    return out


def _laptop_sidebar_toggle(page) -> dict:
    """On an open page at 1366 px: the sidebar button hides the sidebar, a second click
    shows it again."""
    out: dict = {"start": page.url}
    try:
        out["before"] = page.evaluate(SIDEBAR_JS, "primary")["sidebar_shown"]
        button = _visible_toggle(page, "primary-toggle")
        if button is None:
            out["error"] = "no visible sidebar button"
            return out
        button.click()
        page.wait_for_timeout(600)  # the theme animates the sidebar away (0.25 s)
        state = page.evaluate(SIDEBAR_JS, "primary")
        out["after_one_click"] = state["sidebar_shown"]
        out["dialog_opened"] = state["dialog_open"]
        button.click()
        page.wait_for_timeout(600)
        out["after_two_clicks"] = page.evaluate(SIDEBAR_JS, "primary")["sidebar_shown"]
    except Exception as err:
        out["error"] = f"{type(err).__name__}: {err}"
    return out


# --------------------------------------------------------------------------------------
# Fixtures: serve the build, drive the browser once over every page


@pytest.fixture(scope="module")
def html_dir(request) -> Path:
    given = os.environ.get("ELBO_BOOK_HTML")
    if given:
        path = (ROOT / given).resolve()
        assert (path / "index.html").is_file(), f"ELBO_BOOK_HTML={given}: no index.html there"
        return path
    return request.getfixturevalue("built_html")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass


@pytest.fixture(scope="module")
def server(html_dir):
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # a free port
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def visits(server) -> dict[str, Visit]:
    """One browser over the whole book: every page at 1366 px, then at 390 px."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if TAKE_SCREENSHOTS:
        shutil.rmtree(SCREENSHOTS, ignore_errors=True)
        SCREENSHOTS.mkdir(parents=True)
    result: dict[str, Visit] = {}
    start = time.perf_counter()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                    headless=True)
        try:
            context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
            for page_path in PAGES:
                t0 = time.perf_counter()
                result[page_path] = _visit(context, server, page_path)
                result[page_path].seconds = time.perf_counter() - t0
            context.close()
            laptop_s = time.perf_counter() - start
            phone = browser.new_context(viewport=PHONE)
            for page_path in PAGES:
                t0 = time.perf_counter()
                _visit_phone(phone, server, result[page_path])
                result[page_path].seconds += time.perf_counter() - t0
            phone.close()
        finally:
            browser.close()
    print(f"\nbrowser visited {len(result)} pages at 1366 px in {laptop_s:.1f} s and at "
          f"390 px in {time.perf_counter() - start - laptop_s:.1f} s "
          f"({', '.join(f'{k} {v.seconds:.1f}' for k, v in result.items())})"
          + (f"; screenshots in {SCREENSHOTS.relative_to(ROOT)}" if TAKE_SCREENSHOTS
             else "; no screenshots (ELBO_SCREENSHOTS=1 saves them)"))
    return result


@pytest.fixture(scope="module")
def fetch(server):
    """GET a URL on the local server once; returns (status, body)."""
    cache: dict[str, tuple[int, str]] = {}

    def get(url: str) -> tuple[int, str]:
        if url not in cache:
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    body = resp.read().decode("utf-8", "replace")
                    cache[url] = (resp.status, body)
            except urllib.error.HTTPError as err:
                cache[url] = (err.code, "")
        return cache[url]

    return get


# --------------------------------------------------------------------------------------
# The tests


def _seen(visits: dict[str, Visit], page_path: str) -> Visit:
    """The visit of a page, failing the test at once if the browser could not finish it."""
    v = visits[page_path]
    assert not v.error, f"{page_path}: the browser could not finish the page: {v.error}"
    return v

def test_every_built_page_is_visited(html_dir):
    built = {p.relative_to(html_dir).as_posix() for p in html_dir.rglob("*.html")
             if not p.relative_to(html_dir).parts[0].startswith("_")}
    assert built, f"no HTML pages in {html_dir}"
    assert built <= set(PAGES), f"pages the browser test does not open: {built - set(PAGES)}"
    assert set(PAGES) <= built, f"pages in _toc.yml that were not built: {set(PAGES) - built}"


@pytest.mark.parametrize("page_path", PAGES)
def test_page_loads_without_errors(visits, page_path):
    v = _seen(visits, page_path)
    assert v.status == 200, f"{page_path}: HTTP {v.status}"
    assert not v.failed_requests, f"{page_path}: failed requests {v.failed_requests}"
    assert not v.http_errors, f"{page_path}: HTTP errors {v.http_errors}"
    assert not v.external_requests, f"{page_path}: requests leave localhost {v.external_requests}"
    assert not v.console_errors, f"{page_path}: console errors {v.console_errors}"
    assert not v.page_errors, f"{page_path}: uncaught JavaScript errors {v.page_errors}"
    if page_path != "index.html":
        assert "error" not in v.phone, f"{page_path} at 390 px: {v.phone.get('error')}"
        if TAKE_SCREENSHOTS:
            assert v.screenshot and v.screenshot.stat().st_size > 10_000, "no screenshot"
            assert Path(v.phone["screenshot"]).stat().st_size > 10_000, "no phone screenshot"
    else:
        assert v.final_url.endswith("/book/intro.html"), f"index.html led to {v.final_url}"


@pytest.mark.parametrize("page_path", PAGES)
def test_math_is_typeset_offline(visits, page_path):
    f = _seen(visits, page_path).facts
    if f["math_elements"]:
        assert f["mathjax_script"], f"{page_path} has math but does not load MathJax"
        assert f["mjx"] >= f["math_elements"], (
            f"{page_path}: {f['math_elements']} math elements but only {f['mjx']} typeset")
        assert not f["unprocessed_math"], f"{page_path}: not typeset {f['unprocessed_math']}"
        assert MACROS <= set(f["macros"]), f"{page_path}: MathJax macros {f['macros']}"
    assert not f["mjx_errors"], f"{page_path}: MathJax errors {f['mjx_errors']}"
    raw = re.findall(r".{0,40}(?:\$\$|\\begin\{|\\end\{|\\\(|\\\)|\\\[|\\\]|\\[A-Za-z]{2,}"
                     r"|\$[^$\s][^$]{0,60}\$).{0,40}", f["prose"])
    assert not raw, f"{page_path}: raw TeX in the visible text: {raw[:5]}"


def test_pages_with_math_are_the_expected_ones(visits):
    """The front matter and every chapter show formulas; the check above is not vacuous."""
    for page_path in ["book/intro.html", "book/notation.html", *CHAPTERS]:
        f = _seen(visits, page_path).facts
        assert f["mjx"] > 0, f"{page_path}: no typeset math at all"


@pytest.mark.parametrize("page_path", PAGES)
def test_every_image_loads(visits, page_path):
    images = _seen(visits, page_path).facts["images"]
    broken = [i["src"] for i in images if not (i["complete"] and i["width"] > 0)]
    assert not broken, f"{page_path}: images that did not load {broken}"
    if page_path in CHAPTERS:
        assert images, f"{page_path}: a chapter with no figure"


@pytest.mark.parametrize("page_path", PAGES)
def test_page_fits_a_laptop_screen(visits, page_path):
    f = _seen(visits, page_path).facts
    assert f["scroll_width"] <= f["client_width"], (
        f"{page_path}: the page scrolls sideways ({f['scroll_width']} px > "
        f"{f['client_width']} px)")
    assert not f["wide_math"], (
        f"{page_path}: display formulas too wide for the text column even at 85% of "
        f"MathJax's size "
        f"(split them over lines, e.g. with an aligned environment): {f['wide_math']}")


@pytest.mark.parametrize("page_path", PAGES)
def test_links_to_the_book_resolve(visits, server, fetch, page_path):
    """Every same-site link answers 200, and its #fragment names an element there."""
    f = _seen(visits, page_path).facts
    problems = []
    for href in sorted(set(f["all_links"])):
        if not href.startswith(server):
            continue
        url, frag = urldefrag(href)
        status, body = fetch(url)
        if status != 200:
            problems.append(f"{href}: HTTP {status}")
        elif frag and url.endswith(".html") and not re.search(
                rf"""\bid=["']{re.escape(frag)}["']""", body):
            problems.append(f"{href}: no element with id {frag!r}")
    assert not problems, f"{page_path}: broken links\n" + "\n".join(problems)


@pytest.mark.parametrize("page_path", TOC_PAGES)
def test_navigation_follows_the_table_of_contents(visits, server, page_path):
    f = _seen(visits, page_path).facts
    strip = lambda urls: [urldefrag(u)[0].removeprefix(server) for u in urls]  # noqa: E731
    sidebar = set(strip(f["sidebar_links"]))
    missing = [p for p in TOC_PAGES[1:] if p not in sidebar]
    assert not missing, f"{page_path}: the sidebar does not link {missing}"
    i = TOC_PAGES.index(page_path)
    want_prev = TOC_PAGES[i - 1:i] if i > 0 else []
    want_next = TOC_PAGES[i + 1:i + 2]
    assert strip(f["prev"]) == want_prev, f"{page_path}: previous link {f['prev']}"
    assert strip(f["next"]) == want_next, f"{page_path}: next link {f['next']}"


def test_chapters_are_numbered(visits):
    """Chapter NN_x is headed "NN. Title" (Sphinx numbers them in table-of-contents order)."""
    for page_path in CHAPTERS:
        n = int(re.match(r"chapters/(\d+)_", page_path).group(1))
        h1 = _seen(visits, page_path).facts["h1"]
        if page_path in SECTION_PAGES:   # a section of chapter n: "n.k. Title"
            assert re.match(rf"{n}\.\d+\. ", h1), (
                f"{page_path}: heading {h1!r} is not numbered as a section of chapter {n}.")
            continue
        assert h1.startswith(f"{n}. "), f"{page_path}: heading {h1!r} is not numbered {n}."


@pytest.mark.parametrize("page_path", CHAPTERS)
def test_chapter_links_notation_and_cites_sources(visits, server, page_path):
    """In the text (not the sidebar): a link to the notation page and citations."""
    content = [urldefrag(u) for u in _seen(visits, page_path).facts["content_links"]
               if u.startswith(server)]
    assert any(url.endswith("/book/notation.html") for url, _ in content), (
        f"{page_path}: the text does not link the notation page")
    assert any(url.endswith("/book/bibliography.html") and frag for url, frag in content), (
        f"{page_path}: the text cites nothing from the bibliography")


@pytest.mark.parametrize("page_path", CHAPTERS)
def test_equations_are_numbered_by_chapter(visits, page_path):
    """Labelled equations of chapter n read (n.1), (n.2), ... in order."""
    n = int(re.match(r"chapters/(\d+)_", page_path).group(1))
    eqnos = _seen(visits, page_path).facts["eqnos"]
    assert eqnos, f"{page_path}: no numbered (labelled) equation"
    if page_path in SECTION_PAGES:
        assert eqnos == _numbered_on(eqnos, f"({n}.{{k}})"), eqnos
        return
    assert eqnos == [f"({n}.{k})" for k in range(1, len(eqnos) + 1)], eqnos


@pytest.mark.parametrize("page_path", CHAPTERS)
def test_chapter_downloads_as_ipynb(visits, page_path):
    v = _seen(visits, page_path)
    d = v.download
    assert d and "error" not in d, f"{page_path}: {d}"
    assert d["href"].endswith(f"_sources/{page_path.removesuffix('.html')}.ipynb"), d
    assert d["nbformat"] == 4 and d["cells"] > 5, f"{page_path}: downloaded {d}"
    assert any(h.endswith(".ipynb") for h in v.facts["download_links"])


@pytest.mark.parametrize("page_path", CHAPTERS)
def test_solutions_and_set_up_code_are_folded(visits, page_path):
    v = _seen(visits, page_path)
    assert v.dropdowns, f"{page_path}: no exercise solution behind a toggle"
    for d in v.dropdowns:
        assert d["hidden_before"], f"{page_path}: solution {d['title']!r} is visible at first"
        assert d["shown_after_click"], f"{page_path}: solution {d['title']!r} does not open"
    assert v.facts["hide_input_open"], f"{page_path}: no set-up cell folded away (hide-input)"
    assert not any(v.facts["hide_input_open"]), f"{page_path}: a hide-input cell is expanded"


# --------------------------------------------------------------------------------------
# The page reads like a textbook (issue 13)

READER_PAGES = [p for p in PAGES if p != "index.html"]  # index.html is intro.html


def _listing(items: list[str], limit: int = 15) -> str:
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return "\n  " + "\n  ".join(items[:limit]) + more


@pytest.mark.parametrize("page_path", READER_PAGES)
def test_no_test_plumbing_on_the_page(visits, page_path):
    """No figure summary as text, nbval marker, visible glue call, progress bar, empty box."""
    problems = _seen(visits, page_path).reader["plumbing"]
    assert not problems, f"{page_path}: the page shows what the tests need:{_listing(problems)}"


@pytest.mark.parametrize("page_path", READER_PAGES)
def test_code_and_tables_fit_the_column(visits, page_path):
    """At 1366 px no code cell (folded ones opened) or table scrolls sideways."""
    v = _seen(visits, page_path)
    problems = [*v.code_scroll, *v.reader["wide_tables"], *v.reader["long_inline"]]
    assert not problems, (f"{page_path}: wider than the text column at 1366 px (code lines "
                          f"<= 88 characters, chapters/ruff.toml):{_listing(problems)}")


@pytest.mark.parametrize("page_path", READER_PAGES)
def test_display_math_is_not_smaller_than_text(visits, page_path):
    r = _seen(visits, page_path).reader
    assert not r["small_math"], (
        f"{page_path}: display formulas smaller than the body text ({r['body_px']} px); "
        f"split them over lines instead:{_listing(r['small_math'])}")


@pytest.mark.parametrize("page_path", READER_PAGES)
def test_punctuation_stays_with_its_formula(visits, page_path):
    v = _seen(visits, page_path)
    parted = [f"at 1366 px: {p}" for p in v.reader["parted"]]
    parted += [f"at 390 px: {p}" for p in v.phone.get("parted", [])]
    assert not parted, f"{page_path}: a line break parts a formula from its punctuation:" \
                       f"{_listing(parted)}"


@pytest.mark.parametrize("page_path", ["book/intro.html", *CHAPTERS])
def test_typography(visits, page_path):
    """h3 lighter and smaller than h2; running text at a measure of 60-85 characters."""
    r = _seen(visits, page_path).reader
    h2, h3 = r["h2"], r["h3"]
    if h2 and h3:
        assert h3["weight"] <= h2["weight"] and h3["size"] < h2["size"], (
            f"{page_path}: h3 {h3} is not lighter than h2 {h2}")
    assert r["measure"] and 60 <= r["measure"] <= 85, (
        f"{page_path}: about {r['measure']} characters a line at 1366 px (want 60-85)")


@pytest.mark.parametrize("page_path", CHAPTERS)
def test_every_figure_has_a_numbered_caption(visits, page_path):
    n = int(re.match(r"chapters/(\d+)_", page_path).group(1))
    figures = _seen(visits, page_path).reader["figures"]
    assert figures, f"{page_path}: no figure"
    bare = [f"figure {i} ({f['where']})" for i, f in enumerate(figures, 1) if not f["number"]]
    assert not bare, (f"{page_path}: {len(bare)} of {len(figures)} figures have no numbered "
                      f"caption (cell metadata mystnb.figure.caption):{_listing(bare)}")
    numbers = [f["number"].rstrip(". ") for f in figures]
    want = [f"Figure {n}.{k}" for k in range(1, len(figures) + 1)]
    if page_path in SECTION_PAGES:
        want = _numbered_on(numbers, f"Figure {n}.{{k}}")
    assert numbers == want, f"{page_path}: figures numbered {numbers}, want {want}"


@pytest.mark.parametrize("page_path", READER_PAGES)
def test_page_fits_a_phone(visits, page_path):
    ph = _seen(visits, page_path).phone
    assert "error" not in ph, f"{page_path} at 390 px: {ph.get('error')}"
    assert ph["scroll_width"] <= ph["client_width"], (
        f"{page_path}: the page scrolls sideways on a phone ({ph['scroll_width']} px > "
        f"{ph['client_width']} px)")


@pytest.mark.parametrize("page_path", READER_PAGES)
def test_display_math_is_never_cut_on_a_phone(visits, page_path):
    """At 390 px a display formula fits, or scrolls in its own box with a visible cue."""
    ph = _seen(visits, page_path).phone
    assert "error" not in ph, f"{page_path} at 390 px: {ph.get('error')}"
    cut = ph["cut_math"]
    assert not cut, f"{page_path} at 390 px: display formulas cut or without a cue:" \
                    f"{_listing(cut)}"


def test_phone_sidebar_opens_and_its_links_work(visits, server):
    nav = _seen(visits, NAV_PAGE).sidebar.get("phone", {"error": "not tried"})
    where = f"{NAV_PAGE} at 390x844"
    assert "error" not in nav, f"{where}: {nav['error']}"
    assert not nav["before"]["dialog_open"], f"{where}: the chapter list is open at first"
    after = nav["after"]
    assert after["dialog_open"], f"{where}: the chapter-list button does not open it"
    hrefs = [urldefrag(a["href"])[0].removeprefix(server) for a in after["links"]]
    assert nav["target"] in hrefs, f"{where}: the open chapter list has no link to " \
                                   f"{nav['target']} ({hrefs})"
    assert nav["landed"].split("#")[0] == nav["target"], (
        f"{where}: the chapter link in the sidebar led to {nav['landed']}")
    contents = nav["contents"]
    assert "error" not in contents, f"{where}: {contents.get('error')}"
    assert contents["dialog_open"] and contents["links"], (
        f"{where}: the page-contents button does not open the page's contents {contents}")


def test_laptop_sidebar_button_hides_the_sidebar(visits):
    nav = _seen(visits, NAV_PAGE).sidebar.get("laptop", {"error": "not tried"})
    where = f"{NAV_PAGE} at 1366x900"
    assert "error" not in nav, f"{where}: {nav['error']}"
    assert nav["before"], f"{where}: the sidebar is not shown at first"
    assert not nav["dialog_opened"], f"{where}: the button opened a dialog instead of hiding"
    assert not nav["after_one_click"], f"{where}: the sidebar button does not hide the sidebar"
    assert nav["after_two_clicks"], f"{where}: a second click does not bring the sidebar back"


# --------------------------------------------------------------------------------------
# The phone, continued (issue 33): figures, tables, output, footer, drawer; links; numbering


@pytest.mark.parametrize("page_path", READER_PAGES)
def test_figures_open_at_full_size(visits, page_path):
    """At 390 px a tap on any figure opens its image at full resolution over the page
    (no network: the image already loaded), Escape closes it, and the first figure also
    opens from the keyboard (focus, Enter). Rejects a figure that does nothing when
    tapped, or that leaves the book for the bare PNG."""
    ph = _seen(visits, page_path).phone
    assert "error" not in ph, f"{page_path} at 390 px: {ph.get('error')}"
    problems = ph["zoom"]
    assert not problems, f"{page_path} at 390 px: figures that do not open full size:" \
                         f"{_listing(problems)}"


@pytest.mark.parametrize("page_path", READER_PAGES)
def test_tables_scroll_with_a_cue_on_a_phone(visits, page_path):
    """At 390 px a table wider than the column scrolls in its own box with the same
    scroll cue as display math (rejects hidden right-hand columns with no cue), and its
    short cells (sizes, numbers: <= 40 characters) are not wrapped over several lines."""
    ph = _seen(visits, page_path).phone
    assert "error" not in ph, f"{page_path} at 390 px: {ph.get('error')}"
    problems = ph["tables"]
    assert not problems, f"{page_path} at 390 px: tables cut, without a cue, or with " \
                         f"wrapped short cells:{_listing(problems)}"


@pytest.mark.parametrize("page_path", READER_PAGES)
def test_output_is_not_wrapped_inside_numbers_on_a_phone(visits, page_path):
    """At 390 px no number in a cell's printed output is split over two lines (rejects
    "sd below 1e-" / "3: True"); an output line wider than the column scrolls with the cue."""
    ph = _seen(visits, page_path).phone
    assert "error" not in ph, f"{page_path} at 390 px: {ph.get('error')}"
    problems = ph["outputs"]
    assert not problems, f"{page_path} at 390 px: program output:{_listing(problems)}"


@pytest.mark.parametrize("page_path", READER_PAGES)
def test_footer_titles_are_whole_on_a_phone(visits, page_path):
    """At 390 px the previous / next titles are on the screen, cut by nothing, and wrapped
    at spaces (rejects "gradients of th" clipped by the footer link's hidden overflow)."""
    ph = _seen(visits, page_path).phone
    assert "error" not in ph, f"{page_path} at 390 px: {ph.get('error')}"
    problems = ph["footer"]
    assert not problems, f"{page_path} at 390 px: footer titles:{_listing(problems)}"


def test_page_contents_drawer_closes_after_a_tap(visits):
    """At 390 px a tap on an entry of the page-contents drawer closes the drawer and the
    page is at that section (rejects a drawer left open over the page)."""
    nav = _seen(visits, NAV_PAGE).sidebar.get("phone", {"error": "not tried"})
    where = f"{NAV_PAGE} at 390x844"
    assert "error" not in nav, f"{where}: {nav['error']}"
    tap = nav.get("contents_tap")
    assert tap, f"{where}: the page-contents drawer had no entry to tap"
    assert not tap["dialog_open"], f"{where}: the drawer stays open after a tap on {tap['hash']}"
    assert tap["landed_hash"] == tap["hash"], f"{where}: a tap on {tap['hash']} led to " \
                                              f"{tap['landed_hash']!r}"


def test_links_have_one_colour_that_is_readable_and_distinct(visits):
    """Over every page (1366 px): all links in the text have ONE colour (rejects teal in
    tables, blue elsewhere), each at WCAG AA contrast (>= 4.5:1) against the background it
    sits on, table stripes included, and each is told from the body text by an underline
    and a colour visibly different from the text's (RGB distance > 100)."""
    colours: dict[str, list[str]] = {}
    problems = []
    for page_path in READER_PAGES:
        for link in _seen(visits, page_path).reader["links"]["links"]:
            where = f"{page_path}: {link['text']!r}" + (" (in a table)" if link["in_table"] else "")
            colours.setdefault(link["colour"], []).append(where)
            if link["contrast"] < 4.5:
                problems.append(f"{where}: contrast {link['contrast']} < 4.5 against its "
                                f"background")
            if not link["underlined"]:
                problems.append(f"{where}: not underlined")
            if link["distance_from_text"] <= 100:
                problems.append(f"{where}: {link['colour']} is hardly different from the text")
    assert colours, "no link in the text of any page"
    assert len(colours) == 1, "links in several colours: " + "; ".join(
        f"{c} ({len(w)} links, e.g. {w[0]})" for c, w in colours.items())
    assert not problems, f"links hard to read or to tell from text:{_listing(problems)}"


@pytest.mark.parametrize("page_path", ["book/intro.html", "book/performance.html"])
def test_unnumbered_pages_number_their_own_figures(visits, page_path):
    """A page outside the numbered chapters numbers its figures from Figure 1 on its own
    (rejects the Performance figures taking 2-6 after the landing page's Figure 1)."""
    figures = _seen(visits, page_path).reader["figures"]
    assert figures, f"{page_path}: no figure (the check would be vacuous)"
    numbers = [(f["number"] or "").rstrip(". ") for f in figures]
    want = [f"Figure {k}" for k in range(1, len(figures) + 1)]
    assert numbers == want, f"{page_path}: figures numbered {numbers}, want {want}"


@pytest.mark.parametrize("page_path", READER_PAGES)
def test_figure_images_have_their_caption_as_alt_text(visits, page_path):
    """Every image on the page has alt text that is not a file path (rejects Sphinx's
    default, alt="../_images/<hash>.png"), and a figure's image has its caption as alt
    text: the alt begins with the caption's words before its first formula (on chapters;
    the intro and Performance pages' figures have alt text written for them)."""
    problems = []
    for i, f in enumerate(_seen(visits, page_path).reader["figures"], 1):
        alt = (f["alt"] or "").strip()
        name = f"figure {i} ({f['where']})"
        if not alt:
            problems.append(f"{name}: no alt text")
        elif re.search(r"\.(png|jpe?g|svg|gif)$", alt, re.I) or alt == f["src"]:
            problems.append(f"{name}: the alt text is a file name: {alt[:60]!r}")
        elif f["caption"] is not None and page_path in CHAPTERS:  # elsewhere alt is written
            lead = re.sub(r"\s+", " ", f["caption_lead"]).strip()
            if lead and not re.sub(r"\s+", " ", alt).startswith(lead[:80]):
                problems.append(f"{name}: alt {alt[:50]!r} is not its caption {lead[:50]!r}")
    assert not problems, f"{page_path}: images without a caption as alt text:" \
                         f"{_listing(problems)}"


def test_solution_and_aside_title_bars_span_their_box(visits):
    """At 1366 px the title bar of every admonition (Solution, Aside, Note) is as wide as
    its box between the borders (rejects the 40em measure of running text catching
    p.admonition-title: bars of about 640 px in 853 px boxes)."""
    problems, seen = [], 0
    for page_path in READER_PAGES:
        reader = _seen(visits, page_path).reader
        seen += reader["admonitions"]
        problems += [f"{page_path}: {p}" for p in reader["title_bars"]]
    assert seen, "no admonition on any page (the check would be vacuous)"
    assert not problems, f"title bars narrower than their box:{_listing(problems)}"


# --------------------------------------------------------------------------------------
# A downloaded notebook that runs (issue 33, item 6); the Performance page on a phone


def _run_command() -> str:
    """The command book/_ext/elbo_runnote.py puts on every chapter page (its COMMAND)."""
    source = (ROOT / "book" / "_ext" / "elbo_runnote.py").read_text()
    return re.search(r'^COMMAND = "(.+)"$', source, re.M).group(1)


@pytest.mark.parametrize("page_path", CHAPTERS)
def test_chapter_says_how_to_run_its_notebook(visits, page_path):
    """Under the title of every chapter page, at 1366 px and at 390 px, a note names the
    page's notebook (the file the download button gives) and the one command that makes
    elbo_lib importable, whole on one line inside the column. Rejects a page without the
    note, a note naming another notebook, and a command broken over lines or cut off."""
    v = _seen(visits, page_path)
    command = _run_command()
    notebook = Path(page_path).with_suffix(".ipynb").name
    for width, note in ((1366, v.reader.get("run_note")), (390, v.phone.get("run_note"))):
        where = f"{page_path} at {width} px"
        assert note, f"{where}: no note saying how to run the downloaded notebook"
        assert note["shown"] and note["after_title"], f"{where}: note not under the title: {note}"
        assert note["command"] == command, f"{where}: command {note['command']!r} != {command!r}"
        assert note["command_whole"], f"{where}: the command is broken over lines or cut off"
        assert notebook in note["text"] and "elbo_lib" in note["text"], (
            f"{where}: the note does not name {notebook} and elbo_lib: {note['text']!r}")
    if v.download and v.download.get("filename"):
        assert v.download["filename"] == notebook, (
            f"{page_path}: the note names {notebook}, the download gives "
            f"{v.download['filename']}")


def _imported_modules(source: str) -> set[str]:
    import ast
    tree = ast.parse(source)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_run_command_installs_everything_a_notebook_imports():
    """The note's command (`pip install -r requirements.txt -e .`) makes a downloaded
    notebook run only if pyproject.toml's package is elbo_lib and every module that
    elbo_lib and the chapters import is in the standard library, is elbo_lib, or comes
    from a distribution that requirements.txt pins or that a pinned one requires (as
    installed here; the notebooks read no file of the repository). Rejects a chapter or a
    module of elbo_lib importing a package the command would not install (pyro, say, which
    only benchmarks/requirements.txt pins), and a command naming other files."""
    import importlib.metadata as md
    import sys
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    command = _run_command()
    assert re.fullmatch(r"python -m pip install -r requirements\.txt -e \.", command), command
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = packages.get("packages")  # a list, or {"find": {"include": [...]}}
    if isinstance(packages, dict):
        packages = packages.get("find", {}).get("include", ["elbo_lib"])  # find: everything
    assert "elbo_lib" in packages, f"pyproject.toml does not install elbo_lib: {packages}"
    pinned = set()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            pinned.add(canonicalize_name(Requirement(line).name))
    closure, todo = set(), list(pinned)
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    sources = {p.relative_to(ROOT).as_posix(): p.read_text()
               for p in sorted((ROOT / "elbo_lib").rglob("*.py"))}
    for nb_path in sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text())
        code = "\n".join(
            "\n".join(line for line in "".join(c["source"]).splitlines()
                      if not line.lstrip().startswith(("%", "!")))
            for c in nb["cells"] if c["cell_type"] == "code")
        sources[nb_path.relative_to(ROOT).as_posix()] = code
    provided = md.packages_distributions()
    problems = []
    for where, source in sources.items():
        for module in sorted(_imported_modules(source)):
            if module in sys.stdlib_module_names or module in {"elbo_lib", "__future__"}:
                continue
            dists = {canonicalize_name(d) for d in provided.get(module, [])}
            if not dists & closure:
                problems.append(f"{where} imports {module} ({sorted(dists) or 'not installed'}),"
                                f" which requirements.txt does not install")
    assert len(sources) > 10, sorted(sources)
    assert not problems, f"`{command}` would not install:{_listing(problems)}"


@pytest.mark.parametrize("page_path", READER_PAGES)
def test_no_table_has_an_empty_header_row(visits, page_path):
    """No table opens with a header row of empty cells (rejects the Performance page's
    "Machine and run" table as Markdown writes it, "| | |" above its rows)."""
    tables = _seen(visits, page_path).reader.get("tables") or []
    empty = [i for i, t in enumerate(tables, 1) if t["heads"] and not any(t["heads"])]
    assert not empty, f"{page_path}: tables {empty} have an empty header row"


def _summary_rows() -> dict[str, int]:
    """Rows per comparison of the summary table in benchmarks/results/results.md."""
    text = (ROOT / "benchmarks" / "results" / "results.md").read_text()
    block = text.split("### Summary of the ratios", 1)[1].split("\n###", 1)[0]
    counts: dict[str, int] = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("comparison", "---"):
            counts[cells[0]] = counts.get(cells[0], 0) + 1
    return counts


def test_performance_summary_is_one_table_per_comparison(visits):
    """The Performance page's summary of the ratios (one table of comparison | case | size
    | ratio in benchmarks/results/results.md) is shown as one table per comparison,
    case | size | ratio, each headed by a link to the section that details it, holding
    together exactly the rows of each comparison counted in results.md; at 390 px every
    part's ratio column is on the screen without scrolling. Rejects the single long table
    (six phone screens, the ratios off the right edge), a split that loses or moves rows,
    and a part whose ratios a phone has to scroll to."""
    page = "book/performance.html"
    want = _summary_rows()
    assert len(want) >= 5 and sum(want.values()) > 40, want
    for width, tables in ((1366, _seen(visits, page).reader.get("tables")),
                          (390, _seen(visits, page).phone.get("tables_read"))):
        assert tables, f"{page} at {width} px: no tables gathered"
        whole = [t for t in tables if t["heads"][:1] == ["comparison"]]
        assert not whole, f"{page} at {width} px: the summary is still one table {whole[0]}"
        parts = [t for t in tables if t["part"]]
        assert [t["heads"] for t in parts] == [["case", "size", "ratio"]] * len(want), parts
        assert [t["rows"] for t in parts] == list(want.values()), (
            f"{page}: rows per part {[t['rows'] for t in parts]}, results.md has {want}")
        unlinked = [t["caption"] for t in parts if not t["target_found"]]
        assert not unlinked, f"{page}: parts whose heading links no section: {unlinked}"
        if width == 390:
            hidden = [t["caption"] for t in parts if not t["last_column_on_screen"]]
            assert not hidden, f"{page} at 390 px: ratios scrolled off the screen in {hidden}"


# --------------------------------------------------------------------------------------
# The whole book as one PDF (`make pdf`: book/_ext/print_pdf.py)

PDF = os.environ.get("ELBO_BOOK_PDF", "")
PDF_HINT = ("no PDF to check: `make pdf` prints the book to book/_build/elbo-book.pdf and "
            "runs this test on it (ELBO_BOOK_PDF=<file> checks another)")


def _normal_words(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z]+", " ", text.lower())).strip()


def _chapter_sources() -> list[dict]:
    """Per chapter (in the order of _toc.yml): its number, its title (the words before any
    formula), its figures (code cells with a mystnb figure caption), its numbered
    equations ({math} blocks with a :label:) and the words of its solutions. A section on
    a page of its own (SECTION_PAGES) is part of its chapter: its figures and equations
    are numbered on from the chapter's, so they are added to the chapter's counts."""
    out = []
    k = 0
    for page in CHAPTERS:
        nb = json.loads((ROOT / page.replace(".html", ".ipynb")).read_text())
        md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        title = re.search(r"^# (.+)$", md, re.M).group(1).split("$")[0].strip()
        figures = sum(1 for c in nb["cells"] if c["cell_type"] == "code"
                      and "figure" in c.get("metadata", {}).get("mystnb", {}))
        equations = len(re.findall(r"(?ms)^```\{math\}\n(?::\w+:.*\n)*?:label:", md))
        solutions = []
        for _, body in re.findall(r"(?ms)^(`{3,}|:{3,})(?:\{(?:admonition|dropdown)\}[^\n]*"
                                  r"Solution|\{solution\})[^\n]*\n(.*?)^\1\s*$", md):
            text = " ".join(line for line in body.splitlines() if not line.startswith(":"))
            text = re.sub(r"\$\$.*?\$\$|\$[^$]*\$|`[^`]*`|\{[^}]*\}|\[[^\]]*\]\([^)]*\)",
                          " | ", text)
            windows = set()  # runs of 5 plain words (formulas and markup break a run)
            for run in re.split(r"[|.;:()\[\]]", text):
                w = _normal_words(run).split()
                windows |= {" ".join(w[i:i + 5]) for i in range(len(w) - 4)}
            solutions.append(windows)
        exercises = len(re.findall(r"(?m)^:{3,}\{exercise\}", md))
        if page in SECTION_PAGES and out:
            out[-1]["exercises"] += exercises
            out[-1]["figures"] += figures
            out[-1]["equations"] += equations
            out[-1]["solutions"] += solutions
            continue
        k += 1
        out.append({"number": k, "page": page, "title": title, "figures": figures,
                    "equations": equations, "solutions": solutions, "exercises": exercises})
    return out


@pytest.fixture(scope="module")
def pdf_pages() -> list[str]:
    if not PDF:
        pytest.skip(PDF_HINT)
    if not shutil.which("pdftotext"):
        pytest.skip("pdftotext is not installed: `apt-get install poppler-utils`")
    path = Path(PDF)
    assert path.is_file(), f"ELBO_BOOK_PDF={PDF}: no such file"
    text = subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout
    return text.split("\f")


def test_pdf_has_every_chapter_with_its_figures_equations_and_solutions(pdf_pages):
    """The whole-book PDF: every chapter of _toc.yml, in order, each starting a new sheet
    with its numbered title ("3. MAP inference and sparse coding"); every figure's numbered
    caption "Figure N.1" ... "Figure N.M" (M the chapter's figure cells) and no more; every
    numbered equation "(N.1)" ... "(N.L)"; citations resolved (no raw {cite}); the
    bibliography; and every solution printed open (at least half of the 5-word runs of
    its text found: a folded solution prints its title only), a chapter's solutions
    together after its last exercise."""
    starts = [re.sub(r"\s+", " ", p).strip() for p in pdf_pages]
    text = re.sub(r"\s+", " ", "\n".join(pdf_pages))
    words = _normal_words(text)
    problems, last_sheet, figures = [], 0, 0
    for ch in _chapter_sources():
        k, head = ch["number"], f"{ch['number']}. {ch['title']}"[:45]
        sheets = [i for i, p in enumerate(starts, 1) if p.startswith(head)]
        if not sheets:
            problems.append(f"chapter {k}: no sheet starts with {head!r}")
        elif sheets[0] <= last_sheet:
            problems.append(f"chapter {k} starts on sheet {sheets[0]}, before chapter {k - 1}")
        else:
            last_sheet = sheets[0]
        found = {int(m) for m in re.findall(rf"Figure {k}\.(\d+)\b", text)}
        want = set(range(1, ch["figures"] + 1))
        if found != want:
            problems.append(f"chapter {k}: figures {sorted(found)} in the PDF, want 1-"
                            f"{ch['figures']}")
        figures += ch["figures"]
        missing = [m for m in range(1, ch["equations"] + 1) if f"({k}.{m})" not in text]
        if missing:
            problems.append(f"chapter {k}: equation numbers missing: "
                            f"{[f'({k}.{m})' for m in missing]}")
        if ch["exercises"]:  # the solutions printed together after the last exercise
            last = f"Exercise {k}.{ch['exercises']}"
            heads = [m.start() for m in re.finditer(re.escape(last) + r"\b", text)
                     if not text[:m.start()].endswith("Solution to ")]
            sols = [m.start() for m in re.finditer(rf"Solution to Exercise {k}\.\d+", text)]
            if not heads or len(sols) != ch["exercises"] or min(sols) < max(heads):
                problems.append(f"chapter {k}: its {ch['exercises']} solutions are not "
                                f"printed together after {last}")
        for s, windows in enumerate(ch["solutions"], 1):
            if windows and sum(w in words for w in windows) < len(windows) / 2:
                problems.append(f"chapter {k}: solution {s} is not printed (its text is "
                                f"not in the PDF)")
    if "{cite" in text or "{numref" in text or "{eq}" in text:
        problems.append("raw MyST roles ({cite}, {numref}, {eq}) in the PDF's text")
    if not re.search(r"\bBibliography\b", text):
        problems.append("no Bibliography")
    listing = subprocess.run(["pdfimages", "-list", PDF], check=True, capture_output=True,
                             text=True).stdout.splitlines()[2:]
    images = sum(1 for line in listing if line.split()[2:3] == ["image"])
    if images < figures:
        problems.append(f"{images} images in the PDF for the chapters' {figures} figures")
    assert not problems, f"{PDF}:{_listing(problems)}"


@pytest.mark.parametrize("page_path", READER_PAGES)
def test_sidebar_shows_the_book_title_once(visits, page_path):
    """At 1366 px the sidebar shows the book's title once, as the link to the landing page
    (rejects the title link followed by the landing page listed under the same title)."""
    reader = _seen(visits, page_path).reader
    assert reader["sidebar_title"], f"{page_path}: no book title in the sidebar"
    assert reader["sidebar_title_count"] == 1, (
        f"{page_path}: the sidebar shows {reader['sidebar_title']!r} "
        f"{reader['sidebar_title_count']} times")
