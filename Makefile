# The two commands of the README: `make demo` and `make test`.
# Each one creates .venv on first use, installs the pinned dependencies, then runs its job.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint docs bench dist clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m alignment.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(MAKE) docs
	$(BIN)/python -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The documentation site: docs/ + mkdocs.yml -> site/, strict (any warning fails), offline.
# No --quiet: it hides the warnings from the counter that --strict fails on.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python benchmarks/rule_speed.py

# The sdist and the wheel built from it, into dist/ (tests/test_wheel.py builds and installs them too).
dist: $(STAMP)
	$(BIN)/python -m build --no-isolation --outdir dist .

clean:
	rm -rf $(VENV) out site dist .pytest_cache .ruff_cache .hypothesis
