"""From a unit's /metrics text to the load it carries (pure).

Counters come as totals; a unit's load is their rate between two scrapes of
the same Pod. A counter that went backwards means the unit restarted: no
rate this time, so a restart is neither zero load nor a spike.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

METRICS = ("utilization", "rps", "concurrency")


@dataclass(frozen=True)
class UnitReading:
    t: float
    busy_s: float  # vigil_inference_busy_seconds_total
    requests: float  # vigil_inference_requests_total, every code
    rejected: float  # ... {code="RESOURCE_EXHAUSTED"}
    scored: float  # vigil_inference_images_total{result=anomalous|normal}
    inflight: float  # vigil_inference_inflight_requests


def parse_unit_metrics(text: str, t: float) -> UnitReading:
    busy = requests = rejected = scored = inflight = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "vigil_inference_busy_seconds_total":
                busy += s.value
            elif s.name == "vigil_inference_requests_total":
                requests += s.value
                if s.labels.get("code") == "RESOURCE_EXHAUSTED":
                    rejected += s.value
            elif s.name == "vigil_inference_images_total":
                if s.labels.get("result") in ("anomalous", "normal"):
                    scored += s.value
            elif s.name == "vigil_inference_inflight_requests":
                inflight += s.value
    return UnitReading(t, busy, requests, rejected, scored, inflight)


def unit_load(prev: UnitReading, cur: UnitReading, metric: str) -> float | None:
    """The unit's load between two readings, or None when there is no rate.

    utilization: busy fraction plus the work it refused (RESOURCE_EXHAUSTED
    requests valued at its mean busy time per scored image), so that demand
    beyond capacity is visible. rps: requests per second, every code.
    concurrency: in-flight requests (mean of the two readings).
    """
    dt = cur.t - prev.t
    deltas = (
        cur.busy_s - prev.busy_s,
        cur.requests - prev.requests,
        cur.rejected - prev.rejected,
        cur.scored - prev.scored,
    )
    if dt <= 0 or min(deltas) < 0:  # restarted, or clock trouble
        return None
    busy, requests, rejected, scored = deltas
    if metric == "utilization":
        per_image = busy / scored if scored > 0 else 0.0
        return busy / dt + rejected / dt * per_image
    if metric == "rps":
        return requests / dt
    if metric == "concurrency":
        return (prev.inflight + cur.inflight) / 2
    raise ValueError(f"unknown scaling metric {metric!r}")
