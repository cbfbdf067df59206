"""The local Deployment controller: scaling one zone, and rolling a new
artifact over with maxSurge 1 and maxUnavailable 0."""

from __future__ import annotations

from datetime import UTC, datetime

from vigil_operator.local.deployments import plan_zone, removal_order
from vigil_operator.local.world import UnitView

V1, V2 = "/m/v1.vigil", "/m/v2.vigil"


def r(
    name: str, ready: bool = True, template: str = V1, since: float = 0, created: float = 0
) -> UnitView:
    return UnitView(
        name,
        uid=name,
        zone="a",
        created=datetime(2025, 3, 1, tzinfo=UTC),
        template=template,
        created_mono=created,
        ready=ready,
        ready_since=since if ready else None,
    )


def test_scales_up_and_down_to_replicas() -> None:
    assert plan_zone([], 2, V1) == (2, [])
    assert plan_zone([r("a"), r("b")], 2, V1) == (0, [])
    three = [r("a", since=1), r("b", since=2), r("c", since=3)]
    assert plan_zone(three, 1, V1) == (0, ["c", "b"])  # the most recently Ready go first


def test_removes_units_that_are_not_ready_first_then_the_most_recently_ready() -> None:
    units = [
        r("old", since=10, created=1),
        r("starting", ready=False, created=5),
        r("new", since=50, created=2),
    ]
    assert [u.name for u in removal_order(units)] == ["starting", "new", "old"]
    assert plan_zone(units, 1, V1) == (0, ["starting", "new"])


def test_a_new_artifact_rolls_over_one_unit_at_a_time_keeping_replicas_ready() -> None:
    units = [r("o1"), r("o2")]
    assert plan_zone(units, 2, V2) == (1, [])  # surge one new unit
    units.append(r("n1", ready=False, template=V2))
    assert plan_zone(units, 2, V2) == (0, [])  # nothing goes before it is Ready
    units[-1] = r("n1", template=V2, since=5)
    start, stop = plan_zone(units, 2, V2)
    assert (start, len(stop)) == (1, 1)  # one old retires, the next new starts
    units = [u for u in units if u.name not in stop] + [r("n2", ready=False, template=V2)]
    assert plan_zone(units, 2, V2) == (0, [])
    units[-1] = r("n2", template=V2, since=9)
    start, stop = plan_zone(units, 2, V2)
    assert start == 0 and len(stop) == 1 and stop[0].startswith("o")


def test_old_units_that_serve_nothing_go_at_once() -> None:
    # o2 keeps serving; with it, up to replicas + 1 (maxSurge) units: two new ones
    assert plan_zone([r("o1", ready=False), r("o2")], 2, V2) == (2, ["o1"])


def test_zero_replicas_stops_everything() -> None:
    assert plan_zone([r("o1"), r("n1", template=V2)], 0, V2) == (0, ["n1", "o1"])
