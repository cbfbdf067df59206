"""Status phases, conditions and the sentences of Events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from vigil_operator.core.crd import ModelValidator
from vigil_operator.core.spec import ModelSpec, parse_spec
from vigil_operator.core.status import (
    DRAINING,
    Event,
    StatusFacts,
    build_status,
    condition,
    event_messages,
    format_time,
    unit_problems,
)
from vigil_operator.core.zones import ZoneHealth

ABC = ("us-east-1a", "us-east-1b", "us-east-1c")
HEALTHY = [ZoneHealth(z, True, 2, 2, "") for z in ABC]


def _spec(**overrides: Any) -> ModelSpec:
    return parse_spec({"artifact": {"uri": "file:///m.vigil"}, "minUnits": 3, **overrides})


def _status(
    now: datetime,
    *,
    ready: dict[str, int],
    target: dict[str, int] | None = None,
    replicas: dict[str, int] | None = None,
    zones: list[ZoneHealth] | None = None,
    spec: ModelSpec | None = None,
    desired: int = 3,
    previous: dict[str, Any] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    target = dict.fromkeys(ABC, 1) if target is None else target
    facts = StatusFacts(
        name="pcb-inspector",
        namespace="factory",
        generation=4,
        spec=_spec() if spec is None and "error" not in kw else spec,
        zones=HEALTHY if zones is None else zones,
        desired_units=desired,
        target=target,
        replicas=dict(target) if replicas is None else replicas,
        ready=ready,
        previous=previous or {},
        now=now,
        **kw,
    )
    return build_status(facts)


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    (found,) = [c for c in status["conditions"] if c["type"] == type_]
    return found


def test_hosted_when_the_desired_units_serve(now: datetime) -> None:
    status = _status(now, ready=dict.fromkeys(ABC, 1))
    assert status["phase"] == "Hosted"
    assert status["message"] == "3/3 units in service in 3 zones"
    assert (status["desiredUnits"], status["inServiceUnits"]) == (3, 3)
    assert status["endpoint"] == "dns:///pcb-inspector.factory.svc.cluster.local:50051"
    assert status["observedGeneration"] == 4
    assert status["zones"][0] == {
        "name": "us-east-1a",
        "desiredUnits": 1,
        "inServiceUnits": 1,
        "healthy": True,
        "message": "2/2 nodes Ready",
    }
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("Ready", "True", "Hosted"),
        ("Scaling", "False", "Steady"),
        ("ZoneDegraded", "False", "AllZonesHealthy"),
    ]


def test_starting_until_in_service(now: datetime) -> None:
    status = _status(now, ready={"us-east-1a": 1})
    assert status["phase"] == "StartingHosting"
    assert status["message"] == "starting: 1/3 units in service"
    assert _cond(status, "Ready")["status"] == "False"
    assert _cond(status, "Scaling")["reason"] == "ScalingUp"


def test_a_hosted_model_that_loses_a_zone_stays_hosted_and_says_so(now: datetime) -> None:
    hosted = _status(now, ready=dict.fromkeys(ABC, 1))
    zones = [ZoneHealth(ABC[0], False, 2, 0, "0/2 nodes Ready"), *HEALTHY[1:]]
    later = now + timedelta(minutes=1)
    status = _status(
        later,
        ready={ABC[1]: 1, ABC[2]: 1},
        zones=zones,
        previous=hosted,
        target={ABC[0]: 0, ABC[1]: 2, ABC[2]: 1},
    )
    assert status["phase"] == "Hosted"
    assert status["message"] == (
        "2/3 units in service, scaling; zone unhealthy: us-east-1a (0/2 nodes Ready)"
    )
    assert _cond(status, "Ready")["lastTransitionTime"] == format_time(now)  # unchanged
    degraded = _cond(status, "ZoneDegraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ZoneUnhealthy")
    assert degraded["lastTransitionTime"] == format_time(later)
    assert _cond(status, "Scaling")["status"] == "True"


def test_a_hosted_model_with_nothing_in_service_starts_again(now: datetime) -> None:
    hosted = _status(now, ready=dict.fromkeys(ABC, 1))
    assert _status(now, ready={}, previous=hosted)["phase"] == "StartingHosting"


def test_no_healthy_zone_and_no_zone_at_all(now: datetime) -> None:
    zones = [ZoneHealth(z, False, 0, 0, "no eligible nodes") for z in ABC]
    status = _status(now, ready={}, zones=zones)
    assert status["message"].endswith(
        "no healthy zone: us-east-1a (no eligible nodes), us-east-1b (no eligible nodes), "
        "us-east-1c (no eligible nodes)"
    )
    assert _cond(status, "ZoneDegraded")["reason"] == "NoHealthyZone"
    none = _status(now, ready={}, zones=[], target={})
    assert "no zone has an eligible node" in none["message"]
    assert _cond(none, "ZoneDegraded")["reason"] == "NoEligibleZone"
    assert none["zones"] == []


def test_units_that_cannot_start_fail_hosting(
    now: datetime, pod: Callable[..., dict[str, Any]]
) -> None:
    problems = unit_problems([pod("m-a-1", "a", waiting="CrashLoopBackOff")])
    status = _status(now, ready={}, problems=problems)
    assert status["phase"] == "HostingFailed"
    assert status["message"] == (
        "units cannot start: unit m-a-1: container unit CrashLoopBackOff "
        "(exit code 1, back-off 40s)"
    )


def test_invalid_spec_fails_hosting(now: datetime) -> None:
    status = _status(
        now,
        ready={},
        target={},
        replicas={},
        zones=[],
        desired=0,
        error="maxUnits must be greater than or equal to minUnits",
    )
    assert status["phase"] == "HostingFailed"
    assert status["message"] == "maxUnits must be greater than or equal to minUnits"
    assert _cond(status, "Scaling")["reason"] == "InvalidSpec"
    assert _cond(status, "Ready")["reason"] == "HostingFailed"


def test_stopping_then_stopped(now: datetime) -> None:
    stopped = _spec(state="Stopped")
    zero = dict.fromkeys(ABC, 0)
    stopping = _status(now, spec=stopped, desired=0, target=zero, ready={ABC[0]: 1})
    assert (stopping["phase"], stopping["message"]) == ("StoppingHosting", "stopping: 1 unit left")
    assert _status(now, spec=stopped, desired=0, target=zero, ready={}, pods_left=2)["phase"] == (
        "StoppingHosting"
    )
    done = _status(now, spec=stopped, desired=0, target=zero, ready={})
    assert (done["phase"], done["message"]) == ("Stopped", "stopped: no units running")
    assert _cond(done, "ZoneDegraded")["reason"] == "NotRunning"
    assert _cond(done, "Scaling")["reason"] == "Steady"


def test_scaling_reasons(now: datetime) -> None:
    down = _status(now, ready=dict.fromkeys(ABC, 2), replicas=dict.fromkeys(ABC, 2))
    assert _cond(down, "Scaling")["reason"] == "ScalingDown"
    moving = _status(
        now, ready={ABC[0]: 0, ABC[1]: 2, ABC[2]: 1}, replicas={ABC[0]: 1, ABC[1]: 2, ABC[2]: 1}
    )
    assert _cond(moving, "Scaling")["reason"] == "Rebalancing"  # a surge, not a scale-down
    rebalancing = _status(
        now, ready={ABC[1]: 2, ABC[2]: 1}, replicas={ABC[0]: 0, ABC[1]: 2, ABC[2]: 1}
    )
    assert _cond(rebalancing, "Scaling")["reason"] == "Rebalancing"


def test_draining_zones_are_listed(now: datetime) -> None:
    status = _status(
        now,
        ready={**dict.fromkeys(ABC, 1), "us-west-2a": 1},
        replicas={**dict.fromkeys(ABC, 1), "us-west-2a": 1},
    )
    assert status["zones"][-1] == {
        "name": "us-west-2a",
        "desiredUnits": 0,
        "inServiceUnits": 1,
        "healthy": True,
        "message": DRAINING,
    }
    assert status["inServiceUnits"] == 4


def test_conditions_keep_their_transition_time(now: datetime) -> None:
    first = condition(None, "Ready", True, "Hosted", "ok", 1, now)
    later = now + timedelta(hours=1)
    same = condition([first], "Ready", True, "Hosted", "still ok", 2, later)
    assert same["lastTransitionTime"] == "2025-03-01T12:00:00Z"
    assert same["observedGeneration"] == 2 and same["message"] == "still ok"
    flipped = condition([same], "Ready", False, "StartingHosting", "", 2, later)
    assert flipped["lastTransitionTime"] == "2025-03-01T13:00:00Z"
    assert format_time(datetime(2025, 1, 1)) == "2025-01-01T00:00:00Z"  # naive: UTC


@pytest.mark.parametrize("previous", [False, True])
def test_every_status_fits_the_crd(
    now: datetime,
    crd_validator: ModelValidator,
    example: Callable[[str], dict[str, Any]],
    previous: bool,
) -> None:
    old = _status(now, ready=dict.fromkeys(ABC, 1)) if previous else None
    statuses = [
        _status(now, ready=dict.fromkeys(ABC, 1), previous=old),
        _status(now, ready={}, zones=[], target={}, previous=old),
        _status(now, ready={}, desired=0, zones=[], target={}, replicas={}, error="bad"),
        _status(now, spec=_spec(state="Stopped"), desired=0, target={}, ready={"x": 1}),
    ]
    for status in statuses:
        body = {**example("model.yaml"), "status": status}
        assert crd_validator.errors(body) == []


def test_unit_problems(pod: Callable[..., dict[str, Any]]) -> None:
    pods = [
        pod("m-a-1", "a", waiting="ImagePullBackOff"),
        pod("m-a-2", "a", waiting="ContainerCreating"),  # on its way: not a problem
        pod("m-b-1", "b", init_waiting="CrashLoopBackOff"),
        pod("m-b-2", "b", waiting="CrashLoopBackOff", terminating=True),
        {"metadata": {"name": "other"}, "status": {}},  # not a unit
    ]
    assert unit_problems(pods) == [
        "unit m-a-1: container unit ImagePullBackOff (exit code 1, back-off 40s)",
        "unit m-b-1: container fetch-artifact CrashLoopBackOff",
    ]
    many = [pod(f"m-{i}", "a", waiting="CrashLoopBackOff") for i in range(9)]
    assert len(unit_problems(many)) == 5


def _zones(*entries: tuple[str, int, bool, str]) -> list[dict[str, Any]]:
    return [
        {"name": n, "desiredUnits": d, "inServiceUnits": d, "healthy": h, "message": m}
        for n, d, h, m in entries
    ]


def test_failover_and_recovery_events() -> None:
    before = {
        "phase": "Hosted",
        "message": "",
        "desiredUnits": 3,
        "zones": _zones(
            (ABC[0], 1, True, "2/2 nodes Ready"), (ABC[1], 1, True, ""), (ABC[2], 1, True, "")
        ),
    }
    failed = {
        **before,
        "zones": _zones(
            (ABC[0], 0, False, "0/2 nodes Ready"), (ABC[1], 2, True, ""), (ABC[2], 1, True, "")
        ),
    }
    assert event_messages(before, failed) == [
        Event(
            "Warning",
            "ZoneUnhealthy",
            "zone us-east-1a unhealthy (0/2 nodes Ready): moved 1 unit to us-east-1b",
        ),
    ]
    recovered = {
        **before,
        "zones": _zones(
            (ABC[0], 1, True, "2/2 nodes Ready"), (ABC[1], 1, True, ""), (ABC[2], 1, True, "")
        ),
    }
    assert event_messages(failed, recovered) == [
        Event(
            "Normal",
            "ZoneRecovered",
            "zone us-east-1a healthy again (2/2 nodes Ready): moving 1 unit back, surge first",
        ),
    ]


def test_failover_sentence_with_several_destinations() -> None:
    before = {
        "phase": "Hosted",
        "desiredUnits": 6,
        "zones": _zones((ABC[0], 2, True, ""), (ABC[1], 2, True, ""), (ABC[2], 2, True, "")),
    }
    after = {
        **before,
        "zones": _zones(
            (ABC[0], 0, False, "0/2 nodes Ready"), (ABC[1], 3, True, ""), (ABC[2], 3, True, "")
        ),
    }
    (event,) = event_messages(before, after)
    assert event.message == (
        "zone us-east-1a unhealthy (0/2 nodes Ready): moved 2 units to us-east-1b, us-east-1c"
    )
    nowhere = {
        **before,
        "zones": _zones(
            (ABC[0], 0, False, "no eligible nodes"), (ABC[1], 2, False, "x"), (ABC[2], 2, True, "")
        ),
    }
    assert [e.message for e in event_messages(before, nowhere)] == [
        "zone us-east-1a unhealthy (no eligible nodes): no healthy zone to move its 2 units to",
        "zone us-east-1b unhealthy (x): no healthy zone to move its 2 units to",
    ]


def test_scaling_and_phase_events() -> None:
    before = {"phase": "StartingHosting", "message": "starting", "desiredUnits": 2, "zones": []}
    after = {"phase": "Hosted", "message": "4/4 units in service", "desiredUnits": 4, "zones": []}
    assert event_messages(before, after, "utilization 0.82 above target 0.6") == [
        Event("Normal", "ScaledUp", "desired units 2 -> 4: utilization 0.82 above target 0.6"),
        Event("Normal", "Hosted", "4/4 units in service"),
    ]
    down = {**after, "desiredUnits": 3}
    assert event_messages(after, down) == [Event("Normal", "ScaledDown", "desired units 4 -> 3")]
    failed = {**after, "phase": "HostingFailed", "message": "bad"}
    assert event_messages(after, failed) == [Event("Warning", "HostingFailed", "bad")]
    assert event_messages(after, after) == []
    assert event_messages(None, before) == [Event("Normal", "StartingHosting", "starting")]


def _running_unready(name: str, zone: str, started: datetime) -> dict[str, Any]:
    """A unit whose container runs but whose readiness probe never passes."""
    return {
        "metadata": {"name": name, "labels": {"vigil.dev/model": "m", "vigil.dev/zone": zone}},
        "status": {
            "phase": "Running",
            "startTime": format_time(started),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "ContainersNotReady",
                    "message": "containers with unready status: [unit]",
                }
            ],
        },
    }


def test_a_unit_never_ready_is_reported_once_late(now: datetime) -> None:
    young = _running_unready("m-a-1", "a", now - timedelta(seconds=599))
    old = _running_unready("m-b-1", "b", now - timedelta(seconds=601))
    assert unit_problems([young, old], now=now) == [
        "unit m-b-1: not Ready 601s after starting (containers with unready status: [unit])"
    ]
    assert unit_problems([old]) == []  # without a clock nothing counts as late
    assert unit_problems([old], now=now, ready_timeout_s=900) == []


def test_a_stuck_unit_beside_serving_ones_does_not_block_the_model(now: datetime) -> None:
    """2 of 3 units serve, the third never turns Ready: Hosted, the stuck unit named
    in the message, the Scaling condition and one Warning Event."""
    stuck = _running_unready("m-c-1", "us-east-1c", now - timedelta(seconds=700))
    problems = unit_problems([stuck], now=now)
    ready = {"us-east-1a": 1, "us-east-1b": 1, "us-east-1c": 0}
    first = _status(now, ready=ready, problems=problems)
    assert first["phase"] == "Hosted"
    assert first["message"] == (
        "2/3 units in service; units cannot start: unit m-c-1: not Ready 700s after starting "
        "(containers with unready status: [unit])"
    )
    scaling = _cond(first, "Scaling")
    assert (scaling["status"], scaling["reason"]) == ("True", "UnitsNotReady")
    assert "m-c-1" in scaling["message"]
    starting = _status(now, ready=ready)  # before the unit was late
    events = event_messages(starting, first)
    assert [(e.type, e.reason) for e in events] == [
        ("Warning", "UnitsNotReady"),
        ("Normal", "Hosted"),
    ]
    assert events[0].message.startswith("units cannot start: unit m-c-1: not Ready")
    again = _status(now, ready=ready, problems=problems, previous=first)
    assert event_messages(first, again) == []  # reported once, not on every reconcile
    none_serve = _status(now, ready={}, problems=problems)
    assert none_serve["phase"] == "HostingFailed"
