"""`vigil serve` and `vigil detect` as real processes, as scripts use them."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from tests.damaged_images import DAMAGE
from tests.integration.inference.serve_process import VIGIL, ServeProcess
from vigil_inference.artifact import ArtifactError, load_artifact
from vigil_inference.server import SERVICE_NAME

pytestmark = pytest.mark.slow

RESULT_FIELDS = {
    "is_anomalous",
    "confidence",
    "anomaly_score",
    "threshold",
    "anomalies",
    "anomaly_mask",
    "model_version",
}


@pytest.fixture(scope="module")
def unit(trained_model_path: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(trained_model_path)
    try:
        yield server
    finally:
        server.stop()


def detect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VIGIL, "detect", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_serve_reports_serving_and_metrics(unit: ServeProcess) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{unit.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert unit.metric("vigil_inference_inflight_requests") == 0


def test_detect_prints_json_lines_and_writes_masks(
    unit: ServeProcess, tmp_path: Path, png_image: Callable[..., bytes]
) -> None:
    normal = tmp_path / "normal.png"
    normal.write_bytes(png_image(11))
    defect = tmp_path / "defect.jpg"
    Image.open(io.BytesIO(png_image(12, defect="patch"))).resize((320, 240)).save(defect, "JPEG")
    masks = tmp_path / "masks"
    ok_before = unit.metric('vigil_inference_requests_total{code="OK"}')

    run = detect(
        "--target", f"127.0.0.1:{unit.port}", "--mask-dir", str(masks), str(normal), str(defect)
    )

    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    out = [json.loads(line) for line in run.stdout.splitlines()]
    assert [o["image"] for o in out] == [str(normal), str(defect)]
    for o in out:
        assert o.keys() >= RESULT_FIELDS
        assert isinstance(o["anomaly_score"], float)
    assert out[0]["is_anomalous"] is False
    assert out[1]["is_anomalous"] is True
    assert out[1]["anomalies"][0]["pixel_anomaly"]["total_percentage_area"] > 0
    assert out[0]["anomaly_mask"] == str(masks / "normal.mask.png")
    assert out[1]["anomaly_mask"] == str(masks / "defect.mask.png")
    with Image.open(masks / "normal.mask.png") as m:
        assert m.size == (256, 256)
    with Image.open(masks / "defect.mask.png") as m:
        assert m.size == (320, 240)
    assert unit.metric('vigil_inference_requests_total{code="OK"}') == ok_before + 2


def test_same_named_images_get_separate_masks(
    unit: ServeProcess, tmp_path: Path, png_image: Callable[..., bytes]
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"
    first.write_bytes(png_image(14))
    second.write_bytes(png_image(15, defect="blotch"))
    masks = tmp_path / "masks"
    run = detect(
        "--target", f"127.0.0.1:{unit.port}", "--mask-dir", str(masks), str(first), str(second)
    )
    assert run.returncode == 0, run.stderr
    paths = [json.loads(line)["anomaly_mask"] for line in run.stdout.splitlines()]
    assert paths == [str(masks / "x.mask.png"), str(masks / "x-2.mask.png")]
    assert all(Path(p).stat().st_size > 0 for p in paths)


def test_detect_without_mask_dir_has_no_blob(
    unit: ServeProcess, tmp_path: Path, png_image: Callable[..., bytes]
) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(png_image(13))
    run = detect("--target", f"127.0.0.1:{unit.port}", str(image))
    assert run.returncode == 0, run.stderr
    [line] = run.stdout.splitlines()
    result = json.loads(line)
    assert result["image"] == str(image)
    assert result["anomaly_mask"] == ""
    assert result["is_anomalous"] is False
    assert result["anomalies"] == []


def test_detect_reports_each_failure_and_continues(
    unit: ServeProcess, tmp_path: Path, png_image: Callable[..., bytes]
) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    missing = tmp_path / "missing.png"
    good = tmp_path / "good.png"
    good.write_bytes(png_image(14))
    invalid_before = unit.metric('vigil_inference_images_total{result="invalid"}')

    run = detect("--target", f"127.0.0.1:{unit.port}", str(text), str(missing), str(good))

    assert run.returncode == 1
    [line] = run.stdout.splitlines()
    assert json.loads(line)["image"] == str(good)
    errors = run.stderr.splitlines()
    assert len(errors) == 2
    assert str(text) in errors[0]
    assert "INVALID_ARGUMENT" in errors[0]
    assert "not a PNG or JPEG" in errors[0]
    assert str(missing) in errors[1]
    assert "No such file" in errors[1]
    assert unit.metric('vigil_inference_images_total{result="invalid"}') == invalid_before + 1


def test_detect_names_each_damaged_image_and_scores_the_whole_one(
    unit: ServeProcess, tmp_path: Path, png_image: Callable[..., bytes]
) -> None:
    damaged = []
    for i, (make, words) in enumerate(DAMAGE.values()):
        data = make()
        suffix = "png" if data.startswith(b"\x89PNG") else "jpg"
        path = tmp_path / f"damaged-{i}.{suffix}"
        path.write_bytes(data)
        damaged.append((path, words))
    good = tmp_path / "good.png"
    good.write_bytes(png_image(16))
    invalid_before = unit.metric('vigil_inference_images_total{result="invalid"}')

    run = detect("--target", f"127.0.0.1:{unit.port}", *(str(p) for p, _ in damaged), str(good))

    assert run.returncode == 1
    [line] = run.stdout.splitlines()
    assert json.loads(line)["image"] == str(good)
    errors = run.stderr.splitlines()
    assert len(errors) == len(damaged)
    for error, (path, words) in zip(errors, damaged, strict=True):
        assert error.startswith(f"vigil detect: {path}: INVALID_ARGUMENT")
        assert "truncated or corrupt" in error
        assert words in error
    invalid = unit.metric('vigil_inference_images_total{result="invalid"}')
    assert invalid == invalid_before + len(damaged)


def test_detect_against_no_server_fails_with_status(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    run = detect("--target", "127.0.0.1:1", "--timeout", "5", str(image))
    assert run.returncode == 1
    assert run.stdout == ""
    assert f"{image}: UNAVAILABLE" in run.stderr


def test_serve_exits_zero_on_sigterm(unit: ServeProcess) -> None:
    unit.proc.send_signal(signal.SIGTERM)
    assert unit.proc.wait(timeout=30) == 0
    time.sleep(0.1)  # let the reader thread collect the last lines
    assert "shutting down" in unit.stderr
    assert "Traceback" not in unit.stderr


def test_serve_refuses_a_bad_artifact(tmp_path: Path) -> None:
    bad = tmp_path / "bad.vigil"
    bad.write_bytes(b"\0" * 100)
    with pytest.raises(ArtifactError) as expected:
        load_artifact(bad)
    run = subprocess.run(
        [*VIGIL, "serve", "--model", str(bad), "--port", "0", "--metrics-port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1
    assert run.stderr.strip() == f"vigil serve: error: {expected.value}"
