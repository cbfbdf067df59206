"""The Model's status and the sentences its Events carry.

Phases follow Lookout for Vision: StartingHosting until the desired units are
in service, then Hosted. A Hosted model that loses units or a zone stays
Hosted while at least one unit serves, with Scaling and ZoneDegraded saying
what is wrong; it falls back to StartingHosting only when nothing serves.
HostingFailed means the user must act: an invalid spec, or units that cannot
start (crash loops, image pull failures, units running but never Ready) while
none serves. Units that cannot start beside units that serve leave the model
Hosted: the message, the Scaling condition (reason UnitsNotReady) and a
Warning Event name them, and the rest of the model keeps serving and scaling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from .manifests import endpoint
from .placement import converged
from .spec import ModelSpec
from .zones import ZONE_POD_LABEL, ZoneHealth, parse_time

STARTING: Final = "StartingHosting"
HOSTED: Final = "Hosted"
FAILED: Final = "HostingFailed"
STOPPING: Final = "StoppingHosting"
STOPPED: Final = "Stopped"
PHASES: Final = (STARTING, HOSTED, FAILED, STOPPING, STOPPED)
UNITS_NOT_READY: Final = "UnitsNotReady"

# Container states that will not fix themselves without a change from the user.
FAILURE_REASONS: Final = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
DRAINING: Final = "draining: no longer among the Model's zones"
# A unit running this long without turning Ready is reported (as Deployments'
# default progressDeadlineSeconds: loading a model onto a GPU can take minutes).
UNIT_READY_TIMEOUT_S: Final = 600.0


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event for the Model: type Normal or Warning, a CamelCase reason."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def format_time(now: datetime) -> str:
    """metav1.Time: RFC 3339 in UTC with second precision."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    previous: Iterable[Mapping[str, Any]] | None,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> dict[str, Any]:
    """A metav1.Condition whose lastTransitionTime moves only when its status does."""
    value = "True" if status else "False"
    since = format_time(now)
    for old in previous or ():
        if old.get("type") == type_ and old.get("status") == value:
            since = str(old.get("lastTransitionTime") or since)
    return {
        "type": type_,
        "status": value,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    }


def unit_problems(
    pods: Iterable[Mapping[str, Any]],
    limit: int = 5,
    *,
    now: datetime | None = None,
    ready_timeout_s: float = UNIT_READY_TIMEOUT_S,
) -> list[str]:
    """Why units cannot start, one sentence per stuck container, and (given `now`)
    per unit running for `ready_timeout_s` without turning Ready."""
    found: set[str] = set()
    for pod in pods:
        meta = pod.get("metadata") or {}
        if ZONE_POD_LABEL not in (meta.get("labels") or {}) or meta.get("deletionTimestamp"):
            continue
        status = pod.get("status") or {}
        stuck = False
        for cs in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") not in FAILURE_REASONS:
                continue
            stuck = True
            text = f"unit {meta.get('name', '?')}: container {cs.get('name')} {waiting['reason']}"
            last = (cs.get("lastState") or {}).get("terminated") or {}
            detail = waiting.get("message") or last.get("message") or ""
            if last.get("exitCode") is not None:
                detail = f"exit code {last['exitCode']}" + (f", {detail}" if detail else "")
            found.add(f"{text} ({detail.strip()[:300]})" if detail else text)
        if not stuck and now is not None:
            late = _never_ready(meta, status, now, ready_timeout_s)
            if late:
                found.add(late)
    return sorted(found)[:limit]


def _never_ready(
    meta: Mapping[str, Any], status: Mapping[str, Any], now: datetime, timeout_s: float
) -> str:
    """A sentence for a Running unit that has not been Ready for `timeout_s` since it
    started; "" otherwise."""
    if status.get("phase") != "Running":
        return ""
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") == "True":
        return ""
    since = parse_time(status.get("startTime")) or parse_time(meta.get("creationTimestamp"))
    if since is None or (now - since).total_seconds() < timeout_s:
        return ""
    why = (ready or {}).get("message") or (ready or {}).get("reason") or "readiness never passed"
    waited = (now - since).total_seconds()
    return f"unit {meta.get('name', '?')}: not Ready {waited:.0f}s after starting ({why})"


