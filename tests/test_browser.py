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

A full-page screenshot of every page is saved under ``tests/_output/screenshots/`` so a
person can look at it. Without ``/usr/bin/chromium`` the tests are skipped with a
message saying how to install it. Set ``ELBO_BOOK_HTML=book/_build/html`` to check an
existing build instead of building the book.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
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
VIEWPORT = {"width": 1366, "height": 900}  # a normal laptop screen
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
        .map(m => `${m.scrollWidth} px > ${m.clientWidth} px: `
             + m.parentElement.textContent.replace(/\s+/g, ' ').trim().slice(0, 50)),
  };
}
"""


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"data", "blob", "about"} or parts.hostname in LOCAL_HOSTS


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
        response = page.goto(visit.url, wait_until="load", timeout=30_000)
        visit.status = response.status if response else None
        if page_path == "index.html":  # a meta-refresh to the root page
            page.wait_for_url(re.compile(r".*/book/intro\.html.*"), wait_until="load",
                              timeout=10_000)
        visit.final_url = page.url
        if page.locator("script[src*='mathjax']").count():
            page.wait_for_function(
                "() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                timeout=30_000)
            page.evaluate("() => MathJax.startup.promise")  # resolves once typeset
        page.evaluate("""async () => {
            document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager');
            await Promise.all([...document.images].map(i => i.decode().catch(() => null)));
            await document.fonts.ready;
        }""")
        visit.facts = page.evaluate(COLLECT_JS)
        name = page_path.removesuffix(".html").replace("/", "__") + ".png"
        if page_path != "index.html":  # index.html shows the root page, shot as such
            visit.screenshot = SCREENSHOTS / name
            page.screenshot(path=str(visit.screenshot), full_page=True,
                            animations="disabled")
        if page_path in CHAPTERS:
            visit.dropdowns = _exercise_dropdowns(page)
            visit.download = _download_notebook(page)
    except Exception as err:  # reported by every test of this page, not a crash of all
        visit.error = f"{type(err).__name__}: {err}"
    finally:
        page.close()
    return visit


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
    sync_api = pytest.importorskip("playwright.sync_api")
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
        finally:
            browser.close()
    print(f"\nbrowser visited {len(result)} pages in {time.perf_counter() - start:.1f} s "
          f"({', '.join(f'{k} {v.seconds:.1f}' for k, v in result.items())}); "
          f"screenshots in {SCREENSHOTS.relative_to(ROOT)}")
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
        assert v.screenshot and v.screenshot.stat().st_size > 10_000, "no screenshot saved"
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
        f"{page_path}: display formulas too wide for the text column even at 75% size "
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
