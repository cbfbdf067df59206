"""Which zones a Model's units may run in, and which of them are healthy.

A zone is the value of a node's `topology.kubernetes.io/zone` label. A node is
eligible for a unit when the scheduler could put the unit there: it matches
the unit's nodeSelector, its NoSchedule/NoExecute taints are tolerated, it is
not cordoned, and (for GPU units) it has enough `nvidia.com/gpu`. A zone is
healthy when at least one eligible node is Ready and its units have not been
unschedulable for longer than a timeout. Nodes without a zone label are never
eligible: every unit is pinned to a zone.

Health is damped one way only. A zone fails at once (capacity matters more than
a few surplus units), but a zone that was unhealthy comes back only once one of
its eligible nodes has been Ready for `recovery_s`: a node flapping
Ready/NotReady every few seconds then costs one failover and no return until it
settles, instead of units moving back and forth with every flap, each move a
surge of units and a cold start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from .spec import GPU_RESOURCE, SpecError, Toleration, UnitSpec, parse_quantity

ZONE_LABEL: Final = "topology.kubernetes.io/zone"
ZONE_POD_LABEL: Final = "vigil.dev/zone"
UNSCHEDULABLE_TIMEOUT_S: Final = 300.0
ZONE_RECOVERY_S: Final = 60.0
# Taints the node lifecycle controller sets from conditions we read directly
# (Ready, spec.unschedulable); counting them as taints would report a zone
# whose nodes are down as "no eligible nodes" instead of "0/2 nodes Ready".
_LIFECYCLE_TAINTS: Final = frozenset(
    {
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/unschedulable",
    }
)


@dataclass(frozen=True)
class Stuck:
    """The longest a unit of one zone has waited for a node, and the scheduler's words."""

    seconds: float
    message: str


@dataclass(frozen=True)
class ZoneHealth:
    name: str
    healthy: bool
    nodes: int  # eligible nodes
    ready_nodes: int  # eligible nodes that are Ready
    reason: str  # why unhealthy; "" when healthy

    @property
    def message(self) -> str:
        """A short phrase for status and Events: the reason, or the Ready node count."""
        return self.reason or f"{self.ready_nodes}/{self.nodes} nodes Ready"


def tolerates(tolerations: Iterable[Toleration], taint: Mapping[str, Any]) -> bool:
    """Kubernetes' matching: an empty effect matches all, Exists with no key matches all keys."""
    key, value, effect = taint.get("key", ""), taint.get("value", "") or "", taint.get("effect")
    for tol in tolerations:
        if tol.effect and tol.effect != effect:
            continue
        if tol.operator == "Exists":
            if not tol.key or tol.key == key:
                return True
        elif tol.key == key and tol.value == value:
            return True
    return False


def node_zone(node: Mapping[str, Any]) -> str:
    labels = node.get("metadata", {}).get("labels") or {}
    return str(labels.get(ZONE_LABEL, ""))


def node_ready(node: Mapping[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def ready_seconds(node: Mapping[str, Any], now: datetime) -> float:
    """How long the node has been Ready (its Ready condition's lastTransitionTime);
    0 when it is not Ready, unbounded when the time is missing."""
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            if cond.get("status") != "True":
                return 0.0
            since = parse_time(cond.get("lastTransitionTime"))
            return max(0.0, (now - since).total_seconds()) if since else float("inf")
    return 0.0


def node_eligible(node: Mapping[str, Any], unit: UnitSpec) -> bool:
    """Whether the scheduler could place one of this unit's Pods on the node."""
    labels = node.get("metadata", {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in unit.node_selector.items()):
        return False
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return False
    for taint in spec.get("taints") or []:
        if taint.get("key") in _LIFECYCLE_TAINTS:
            continue
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(
            unit.tolerations, taint
        ):
            return False
    if unit.gpus > 0:
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        try:
            gpus = parse_quantity(allocatable.get(GPU_RESOURCE, 0))
        except SpecError:
            return False
        if gpus < unit.gpus:
            return False
    return True


def unschedulable_units(pods: Iterable[Mapping[str, Any]], now: datetime) -> dict[str, Stuck]:
    """Per zone (the Pod's `vigil.dev/zone` label), the unit Pod stuck longest on
    PodScheduled=False/Unschedulable, measured from that condition's lastTransitionTime."""
    out: dict[str, Stuck] = {}
    for pod in pods:
        zone = (pod.get("metadata", {}).get("labels") or {}).get(ZONE_POD_LABEL)
        if not zone or pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                since = parse_time(cond.get("lastTransitionTime"))
                seconds = max(0.0, (now - since).total_seconds()) if since else 0.0
                if zone not in out or seconds > out[zone].seconds:
                    out[zone] = Stuck(seconds, str(cond.get("message", "")))
    return out


def zone_health(
    nodes: Iterable[Mapping[str, Any]],
    unit: UnitSpec,
    configured: Sequence[str] | None = None,
    stuck: Mapping[str, Stuck] | None = None,
    timeout_s: float = UNSCHEDULABLE_TIMEOUT_S,
    *,
    was_healthy: Mapping[str, bool] | None = None,
    now: datetime | None = None,
    recovery_s: float = ZONE_RECOVERY_S,
) -> list[ZoneHealth]:
    """The candidate zones sorted by name: the configured ones (a named zone without
    eligible nodes is unhealthy), else every zone that has an eligible node.

    `was_healthy` is each zone's health as last published (the Model's status); a
    zone that was unhealthy needs a node Ready for `recovery_s` (at `now`) to return.
    """
    eligible: dict[str, int] = {}
    ready: dict[str, int] = {}
    settled: dict[str, int] = {}
    for node in nodes:
        zone = node_zone(node)
        if zone and node_eligible(node, unit):
            eligible[zone] = eligible.get(zone, 0) + 1
            ready[zone] = ready.get(zone, 0) + node_ready(node)
            if now is not None and ready_seconds(node, now) >= recovery_s:
                settled[zone] = settled.get(zone, 0) + 1
    names = sorted(set(configured) if configured is not None else eligible)
    out = []
    for name in names:
        n, r = eligible.get(name, 0), ready.get(name, 0)
        late = (stuck or {}).get(name)
        returning = (was_healthy or {}).get(name) is False and now is not None
        if n == 0:
            reason = "no eligible nodes"
        elif r == 0:
            reason = f"0/{n} nodes Ready"
        elif late is not None and late.seconds >= timeout_s:
            reason = f"units unschedulable for {late.seconds:.0f}s"
            reason += f": {late.message}" if late.message else ""
        elif returning and not settled.get(name):
            reason = f"{r}/{n} nodes Ready, none yet for {recovery_s:.0f}s"
        else:
            reason = ""
        out.append(ZoneHealth(name, not reason, n, r, reason))
    return out


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp as the API writes it ("2024-05-01T12:00:00Z")."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
