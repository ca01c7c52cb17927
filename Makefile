# Two commands do all the set-up on a fresh machine:
#   make demo   runs the main job on the embedded default (SQLite store, CPU, built-in data)
#   make test   runs the whole test suite (slow tests included)
# Both create .venv when missing and install the pinned dependencies and the package into it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deps-installed
PKG_STAMP := $(VENV)/.pkg-installed
SOURCES := $(shell find proxy transfer fits reports -name '*.py' -o -name '*.toml' 2>/dev/null) pyproject.toml
PYTEST_ARGS ?=

.PHONY: demo test test-fast bench install clean

$(STAMP): requirements-lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-lock.txt
	touch $@

# A regular (non-editable) install: tests import the installed package, never the working tree.
$(PKG_STAMP): $(STAMP) $(SOURCES)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --force-reinstall .
	rm -rf build *.egg-info
	touch $@

install: $(PKG_STAMP)

demo: $(PKG_STAMP)
	$(BIN)/ladder demo

test: $(PKG_STAMP)
	cd tests && ../$(BIN)/pytest -c ../pyproject.toml --rootdir .. $(PYTEST_ARGS) .

test-fast: $(PKG_STAMP)
	cd tests && ../$(BIN)/pytest -c ../pyproject.toml --rootdir .. -m "not slow" $(PYTEST_ARGS) .

bench: $(PKG_STAMP)
	$(BIN)/ladder bench

clean:
	rm -rf $(VENV) build *.egg-info runs/demo
