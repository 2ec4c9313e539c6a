# Entry points for developers and CI (.ci/run calls `make test`). `make help` lists them.
#
#   make install          .venv with the package and its dev tools (re-run when pyproject changes)
#   make services         Kafka, PostgreSQL and MongoDB on 127.0.0.1 (KAFKA_BROKERS=3 for a cluster)
#   make test             install + services + the whole pytest suite, cluster tests included
#   make lint             ruff check, ruff format --check, mypy
#   make demo             ingest one recorded hour of GitHub events, consume it, print top lists

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALL_STAMP := $(VENV)/.install-stamp
SERVICES := $(BIN)/python scripts/services.py
KAFKA_BROKERS ?= 1
PYTEST_ARGS ?=

DEMO_HOUR := 2015-01-01-12
SHARED_DATA ?= $(or $(GHSTREAM_SHARED_DATA),../shared/data)
DEMO_ARCHIVE_SHARED := $(SHARED_DATA)/gharchive/$(DEMO_HOUR).json.gz
DEMO_ARCHIVE_LOCAL := .local/data/$(DEMO_HOUR).json.gz
DEMO_ARCHIVE_URL := https://data.gharchive.org/$(DEMO_HOUR).json.gz

.PHONY: help install services services-down services-status test lint demo bench bench-quick clean chromium compose-cli

help:
	@echo "make install | services | services-down | services-status | test | lint | demo"
	@echo "     bench | bench-quick | clean"
	@echo "KAFKA_BROKERS=3 make services   runs a 3-broker Kafka cluster on 9092/9094/9096"
	@echo "PYTEST_ARGS='-m \"not cluster\"' make test   passes options to pytest"

install: $(INSTALL_STAMP)

# The stamp makes `install` a no-op until pyproject.toml changes.
$(INSTALL_STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
		echo "Creating $(VENV) with $(PYTHON)"; \
		$(PYTHON) -m venv $(VENV) || { \
			echo "error: '$(PYTHON) -m venv' failed; on Debian: apt-get install -y python3-venv" >&2; \
			exit 1; }; \
	fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

services: install
	$(SERVICES) up --kafka-brokers $(KAFKA_BROKERS)

services-down:
	@if [ -x $(BIN)/python ]; then $(SERVICES) down; \
	else echo "no $(VENV): nothing was started from this checkout"; fi

services-status: install
	$(SERVICES) status

# The dashboard's browser test drives Debian's chromium, headless. A machine where it cannot
# be installed (not root, no network) still runs the suite: that one test skips and says why.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "Installing Debian's chromium (for the dashboard's browser test)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
			|| echo "warning: could not install chromium: the browser test will be skipped" >&2; \
	fi

# `docker compose config` checks compose.yaml in the tests. Without a Docker engine or the
# compose plugin, Debian's docker-compose (v1) parses the same file.
compose-cli:
	@if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then \
		echo "Installing Debian's docker-compose (to check compose.yaml)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose; } \
			|| echo "warning: could not install docker-compose: the compose check will be skipped" >&2; \
	fi

test: install services chromium compose-cli
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Fails loudly at the first command that is missing or broken: a demo never fakes output.
demo: install services
	@set -euo pipefail; \
	archive="$(DEMO_ARCHIVE_SHARED)"; \
	if [ ! -f "$$archive" ]; then \
		archive="$(DEMO_ARCHIVE_LOCAL)"; \
		if [ ! -f "$$archive" ]; then \
			echo "$(DEMO_ARCHIVE_SHARED) not found (GHSTREAM_SHARED_DATA names the folder holding gharchive/): downloading $(DEMO_ARCHIVE_URL)"; \
			mkdir -p "$$(dirname "$$archive")"; \
			curl -fSL --retry 3 -o "$$archive.part" "$(DEMO_ARCHIVE_URL)"; \
			mv "$$archive.part" "$$archive"; \
		fi; \
	fi; \
	echo "+ ghstream ingest --archive $$archive"; \
	$(BIN)/ghstream ingest --archive "$$archive"; \
	echo "+ ghstream consume --until-idle 5"; \
	$(BIN)/ghstream consume --until-idle 5; \
	echo "+ ghstream top --contributors"; \
	$(BIN)/ghstream top --contributors; \
	echo "+ ghstream top --repos"; \
	$(BIN)/ghstream top --repos

bench: install services
	@test -f bench/run.py || { echo "error: bench/run.py is missing: the benchmark is not written yet" >&2; exit 1; }
	$(BIN)/python bench/run.py

bench-quick: install services
	@test -f bench/run.py || { echo "error: bench/run.py is missing: the benchmark is not written yet" >&2; exit 1; }
	$(BIN)/python bench/run.py --quick

# Stops what this checkout started first: its pid files live in .local.
clean: services-down
	rm -rf .local
