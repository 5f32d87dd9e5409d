# messages-gateway: `make run` starts the gateway, `make test` runs the whole suite.
# Both create .venv and install what they need on first use.

PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: venv run mock test lint typecheck unit e2e bench locust soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## Start the gateway (fake answers from the built-in mock upstream when OPENAI_API_KEY is unset).
run: venv
	$(BIN)/python -m gateway $(ARGS)

## Start only the mock upstream (an OpenAI-compatible fake) on 127.0.0.1:8090.
mock: venv
	$(BIN)/python -m gateway.mock_upstream $(ARGS)

lint: venv
	$(BIN)/ruff check gateway tests
	$(BIN)/ruff format --check gateway tests

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/python -m pytest

## Only the end-to-end run of the real Claude Code CLI (installed with npm into .cache/).
e2e: venv
	$(BIN)/python -m pytest tests/e2e

## The benchmark: mock vs gateway in one run; writes bench-results/latest.md.
bench: venv
	$(BIN)/python -m tests.perf.bench --out bench-results/latest.md $(ARGS)

## Locust, headless for 5 s against a gateway on its mock upstream.
locust: venv
	bash tests/perf/locust_smoke.sh

## Soak: SOAK_MINUTES (default 2) of mixed streaming traffic with faults; bench-results/soak.md.
soak: venv
	$(BIN)/python -m tests.perf.soak --out bench-results/soak.md $(ARGS)

## Lint, type-check and run the whole test suite (the Claude Code e2e run included).
test: lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
