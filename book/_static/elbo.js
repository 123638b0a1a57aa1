/* The ELBO book: typesetting and navigation fixes, on every page.
 *
 * 1. Glued numbers inside formulas. myst-nb renders {glue:text} as
 *    <span class="pasted-text">1.109</span>, so "$\N($ {glue} $, $ {glue} $^2)$" arrives as
 *    five pieces: three formulas and two plain-text numbers between them. Before MathJax
 *    typesets the page, each run of inline formulas and glued numbers that touch (only
 *    white space between them) is joined into ONE formula, so the numbers are set in the
 *    math font, with a true minus sign, and "^2" has its base. A glued number that
 *    touches no formula stays text (elbo.css gives it the weight of the text around it)
 *    and gets a true minus sign.
 * 2. Punctuation stays with its formula. A formula is an unbreakable box, and browsers
 *    may break the line between it and the comma after it, so a line would start with
 *    "," or ":". Each inline formula is wrapped, with the punctuation that touches it
 *    ("(" before, ",.;:!?)" after), in a span that does not wrap.
 * 3. Wide display formulas. MathJax sets each formula's font size (about 120-130 % of
 *    the text, matched to the text font's x-height). A display formula wider than the
 *    text column is scaled down RELATIVE TO THAT SIZE, at most to MIN_SCALE of it and
 *    never below the size of the body text; a formula that still does not fit scrolls,
 *    and tests/test_browser.py reports it so that the chapter splits it over lines.
 *    Only a formula that scrolls gets the scroll cue (class elbo-scrolls), drawn in the
 *    colour of the box it sits in.
 *    This runs again when the window is resized and when a hidden block opens.
 * 4. Sidebar buttons. sphinx-book-theme 1.3.0 / pydata-sphinx-theme 0.17.1 put two
 *    buttons of each kind on the page (.primary-toggle, .secondary-toggle): one in the top
 *    navbar, hidden by the theme's CSS, and one in the article header, which is the one a
 *    reader sees. Both themes attach their click handlers with
 *    document.querySelector(".primary-toggle"), i.e. to the FIRST, hidden button
 *    (sphinx-book-theme issues 917 and 935, unreleased fix in PR 991/1000), so the visible
 *    buttons did nothing: on a phone the chapter list and page contents did not open, on a
 *    laptop the sidebar did not hide. Here a click on any other button of the same kind is
 *    passed on to the button the themes listen to. On a phone the sidebars open as
 *    dialogs that stay open after a tap on one of their links to this page (the page
 *    scrolled underneath, unseen): such a tap now closes the dialog too.
 * 5. Figures open at full size. A click (or Enter / Space on the focused figure) opens
 *    the figure's image at its own pixel size in a dialog over the page that scrolls both
 *    ways; Escape, the close button or a click beside the image closes it. Nothing is
 *    fetched: it is the image already on the page. (Sphinx links some figures to their
 *    PNG, which on a phone left the book for a bare image; those open the dialog too.)
 * 6. Short table cells. Cells of at most 40 characters get the class elbo-short, which
 *    elbo.css keeps on one line on a phone (the table scrolls with a cue instead); the
 *    same for the chapters' tables of checked claims (elbo_lib.reporting.Checks).
 * 7. Printing: solutions print open (see openEverything); folded set-up code is left out;
 *    the whole-book PDF prints each chapter's solutions after its last exercise.
 */
