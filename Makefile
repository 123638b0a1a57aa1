# The ELBO book. `make book` builds the HTML, `make test` verifies everything.
# Both create .venv from requirements.txt on first use (Python 3.11).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard chapters/*.ipynb))

.PHONY: all book pdf test test-portable test-all execute lint bench bench-smoke clean help

all: book

help:
	@echo "make book     build the HTML book into book/_build/html (warnings are errors)"
	@echo "make pdf      the whole book as one PDF, book/_build/elbo-book.pdf (single-page HTML"
	@echo "              printed by headless Chromium; no LaTeX needed; not part of make test),"
	@echo "              then checked: every chapter, figure, equation, solution (needs"
	@echo "              pdftotext/pdfimages: apt-get install poppler-utils)"
	@echo "make test     library tests + nbval over every chapter + book build check"
	@echo "              (tools/portability.py --config native --tests: 2 pytest runs at once)"
	@echo "make test-portable  nbval over every chapter under 3 kernel configurations"
	@echo "              imitating other x86-64 CPUs (tools/portability.py; one skipped when"
	@echo "              its kernels compute exactly this machine's bits, as make test did)"
	@echo "make test-all make test plus the avx2 and avx configurations, one pool of runs (CI;"
	@echo "              sse4 is left to make test-portable)"
	@echo "make execute  re-execute every notebook in place (refresh committed outputs)"
	@echo "make lint     ruff over elbo_lib, tests, tools, benchmarks and the notebooks"
	@echo "make bench    run the benchmarks (installs benchmarks/requirements.txt; see benchmarks/)"
	@echo "make clean    remove the build output and caches (keeps .venv)"

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-compile --no-deps -e .
	# byte-compile on every core (pip compiles one file at a time: 140 s -> 105 s in all),
	# leaving out the packages' own test suites, which nothing here imports
	$(BIN)/python -m compileall -q -j 0 -x '/tests/|/testing/_internal/' $(VENV)/lib > /dev/null
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	$(BIN)/python -c "import matplotlib.pyplot"  # warm the font cache outside nbval
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . --path-output book -W --keep-going
	@echo "Open book/_build/html/index.html"

# The whole book as one PDF without LaTeX: Sphinx's single-page HTML build printed to A4
# by headless Chromium (/usr/bin/chromium, as for the browser tests) with the print style
# of book/_static/elbo.css (book/_ext/print_pdf.py says how). Not run by `make test` or CI.
# The PDF is then checked by tests/test_browser.py's PDF test (pdftotext, pdfimages): every
# chapter on its own sheet, in order, with all its figures, numbered equations and solutions.
pdf: $(STAMP)
	@command -v pdftotext >/dev/null && command -v pdfimages >/dev/null || { echo \
	  "make pdf checks the PDF with pdftotext and pdfimages: apt-get install poppler-utils"; \
	  exit 1; }
	$(BIN)/jupyter-book build . --builder singlehtml --path-output book -W --keep-going
	$(BIN)/python book/_ext/print_pdf.py book/_build/singlehtml book/_build/elbo-book.pdf
	ELBO_BOOK_PDF=book/_build/elbo-book.pdf $(BIN)/python -m pytest tests/test_browser.py \
	  -q -p no:nbval -p no:cacheprovider -o addopts="" -k test_pdf_

# The same tests as a bare `pytest`, as a pool of pytest runs two at a time (2 cores),
# longest first: the library, book and browser tests in tests/ as one run, and nbval on
# each notebook in chapters/ as its own run (tools/portability.py, native kernels).
test: $(STAMP)
	$(BIN)/python tools/portability.py --config native --tests

test-portable: $(STAMP)
	$(BIN)/python tools/portability.py

# What CI runs: make test plus nbval under the configurations that imitate an AVX2 CPU
# (skipped where those are this machine's own kernels) and an AVX CPU with other training
# seeds, as one pool of pytest runs (no worker waits for the other between the two).
# The sse4 configuration (an SSE4.2 CPU, MKL's reproducibility mode, one OpenBLAS thread)
# is left to make test-portable, which authors run before committing outputs: on the AVX2
# machine, where avx2 is skipped, the pool with sse4 took 1583 s of the 25-minute CI budget
# (sse4 alone 929 s of CPU); on an AVX-512 machine avx2 runs instead (README, "Where this is
# tested").
test-all: $(STAMP)
	$(BIN)/python tools/portability.py --tests --config native --config avx2 --config avx

execute: $(STAMP)
	$(BIN)/python tools/execute_notebooks.py $(NOTEBOOKS)

lint: $(STAMP)
	$(BIN)/ruff check elbo_lib tests benchmarks chapters tools conftest.py

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) benchmarks/requirements.txt
	$(BIN)/python -m pip install --quiet -r benchmarks/requirements.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks

bench-smoke: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks --smoke

clean:
	rm -rf book/_build tests/_output .pytest_cache .hypothesis .jupyter_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
