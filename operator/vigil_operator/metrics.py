"""The operator's Prometheus metrics.

Per-Model series come from a custom collector over an in-memory table that
each reconcile overwrites and a deletion clears, so a deleted Model's series
vanish from the next scrape (a labelled Gauge would keep them forever).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vigil_operator.core.status import PHASES

ModelKey = tuple[str, str]  # (namespace, name)


@dataclass
class ModelSeries:
    desired: int = 0
    in_service: int = 0
    min_units: int = 0
    max_units: int = 0
    zones: dict[str, tuple[int, int, bool]] = field(default_factory=dict)
    # zone -> (units in service, units desired, healthy)
    load: dict[str, float] = field(default_factory=dict)  # metric -> observed total load
    decisions: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    phase: str = ""  # status.phase; "" until the first reconcile


class ModelTable(Collector):
    """Thread-safe: reconciles write from the event loop, scrapes read from a thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[ModelKey, ModelSeries] = {}

    def update(
        self, key: ModelKey, status: Mapping[str, Any], min_units: int, max_units: int
    ) -> None:
        with self._lock:
            row = self._rows.setdefault(key, ModelSeries())
            row.desired = int(status.get("desiredUnits") or 0)
            row.in_service = int(status.get("inServiceUnits") or 0)
            row.min_units, row.max_units = min_units, max_units
            row.phase = str(status.get("phase") or "")
            row.zones = {
                str(z["name"]): (
                    int(z.get("inServiceUnits") or 0),
                    int(z.get("desiredUnits") or 0),
                    bool(z.get("healthy", True)),
                )
                for z in status.get("zones") or []
            }

    def observe_load(self, key: ModelKey, metric: str, value: float) -> None:
        with self._lock:
            self._rows.setdefault(key, ModelSeries()).load = {metric: value}

    def count_decision(self, key: ModelKey, direction: str) -> None:
        with self._lock:
            row = self._rows.setdefault(key, ModelSeries())
            row.decisions[direction] = row.decisions.get(direction, 0) + 1

    def forget(self, key: ModelKey) -> None:
        with self._lock:
            self._rows.pop(key, None)

    def get(self, key: ModelKey) -> ModelSeries | None:
        with self._lock:
            return self._rows.get(key)

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "model"]
        desired = GaugeMetricFamily(
            "vigil_model_desired_inference_units",
            "Inference units the autoscaler wants.",
            labels=labels,
        )
        serving = GaugeMetricFamily(
            "vigil_model_in_service_inference_units",
            "Inference units that are Ready.",
            labels=labels,
        )
        lo = GaugeMetricFamily("vigil_model_min_inference_units", "spec.minUnits.", labels=labels)
        hi = GaugeMetricFamily(
            "vigil_model_max_inference_units",
            "spec.maxUnits (minUnits when absent).",
            labels=labels,
        )
        zone = GaugeMetricFamily(
            "vigil_zone_in_service_inference_units",
            "Ready inference units per zone.",
            labels=[*labels, "zone"],
        )
        load = GaugeMetricFamily(
            "vigil_model_observed_load",
            "Total load the units reported, in the scaling metric.",
            labels=[*labels, "metric"],
        )
        decisions = CounterMetricFamily(
            "vigil_scaling_decisions", "Changes of desiredUnits.", labels=[*labels, "direction"]
        )
        zone_desired = GaugeMetricFamily(
            "vigil_zone_desired_inference_units",
            "Inference units placed in each zone (0 in an unhealthy zone).",
            labels=[*labels, "zone"],
        )
        zone_healthy = GaugeMetricFamily(
            "vigil_zone_healthy",
            "1 while the zone has a Ready eligible node and no units stuck unschedulable.",
            labels=[*labels, "zone"],
        )
        phase = GaugeMetricFamily(
            "vigil_model_phase",
            "1 for the Model's status.phase, 0 for the other phases.",
            labels=[*labels, "phase"],
        )
        with self._lock:
            rows = {k: v for k, v in self._rows.items()}
            for (ns, name), row in rows.items():
                desired.add_metric([ns, name], row.desired)
                serving.add_metric([ns, name], row.in_service)
                lo.add_metric([ns, name], row.min_units)
                hi.add_metric([ns, name], row.max_units)
                for z, (n, want, healthy) in sorted(row.zones.items()):
                    zone.add_metric([ns, name, z], n)
                    zone_desired.add_metric([ns, name, z], want)
                    zone_healthy.add_metric([ns, name, z], 1.0 if healthy else 0.0)
                for metric, value in row.load.items():
                    load.add_metric([ns, name, metric], value)
                for direction, n in sorted(row.decisions.items()):
                    decisions.add_metric([ns, name, direction], n)
                for p in PHASES:
                    phase.add_metric([ns, name, p], 1.0 if row.phase == p else 0.0)
        yield from (
            desired,
            serving,
            lo,
            hi,
            zone,
            zone_desired,
            zone_healthy,
            load,
            decisions,
            phase,
        )


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.models = ModelTable()
        self.registry.register(self.models)
        self.reconcile_duration = Histogram(
            "vigil_reconcile_duration_seconds",
            "Time one Model reconcile took.",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.leader = Gauge(
            "vigil_operator_leader",
            "1 on the replica that holds the leader Lease (or runs --standalone), 0 on standbys.",
            registry=self.registry,
        )
        self.leading = False

    def set_leader(self, leading: bool) -> None:
        self.leading = leading
        self.leader.set(1 if leading else 0)
