# Two commands matter: `make run` (sandbox) and `make test`. Both set up what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench install clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/bridge sandbox $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check bridge tests $(wildcard bench)
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check bridge tests $(wildcard bench)

bench: $(STAMP)
	$(BIN)/python -m bench.control_latency

clean:
	rm -rf $(VENV) var
