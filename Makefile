# The book's two commands:  make book  (set-up + execute at ci scale + render)
#                           make test  (set-up + unit tests + smoke runs of every notebook)
# Others: make lab (JupyterLab, .md notebooks open as notebooks), make notebook NB=name,
#         make render, make bench, make clean.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
SCALE ?= ci
# The book's chapters run in LANES processes at once, one thread each (STIR_THREADS=1: the
# results do not then depend on the machine's load); the tests in TEST_WORKERS processes.
LANES ?= 2
TEST_WORKERS ?= 2
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup book execute render notebook test bench lab pdf clean

setup: $(STAMP)

# The virtual environment, from the exact pins of requirements/lock.txt: torch 2.14.1 and
# torchvision 0.29.1 (CPU here, a CUDA build where one is available; pip takes them from the
# local wheel folder on this kind of machine, else from PyPI).
# Debian's chromium (headless, driven by playwright) checks the built site and prints the
# PDF; MathJax (npm mathjax@3.2.2, SHA-256 pinned in stir_lib/book/mathjax.py) is served by the
# site itself, so its math renders with no network. The Makefile is a prerequisite so that
# an older set-up gains new steps.
$(STAMP): pyproject.toml requirements/lock.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements/lock.txt -e ".[book,test]"
	$(PY) -m ipykernel install --sys-prefix --name stir-lib --display-name "Python (stir-lib)" >/dev/null
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp .jupyter/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	@if [ ! -x /usr/bin/chromium ]; then \
	  if ! command -v apt-get >/dev/null; then \
	    echo "make setup: expected apt-get to install Debian's chromium (the site check and make pdf need /usr/bin/chromium), got no apt-get; install Chromium at /usr/bin/chromium, then run make setup again" >&2; exit 1; fi; \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "make setup: expected root to apt-get install chromium, got user $$(id -un); run: sudo apt-get install -y --no-install-recommends chromium, then make setup" >&2; exit 1; fi; \
	  echo "apt-get install -y --no-install-recommends chromium"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	fi
	$(PY) -m stir_lib.book.site install-mathjax
	touch $(STAMP)

book: setup
	$(PY) -m stir_lib.book.run all --scale $(SCALE) --lanes $(LANES)

execute: setup
	$(PY) -m stir_lib.book.run execute --scale $(SCALE) --lanes $(LANES)

render: setup
	$(PY) -m stir_lib.book.run render

# The whole book as one A4 PDF (_build/pdf/book.pdf), from the stage of the last render
# (rendered again first if it is missing or stale), printed by headless Chromium.
pdf: setup
	$(PY) -m stir_lib.book.site pdf

# Re-run one notebook (and the summary pages), e.g. make notebook NB=blind_spots SCALE=smoke
notebook: setup
	$(PY) -m stir_lib.book.run execute --scale $(SCALE) $(NB)

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lab: setup
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

clean:
	rm -rf _build
