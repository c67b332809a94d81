# Two commands on a fresh clone: `make demo` and `make test`. Both create (or reuse) .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

# Debian keeps the PostgreSQL server binaries (initdb, pg_ctl) off PATH.
PG_BINDIR := $(lastword $(sort $(wildcard /usr/lib/postgresql/*/bin)))
export PATH := $(PATH)$(if $(PG_BINDIR),:$(PG_BINDIR))

.PHONY: install demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/maint demo

# pytest's own exit code is kept in .pytest-exit-code so .ci/run can tell "no tests" (5) apart.
test: $(STAMP)
	@rm -f .pytest-exit-code
	$(PY) -m pytest $(PYTEST_ARGS) || { rc=$$?; echo $$rc > .pytest-exit-code; exit $$rc; }

clean:
	rm -rf $(VENV) maint-demo .pytest_cache .pytest-exit-code
