"""The client endpoint against stand-in units on loopback (no model): round
robin, routing by `vigil-model`, one retry when a unit is gone, errors passed
through unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from tests.tools import free_port
from vigil.v1 import anomaly_pb2, anomaly_pb2_grpc
from vigil_operator.local.proxy import SERVICE_NAME, Backend, ClientEndpoint, RouteError

KEY = ("default", "fabric")


class FakeUnit(anomaly_pb2_grpc.AnomalyDetectionServicer):
    """Answers DescribeModel with its name; DetectAnomalies with INVALID_ARGUMENT
    for an empty image, else a result whose model_version is its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    async def DescribeModel(self, request: Any, context: Any) -> Any:
        self.calls += 1
        return anomaly_pb2.DescribeModelResponse(
            description=anomaly_pb2.ModelDescription(model_version=self.name)
        )

    async def DetectAnomalies(self, request: Any, context: Any) -> Any:
        self.calls += 1
        if not request.image:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid image: empty")
        return anomaly_pb2.DetectAnomaliesResponse(
            result=anomaly_pb2.DetectAnomalyResult(model_version=self.name)
        )


Units = dict[str, tuple[FakeUnit, str]]  # name -> (servicer, address)


@pytest_asyncio.fixture(loop_scope="session")
async def units() -> AsyncIterator[Units]:
    servers, out = [], {}
    for name in ("u1", "u2"):
        server = grpc.aio.server()
        fake = FakeUnit(name)
        anomaly_pb2_grpc.add_AnomalyDetectionServicer_to_server(fake, server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        out[name] = (fake, f"127.0.0.1:{port}")
    yield out
    for server in servers:
        await server.stop(None)


class Routes:
    def __init__(self) -> None:
        self.backends: list[Backend] = []
        self.asked: list[str | None] = []

    def __call__(self, wanted: str | None) -> tuple[tuple[str, str], Sequence[Backend]]:
        self.asked.append(wanted)
        if wanted not in (None, "fabric"):
            raise RouteError(grpc.StatusCode.NOT_FOUND, f"no model {wanted!r} is applied")
        return KEY, list(self.backends)


@dataclass
class Endpoint:
    proxy: ClientEndpoint
    routes: Routes
    channel: grpc.aio.Channel
    stub: anomaly_pb2_grpc.AnomalyDetectionStub


@pytest_asyncio.fixture(loop_scope="session")
async def endpoint() -> AsyncIterator[Endpoint]:
    routes = Routes()
    proxy = ClientEndpoint(routes, CollectorRegistry())
    port = proxy.bind("127.0.0.1:0")
    await proxy.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = anomaly_pb2_grpc.AnomalyDetectionStub(channel)  # type: ignore[no-untyped-call]
    yield Endpoint(proxy, routes, channel, stub)
    await channel.close(None)
    await proxy.stop(0)


pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_round_robin_over_the_models_units(units: Units, endpoint: Endpoint) -> None:
    proxy, routes, stub = endpoint.proxy, endpoint.routes, endpoint.stub
    routes.backends = [Backend(n, addr) for n, (_, addr) in units.items()]
    seen = [
        (await stub.DescribeModel(anomaly_pb2.DescribeModelRequest())).description.model_version
        for _ in range(4)
    ]
    assert sorted(seen) == ["u1", "u1", "u2", "u2"]
    assert seen[0] != seen[1]
    assert proxy.counts.calls[(*KEY, "OK")] == 4


async def test_a_gone_unit_costs_a_retry_not_an_error(units: Units, endpoint: Endpoint) -> None:
    proxy, routes, stub = endpoint.proxy, endpoint.routes, endpoint.stub
    dead = Backend("dead", f"127.0.0.1:{free_port()}")  # nothing listens there
    routes.backends = [dead, Backend("u1", units["u1"][1])]
    request = anomaly_pb2.DetectAnomaliesRequest(image=b"x")
    for _ in range(4):
        reply = await stub.DetectAnomalies(request, timeout=5)
        assert reply.result.model_version == "u1"
    assert proxy.counts.retries[KEY] >= 2  # every turn of the dead unit was retried


async def test_errors_pass_through_without_a_retry(units: Units, endpoint: Endpoint) -> None:
    proxy, routes, stub = endpoint.proxy, endpoint.routes, endpoint.stub
    fake, address = units["u2"]
    routes.backends = [Backend("u2", address)]
    before, retries = fake.calls, dict(proxy.counts.retries)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.DetectAnomalies(anomaly_pb2.DetectAnomaliesRequest(image=b""), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "invalid image: empty"
    assert fake.calls == before + 1 and proxy.counts.retries == retries


async def test_routing_by_the_vigil_model_metadata(units: Units, endpoint: Endpoint) -> None:
    routes, stub = endpoint.routes, endpoint.stub
    routes.backends = [Backend("u1", units["u1"][1])]
    request = anomaly_pb2.DescribeModelRequest()
    await stub.DescribeModel(request, metadata=(("vigil-model", "fabric"),))
    assert routes.asked[-1] == "fabric"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.DescribeModel(request, metadata=(("vigil-model", "other"),))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no model 'other'" in (refused.value.details() or "")


async def test_no_unit_in_service_is_unavailable(endpoint: Endpoint) -> None:
    routes, stub = endpoint.routes, endpoint.stub
    routes.backends = []
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.DescribeModel(anomaly_pb2.DescribeModelRequest())
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_health_and_reflection_are_served(endpoint: Endpoint) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    health = health_pb2_grpc.HealthStub(endpoint.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(endpoint.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for answer in reflect.ServerReflectionInfo(iter([request])):
        names = {s.name for s in answer.list_services_response.service}
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
