"""The inference unit's Prometheus metrics (names fixed by DESIGN.md).

The operator scrapes these directly to autoscale: `rate(busy_seconds_total)`
is utilization, `rate(requests_total)` is rps, `inflight_requests` is
concurrency. They live on a given registry rather than the global one so that
tests and benchmarks can run several units in one process.
"""

from __future__ import annotations

import threading
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Codes a unit answers DetectAnomalies with; created at zero so rate() works at once.
KNOWN_CODES: Final = (
    "OK",
    "INVALID_ARGUMENT",
    "RESOURCE_EXHAUSTED",
    "UNAVAILABLE",
    "CANCELLED",
    "DEADLINE_EXCEEDED",
    "INTERNAL",
)
IMAGE_RESULTS: Final = ("anomalous", "normal", "invalid")
BATCH_SIZE_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128)
DURATION_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class InferenceMetrics:
    """The unit's metrics, registered on `registry` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "vigil_inference_requests",
            "DetectAnomalies requests answered, by gRPC status code.",
            ["code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "vigil_inference_request_duration_seconds",
            "Time to answer a DetectAnomalies request, whatever its outcome.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "vigil_inference_inflight_requests",
            "DetectAnomalies requests being answered now (decoding, queued or scored).",
            registry=r,
        )
        self.batch_size = Histogram(
            "vigil_inference_batch_size",
            "Images per batch run by the model executor.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.busy_seconds = Counter(
            "vigil_inference_busy_seconds",
            "Seconds the model executor spent running batches; rate() is utilization.",
            registry=r,
        )
        self.images = Counter(
            "vigil_inference_images",
            "Images answered, by result: anomalous, normal or invalid (bad input).",
            ["result"],
            registry=r,
        )
        for code in KNOWN_CODES:
            self.requests.labels(code=code)
        for result in IMAGE_RESULTS:
            self.images.labels(result=result)

    def observe_batch(self, size: int, busy_seconds: float) -> None:
        """The batcher's callback: one batch of `size` ran for `busy_seconds`."""
        self.batch_size.observe(size)
        self.busy_seconds.inc(busy_seconds)


class MetricsServer:
    """`/metrics` over HTTP on a background thread; `port` is the bound one."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:
        self._httpd: WSGIServer
        self._thread: threading.Thread
        self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        self.port: int = self._httpd.server_port

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
