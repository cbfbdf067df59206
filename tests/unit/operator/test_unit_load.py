"""Unit load from the real metric text a `vigil serve` unit exposes."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from vigil_inference.metrics import InferenceMetrics
from vigil_operator.core.unit_load import parse_unit_metrics, unit_load


def reading(m: InferenceMetrics, t: float):  # type: ignore[no-untyped-def]
    return parse_unit_metrics(generate_latest(m.registry).decode(), t)


def test_utilization_counts_refused_work_at_the_measured_cost() -> None:
    m = InferenceMetrics()
    r0 = reading(m, 0.0)
    m.observe_batch(10, 5.0)  # 10 images scored in 5 busy seconds: 0.5 s each
    m.images.labels(result="normal").inc(10)
    m.requests.labels(code="OK").inc(10)
    m.requests.labels(code="RESOURCE_EXHAUSTED").inc(4)  # refused: 2 s of work
    r1 = reading(m, 10.0)
    assert unit_load(r0, r1, "utilization") == pytest.approx(0.5 + 0.2)
    assert unit_load(r0, r1, "rps") == pytest.approx(1.4)


def test_concurrency_and_restart() -> None:
    m = InferenceMetrics()
    m.inflight.inc(3)
    r0 = reading(m, 0.0)
    m.inflight.dec(1)
    m.requests.labels(code="OK").inc(5)
    r1 = reading(m, 2.0)
    assert unit_load(r0, r1, "concurrency") == pytest.approx(2.5)
    restarted = reading(InferenceMetrics(), 4.0)  # counters back at zero
    assert unit_load(r1, restarted, "rps") is None
    assert unit_load(r1, r1, "rps") is None  # no time passed
