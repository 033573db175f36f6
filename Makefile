# One command builds the book, one runs the tests. Both create .venv when it is missing.
#   make book          build the HTML book (executes every chapter, strict: warnings fail)
#   make test          ruff (lint, format check), unit tests + every chapter under pytest/nbval
#   make browser-test  open every built page in headless Chromium (after make book)
#   make lab-test      run chapter 6 in JupyterLab in headless Chromium and click its live explorer
#   make book-full     the whole book in full mode (cpu recipe) into build/full/_build, then the browser check
#   make student       student notebooks (solutions replaced by stubs) in build/student/
#   make lab           open the chapters in JupyterLab
# Data: `.venv/bin/cxr download` once (into kagglehub's cache), or set CXR_DATA_DIR; CXR_FAST=1 for the quick CI mode.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
BUILD ?= _build
# JavaScript served with the book, so pages render with no network: require.js and
# @jupyter-widgets/html-manager (widgets), MathJax (formulas). Pinned in book/js/package*.json,
# installed with `npm ci` at build time into build/npm, copied to build/widgets-js, which
# Sphinx copies to _build/html/_static (html_static_path in _config.yml).
NPM_DIR := build/npm
WIDGETS_JS := build/widgets-js
JS_STAMP := $(WIDGETS_JS)/.installed-stamp
HTML_MANAGER := $(NPM_DIR)/node_modules/@jupyter-widgets/html-manager/dist
MATHJAX := $(NPM_DIR)/node_modules/mathjax/es5

# Notebooks draw figures with the inline backend: a non-interactive MPLBACKEND would hide them.
unexport MPLBACKEND

# Chapters run with their own folder as working directory: make the data path absolute.
ifdef CXR_DATA_DIR
export CXR_DATA_DIR := $(abspath $(CXR_DATA_DIR))
endif

.PHONY: install widgets-js book book-full browser-test lab-test student test lint unit lab nb-refs strip clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	@touch $(STAMP)

widgets-js: $(JS_STAMP)

$(JS_STAMP): book/js/package.json book/js/package-lock.json
	@command -v npm >/dev/null || { echo "make: npm (Node.js) is needed to fetch the book's JavaScript"; exit 1; }
	rm -rf $(NPM_DIR) $(WIDGETS_JS)
	mkdir -p $(NPM_DIR) $(WIDGETS_JS)/jupyter-widgets $(WIDGETS_JS)/mathjax
	cp book/js/package.json book/js/package-lock.json $(NPM_DIR)/
	cd $(NPM_DIR) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	cp $(NPM_DIR)/node_modules/requirejs/require.js $(WIDGETS_JS)/jupyter-widgets/
	cp $(HTML_MANAGER)/embed-amd.js $(HTML_MANAGER)/*.woff $(HTML_MANAGER)/*.woff2 $(HTML_MANAGER)/*.ttf \
	   $(HTML_MANAGER)/*.eot $(HTML_MANAGER)/*.svg $(WIDGETS_JS)/jupyter-widgets/
	cp -r $(MATHJAX)/tex-mml-chtml.js $(MATHJAX)/input $(MATHJAX)/output $(MATHJAX)/ui $(MATHJAX)/a11y \
	   $(MATHJAX)/sre $(WIDGETS_JS)/mathjax/
	@touch $@

# --all: a fresh Sphinx environment, so every chapter is executed on every build.
book: $(STAMP) $(JS_STAMP)
	@start=$$(date +%s); rm -f $(BUILD)/execution-times.json; status=0; \
	$(VENV)/bin/jupyter-book build . --all --toc book/_toc.yml --config _config.yml --path-output $(dir $(BUILD)) -W --keep-going || status=1; \
	$(PY) tools/book_report.py $(BUILD) --seconds $$(( $$(date +%s) - start )) --status $$status

# The whole book in full mode (the `cpu` recipe, no fast subset), into build/full/_build:
# about 40 minutes on 2 cores the first time (chapter 3 trains its model, chapter 7 two
# more), then checked in the browser. CXR_FAST is cleared whatever the caller's environment says.
FULL_BUILD := build/full/_build
book-full: $(STAMP) $(JS_STAMP)
	$(MAKE) book BUILD=$(FULL_BUILD) CXR_FAST=
	$(PY) tests/browser_check.py $(FULL_BUILD)

browser-test: $(STAMP)
	$(PY) tests/browser_check.py $(BUILD)

# Chapter 6 live in JupyterLab (headless Chromium): runs all its cells, clicks the explorer's
# "next" and sets a filter; fails on an error output, a JavaScript error or an explorer that
# does not react. Screenshots in build/lab-check/. Trains chapter 3's model first if the
# cache has none (make test has, in CI). Kept out of `make unit`: it takes a minute.
lab-test: $(STAMP)
	$(PY) tests/lab_check.py --out build/lab-check

student: $(STAMP)
	$(PY) tools/student.py build/student

lint: $(STAMP)
	$(VENV)/bin/ruff check cxrlib tests tools book/_ext
	$(VENV)/bin/ruff format --check cxrlib tests tools book/_ext

test: $(STAMP) $(JS_STAMP) lint
	$(PY) tools/nbrefs.py prepare build/nbtest
	$(PY) -m pytest tests build/nbtest --nbval-lax --nbval-current-env --nbval-cell-timeout=1200 -p no:cacheprovider

unit: $(STAMP)
	$(PY) -m pytest tests -p no:cacheprovider

lab: $(STAMP)
	$(VENV)/bin/jupyter lab chapters/

nb-refs: $(STAMP)
	CXR_FAST=1 $(PY) tools/nbrefs.py update

strip: $(STAMP)
	$(PY) tools/nbtools.py strip chapters/*.ipynb

clean:
	rm -rf $(BUILD) build
