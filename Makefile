# The two commands: `make run` and `make test`. Everything they need, they install.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
FLASK   := $(VENV)/bin/flask
HOST    ?= 127.0.0.1
PORT    ?= 5000
WORKERS ?= 2
# pytest-xdist workers; each runs the suite's share on SQLite and on its own PostgreSQL.
TEST_WORKERS ?= 2

.PHONY: run test bench install install-dev system-deps system-deps-test system-deps-bench translations demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[dev]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

system-deps:
	bash scripts/system-deps.sh run

system-deps-test:
	bash scripts/system-deps.sh test

system-deps-bench:
	bash scripts/system-deps.sh bench

translations: $(PY)
	$(VENV)/bin/pybabel compile -f -d saas/translations

## make run: install, migrate, load the demo tenants, serve on http://127.0.0.1:5000
run: system-deps install translations
	$(FLASK) --app wsgi db upgrade
	$(FLASK) --app wsgi demo load
	$(VENV)/bin/gunicorn --bind $(HOST):$(PORT) --workers $(WORKERS) --access-logfile - wsgi:app

## make test: install the dev dependencies and run the whole suite (SQLite and PostgreSQL)
test: system-deps-test install-dev translations
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup

## make bench: the long benchmarks (never part of make test); results in bench/RESULTS.md.
## BENCH_ARGS="--size full" for 100 tenants / 1M customers / 10M transactions.
bench: system-deps-bench install-dev translations
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) instance tests/e2e/artifacts
