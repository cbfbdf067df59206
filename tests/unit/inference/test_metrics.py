"""The unit's metrics carry DESIGN.md's names and are served on a free port."""

from __future__ import annotations

import urllib.request

from vigil_inference.metrics import InferenceMetrics, MetricsServer

DESIGN_NAMES = (
    "vigil_inference_requests_total",
    "vigil_inference_request_duration_seconds",
    "vigil_inference_inflight_requests",
    "vigil_inference_batch_size",
    "vigil_inference_busy_seconds_total",
    "vigil_inference_images_total",
)


def test_series_exist_at_zero_on_a_fresh_registry() -> None:
    m = InferenceMetrics()
    get = m.registry.get_sample_value
    for code in ("OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "INTERNAL"):
        assert get("vigil_inference_requests_total", {"code": code}) == 0.0
    for result in ("anomalous", "normal", "invalid"):
        assert get("vigil_inference_images_total", {"result": result}) == 0.0
    assert get("vigil_inference_busy_seconds_total") == 0.0
    assert get("vigil_inference_inflight_requests") == 0.0
    assert get("vigil_inference_batch_size_count") == 0.0
    assert get("vigil_inference_request_duration_seconds_count") == 0.0


def test_observe_batch_moves_batch_size_and_busy_seconds() -> None:
    m = InferenceMetrics()
    m.observe_batch(4, 0.25)
    m.observe_batch(1, 0.5)
    get = m.registry.get_sample_value
    assert get("vigil_inference_batch_size_count") == 2.0
    assert get("vigil_inference_batch_size_sum") == 5.0
    assert get("vigil_inference_batch_size_bucket", {"le": "4.0"}) == 2.0
    assert get("vigil_inference_batch_size_bucket", {"le": "2.0"}) == 1.0
    assert get("vigil_inference_busy_seconds_total") == 0.75


def test_registries_are_independent() -> None:
    a, b = InferenceMetrics(), InferenceMetrics()
    a.requests.labels(code="OK").inc()
    assert a.registry.get_sample_value("vigil_inference_requests_total", {"code": "OK"}) == 1.0
    assert b.registry.get_sample_value("vigil_inference_requests_total", {"code": "OK"}) == 0.0


def test_metrics_server_on_port_zero_serves_every_metric() -> None:
    m = InferenceMetrics()
    server = MetricsServer(m.registry, 0, host="127.0.0.1")
    try:
        assert server.port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        server.close()
    for name in DESIGN_NAMES:
        assert f"# TYPE {name} " in text
