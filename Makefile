# Every target installs into .venv/ first when needed, so a fresh clone needs only python3 and the registry.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/bulkonboard demo

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/run.py

lint: install
	$(BIN)/ruff check bulkonboard tests bench
	$(BIN)/mypy bulkonboard

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache out
