# Every target installs into .venv/ first when needed, so a fresh clone needs only python3 and the registry.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_CUSTOMER := 3c9a8f12-5e6b-4c1d-9a7e-2f4b8d6c1e90

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The sample sheet has deliberate mistakes, so the run exits 1 (rows to fix): that is the demo working.
demo: install
	mkdir -p out
	$(BIN)/bulkonboard run samples/new_hires.xlsx --sandbox --customer $(DEMO_CUSTOMER) \
		--results out/demo-results.xlsx || test $$? -eq 1
	@echo "The results workbook is out/demo-results.xlsx: the new user IDs, and a reason for every row that failed."

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/run.py

# ruff (with its complexity rule), mypy over the code and the tests, the import rules of docs/ARCHITECTURE.md
# (pyproject.toml's contracts), and the CLI's start loading no HTTP stack.
lint: install
	$(BIN)/ruff check bulkonboard tests bench
	$(BIN)/mypy bulkonboard tests
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_import_rules.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache out
