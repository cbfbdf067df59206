"""The client endpoint: one gRPC address for every local Model, as the headless
Service plus gRPC round_robin are in a cluster.

Serves `vigil.v1.AnomalyDetection` (and health, and reflection) and forwards
each call, as raw bytes, to a Ready unit of the Model named by the request's
`vigil-model` metadata (default: the only Model), round-robin. A unit that is
being stopped or has just died answers UNAVAILABLE (or CANCELLED at the end
of its drain): the call is retried once on another unit, so taking units
away costs clients nothing while another unit serves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer  # public as health.aio; stubs lack it
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from vigil.v1.endpoint import new_server
from vigil.v1.wire import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, SERVICE_NAME

METHODS: Final = ("DetectAnomalies", "DescribeModel")
MODEL_METADATA: Final = "vigil-model"
_UNIT_CHANNEL_OPTIONS: Final = [
    ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
]
_SERVING: Final = health_pb2.HealthCheckResponse.SERVING
Key = tuple[str, str]
Context = grpc.aio.ServicerContext[Any, Any]


class RouteError(Exception):
    """No unit can take the call; `code` is what the client gets."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Backend:
    name: str  # the unit
    address: str  # host:port of its gRPC server


# (wanted model from metadata or None) -> (the Model's key, its routable units)
Router = Callable[[str | None], tuple[Key, Sequence[Backend]]]


class CallCounts(Collector):
    """The endpoint's counters per Model, dropped with the Model (a labelled
    Counter would keep a deleted Model's series forever)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: dict[tuple[str, str, str], int] = {}  # (namespace, model, code)
        self.retries: dict[Key, int] = {}

    def call(self, key: Key, code: grpc.StatusCode) -> None:
        with self._lock:
            k = (*key, code.name)
            self.calls[k] = self.calls.get(k, 0) + 1

    def retry(self, key: Key) -> None:
        with self._lock:
            self.retries[key] = self.retries.get(key, 0) + 1

    def forget(self, key: Key) -> None:
        with self._lock:
            self.calls = {k: v for k, v in self.calls.items() if k[:2] != key}
            self.retries.pop(key, None)

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "vigil_local_requests",
            "Calls the local client endpoint answered, by Model and gRPC status code.",
            labels=["namespace", "model", "code"],
        )
        retries = CounterMetricFamily(
            "vigil_local_retries",
            "Calls retried on another unit after theirs went away mid-call.",
            labels=["namespace", "model"],
        )
        with self._lock:
            for k, n in sorted(self.calls.items()):
                calls.add_metric(list(k), n)
            for key, n in sorted(self.retries.items()):
                retries.add_metric(list(key), n)
        yield from (calls, retries)


class ClientEndpoint:
    def __init__(self, router: Router, registry: CollectorRegistry | None = None) -> None:
        self.router = router
        self.inflight: dict[str, int] = {}  # unit name -> calls it is answering
        self.counts = CallCounts()
        if registry is not None:
            registry.register(self.counts)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._turn: dict[Key, int] = {}
        self._server: grpc.aio.Server | None = None
        self._health = HealthServicer()

    def bind(self, address: str) -> int:
        """Build the server on `address` (not started); returns the bound port."""
        server = new_server(self._health)
        handlers = {m: grpc.unary_unary_rpc_method_handler(self._behaviour(m)) for m in METHODS}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
        )
        port = server.add_insecure_port(address)
        self._server = server
        return port

    async def start(self) -> None:
        assert self._server is not None, "bind() first"
        await self._server.start()
        for name in ("", SERVICE_NAME):
            await self._health.set(name, _SERVING)

    async def stop(self, grace: float) -> None:
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
        for channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()

    async def release(self, address: str) -> None:
        """The unit at `address` is gone: drop its channel."""
        channel = self._channels.pop(address, None)
        if channel is not None:
            await channel.close(grace=None)

    def forget(self, key: Key) -> None:
        """A deleted Model's series go, as the operator's do."""
        self._turn.pop(key, None)
        self.counts.forget(key)

    def pick(self, key: Key, backends: Sequence[Backend], tried: Collection[str]) -> Backend | None:
        """Round-robin over the Model's units, skipping those already tried."""
        choices = [b for b in backends if b.name not in tried]
        if not choices:
            return None
        turn = self._turn.get(key, 0)
        self._turn[key] = turn + 1
        return choices[turn % len(choices)]

    def _behaviour(self, method: str) -> Callable[[bytes, Context], Any]:
        path = f"/{SERVICE_NAME}/{method}"

        async def call(request: bytes, context: Context) -> bytes:
            return await self._forward(path, request, context)

        return call

    async def _send(
        self, path: str, backend: Backend, request: bytes, seconds: float | None
    ) -> bytes:
        channel = self._channels.get(backend.address)
        if channel is None:
            channel = grpc.aio.insecure_channel(backend.address, options=_UNIT_CHANNEL_OPTIONS)
            self._channels[backend.address] = channel
        self.inflight[backend.name] = self.inflight.get(backend.name, 0) + 1
        try:
            call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
            reply: bytes = await call(request, timeout=seconds)
            return reply
        finally:
            self.inflight[backend.name] -= 1
            if not self.inflight[backend.name]:
                del self.inflight[backend.name]

    async def _forward(self, path: str, request: bytes, context: Context) -> bytes:
        wanted = dict(context.invocation_metadata() or ()).get(MODEL_METADATA)
        wanted = wanted if isinstance(wanted, str) and wanted else None
        try:
            key, backends = self.router(wanted)
        except RouteError as exc:
            self.counts.call(("", ""), exc.code)
            await context.abort(exc.code, exc.message)
            raise AssertionError("abort returned") from None  # pragma: no cover
        tried: set[str] = set()
        error: grpc.aio.AioRpcError | None = None
        deadline = context.time_remaining()
        started = time.monotonic()
        for attempt in range(2):
            backend = self.pick(key, backends, tried)
            if backend is None:
                break
            tried.add(backend.name)
            left = None if deadline is None else max(0.001, deadline - (time.monotonic() - started))
            try:
                reply = await self._send(path, backend, request, left)
            except grpc.aio.AioRpcError as exc:
                error = exc
                if attempt > 0 or not self._retryable(exc, backend, wanted):
                    break
                self.counts.retry(key)
                try:
                    key, backends = self.router(wanted)
                except RouteError:
                    break
                continue
            self.counts.call(key, grpc.StatusCode.OK)
            return reply
        if error is None:
            code = grpc.StatusCode.UNAVAILABLE
            message = f"model {key[0]}/{key[1]} has no unit in service"
        else:
            code, message = error.code(), error.details() or ""
        self.counts.call(key, code)
        await context.abort(code, message)
        raise AssertionError("abort returned")  # pragma: no cover

    def _retryable(self, exc: grpc.aio.AioRpcError, backend: Backend, wanted: str | None) -> bool:
        """UNAVAILABLE: the unit is gone or closing. CANCELLED: only when the unit
        is no longer in rotation (its drain ended), not when the client gave up."""
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            return True
        if exc.code() != grpc.StatusCode.CANCELLED:
            return False
        try:
            _, backends = self.router(wanted)
        except RouteError:
            return True
        return all(b.name != backend.name for b in backends)
