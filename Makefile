# messages-gateway: `make run` starts the gateway, `make test` runs the whole suite.
# Both create .venv and install what they need on first use.

PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.test-installed-stamp
ARGS ?=
# `make run` is the one-command demo: with no OPENAI_API_KEY (and no settings file of your own,
# which may name keyless upstreams) it asks for the mock explicitly; `python -m gateway` itself
# never serves fake answers unless told to.
MOCK_FLAG := $(if $(or $(OPENAI_API_KEY),$(GATEWAY_CONFIG),$(findstring --config,$(ARGS))),,--mock)

.PHONY: venv test-venv run mock test lint typecheck unit e2e bench gate compare locust soak fleet clean

# What running needs, and nothing else.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

# The test tools on top (pytest, the anthropic SDK, hypothesis, ruff, mypy).
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(TEST_STAMP)

venv: $(STAMP)

test-venv: $(TEST_STAMP)

## Start the gateway (with --mock when OPENAI_API_KEY is unset: fake answers, said loudly).
run: venv
	$(BIN)/python -m gateway $(MOCK_FLAG) $(ARGS)

## Start only the mock upstream (an OpenAI-compatible fake) on 127.0.0.1:8090.
mock: venv
	$(BIN)/python -m gateway.mock_upstream $(ARGS)

lint: test-venv
	$(BIN)/ruff check gateway tests
	$(BIN)/ruff format --check gateway tests

typecheck: test-venv
	$(BIN)/mypy

unit: test-venv
	$(BIN)/python -m pytest

## Only the end-to-end run of the real Claude Code CLI (installed with npm into .cache/).
e2e: test-venv
	$(BIN)/python -m pytest tests/e2e

## The fleet test, a minute long: 3 gateways behind nginx, Redis shared, a SIGTERM and a Redis
## restart under load (the suite runs an 8-second version). FLEET_SECONDS to change it.
FLEET_SECONDS ?= 60
fleet: test-venv
	$(BIN)/python -m tests.fleet.harness --seconds $(FLEET_SECONDS)

## The performance gate (~45 s): gateway/direct throughput ratios against
## tests/perf/gate-baseline.json; fails on a drop beyond its margin. CI runs it after `test`.
gate: test-venv
	$(BIN)/python -m tests.perf.gate $(ARGS)

## The benchmark: mock vs gateway in one run; writes bench-results/latest.md.
bench: test-venv
	$(BIN)/python -m pip install -q -e '.[perf]'
	$(BIN)/python -m tests.perf.bench --out bench-results/latest.md $(ARGS)

## Before/after in one run (~4 min): this checkout against git revision BEFORE (a commit or a
## tag), with a bare aiohttp proxy as the floor; e.g. `make compare BEFORE=1d2fbb0`.
BEFORE ?=
compare: test-venv
	$(BIN)/python -m tests.perf.compare $(if $(BEFORE),--before $(BEFORE)) $(ARGS)

## Locust, headless for 5 s against a gateway on its mock upstream.
locust: test-venv
	bash tests/perf/locust_smoke.sh

## Soak: SOAK_MINUTES (default 2) of mixed streaming traffic with faults; bench-results/soak.md.
soak: test-venv
	$(BIN)/python -m tests.perf.soak --out bench-results/soak.md $(ARGS)

## Lint, type-check and run the whole test suite (the Claude Code e2e run included).
test: lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
