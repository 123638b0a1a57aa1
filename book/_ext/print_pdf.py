"""Print the single-page HTML book to one PDF with headless Chromium (`make pdf`).

There is no LaTeX on the machines this book is built on; Chromium is there (Debian's,
the one tests/test_browser.py drives). `make pdf` builds the book with Sphinx's
singlehtml builder, and this script serves that build on 127.0.0.1, opens it with
``?print`` (elbo.js then opens every solution and folded cell), waits until MathJax has
typeset every formula and every image is loaded (the theme loads images lazily, and a
lazy image is never loaded for print), and prints it to A4 with page numbers, using the
print style of elbo.css (chapter titles with their numbers, each chapter on a new page,
formulas, figures and tables not split across pages, output wrapped), at 0.8 of the
screen's size, with any display formula still wider than the text column shrunk to fit.

    .venv/bin/python book/_ext/print_pdf.py book/_build/singlehtml book/_build/elbo-book.pdf
"""

from __future__ import annotations

import functools
import http.server
import re
import sys
import threading
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"]
# The text at 0.8 of the screen's size (body text about 9.6 pt), so that the sheet's text
# column, 178 mm at 16 mm margins, is 841 CSS px wide: about the laptop page's column,
# where every formula and table of the book fits.
SCALE = 0.8
LAYOUT_WIDTH = round((210 - 2 * 16) / 25.4 * 96 / SCALE)
MIN_ZOOM = 0.6  # a formula that would need more shrinking than this fails the print
FIT_FORMULAS_JS = """
(minZoom) => {
  const main = document.querySelector('article.bd-article');
  const width = main.getBoundingClientRect().width;
  const out = {total: 0, shrunk: 0, smallest: 1, still_wide: []};
  main.querySelectorAll('mjx-container[display="true"]').forEach(m => {
    out.total += 1;
    // Its natural width (a centred formula wider than its box overflows on both sides).
    m.style.width = 'max-content';
    const need = Math.max(m.offsetWidth, m.scrollWidth);
    m.style.width = '';
    if (need <= width + 1) return;
    const zoom = Math.max(minZoom, Math.floor(100 * width / need) / 100);
    m.style.zoom = zoom;
    out.shrunk += 1;
    out.smallest = Math.min(out.smallest, zoom);
    if (need * zoom > width + 1)
      out.still_wide.push(m.textContent.slice(0, 40));
  });
  return out;
}
"""
FOOTER = ('<div style="font-size:8px;width:100%;text-align:center;color:#555">'
          '<span class="pageNumber"></span> / <span class="totalPages"></span></div>')


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def translate_path(self, path: str) -> str:
        # The singlehtml page lives in book/ but refers to MathJax and to the chapters'
        # images as "_static/..." and "_images/..." (the root's folders): serve them.
        return super().translate_path(re.sub(r"^/book/(_static|_images)/", r"/\1/", path))


def main(site: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    start = time.perf_counter()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    page_path = "book/intro.html" if (site / "book/intro.html").is_file() else "index.html"
    url = f"http://127.0.0.1:{httpd.server_address[1]}/{page_path}?print"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1000, "height": 1400})
            page.goto(url, wait_until="load", timeout=300_000)
            page.wait_for_function("() => window.MathJax && MathJax.startup "
                                   "&& MathJax.startup.promise", timeout=300_000)
            page.evaluate("() => MathJax.startup.promise")
            page.evaluate("""async () => {
                document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager');
                await Promise.all([...document.images].filter(i => i.getAttribute('src'))
                    .map(i => i.decode().catch(() => null)));
                await document.fonts.ready;
            }""")
            # (The figure viewer's empty <img> of elbo.js is not part of the page.)
            broken = page.evaluate("() => [...document.images].filter(i => !i.naturalWidth"
                                   " && !i.closest('dialog.elbo-lightbox')).map(i => i.src)")
            errors = page.evaluate("() => document.querySelectorAll('mjx-merror').length")
            if broken or errors:
                sys.exit(f"print_pdf: {len(broken)} images not loaded {broken[:3]}, "
                         f"{errors} MathJax errors")
            # Lay the page out as it will be printed (the sheet's width at SCALE) and
            # shrink each display formula wider than the column to fit it.
            page.set_viewport_size({"width": LAYOUT_WIDTH, "height": 1400})
            page.emulate_media(media="print")
            page.wait_for_timeout(500)
            fit = page.evaluate(FIT_FORMULAS_JS, MIN_ZOOM)
            if fit["still_wide"]:
                sys.exit(f"print_pdf: {len(fit['still_wide'])} display formulas wider than the "
                         f"sheet even shrunk to {MIN_ZOOM}: {fit['still_wide'][:3]}")
            print(f"print_pdf: {fit['shrunk']} of {fit['total']} display formulas shrunk to fit "
                  f"the sheet (smallest to {fit['smallest']:.2f} of their size)")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.pdf(path=str(out), format="A4", print_background=True, scale=SCALE,
                     margin={"top": "18mm", "bottom": "18mm", "left": "16mm", "right": "16mm"},
                     display_header_footer=True, header_template="<span></span>",
                     footer_template=FOOTER)
            browser.close()
    finally:
        httpd.shutdown()
    print(f"print_pdf: wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in "
          f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
