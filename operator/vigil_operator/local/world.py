"""The local world as the core reads a cluster (pure).

Each simulated zone is one Node, Ready while the zone is up. Each unit
process is a Pod, and each zone's set of units a Deployment, shaped as the
API server returns them, so `core.reconcile` and `scraper.UnitScraper` take
them unchanged. Nodes are built per Model to carry its nodeSelector labels
and enough GPUs: locally, scheduling constraints always fit, and only zone
outages make a zone unhealthy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from vigil_operator.core.manifests import CONTAINER, MODEL_LABEL, deployment_name
from vigil_operator.core.reconcile import Observed
from vigil_operator.core.spec import GPU_RESOURCE, MAX_GPUS, ModelSpec
from vigil_operator.core.status import format_time
from vigil_operator.core.zones import ZONE_LABEL, ZONE_POD_LABEL

LOOPBACK: Final = "127.0.0.1"
Phase = Literal["Pending", "Running", "Succeeded", "Failed"]
Obj = dict[str, Any]


@dataclass(frozen=True)
class UnitView:
    """A snapshot of one unit (a supervised `vigil serve` process): what the
    pure parts of the local shell read of it (its Pod, the zone's Deployment,
    and the Deployment controller's choices in `deployments`)."""

    name: str
    uid: str
    zone: str
    created: datetime
    template: str = ""  # what it runs (the artifact path); a change rolls units over
    created_mono: float = 0.0  # monotonic seconds, for the removal order
    ready_since: float | None = None  # monotonic seconds; None when not Ready
    phase: Phase = "Pending"
    ready: bool = False
    terminating: bool = False
    deletion_time: datetime | None = None
    grpc_port: int | None = None
    metrics_port: int | None = None
    pid: int | None = None
    restarts: int = 0
    waiting_reason: str = ""  # "CrashLoopBackOff" while waiting to restart
    last_exit_code: int | None = None
    last_message: str = ""  # the last lines the process wrote before it exited
    unschedulable_since: datetime | None = None  # its zone is down


def node(zone: str, ready: bool, spec: ModelSpec | None = None) -> Obj:
    """The zone's one Node: labelled with the zone (and the Model's nodeSelector)."""
    labels = {"kubernetes.io/hostname": f"local-{zone}", ZONE_LABEL: zone}
    if spec is not None:
        labels.update(spec.unit.node_selector)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": f"local-{zone}", "labels": labels},
        "spec": {},
        "status": {
            "allocatable": {GPU_RESOURCE: str(MAX_GPUS)},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def nodes(zones: Mapping[str, bool], spec: ModelSpec | None = None) -> list[Obj]:
    """One Node per zone; `zones` maps each zone to whether it is up."""
    return [node(zone, up, spec) for zone, up in zones.items()]


def pod(unit: UnitView, model: str, namespace: str) -> Obj:
    """The unit as a Pod: Ready condition, loopback IP, the metrics port by name,
    and the container state that `core.status.unit_problems` reads."""
    meta: Obj = {
        "name": unit.name,
        "namespace": namespace,
        "uid": unit.uid,
        "creationTimestamp": format_time(unit.created),
        "labels": {MODEL_LABEL: model, ZONE_POD_LABEL: unit.zone},
    }
    if unit.terminating:
        meta["deletionTimestamp"] = format_time(unit.deletion_time or unit.created)
    conditions: list[Obj] = []
    if unit.unschedulable_since is not None:
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": f"0/1 nodes are available: zone {unit.zone} is down.",
                "lastTransitionTime": format_time(unit.unschedulable_since),
            }
        )
    conditions.append({"type": "Ready", "status": "True" if unit.ready else "False"})
    container: Obj = {"name": CONTAINER, "ready": unit.ready, "restartCount": unit.restarts}
    if unit.waiting_reason:
        container["state"] = {"waiting": {"reason": unit.waiting_reason}}
    elif unit.phase == "Running":
        container["state"] = {"running": {}}
    if unit.last_exit_code is not None:
        container["lastState"] = {
            "terminated": {"exitCode": unit.last_exit_code, "message": unit.last_message}
        }
    status: Obj = {"phase": unit.phase, "conditions": conditions, "containerStatuses": [container]}
    ports: list[Obj] = []
    if unit.grpc_port is not None:
        status["podIP"] = LOOPBACK
        ports.append({"name": "grpc", "containerPort": unit.grpc_port})
    if unit.metrics_port is not None:
        ports.append({"name": "metrics", "containerPort": unit.metrics_port})
    spec = {"containers": [{"name": CONTAINER, "ports": ports}]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def deployment(
    model: str, namespace: str, zone: str, replicas: int, units: Iterable[UnitView]
) -> Obj:
    """A zone's units as its Deployment: spec.replicas as last set, readyReplicas
    the Ready units that are not terminating (as the ReplicaSet counts them)."""
    live = [u for u in units if u.zone == zone and not u.terminating]
    ready = sum(1 for u in live if u.ready)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(model, zone),
            "namespace": namespace,
            "labels": {MODEL_LABEL: model, ZONE_POD_LABEL: zone},
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": len(live), "readyReplicas": ready},
    }


def observe(
    model: str,
    namespace: str,
    zones: Mapping[str, bool],
    replicas: Mapping[str, int],
    units: Iterable[UnitView],
    spec: ModelSpec | None = None,
) -> Observed:
    """What the core reads for one Model: the zones' Nodes, its units' Pods, and
    one Deployment per zone it has (`replicas`: zone -> spec.replicas)."""
    units = list(units)
    return Observed(
        nodes=nodes(zones, spec),
        pods=[pod(u, model, namespace) for u in units],
        deployments=[
            deployment(model, namespace, zone, n, units) for zone, n in sorted(replicas.items())
        ],
    )