(function () {
  "use strict";
  const MIN_SCALE = 0.85;

  // ---------------------------------------------------------------- 4. sidebar buttons
  function wireSidebarToggles() {
    ["primary-toggle", "secondary-toggle"].forEach(function (cls) {
      const bound = document.querySelector("." + cls);
      if (!bound) return;
      document.querySelectorAll("." + cls).forEach(function (button) {
        if (button === bound) return;
        button.addEventListener("click", function (event) {
          event.preventDefault();
          event.stopPropagation();
          bound.click();
        });
      });
    });
  }

  // ------------------------------------------------------- 1. glued numbers in formulas
  const INLINE_TEX = /^\s*\\\(([\s\S]*)\\\)\s*$/;
  const NUMBER = /^\s*([-+\u2212]?)(\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE]([-+]?\d+))?\s*(%?)\s*$/;

  function isInlineMath(node) {
    return node && node.nodeType === 1 && node.tagName === "SPAN"
      && node.classList.contains("math") && INLINE_TEX.test(node.textContent);
  }
  function isGlued(node) {
    return node && node.nodeType === 1 && node.classList.contains("pasted-text")
      && node.children.length === 0 && NUMBER.test(node.textContent);
  }
  function isBlank(node) {
    return node && node.nodeType === 3 && !node.textContent.trim();
  }
  function numberAsTex(text) {
    const m = NUMBER.exec(text);
    const sign = m[1] ? "-" : "";
    const exponent = m[3] ? "\\times 10^{" + parseInt(m[3], 10) + "}" : "";
    return sign + m[2].replace(/,/g, "{,}") + exponent + (m[4] ? "\\%" : "");
  }

  function joinGluedNumbersWithFormulas(root) {
    const done = new Set();
    root.querySelectorAll("span.pasted-text").forEach(function (glued) {
      if (done.has(glued) || !isGlued(glued)) return;
      // Walk left and right over formulas, glued numbers and blank space between them.
      let first = glued;
      for (let n = glued.previousSibling; n; n = n.previousSibling) {
        if (isInlineMath(n) || isGlued(n)) first = n;
        else if (!isBlank(n)) break;
      }
      let last = glued;
      for (let n = glued.nextSibling; n; n = n.nextSibling) {
        if (isInlineMath(n) || isGlued(n)) last = n;
        else if (!isBlank(n)) break;
      }
      const run = [];
      for (let n = first; n; n = n.nextSibling) {
        run.push(n);
        if (n === last) break;
      }
      if (!run.some(isInlineMath)) return;
      const tex = run.map(function (n) {
        if (isInlineMath(n)) return INLINE_TEX.exec(n.textContent)[1];
        if (isGlued(n)) { done.add(n); return numberAsTex(n.textContent); }
        return " ";
      }).join(" ");
      const math = document.createElement("span");
      math.className = "math notranslate nohighlight elbo-joined";
      math.textContent = "\\(" + tex + "\\)";
      run[0].parentNode.insertBefore(math, run[0]);
      run.forEach(function (n) { n.remove(); });
    });
    // Glued numbers left in the text: a true minus sign.
    root.querySelectorAll("span.pasted-text").forEach(function (glued) {
      if (isGlued(glued)) glued.textContent = glued.textContent.replace(/^(\s*)-/, "$1\u2212");
    });
  }

  // ------------------------------------------------------ 2. punctuation with formulas
  const AFTER = /^[,.;:!?)\]]+/;
  const BEFORE = /[(\[]$/;

  function keepPunctuationWithFormulas(root) {
    root.querySelectorAll("span.math").forEach(function (math) {
      if (!INLINE_TEX.test(math.textContent) || math.closest(".elbo-nowrap")) return;
      const prev = math.previousSibling;
      const next = math.nextSibling;
      const before = prev && prev.nodeType === 3 ? BEFORE.exec(prev.textContent) : null;
      const after = next && next.nodeType === 3 ? AFTER.exec(next.textContent) : null;
      if (!before && !after) return;
      const box = document.createElement("span");
      box.className = "elbo-nowrap";
      math.parentNode.insertBefore(box, math);
      if (before) {
        prev.textContent = prev.textContent.slice(0, -before[0].length);
        box.appendChild(document.createTextNode(before[0]));
      }
      box.appendChild(math);
      if (after) {
        next.textContent = next.textContent.slice(after[0].length);
        box.appendChild(document.createTextNode(after[0]));
      }
    });
  }

  // ------------------------------------------------------------ 3. wide display formulas
  function px(element) {
    return parseFloat(window.getComputedStyle(element).fontSize);
  }

  // Reads and writes of the layout are batched (all sizes reset, then all measured, then
  // all scaled, then all measured again): measuring right after each write would make the
  // browser lay the page out again for every formula, which on a long chapter on a phone
  // costs seconds per tap (fitSoon runs after every click).
  function fitFormulas() {
    const article = document.querySelector("article") || document.body;
    const bodyText = article.querySelector("p") || article;
    const bodyPx = px(bodyText);
    const all = Array.from(document.querySelectorAll('mjx-container[display="true"]'));
    all.forEach(function (m) {
      if (m.dataset.elboSize === undefined) m.dataset.elboSize = m.style.fontSize || "";
      m.style.fontSize = m.dataset.elboSize;  // MathJax's own size
    });
    const sizes = all.map(function (m) { return [m.clientWidth, m.scrollWidth, px(m)]; });
    all.forEach(function (m, i) {
      const have = sizes[i][0], need = sizes[i][1], ownPx = sizes[i][2];
      if (have > 0 && need > have + 1) {
        const own = m.dataset.elboSize ? parseFloat(m.dataset.elboSize) / 100 : 1;
        const floor = Math.max(MIN_SCALE, bodyPx / ownPx);
        const scale = Math.min(1, Math.max(floor, (0.99 * have) / need));
        m.style.fontSize = (100 * own * scale).toFixed(1) + "%";
      }
    });
    // Still too wide: it scrolls, with the cue of elbo.css drawn in the colour of the
    // box it sits in (a formula that fits gets no background of its own).
    const scrolls = all.map(function (m) {
      return m.clientWidth > 0 && m.scrollWidth > m.clientWidth + 1;
    });
    const covers = all.map(function (m, i) {
      return scrolls[i] ? backgroundOf(m.parentElement) : null;
    });
    all.forEach(function (m, i) {
      m.classList.toggle("elbo-scrolls", scrolls[i]);
      if (scrolls[i]) m.style.setProperty("--elbo-cover", covers[i]);
    });
  }

  // The opaque colour an element's box shows: its own and its ancestors' backgrounds
  // composited, up to the first opaque one (an exercise's tint is translucent).
  function backgroundOf(element) {
    const layers = [];
    for (let e = element; e; e = e.parentElement) {
      const c = (window.getComputedStyle(e).backgroundColor.match(/[\d.]+/g) || []).map(Number);
      const rgba = c.length >= 3 ? [c[0], c[1], c[2], c.length > 3 ? c[3] : 1] : [0, 0, 0, 0];
      if (rgba[3] > 0) layers.push(rgba);
      if (rgba[3] >= 1) break;
    }
    let rgb = [255, 255, 255];
    layers.reverse().forEach(function (l) {
      rgb = rgb.map(function (v, i) { return l[i] * l[3] + v * (1 - l[3]); });
    });
    return "rgb(" + rgb.map(Math.round).join(", ") + ")";
  }

  let pending = null;
  function fitSoon() {
    if (pending) window.clearTimeout(pending);
    pending = window.setTimeout(fitFormulas, 50);
  }

  // ------------------------------------------------------------------------ wiring
  if (window.MathJax && !window.MathJax.version) {
    // Still the configuration object from _config.yml: run before the first typesetting.
    const startup = window.MathJax.startup || {};
    startup.pageReady = function () {
      const main = document.querySelector("main") || document.body;
      joinGluedNumbersWithFormulas(main);
      keepPunctuationWithFormulas(main);
      return window.MathJax.startup.defaultPageReady().then(function () {
        fitFormulas();
        window.addEventListener("resize", fitSoon);
        document.addEventListener("click", fitSoon);  // a solution or hidden cell opened
      });
    };
    window.MathJax.startup = startup;
  }

   function closeDrawersOnJump() {
    document.querySelectorAll("dialog[id$='-sidebar-modal']").forEach(function (dialog) {
      dialog.addEventListener("click", function (event) {
        const link = event.target.closest && event.target.closest("a[href]");
        if (link && dialog.open) dialog.close();  // the link still takes the reader there
      });
    });
  }

  // ------------------------------------------------------ 5. figures open at full size
  function enableFigureZoom() {
    const article = document.querySelector("article.bd-article");
    if (!article) return;
    const images = article.querySelectorAll("figure img, div.cell_output img");
    if (!images.length) return;
    const dialog = document.createElement("dialog");
    dialog.className = "elbo-lightbox";
    dialog.setAttribute("aria-label", "Figure at full size");
    const close = document.createElement("button");
    close.type = "button";
    close.className = "elbo-lightbox-close";
    close.setAttribute("aria-label", "Close the figure");
    close.textContent = "\u2715";
    const body = document.createElement("div");
    body.className = "elbo-lightbox-body";
    // The full-size image is in the page only while the dialog is open (an <img> with
    // no source would count as an image that failed to load, and would print).
    const big = document.createElement("img");
    dialog.appendChild(close);
    dialog.appendChild(body);
    document.body.appendChild(dialog);
    close.addEventListener("click", function () { dialog.close(); });
    dialog.addEventListener("close", function () {
      big.remove();
      big.removeAttribute("src");
    });
    dialog.addEventListener("click", function (event) {
      if (event.target === dialog || event.target === body) dialog.close();
    });
    images.forEach(function (img) {
      const link = img.closest("a.image-reference");
      const target = link || img;
      if (!link) {
        img.tabIndex = 0;
        img.setAttribute("role", "button");
      }
      target.classList.add("elbo-zoomable");
      target.setAttribute("aria-haspopup", "dialog");
      target.title = "Open the figure at full size";
      function open(event) {
        event.preventDefault();
        big.src = img.currentSrc || img.src;
        big.alt = img.alt;
        body.appendChild(big);
        dialog.showModal();
        dialog.scrollTop = 0;
        dialog.scrollLeft = 0;
        close.focus();
      }
      target.addEventListener("click", open);
      if (!link) {
        img.addEventListener("keydown", function (event) {
          if (event.key === "Enter" || event.key === " ") open(event);
        });
      }
    });
  }

  // ----------------------------------------------------------- 6. short table cells
  function markShortCells() {
    document.querySelectorAll("article.bd-article table.table td, article.bd-article table.elbo-checks td").forEach(function (td) {
      if (td.textContent.trim().length <= 40) td.classList.add("elbo-short");
    });
  }

  // A solution's title is "Solution to" followed by a link whose text starts with the
  // space (sphinx-exercise: <a> Exercise 4.1 (...)</a>), so the link's underline started
  // with a blank: the space goes before the link.
  function tidySolutionTitles() {
    document.querySelectorAll("div.solution > p.admonition-title > a").forEach(function (a) {
      const first = a.firstChild;
      if (!first || first.nodeType !== Node.TEXT_NODE || !/^\s/.test(first.textContent)) return;
      first.textContent = first.textContent.replace(/^\s+/, "");
      a.parentNode.insertBefore(document.createTextNode(" "), a);
    });
  }

  // ------------------------------------------------------------------- 7. printing
  // A printed page (and `make pdf`, which opens the single-page book with ?print) shows
  // the solutions open.
  function openEverything() {
    // Folded code (details.above-input: imports, set-up) stays folded: the print style
    // leaves it out.
    document.querySelectorAll("details:not(.above-input)").forEach(function (d) { d.open = true; });
    document.querySelectorAll(".toggle-hidden").forEach(function (e) {
      e.classList.remove("toggle-hidden");
    });
  }

  // The whole-book PDF (make pdf) prints each chapter's solutions together at the end of
  // the chapter, after its last exercise, as a printed textbook does; the page keeps each
  // folded solution under its exercise. A chapter's section on a page of its own (7.11)
  // is inlined inside the chapter in the single-page book, so its solutions join the
  // chapter's after the section's exercises.
  function chapterOf(element) {
    // The outermost page section around the element: each page but the root follows its
    // span#document-... marker (the root page, which holds all others, has none).
    var chapter = null;
    for (var e = element.closest("section"); e; e = e.parentElement.closest("section")) {
      var marker = e.previousElementSibling;
      if (marker && marker.matches("span[id^='document-']")) chapter = e;
    }
    return chapter || element.closest("section");
  }

  function solutionsAtTheEnd() {
    var chapters = [], byChapter = [];
    document.querySelectorAll("article.bd-article div.solution").forEach(function (s) {
      var chapter = chapterOf(s);
      if (!chapter) return;
      var i = chapters.indexOf(chapter);
      if (i < 0) { chapters.push(chapter); byChapter.push([]); i = chapters.length - 1; }
      byChapter[i].push(s);
    });
    byChapter.forEach(function (solutions) {
      var last = solutions[solutions.length - 1].closest("section");  // its last Exercises
      var heading = document.createElement("p");
      heading.className = "rubric elbo-solutions";
      heading.textContent = "Solutions";
      last.appendChild(heading);
      solutions.forEach(function (s) { last.appendChild(s); });
    });
  }

  function onReady() {
    window.addEventListener("beforeprint", openEverything);
    if (/(^|[?&])print\b/.test(window.location.search.slice(1))) {
      solutionsAtTheEnd();
      openEverything();
    }
    wireSidebarToggles();
    closeDrawersOnJump();
    enableFigureZoom();
    markShortCells();
    tidySolutionTitles();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", onReady);
  } else {
    onReady();
  }
})();
