# One command builds the book, one runs the tests. Both create .venv when it is missing.
#   make book      build the HTML book (executes every chapter)
#   make test      unit tests + every chapter under pytest/nbval
#   make lab       open the chapters in JupyterLab
# Data: set CXR_DATA_DIR (or use kagglehub's cache); CXR_FAST=1 for the quick CI mode.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
BUILD ?= _build

# Notebooks draw figures with the inline backend: a non-interactive MPLBACKEND would hide them.
unexport MPLBACKEND

# Chapters run with their own folder as working directory: make the data path absolute.
ifdef CXR_DATA_DIR
export CXR_DATA_DIR := $(abspath $(CXR_DATA_DIR))
endif

.PHONY: install book test unit notebooks lab nb-refs strip clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	@touch $(STAMP)

book: $(STAMP)
	@start=$$(date +%s); \
	$(VENV)/bin/jupyter-book build . --toc book/_toc.yml --config _config.yml -W --keep-going \
	  || { echo "make book: the build FAILED (see the warnings above)"; exit 1; }; \
	echo "make book: built in $$(( $$(date +%s) - start )) s; open $(abspath $(BUILD))/html/index.html"

test: $(STAMP)
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
