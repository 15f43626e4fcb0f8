# coldstart: every target installs what it needs into .venv (torch pinned by constraints.txt).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip install -q -c constraints.txt
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo test lint typecheck pytest bench eval clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e ".[cpu,clip,dev]"
	# obp (off-policy cross-checks in tests) pins ancient deps and declares Python <3.11: install it bare,
	# with seaborn, which obp.ope imports.
	$(PIP) seaborn
	$(BIN)/pip install -q --no-deps --ignore-requires-python obp==0.5.7
	touch $(STAMP)

install: $(STAMP) ## create .venv and install coldstart with its dev tools (CPU torch)

demo: $(STAMP) ## main job on the embedded default: broker + encoder worker + API, stream the MovieLens catalog
	$(BIN)/coldstart demo

test: $(STAMP) lint typecheck pytest ## the full check CI runs: ruff, mypy --strict, pytest

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy --strict
	$(BIN)/mypy

pytest: $(STAMP) ## pytest (unit + integration against the embedded broker, SQLite, Redis, PostgreSQL)
	bash tests/analytics/ensure_chromium.sh
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP) ## run every benchmark (each prints one JSON object)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

eval: $(STAMP) ## cold-start evaluation of the encoder on MovieLens (docs/results/cold_start.*)
	$(BIN)/coldstart models evaluate --catalog .coldstart/catalogs/movielens

clean: ## remove runtime state (not the venv)
	rm -rf .coldstart feature_repo/data
