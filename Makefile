# Two commands on a fresh clone: `make demo` and `make test`. Both create (or reuse) .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

# Debian keeps the PostgreSQL server binaries (initdb, pg_ctl) off PATH.
PG_BINDIR := $(lastword $(sort $(wildcard /usr/lib/postgresql/*/bin)))
export PATH := $(PATH)$(if $(PG_BINDIR),:$(PG_BINDIR))

.PHONY: install demo test test-decisions test-systems test-flows clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/maint demo

# Every layer; pytest fails when no test ran (exit 5), and so does this.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# One layer (tests/conftest.py assigns them): decisions in seconds, then systems, then flows.
test-decisions test-systems test-flows: $(STAMP)
	$(PY) -m pytest -m $(@:test-%=%) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) maint-demo .pytest_cache .pytest-exit-code
