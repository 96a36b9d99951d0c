# Two commands from a fresh clone: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint bench bench-beat bench-pages clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

## Start PostgreSQL and Redis (embedded unless DATABASE_URL/REDIS_URL are set),
## migrate, seed the demo and run web + beat + worker in the foreground.
run: install
	$(BIN)/python -m config.devstack run

## The whole suite, lint and migration checks included.
test: install
	$(BIN)/python -m config.devstack exec -- $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Benchmarks run as production would (DEBUG off); a local key satisfies the settings' check.
BENCH_ENV := env DEBUG=false SECRET_KEY=$${SECRET_KEY:-local-benchmark-only}

bench: install
	$(BIN)/python -m config.devstack exec -- $(BENCH_ENV) $(BIN)/python manage.py bench_onboarding --tenants 20

## Celery beat on 1k/10k/100k tenant tasks; pass options with BENCH_ARGS="--schedules 1000".
bench-beat: install
	$(BIN)/python -m config.devstack exec -- $(BENCH_ENV) $(BIN)/python manage.py bench_beat $(BENCH_ARGS)

## Server time of the dashboard, run history and admin tenant list with 10k tenants,
## in a database of its own; pass options with BENCH_ARGS="--tenants 1000 --requests 50".
## With DEBUG off, pages link the hashed static files, so they are collected first.
bench-pages: install
	$(BIN)/python -m config.devstack exec -- $(BENCH_ENV) $(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python -m config.devstack exec -- $(BENCH_ENV) $(BIN)/python manage.py bench_pages $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .local
