# Everything runs from the project's own virtual environment, created on demand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install lint test test-fast demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check ext_authz tests bench
	$(VENV)/bin/ruff format --check ext_authz tests bench
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -x -q

demo: install
	$(PY) -m ext_authz demo run

bench: install
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
