# One entry point: `make run` serves on the embedded defaults, `make test` checks everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Some images set PYTHONDONTWRITEBYTECODE: every process (and every server a test starts) would
# compile the package again, and pytest rewrite every test module again, at each start.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run test lint format clean bench bench-delivery bench-feedback messages

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
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# The whole suite once per database: SQLite (a migrated file per test) and PostgreSQL (a
# private server the suite starts from its binaries; tests/conftest.py), the two runs side by
# side (one a core), each writing tests/artifacts/pytest-<database>.log, printed when both are
# done. Then the tests marked `timing` (they assert a duration or a rate), one database after
# the other on an otherwise idle machine. Modules marked database_independent (no test
# reaches the database: rendering, config, parsing...) run in the SQLite run only;
# tests/conftest.py states the rule. Each run prints its time; every run runs even when one
# fails. `make test DATABASES=postgresql` runs one only; PYTEST_ARGS goes to pytest
# (`make test PYTEST_ARGS="-x -k verify"`).
DATABASES ?= sqlite postgresql
LOGS := tests/artifacts

test: lint
	@mkdir -p $(LOGS); \
	echo "=== pytest, not timing: $(DATABASES) side by side (logs: $(LOGS)/pytest-*.log) ==="; \
	for database in $(DATABASES); do \
		( start=$$(date +%s); \
		  $(BIN)/pytest --database=$$database -m "not timing" $(PYTEST_ARGS) \
			> $(LOGS)/pytest-$$database.log 2>&1; code=$$?; \
		  if [ $$code -eq 0 ] || [ $$code -eq 5 ]; then result=passed; else result=FAILED; fi; \
		  echo "$$database: $$result in $$(( $$(date +%s) - start )) s" \
			> $(LOGS)/pytest-$$database.result ) & \
	done; \
	wait; \
	status=0; summary=""; \
	for database in $(DATABASES); do \
		echo "=== pytest --database=$$database -m 'not timing' ==="; \
		cat $(LOGS)/pytest-$$database.log; \
		result=$$(cat $(LOGS)/pytest-$$database.result); \
		case "$$result" in *FAILED*) status=1;; esac; \
		summary="$$summary  $$result\n"; \
	done; \
	for database in $(DATABASES); do \
		echo "=== pytest --database=$$database -m timing ==="; \
		start=$$(date +%s); \
		$(BIN)/pytest --database=$$database -m timing $(PYTEST_ARGS); code=$$?; \
		if [ $$code -eq 0 ] || [ $$code -eq 5 ]; then result=passed; \
		else result=FAILED; status=1; fi; \
		summary="$$summary  $$database timing: $$result in $$(( $$(date +%s) - start )) s\n"; \
	done; \
	printf "=== make test ===\n$$summary"; \
	exit $$status

# Mail text catalogues: extract every message into locales/messages.pot (babel.cfg says
# where from), then bring each locale's .po up to date with it (new messages empty, changed
# ones fuzzy: translate them, and the catalogue test passes again). The service reads the .po
# files at start-up: nothing to compile.
LOCALES_DIR := src/taxease_auth/locales
LOCALES := en fr_CA
messages: $(STAMP)
	$(BIN)/pybabel extract --mapping-file=babel.cfg --keywords=gettext_noop \
		--add-location=file --sort-by-file --no-wrap --project=taxease-auth \
		--copyright-holder=TaxEase --output-file=$(LOCALES_DIR)/messages.pot .
	@for locale in $(LOCALES); do \
		if [ -f $(LOCALES_DIR)/$$locale/LC_MESSAGES/messages.po ]; then \
			$(BIN)/pybabel update --input-file=$(LOCALES_DIR)/messages.pot \
				--output-dir=$(LOCALES_DIR) --locale=$$locale --no-wrap --ignore-obsolete; \
		else \
			$(BIN)/pybabel init --input-file=$(LOCALES_DIR)/messages.pot \
				--output-dir=$(LOCALES_DIR) --locale=$$locale --no-wrap; \
		fi; \
	done

format: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

# Not a test: each hot path against a bare FastAPI app (request routes) or the hasher's own
# ceiling (login, register), loaded by wrk, ratios taken in one run; prints the table with
# PASS/FAIL per target and keeps it in bench/results/http-*.json (~4 min). Exit 1: a target
# missed; 2: the run failed. BENCH_ARGS goes to bench/http.py, e.g. "--database postgresql".
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || apt-get install -y wrk || \
		{ apt-get update && apt-get install -y wrk; }
	$(BIN)/python -m bench.http $(BENCH_ARGS)

# Not a test: 2,000 queued mails through SES (moto behind the fault proxy: 100 ms, 50/s), then
# 100 registrations at 10/s timed to SES. Figures in bench/results/delivery-*.json (~1.5 min).
bench-delivery: $(STAMP)
	$(BIN)/python -m bench.delivery

# Not a test: 10,000 SES feedback events through moto's SQS into one delivery worker that
# also sends paced codes, on SQLite then PostgreSQL; events/s, CPU per event, and the
# consumer's own ceiling without SQS. Figures in bench/results/feedback-*.json (~8 min).
bench-feedback: $(STAMP)
	$(BIN)/python -m bench.feedback $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
