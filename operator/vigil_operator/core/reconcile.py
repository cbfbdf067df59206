"""One reconcile step, pure: from a Model and what the cluster shows, what to apply.

Both shells (kopf against Kubernetes, the local runtime) gather the same
observations (nodes, the Model's unit Pods and Deployments), ask the
autoscaler for a number of units, and hand all of it here. The answer says
which objects to apply and delete, the status to write and the Events to
emit; the shell only does the I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .manifests import pod_disruption_budget, service, unit_deployment
from .placement import plan_replicas, remainder_order, spread
from .spec import ModelSpec, SpecError, parse_spec, validate_name
from .status import (
    UNIT_READY_TIMEOUT_S,
    Event,
    StatusFacts,
    build_status,
    event_messages,
    unit_problems,
)
from .zones import (
    UNSCHEDULABLE_TIMEOUT_S,
    ZONE_POD_LABEL,
    ZONE_RECOVERY_S,
    ZoneHealth,
    unschedulable_units,
    zone_health,
)


@dataclass(frozen=True)
class Observed:
    """What the shell read: all Nodes, and the Model's unit Pods and Deployments
    (those labelled `vigil.dev/model=<name>` in its namespace)."""

    nodes: Sequence[Mapping[str, Any]] = ()
    pods: Sequence[Mapping[str, Any]] = ()
    deployments: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class Outcome:
    """What to do. With an invalid spec (`spec` None) nothing is applied or deleted:
    units already serving keep serving while the user fixes the Model."""

    spec: ModelSpec | None
    status: dict[str, Any]
    events: list[Event]
    apply: list[dict[str, Any]] = field(default_factory=list)  # Deployments, Service, PDB
    delete_deployments: list[str] = field(default_factory=list)  # names
    zones: list[ZoneHealth] = field(default_factory=list)
    target: dict[str, int] = field(default_factory=dict)  # units wanted per zone
    replicas: dict[str, int] = field(default_factory=dict)  # set now, surge first


def deployment_counts(
    deployments: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, int], dict[str, int], dict[str, str]]:
    """Per zone (the `vigil.dev/zone` label): spec.replicas, status.readyReplicas, name."""
    replicas: dict[str, int] = {}
    ready: dict[str, int] = {}
    names: dict[str, str] = {}
    for dep in deployments:
        meta = dep.get("metadata") or {}
        zone = (meta.get("labels") or {}).get(ZONE_POD_LABEL)
        if not zone:
            continue
        replicas[zone] = int((dep.get("spec") or {}).get("replicas") or 0)
        ready[zone] = int((dep.get("status") or {}).get("readyReplicas") or 0)
        names[zone] = str(meta.get("name", ""))
    return replicas, ready, names


def read_spec(body: Mapping[str, Any]) -> ModelSpec | SpecError:
    """The Model's spec, or why it (or its name) is invalid. A pass parses it
    once: the shell's reads and the decision below share the result."""
    try:
        validate_name(str((body.get("metadata") or {}).get("name", "")))
        return parse_spec(body.get("spec") or {})
    except SpecError as exc:
        return exc


def reconcile(
    body: Mapping[str, Any],
    observed: Observed,
    *,
    now: datetime,
    spec: ModelSpec | SpecError | None = None,
    default_image: str,
    desired_units: int | None = None,
    scaling_reason: str = "",
    unschedulable_timeout_s: float = UNSCHEDULABLE_TIMEOUT_S,
    zone_recovery_s: float = ZONE_RECOVERY_S,
    unit_ready_timeout_s: float = UNIT_READY_TIMEOUT_S,
    cluster_domain: str = "cluster.local",
    default_resources: Mapping[str, Mapping[str, str]] | None = None,
) -> Outcome:
    """Decide everything for one Model `body` (as the API returns it).

    `spec` is `read_spec(body)` where the caller has it already (None: read it
    here). `desired_units` is the autoscaler's wish; None keeps the last decision
    from the status (minUnits at first). It is clamped to [minUnits, maxUnits],
    0 when Stopped.
    """
    facts = _facts(body, observed, now, cluster_domain)
    name, namespace, previous = facts.name, facts.namespace, facts.previous
    spec = read_spec(body) if spec is None else spec
    if isinstance(spec, SpecError):
        status = build_status(replace(facts, error=str(spec)))
        return Outcome(None, status, event_messages(previous, status, scaling_reason))

    wish = desired_units if desired_units is not None else previous.get("desiredUnits")
    desired = spec.clamp(int(wish) if wish is not None else spec.min_units)
    zones = _zones(spec, observed, previous, now, unschedulable_timeout_s, zone_recovery_s)
    order = remainder_order([z.name for z in zones], f"{namespace}/{name}")
    target = spread(desired, order, {z.name for z in zones if z.healthy})
    plan = plan_replicas(target, facts.replicas, facts.ready, floor=desired)

    apply = [
        unit_deployment(name, namespace, zone, plan[zone], spec, default_image, default_resources)
        for zone in sorted(plan)
        if zone in target or plan[zone] > 0
    ]
    apply += [service(name, namespace), pod_disruption_budget(name, namespace, spec.floor)]
    delete = _emptied(plan, target, observed.deployments)
    status = build_status(
        replace(
            facts,
            spec=spec,
            zones=zones,
            desired_units=desired,
            target=target,
            replicas=plan,
            problems=unit_problems(observed.pods, now=now, ready_timeout_s=unit_ready_timeout_s),
            pods_left=_pods_left(observed.pods),
        )
    )
    events = event_messages(previous, status, scaling_reason)
    return Outcome(spec, status, events, apply, delete, zones, target, plan)


def _facts(
    body: Mapping[str, Any], observed: Observed, now: datetime, cluster_domain: str
) -> StatusFacts:
    """The status's inputs as an invalid spec leaves them; a valid one fills in the rest."""
    meta = body.get("metadata") or {}
    previous: Mapping[str, Any] = body.get("status") or {}
    replicas, ready, _ = deployment_counts(observed.deployments)
    return StatusFacts(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "default")),
        generation=int(meta.get("generation") or 0),
        spec=None,
        zones=[],
        desired_units=int(previous.get("desiredUnits") or 0),
        target={},
        replicas=replicas,
        ready=ready,
        previous=previous,
        now=now,
        cluster_domain=cluster_domain,
    )


def _zones(
    spec: ModelSpec,
    observed: Observed,
    previous: Mapping[str, Any],
    now: datetime,
    unschedulable_timeout_s: float,
    recovery_s: float,
) -> list[ZoneHealth]:
    """The Model's eligible zones and their health, damped by the last status's."""
    was_healthy = {str(z.get("name")): bool(z.get("healthy")) for z in previous.get("zones") or []}
    return zone_health(
        observed.nodes,
        spec.unit,
        spec.zones,
        unschedulable_units(observed.pods, now),
        unschedulable_timeout_s,
        was_healthy=was_healthy,
        now=now,
        recovery_s=recovery_s,
    )


def _emptied(
    plan: Mapping[str, int],
    target: Mapping[str, int],
    deployments: Sequence[Mapping[str, Any]],
) -> list[str]:
    """Deployments of zones that left the placement and have drained to 0."""
    names = deployment_counts(deployments)[2]
    return sorted(names[z] for z in plan if z not in target and plan[z] == 0 and z in names)


def _pods_left(pods: Sequence[Mapping[str, Any]]) -> int:
    """Unit Pods that still exist and have not finished (terminating ones count)."""
    return sum(
        1 for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    )
