# One file for every routine task. `make demo` and `make test` do all the set-up they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REQ_STAMP := $(VENV)/.installed-$(shell sha256sum requirements.txt | cut -c1-16)
NPM_STAMP := node_modules/.installed-$(shell sha256sum package-lock.json | cut -c1-16)

TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) VAR_DIR=$(CURDIR)/var/test
PYTEST_ARGS ?=

STARTING_MODEL := mlcore/model/weights/cifar10-scene-resnet20

.PHONY: help setup demo test test-fast test-main test-mxnet bench bench-gpu lint format setup-mxnet system pretrain

help:
	@echo "make demo    set up, then run the whole demo (Mona Lisa collage, cars and boats) and serve the app"
	@echo "make test    set up, then lint and run the full test suite against PostgreSQL, Redis, Spark, Chromium"
	@echo "make test-fast  the tests that need no worker process, Spark or browser (core + app tiers)"
	@echo "make setup   idempotent install: .venv, npm packages, system checks, migrations"
	@echo "make bench   benchmarks (CPU part), printing side-by-side ratios"
	@echo "make bench-gpu  the GPU part of the benchmarks (on a CUDA machine)"
	@echo "make lint    ruff check + format check"
	@echo "make pretrain  remake the shipped starting model and its card (long: ~1 h CPU, minutes on a GPU)"

$(REQ_STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

$(NPM_STAMP): package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

system:
	@scripts/check_system.sh $(SYSTEM_ARGS)

setup: $(REQ_STAMP) $(NPM_STAMP) system
	@scripts/ensure_services.sh redis
	@$(PY) manage.py migrate --noinput -v 0
	@echo "setup: ready"

demo: setup
	$(PY) manage.py demo $(DEMO_ARGS)

pretrain: setup
	$(PY) -m mlcore pretrain --out $(STARTING_MODEL) $(PRETRAIN_ARGS)

lint: $(REQ_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(REQ_STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	@$(MAKE) --no-print-directory test-main test-mxnet

test-main: SYSTEM_ARGS = --browser
test-main: $(REQ_STAMP) $(NPM_STAMP) system
	@REDIS_URL=$(TEST_REDIS_URL) scripts/ensure_services.sh redis postgres
	$(TEST_ENV) $(PY) -m pytest tests --ignore=tests/mxnet --durations=25 $(PYTEST_ARGS)

# The fast lane: tests/core (mlcore alone) and tests/app (Django on PostgreSQL + Redis), no slow ones.
test-fast: $(REQ_STAMP)
	@REDIS_URL=$(TEST_REDIS_URL) scripts/ensure_services.sh redis postgres
	$(TEST_ENV) $(PY) -m pytest tests/core tests/app -m "not slow" $(PYTEST_ARGS)

setup-mxnet:
	@scripts/setup_mxnet.sh

test-mxnet: setup-mxnet
	MXNET_TESTS_REQUIRED=1 $(VENV)-mxnet/bin/python -m pytest -p no:django -p no:cacheprovider --confcutdir=tests/mxnet tests/mxnet $(PYTEST_ARGS)

# The MXNet row needs .venv-mxnet: set it up like `make test` does; if that cannot be done here the
# row says why it was skipped (one line), the other rows still run.
bench: setup
	@scripts/setup_mxnet.sh || echo "bench: .venv-mxnet could not be set up (above); its row will be skipped"
	$(PY) bench/run_all.py

bench-gpu: setup
	$(PY) bench/run_all.py --gpu