def _plural(n: int, word: str = "unit") -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _zones_status(
    zones: Sequence[ZoneHealth],
    target: Mapping[str, int],
    replicas: Mapping[str, int],
    ready: Mapping[str, int],
) -> list[dict[str, Any]]:
    out = [
        {
            "name": z.name,
            "desiredUnits": target.get(z.name, 0),
            "inServiceUnits": ready.get(z.name, 0),
            "healthy": z.healthy,
            "message": z.message,
        }
        for z in zones
    ]
    known = {z.name for z in zones}
    for name in sorted((set(replicas) | set(ready)) - known):
        if replicas.get(name, 0) or ready.get(name, 0):
            out.append(
                {
                    "name": name,
                    "desiredUnits": 0,
                    "inServiceUnits": ready.get(name, 0),
                    "healthy": True,
                    "message": DRAINING,
                }
            )
    return out


def _zone_note(zones: Sequence[ZoneHealth]) -> str:
    bad = [z for z in zones if not z.healthy]
    if not zones:
        return (
            "no zone has an eligible node (nodes need the topology.kubernetes.io/zone label, "
            "the unit's nodeSelector and tolerations, and enough nvidia.com/gpu)"
        )
    if not bad:
        return ""
    listed = ", ".join(f"{z.name} ({z.reason})" for z in bad)
    if len(bad) == len(zones):
        return f"no healthy zone: {listed}"
    return f"zone{'s' if len(bad) > 1 else ''} unhealthy: {listed}"


@dataclass(frozen=True)
class StatusFacts:
    """What a Model's status is built from, as one reconcile saw it.

    `target` is the placement (units wanted per zone), `replicas` what the zones'
    Deployments are set to, `ready` their Ready units; `error` a SpecError's
    message (spec is then None); `problems` from `unit_problems`; `pods_left` the
    unit Pods that still exist (Stopped waits for none); `previous` the status as
    last written, for lastTransitionTime and the Hosted phase.
    """

    name: str
    namespace: str
    generation: int
    spec: ModelSpec | None
    zones: Sequence[ZoneHealth]
    desired_units: int
    target: Mapping[str, int]
    replicas: Mapping[str, int]
    ready: Mapping[str, int]
    previous: Mapping[str, Any]
    now: datetime
    error: str = ""
    problems: Sequence[str] = ()
    pods_left: int = 0
    cluster_domain: str = "cluster.local"

    @property
    def in_service(self) -> int:
        return sum(self.ready.values())


def _phase(f: StatusFacts) -> tuple[str, str]:
    """The phase and its message, before the zones' note."""
    if f.error or f.spec is None:
        return FAILED, f.error or "invalid spec"
    if not f.spec.running:
        left = max(sum(f.replicas.values()), f.in_service, f.pods_left)
        if left == 0:
            return STOPPED, "stopped: no units running"
        return STOPPING, f"stopping: {_plural(left)} left"
    placed = len([z for z in f.target if f.target[z] > 0])
    counts = f"{f.in_service}/{f.desired_units} units in service"
    stuck = f"units cannot start: {'; '.join(f.problems)}"
    if f.desired_units > 0 and f.in_service >= f.desired_units:
        return HOSTED, f"{counts} in {_plural(placed, 'zone')}"
    if f.in_service > 0 and f.problems:
        return HOSTED, f"{counts}; {stuck}"
    if f.in_service > 0 and f.previous.get("phase") == HOSTED:
        return HOSTED, f"{counts}, scaling"
    if f.problems:
        return FAILED, stuck
    return STARTING, f"starting: {counts}"


def build_status(f: StatusFacts) -> dict[str, Any]:
    """The status subresource for a Model."""
    phase, message = _phase(f)
    note = _zone_note(f.zones)
    if note and f.spec is not None and not f.error and f.spec.running:
        message = f"{message}; {note}"
    old = f.previous.get("conditions") or []
    return {
        "phase": phase,
        "message": message,
        "desiredUnits": f.desired_units,
        "inServiceUnits": f.in_service,
        "zones": _zones_status(f.zones, f.target, f.replicas, f.ready),
        "endpoint": endpoint(f.name, f.namespace, f.cluster_domain),
        "observedGeneration": f.generation,
        "conditions": [
            condition(old, "Ready", phase == HOSTED, phase, message, f.generation, f.now),
            _scaling(f, old),
            _degraded(f, note, old),
        ],
    }


