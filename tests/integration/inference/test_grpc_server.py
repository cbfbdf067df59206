"""The unit over real gRPC (port 0) with the real trained model.

Images are generated here: synthetic textures for scoring, PIL-made or
hand-forged bytes for the bad-input cases.
"""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import Callable

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from tests.damaged_images import DAMAGE
from tests.integration.inference.conftest import UnitFactory
from vigil.v1 import anomaly_pb2
from vigil_inference import synthetic
from vigil_inference.images import MAX_IMAGE_BYTES
from vigil_inference.model import AnomalyModel
from vigil_inference.server import SERVICE_NAME

pytestmark = pytest.mark.asyncio(loop_scope="session")

Request = anomaly_pb2.DetectAnomaliesRequest


def encode(pixels: np.ndarray, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **kw)
    return buf.getvalue()


def forged_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (its pixels are never read)."""
    data = bytearray(encode(np.zeros((64, 64), np.uint8)))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


async def eventually(cond: Callable[[], bool], limit_s: float = 30.0) -> None:
    async with asyncio.timeout(limit_s):
        while True:
            if cond():
                return
            await asyncio.sleep(0.001)


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def test_scores_normal_and_defective_images(
    serve: UnitFactory, model: AnomalyModel, png_image: Callable[..., bytes]
) -> None:
    async with serve(max_batch_size=4) as unit:
        normal = await unit.stub.DetectAnomalies(Request(image=png_image(7)))
        defect = await unit.stub.DetectAnomalies(
            Request(image=png_image(7, defect="scratch"), content_type="image/png")
        )
        for r in (normal.result, defect.result):
            assert r.model_version == model.info.model_version
            assert r.threshold == pytest.approx(model.info.threshold, rel=1e-6)
            assert 0.5 <= r.confidence <= 1.0
            assert r.anomaly_mask == b""  # not asked for
        assert not normal.result.is_anomalous
        assert normal.result.anomaly_score < normal.result.threshold
        assert defect.result.is_anomalous
        assert defect.result.anomaly_score > defect.result.threshold
        [anomaly] = defect.result.anomalies
        assert anomaly.name == "anomaly"
        assert anomaly.pixel_anomaly.color.startswith("#")
        assert 0.0 < anomaly.pixel_anomaly.total_percentage_area < 1.0

        assert unit.sample("vigil_inference_requests_total", {"code": "OK"}) == 2
        assert unit.sample("vigil_inference_images_total", {"result": "normal"}) == 1
        assert unit.sample("vigil_inference_images_total", {"result": "anomalous"}) == 1
        assert unit.sample("vigil_inference_images_total", {"result": "invalid"}) == 0
        assert unit.sample("vigil_inference_request_duration_seconds_count") == 2
        assert unit.sample("vigil_inference_batch_size_count") == 2
        assert unit.sample("vigil_inference_batch_size_sum") == 2
        assert unit.sample("vigil_inference_busy_seconds_total") > 0
        assert unit.sample("vigil_inference_inflight_requests") == 0


async def test_concurrent_requests_are_batched(serve: UnitFactory) -> None:
    images = [encode(synthetic.normal(i).image) for i in range(12)]
    async with serve(max_batch_size=4, max_batch_delay_s=0.05) as unit:
        busy_before = unit.sample("vigil_inference_busy_seconds_total")
        results = await asyncio.gather(
            *(unit.stub.DetectAnomalies(Request(image=img)) for img in images)
        )
        assert len(results) == 12
        assert unit.sample("vigil_inference_batch_size_sum") == 12
        batches = unit.sample("vigil_inference_batch_size_count")
        assert 3 <= batches < 12  # grouped, never above the maximum of 4
        assert unit.sample("vigil_inference_batch_size_bucket", {"le": "4.0"}) == batches
        assert unit.sample("vigil_inference_busy_seconds_total") > busy_before


@pytest.mark.parametrize(
    ("width", "height", "fmt"), [(300, 200, "PNG"), (97, 1200, "JPEG"), (224, 224, "PNG")]
)
async def test_mask_comes_back_at_request_size(
    serve: UnitFactory, width: int, height: int, fmt: str
) -> None:
    sample = synthetic.defective(3, 256, "blotch")
    pixels = np.asarray(Image.fromarray(sample.image).resize((width, height)))
    async with serve() as unit:
        reply = await unit.stub.DetectAnomalies(
            Request(image=encode(pixels, fmt), return_mask=True)
        )
    with Image.open(io.BytesIO(reply.result.anomaly_mask)) as mask:
        assert mask.format == "PNG"
        assert mask.size == (width, height)
        marked = np.asarray(mask.convert("RGB")).any(axis=2).mean()
    area = (
        reply.result.anomalies[0].pixel_anomaly.total_percentage_area
        if (reply.result.anomalies)
        else 0.0
    )
    assert marked == pytest.approx(area, abs=0.05)


def _truncated(fmt: str) -> bytes:
    data = encode(noise(256, 256), fmt)
    return data[: len(data) // 2]


BAD_INPUTS = {
    "empty": (b"", "", "image is empty"),
    "not an image": (b"hello, this is text" * 10, "", "not a PNG or JPEG"),
    "unsupported type": (encode(noise(64, 64)), "image/gif", "unsupported content type"),
    "mislabelled": (encode(noise(64, 64)), "image/jpeg", "does not match"),
    "over 8 MB": (
        encode(noise(64, 64)).ljust(MAX_IMAGE_BYTES + 1, b"\0"),
        "image/png",
        "over the limit",
    ),
    "side too small": (encode(noise(40, 100)), "", "each side must be 64 to 4096"),
    "side too large": (encode(np.zeros((64, 4097), np.uint8)), "", "each side must be 64 to 4096"),
    "decompression bomb": (forged_png(30_000, 30_000), "", "decompression bomb"),
    "corrupt header": (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "", "cannot read the PNG header"),
    "truncated JPEG": (_truncated("JPEG"), "image/jpeg", "truncated or corrupt"),
    "truncated PNG": (_truncated("PNG"), "", "truncated or corrupt"),
    # A sound header over incomplete or corrupt pixel data (tests/damaged_images.py).
    **{name: (make(), "", words) for name, (make, words) in DAMAGE.items()},
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
async def test_bad_input_is_invalid_argument_and_unit_keeps_serving(
    serve: UnitFactory, case: str, png_image: Callable[..., bytes]
) -> None:
    data, content_type, expected = BAD_INPUTS[case]
    async with serve() as unit:
        err = await rpc_error(
            unit.stub.DetectAnomalies(Request(image=data, content_type=content_type))
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert expected in (err.details() or "")
        assert unit.sample("vigil_inference_requests_total", {"code": "INVALID_ARGUMENT"}) == 1
        assert unit.sample("vigil_inference_images_total", {"result": "invalid"}) == 1
        assert unit.sample("vigil_inference_inflight_requests") == 0
        ok = await unit.stub.DetectAnomalies(Request(image=png_image(2)))
        assert ok.result.model_version
        assert unit.sample("vigil_inference_requests_total", {"code": "OK"}) == 1
        assert unit.server.service.batcher.admitted == 0


async def test_overload_is_resource_exhausted_while_admitted_succeed(
    serve: UnitFactory,
) -> None:
    # 40 arrivals at once; each takes milliseconds to decode and score.
    images = [encode(noise(512, 512, seed)) for seed in range(8)]
    async with serve(max_queue=3, max_batch_size=2) as unit:
        calls = [unit.stub.DetectAnomalies(Request(image=images[i % 8])) for i in range(40)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        ok = [o for o in outcomes if isinstance(o, anomaly_pb2.DetectAnomaliesResponse)]
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert len(ok) + len(refused) == 40
        assert len(ok) >= 3
        assert refused, "40 concurrent requests against 3 slots should overflow"
        for err in refused:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "overloaded" in (err.details() or "")
        assert all(r.result.model_version for r in ok)
        counts = unit.sample("vigil_inference_requests_total", {"code": "RESOURCE_EXHAUSTED"})
        assert counts == len(refused)
        assert unit.sample("vigil_inference_requests_total", {"code": "OK"}) == len(ok)
        images_scored = unit.sample(
            "vigil_inference_images_total", {"result": "normal"}
        ) + unit.sample("vigil_inference_images_total", {"result": "anomalous"})
        assert images_scored == len(ok)
        assert unit.server.service.batcher.admitted == 0
        # Once the burst is over, the unit serves again.
        await unit.stub.DetectAnomalies(Request(image=images[0]))


async def test_describe_model_reports_the_artifact(serve: UnitFactory, model: AnomalyModel) -> None:
    info = model.info
    async with serve(max_batch_size=8) as unit:
        d = (await unit.stub.DescribeModel(anomaly_pb2.DescribeModelRequest())).description
    assert d.model_version == info.model_version
    assert d.backbone == info.backbone
    assert tuple(d.feature_layers) == info.feature_layers
    assert (d.input_height, d.input_width) == info.input_size
    assert d.threshold == pytest.approx(info.threshold, rel=1e-6)
    assert d.memory_bank_size == info.memory_bank_size
    assert d.artifact_sha256 == info.artifact_sha256
    assert len(d.artifact_sha256) == 64
    assert d.created_at == info.created_at
    assert d.performance.f1_score == pytest.approx(info.f1)
    assert d.performance.auroc == pytest.approx(info.auroc)
    assert d.performance.precision == pytest.approx(info.precision)
    assert d.performance.recall == pytest.approx(info.recall)
    assert d.evaluation.training_images == info.training_images > 0
    assert d.evaluation.normal_test_images == info.normal_test_images
    assert d.evaluation.anomalous_test_images == info.anomalous_test_images
    assert d.evaluation.threshold_independent == info.threshold_independent
    assert d.device == "cpu"
    assert d.runtime == model.runtime
    assert d.max_batch_size == 8


async def test_health_and_reflection(serve: UnitFactory) -> None:
    async with serve() as unit:
        health = health_pb2_grpc.HealthStub(unit.channel)
        for service in ("", SERVICE_NAME):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        err = await rpc_error(health.Check(health_pb2.HealthCheckRequest(service="nope")))
        assert err.code() == grpc.StatusCode.NOT_FOUND

        refl = reflection_pb2_grpc.ServerReflectionStub(unit.channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names = set()
        async for reply in refl.ServerReflectionInfo(iter([request])):
            names |= {s.name for s in reply.list_services_response.service}
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


async def test_shutdown_flips_health_and_drains_in_flight(
    serve: UnitFactory, png_image: Callable[..., bytes]
) -> None:
    n = 16
    images = [encode(noise(512, 512, seed)) for seed in range(n)]
    async with serve(max_batch_size=1, max_queue=64) as unit:
        health = health_pb2_grpc.HealthStub(unit.channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        in_flight = [
            asyncio.ensure_future(unit.stub.DetectAnomalies(Request(image=img))) for img in images
        ]

        def handling() -> float:
            return unit.sample("vigil_inference_inflight_requests")

        def received() -> float:  # every request has reached its handler
            return handling() + unit.sample("vigil_inference_requests_total", {"code": "OK"})

        await eventually(lambda: received() == n)
        assert handling() >= 2, "shutdown should begin with requests still being handled"
        stopping = asyncio.ensure_future(unit.server.stop(grace=30))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()

        replies = await asyncio.gather(*in_flight)
        assert all(r.result.model_version for r in replies)
        await asyncio.wait_for(stopping, 30)
        assert unit.sample("vigil_inference_requests_total", {"code": "OK"}) == n
        assert handling() == 0

        err = await rpc_error(unit.stub.DetectAnomalies(Request(image=png_image(1)), timeout=5))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
