# Developer and CI entry points. Everything runs from the project's virtualenv (.venv),
# which `make venv` creates and refreshes whenever pyproject.toml changes.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
PY ?= $(VENV)/bin/python
PYTEST ?= $(VENV)/bin/pytest
RUFF ?= $(VENV)/bin/ruff
MYPY ?= $(VENV)/bin/mypy
LINT_IMPORTS ?= $(VENV)/bin/lint-imports
MKDOCS ?= $(VENV)/bin/mkdocs
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: venv test lint typecheck pytest demo docs contract chaos clean distclean

venv: $(STAMP)

# The stamp lives inside the venv: deleting .venv or editing pyproject.toml re-installs.
# The editable install is "compat": a path entry (.pth) rather than an import hook, so that
# type checkers (mypy) find the package from projects that use this virtualenv.
$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "no python3.11 or python3 on PATH" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $@

lint: venv
	$(RUFF) check .
	$(LINT_IMPORTS)

typecheck: venv
	$(MYPY)

# PYTHONNODEBUGRANGES: CPython 3.11's tracebacks compute their ^^^ markers with ast.parse,
# and its AST constructor keeps one depth counter for all threads; worker threads formatting
# the tracebacks of failing steps beside another thread's ast.parse (werkzeug's routing,
# pytest's own) failed a run once with "AST constructor recursion depth mismatch".
pytest: venv
	PYTHONNODEBUGRANGES=1 $(PYTEST) -q -m "not slow" $(PYTEST_ARGS)

test: lint typecheck pytest

contract: venv
	$(PYTEST) -q -m contract $(PYTEST_ARGS)

# The chaos suite's long tier (its fast tier is part of `make test`); rewrites the figures
# in docs/reliability.md from this run.
CHAOS_FIGURES ?= build/chaos-figures.json

chaos: venv
	rm -f $(CHAOS_FIGURES)
	GD_CHAOS=full GD_CHAOS_FIGURES=$(CHAOS_FIGURES) $(PYTEST) -q --timeout 3600 tests/chaos $(PYTEST_ARGS)
	PYTHONPATH=tests $(PY) -m chaos.report $(CHAOS_FIGURES) docs/reliability.md

demo: venv
	$(PY) -m examples.checkout_demo

docs: venv
	$(MKDOCS) build --strict

clean:
	rm -rf build dist site .pytest_cache .mypy_cache .ruff_cache .import_linter_cache \
		.hypothesis .tox *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

# Benchmarks (benchmarks/, docs/performance.md): JSON lines and a table on stdout. They
# start a private embedded PostgreSQL unless told otherwise, e.g.
# BENCH_ARGS="--dsn postgresql://user@host/db --workload W1,W3".
BENCH_ARGS ?=

# The dashboard's screenshots in docs/dashboard.md, taken by its browser tests.
.PHONY: screenshots

screenshots: venv
	GD_SCREENSHOTS=docs/images/dashboard $(PYTEST) -q tests/web/test_web_browser.py

.PHONY: bench bench-quick

bench: venv
	$(PY) -m benchmarks run $(BENCH_ARGS)

bench-quick: venv
	$(PY) -m benchmarks run --quick $(BENCH_ARGS)
