# `make test` and `make demo` work on a fresh machine with Python 3.11: both build .venv first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?= -m "not slow"

.PHONY: test test-all demo clean

# The package metadata has version ranges; constraints.txt pins the set tested together, and the
# `cpu` extra brings the PyPI build of the openmm-torch plugin (conda users: see environment.yml).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[cpu,test]"
	touch $@

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: PYTEST_ARGS =
test-all: test

demo: $(VENV)/.installed
	$(BIN)/smoothflow demo

clean:
	rm -rf $(VENV)