def _scaling(f: StatusFacts, old: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    in_service, desired = f.in_service, f.desired_units
    if f.error or f.spec is None:
        args = (False, "InvalidSpec", "not scaling: the spec is invalid")
    elif in_service < desired and f.problems:
        args = (
            True,
            UNITS_NOT_READY,
            f"bringing units into service: {in_service}/{desired}; {'; '.join(f.problems)}",
        )
    elif in_service < desired:
        args = (True, "ScalingUp", f"bringing units into service: {in_service}/{desired}")
    elif in_service > desired:
        args = (True, "ScalingDown", f"removing units: {in_service} in service, {desired} desired")
    elif not converged(f.target, f.replicas):
        args = (True, "Rebalancing", "moving units between zones, surge first")
    else:
        args = (False, "Steady", f"{_plural(desired)} in service as placed")
    return condition(old, "Scaling", *args, f.generation, f.now)


def _degraded(f: StatusFacts, note: str, old: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if f.error or f.spec is None or not f.spec.running:
        args = (False, "NotRunning", "zones are not watched while the model does not run")
    elif not f.zones:
        args = (True, "NoEligibleZone", note)
    elif all(not z.healthy for z in f.zones):
        args = (True, "NoHealthyZone", note)
    elif note:
        args = (True, "ZoneUnhealthy", note)
    else:
        args = (False, "AllZonesHealthy", f"{_plural(len(f.zones), 'zone')} healthy")
    return condition(old, "ZoneDegraded", *args, f.generation, f.now)


def event_messages(
    previous: Mapping[str, Any] | None, new: Mapping[str, Any], scaling_reason: str = ""
) -> list[Event]:
    """Events for what changed between two statuses: the desired count, zones failing
    over and recovering, and the phase. `scaling_reason` says why the autoscaler
    moved (e.g. "utilization 0.82 above target 0.6")."""
    events: list[Event] = []
    prev = previous or {}
    before, after = prev.get("desiredUnits"), new.get("desiredUnits", 0)
    if before is not None and before != after:
        verb = "ScaledUp" if after > before else "ScaledDown"
        why = f": {scaling_reason}" if scaling_reason else ""
        events.append(Event("Normal", verb, f"desired units {before} -> {after}{why}"))
    old_zones = {z["name"]: z for z in prev.get("zones") or []}
    new_zones = {z["name"]: z for z in new.get("zones") or []}
    grew = sorted(
        name
        for name, z in new_zones.items()
        if z["desiredUnits"] > old_zones.get(name, {}).get("desiredUnits", 0)
    )
    for name, z in new_zones.items():
        was = old_zones.get(name)
        if was is None:
            continue
        if was["healthy"] and not z["healthy"]:
            moved = was["desiredUnits"]
            head = f"zone {name} unhealthy ({z.get('message', '')})"
            if moved == 0:
                text = f"{head}; it had no units"
            elif grew:
                text = f"{head}: moved {_plural(moved)} to {', '.join(grew)}"
            else:
                text = f"{head}: no healthy zone to move its {_plural(moved)} to"
            events.append(Event("Warning", "ZoneUnhealthy", text))
        elif not was["healthy"] and z["healthy"]:
            back = z["desiredUnits"]
            text = f"zone {name} healthy again ({z.get('message', '')})"
            if back:
                text += f": moving {_plural(back)} back, surge first"
            events.append(Event("Normal", "ZoneRecovered", text))
    stuck = _reason(new, "Scaling") == UNITS_NOT_READY and new.get("phase") != FAILED
    if stuck and _reason(prev, "Scaling") != UNITS_NOT_READY:
        message = str(new.get("message", "")).split("; ", 1)[-1]
        events.append(Event("Warning", UNITS_NOT_READY, message))
    if prev.get("phase") != new.get("phase"):
        kind: Literal["Normal", "Warning"] = "Warning" if new.get("phase") == FAILED else "Normal"
        events.append(Event(kind, str(new.get("phase")), str(new.get("message", ""))))
    return events


def _reason(status: Mapping[str, Any], type_: str) -> str:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return str(cond.get("reason", ""))
    return ""
