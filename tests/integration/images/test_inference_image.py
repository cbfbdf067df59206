"""The inference image (CUDA torch from PyPI, ~6 GB): `vigil serve` on a model
mounted read-only, answering DetectAnomalies from the host.

`make images` builds it and runs this with VIGIL_INFERENCE_IMAGE set; `make
test` leaves it out (building it downloads and stores gigabytes), see README.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.images.conftest import RUN, Image, inspect
from tests.integration.inference.serve_process import ServeProcess
from vigil.v1 import anomaly_pb2, anomaly_pb2_grpc
from vigil_inference.server import SERVICE_NAME
from vigil_operator.core import manifests

pytestmark = pytest.mark.slow

IMAGE = os.environ.get("VIGIL_INFERENCE_IMAGE", "")
if not IMAGE:
    pytest.skip(
        "the inference image is built and run by `make images` (VIGIL_INFERENCE_IMAGE)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def inference_image(image_tools: None) -> Image:
    return inspect(IMAGE)


@pytest.fixture(scope="module")
def unit(inference_image: Image, trained_model_path: Path) -> Iterator[ServeProcess]:
    """`vigil serve` in the image, the artifact bind-mounted read-only."""
    name = "vigil-test-inference"
    server = ServeProcess(
        Path("/models/model.vigil"),
        vigil=[str(RUN), "inference"],
        env={
            "VIGIL_IMAGE": inference_image.tag,
            "VIGIL_MODEL": str(trained_model_path),
            "VIGIL_CONTAINER_NAME": name,
        },
    )
    try:
        yield server
    finally:
        server.stop()
        subprocess.run(["podman", "rm", "--force", "--time", "0", name], capture_output=True)


def test_image_runs_as_the_units_uid(inference_image: Image) -> None:
    config = inference_image.config
    assert config["User"] == f"{manifests.RUN_AS}:{manifests.RUN_AS}"
    assert config["Entrypoint"] == ["vigil"]
    assert config["Cmd"][:3] == ["serve", "--model", "/models/model.vigil"]


def test_serves_detect_anomalies_to_the_host(
    unit: ServeProcess, png_image: Callable[..., bytes]
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{unit.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = anomaly_pb2_grpc.AnomalyDetectionStub(channel)  # type: ignore[no-untyped-call]
        normal = stub.DetectAnomalies(anomaly_pb2.DetectAnomaliesRequest(image=png_image(7)))
        defect = stub.DetectAnomalies(
            anomaly_pb2.DetectAnomaliesRequest(
                image=png_image(7, defect="scratch"), content_type="image/png"
            ),
            timeout=60,
        )
    assert not normal.result.is_anomalous
    assert defect.result.is_anomalous
    assert defect.result.anomaly_score > defect.result.threshold > normal.result.anomaly_score
    assert unit.metric('vigil_inference_images_total{result="anomalous"}') == 1
    assert unit.metric('vigil_inference_images_total{result="normal"}') == 1
