"""A real unit per test: the trained artifact served by grpc.aio on port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from vigil.v1 import anomaly_pb2_grpc
from vigil_inference.metrics import InferenceMetrics
from vigil_inference.model import AnomalyModel
from vigil_inference.options import ServingConfig
from vigil_inference.server import InferenceServer, create_server


@pytest.fixture(scope="session")
def model(trained_model_path: Path) -> AnomalyModel:
    m = AnomalyModel.load(trained_model_path, device="cpu")
    m.warmup(8)
    return m


@dataclass
class Unit:
    server: InferenceServer
    port: int
    channel: grpc.aio.Channel
    stub: anomaly_pb2_grpc.AnomalyDetectionStub
    metrics: InferenceMetrics

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or {})
        assert value is not None, f"no sample {name}{labels or ''}"
        return value


UnitFactory = Callable[..., AbstractAsyncContextManager[Unit]]


@pytest.fixture
def serve(model: AnomalyModel) -> UnitFactory:
    """serve(**ServingConfig fields) -> async context manager yielding a started Unit."""

    @asynccontextmanager
    async def run(**config: Any) -> AsyncIterator[Unit]:
        metrics = InferenceMetrics()
        server, port = create_server(
            model, "127.0.0.1:0", config=ServingConfig(**config), metrics=metrics
        )
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            stub = anomaly_pb2_grpc.AnomalyDetectionStub(channel)  # type: ignore[no-untyped-call]
            yield Unit(server, port, channel, stub, metrics)
        finally:
            await channel.close(grace=None)
            await server.stop(grace=5)

    return run
