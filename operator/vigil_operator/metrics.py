"""The operator's Prometheus metrics.

Per-Model series come from a custom collector over an in-memory table that
each reconcile overwrites and a deletion clears, so a deleted Model's series
vanish from the next scrape (a labelled Gauge would keep them forever).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

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
        with self._lock:  # rows change under reconciles; read each one whole
            families = []
            for name, help_text, extra, samples in FAMILIES:
                kind = CounterMetricFamily if name in COUNTERS else GaugeMetricFamily
                family = kind(name, help_text, labels=["namespace", "model", *extra])
                for (ns, model), row in self._rows.items():
                    for values, value in samples(row):
                        family.add_metric([ns, model, *values], value)
                families.append(family)
        yield from families


Samples = Callable[[ModelSeries], Iterable[tuple[tuple[str, ...], float]]]

# Each per-Model family: name, help, labels beyond (namespace, model), and a
# row's samples as (those labels' values, value).
FAMILIES: tuple[tuple[str, str, tuple[str, ...], Samples], ...] = (
    (
        "vigil_model_desired_inference_units",
        "Inference units the autoscaler wants.",
        (),
        lambda r: [((), r.desired)],
    ),
    (
        "vigil_model_in_service_inference_units",
        "Inference units that are Ready.",
        (),
        lambda r: [((), r.in_service)],
    ),
    ("vigil_model_min_inference_units", "spec.minUnits.", (), lambda r: [((), r.min_units)]),
    (
        "vigil_model_max_inference_units",
        "spec.maxUnits (minUnits when absent).",
        (),
        lambda r: [((), r.max_units)],
    ),
    (
        "vigil_zone_in_service_inference_units",
        "Ready inference units per zone.",
        ("zone",),
        lambda r: [((z,), n) for z, (n, _, _) in sorted(r.zones.items())],
    ),
    (
        "vigil_zone_desired_inference_units",
        "Inference units placed in each zone (0 in an unhealthy zone).",
        ("zone",),
        lambda r: [((z,), want) for z, (_, want, _) in sorted(r.zones.items())],
    ),
    (
        "vigil_zone_healthy",
        "1 while the zone has a Ready eligible node and no units stuck unschedulable.",
        ("zone",),
        lambda r: [((z,), 1.0 if ok else 0.0) for z, (_, _, ok) in sorted(r.zones.items())],
    ),
    (
        "vigil_model_observed_load",
        "Total load the units reported, in the scaling metric.",
        ("metric",),
        lambda r: [((m,), v) for m, v in r.load.items()],
    ),
    (
        "vigil_scaling_decisions",
        "Changes of desiredUnits.",
        ("direction",),
        lambda r: [((d,), n) for d, n in sorted(r.decisions.items())],
    ),
    (
        "vigil_model_phase",
        "1 for the Model's status.phase, 0 for the other phases.",
        ("phase",),
        lambda r: [((p,), 1.0 if r.phase == p else 0.0) for p in PHASES],
    ),
)
COUNTERS: Final = frozenset({"vigil_scaling_decisions"})


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
