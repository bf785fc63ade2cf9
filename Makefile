# ai-bot: the commands a newcomer needs. `make run` runs the product, `make test` runs the tests.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

.PHONY: install run test test-fast chaos lint format bench soak deploy-check images clean

install:  ## install uv, the workspace (uv.lock) and the test tools
	@scripts/bootstrap.sh

run: install  ## every service on this host: embedded broker, fakes unless configured; chat in the terminal
	$(UV) run ai-bot up --chat

test: install  ## the whole suite: unit, contract, integration (real broker), end-to-end (processes), deploy checks
	$(UV) run pytest

test-fast: install  ## unit and contract tests only (seconds)
	$(UV) run pytest tests/unit tests/contract

chaos: install  ## kill services and brokers under load on Apache Kafka; prints lost/duplicated/time to recover (minutes)
	AIBOT_TEST_READY_TIMEOUT_S=$${AIBOT_TEST_READY_TIMEOUT_S:-400} $(UV) run pytest tests/chaos -m chaos -s

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check libs services

format: install
	$(UV) run ruff check --fix .
	$(UV) run ruff format libs services

bench: install  ## every performance figure beside its goal, ai-bot beside a no-broker bot (docs/benchmarks.md)
	$(UV) run python benchmarks/pipeline_bench.py --compare
	$(UV) run python benchmarks/streaming_bench.py
	@if [ -f benchmarks/asr_bench.py ]; then $(UV) run python benchmarks/asr_bench.py; fi

SOAK_MESSAGES ?= 100000
SOAK_RATE ?= 100
soak: install  ## a steady stream of messages; RSS per service over time must stop growing
	$(UV) run python benchmarks/pipeline_bench.py --soak $(SOAK_MESSAGES) --rate $(SOAK_RATE)

deploy-check: install  ## helm lint/template + schema validation, hadolint, compose validation
	$(UV) run pytest tests/deploy

# Image names: [REGISTRY/]ai-bot-<service>:TAG, and :TAG-cuda for the CUDA variant (what the chart
# pulls: make images REGISTRY=ghcr.io/you TAG=0.1.0). The default matches docker-compose.yml.
REGISTRY ?=
TAG ?= local
IMAGE = $(if $(REGISTRY),$(REGISTRY)/)ai-bot-$$svc:$(TAG)

images: install  ## every service's image from docker/Dockerfile (the catalog's services), plus the CUDA variants
	@set -e; for svc in $$($(UV) run python -m aibot_common.catalog names); do \
	  docker build -f docker/Dockerfile --build-arg SERVICE=$$svc -t $(IMAGE) .; \
	done; \
	for svc in $$($(UV) run python -m aibot_common.catalog names --gpu); do \
	  docker build -f docker/Dockerfile --build-arg SERVICE=$$svc --build-arg VARIANT=cuda -t $(IMAGE)-cuda .; \
	done

clean:
	rm -rf .local .pytest_cache .ruff_cache
