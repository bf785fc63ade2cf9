# ai-bot: the commands a newcomer needs. `make run` runs the product, `make test` runs the tests.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

.PHONY: install run test test-fast lint format bench deploy-check clean

install:  ## install uv, the workspace (uv.lock) and the test tools
	@scripts/bootstrap.sh

run: install  ## every service on this host: embedded broker, fakes unless configured; chat in the terminal
	$(UV) run ai-bot up --chat

test: install  ## the whole suite: unit, contract, integration (real broker), end-to-end (processes), deploy checks
	$(UV) run pytest

test-fast: install  ## unit and contract tests only (seconds)
	$(UV) run pytest tests/unit tests/contract

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check libs services

format: install
	$(UV) run ruff check --fix .
	$(UV) run ruff format libs services

bench: install  ## throughput and latency figures (see docs/benchmarks.md)
	$(UV) run python benchmarks/pipeline_bench.py
	@if [ -f benchmarks/asr_bench.py ]; then $(UV) run python benchmarks/asr_bench.py; fi

deploy-check: install  ## helm lint/template + schema validation, hadolint, compose validation
	$(UV) run pytest tests/deploy

clean:
	rm -rf .local .pytest_cache .ruff_cache
