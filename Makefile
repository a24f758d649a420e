# One entry point: `make run` serves on the embedded defaults, `make test` checks everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format clean bench-delivery

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Development mode: SQLite file, codes printed on the console. Override any variable on the
# command line or in .env (see .env.example).
run: $(STAMP)
	DEVELOPMENT_MODE=$${DEVELOPMENT_MODE:-true} $(BIN)/taxease-auth db upgrade
	DEVELOPMENT_MODE=$${DEVELOPMENT_MODE:-true} $(BIN)/taxease-auth serve

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

format: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

# Not a test: 2,000 queued mails through SES (moto behind the fault proxy: 100 ms, 50/s), then
# 100 registrations at 10/s timed to SES. Figures in bench/results/delivery-*.json (~1.5 min).
bench-delivery: $(STAMP)
	$(BIN)/python -m bench.delivery

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
