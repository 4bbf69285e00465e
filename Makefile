# The book's two commands:  make book  (set-up + execute at ci scale + render)
#                           make test  (set-up + unit tests + smoke runs of every notebook)
# Others: make lab (JupyterLab, .md notebooks open as notebooks), make notebook NB=name,
#         make render, make bench, make clean.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
SCALE ?= ci
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup book execute render notebook test bench lab clean

setup: $(STAMP)

# The virtual environment, from the exact pins of requirements/lock.txt. torch 2.13.0 (CPU)
# comes from the local wheel folder that pip is configured with on this kind of machine, or
# from PyPI elsewhere.
$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements/lock.txt -e ".[book,test]"
	$(PY) -m ipykernel install --sys-prefix --name stir-lib --display-name "Python (stir-lib)" >/dev/null
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp .jupyter/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	touch $(STAMP)

book: setup
	$(PY) -m stir_lib.run all --scale $(SCALE)

execute: setup
	$(PY) -m stir_lib.run execute --scale $(SCALE)

render: setup
	$(PY) -m stir_lib.run render

# Re-run one notebook (and the summary pages), e.g. make notebook NB=blind_spots SCALE=smoke
notebook: setup
	$(PY) -m stir_lib.run execute --scale $(SCALE) $(NB)

test: setup
	$(PY) -m pytest -q

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lab: setup
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

clean:
	rm -rf _build
