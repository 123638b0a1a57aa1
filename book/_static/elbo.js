/* The ELBO book: fit wide display formulas to the text column.
 *
 * MathJax 3 does not break long display equations, so at laptop width a few are wider
 * than the text and would need a horizontal scroll bar. After typesetting, each such
 * formula is scaled down to fit, but never below MIN_SCALE (then it scrolls, and
 * tests/test_browser.py reports it so the chapter can split it across lines).
 * It runs again when the window is resized and when a hidden block (an exercise
 * solution, a collapsed cell) is opened.
 */
(function () {
  "use strict";
  const MIN_SCALE = 0.75;

  function fitFormulas() {
    document.querySelectorAll('mjx-container[display="true"]').forEach(function (m) {
      m.style.fontSize = "";
      const have = m.clientWidth;
      const need = m.scrollWidth;
      if (have > 0 && need > have + 1) {
        const scale = Math.max(MIN_SCALE, (0.99 * have) / need);
        m.style.fontSize = (100 * scale).toFixed(1) + "%";
      }
    });
  }

  let pending = null;
  function fitSoon() {
    if (pending) window.clearTimeout(pending);
    pending = window.setTimeout(fitFormulas, 50);
  }

  window.addEventListener("load", function () {
    const mj = window.MathJax;
    if (!(mj && mj.startup && mj.startup.promise)) return;  // a page with no math
    mj.startup.promise.then(fitFormulas);
    window.addEventListener("resize", fitSoon);
    document.addEventListener("click", fitSoon);  // opening a solution or a hidden cell
  });
})();
