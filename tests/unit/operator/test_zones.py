"""Zone discovery and health from Nodes and unit Pods."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from vigil_operator.core.spec import Toleration, UnitSpec
from vigil_operator.core.zones import (
    Stuck,
    ZoneHealth,
    node_eligible,
    node_ready,
    parse_time,
    tolerates,
    unschedulable_units,
    zone_health,
)

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("toleration", "taint", "expected"),
    [
        (Toleration(operator="Exists"), GPU_TAINT, True),  # empty key + Exists: everything
        (Toleration("nvidia.com/gpu", "Exists"), GPU_TAINT, True),
        (Toleration("nvidia.com/gpu", "Exists", effect="NoSchedule"), GPU_TAINT, True),
        (Toleration("nvidia.com/gpu", "Exists", effect="NoExecute"), GPU_TAINT, False),
        (Toleration("nvidia.com/gpu", "Equal", "present"), GPU_TAINT, True),
        (Toleration("nvidia.com/gpu", "Equal", "absent"), GPU_TAINT, False),
        (Toleration("other", "Exists"), GPU_TAINT, False),
        (Toleration("dedicated", "Equal", ""), {"key": "dedicated", "effect": "NoSchedule"}, True),
        (
            Toleration("dedicated", "Equal", "x"),
            {"key": "dedicated", "effect": "NoSchedule"},
            False,
        ),
    ],
)
def test_toleration_matching(toleration: Toleration, taint: dict[str, Any], expected: bool) -> None:
    assert tolerates([toleration], taint) is expected


def test_no_tolerations_tolerate_nothing() -> None:
    assert not tolerates([], GPU_TAINT)


def test_eligibility(node: Callable[..., dict[str, Any]]) -> None:
    gpu_unit = UnitSpec(
        gpus=2, node_selector={"pool": "gpu"}, tolerations=(Toleration("nvidia.com/gpu", "Exists"),)
    )
    ok = node("n", "a", gpus=4, labels={"pool": "gpu"}, taints=[GPU_TAINT])
    assert node_eligible(ok, gpu_unit)
    assert not node_eligible(node("n", "a", gpus=4), gpu_unit)  # nodeSelector
    assert not node_eligible(node("n", "a", gpus=1, labels={"pool": "gpu"}), gpu_unit)  # 1 < 2
    assert not node_eligible(node("n", "a", gpus=None, labels={"pool": "gpu"}), gpu_unit)
    assert not node_eligible(node("n", "a", gpus="junk", labels={"pool": "gpu"}), gpu_unit)
    cordoned = node("n", "a", gpus=4, labels={"pool": "gpu"}, unschedulable=True)
    assert not node_eligible(cordoned, gpu_unit)
    tainted = node(
        "n",
        "a",
        gpus=4,
        labels={"pool": "gpu"},
        taints=[{"key": "dedicated", "value": "db", "effect": "NoExecute"}],
    )
    assert not node_eligible(tainted, gpu_unit)
    soft = node(
        "n",
        "a",
        gpus=4,
        labels={"pool": "gpu"},
        taints=[{"key": "dedicated", "effect": "PreferNoSchedule"}],
    )
    assert node_eligible(soft, gpu_unit)


def test_cpu_units_ignore_gpus_and_lifecycle_taints_count_as_not_ready(
    node: Callable[..., dict[str, Any]],
) -> None:
    cpu = UnitSpec(gpus=0)
    assert node_eligible(node("n", "a", gpus=None), cpu)
    down = node(
        "n",
        "a",
        ready=False,
        gpus=None,
        taints=[
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
        ],
    )
    assert node_eligible(down, cpu) and not node_ready(down)
    assert node_ready(node("n", "a"))
    assert not node_ready({"metadata": {}, "status": {}})


def test_discovers_zones_with_eligible_nodes_sorted(node: Callable[..., dict[str, Any]]) -> None:
    nodes = [
        node("c1", "zone-c"),
        node("a1", "zone-a"),
        node("a2", "zone-a", ready=False),
        node("b1", "zone-b", gpus=0),  # not eligible for a GPU unit
        node("x1", None),  # no zone label: never eligible
    ]
    assert zone_health(nodes, UnitSpec(gpus=1)) == [
        ZoneHealth("zone-a", True, 2, 1, ""),
        ZoneHealth("zone-c", True, 1, 1, ""),
    ]
    assert [z.name for z in zone_health(nodes, UnitSpec(gpus=0))] == ["zone-a", "zone-b", "zone-c"]


def test_configured_zones_are_used_even_without_nodes(node: Callable[..., dict[str, Any]]) -> None:
    nodes = [
        node("a1", "a"),
        node("b1", "b", ready=False),
        node("b2", "b", ready=False),
        node("d1", "d"),
    ]
    zones = zone_health(nodes, UnitSpec(), configured=["c", "b", "a"])
    assert zones == [
        ZoneHealth("a", True, 1, 1, ""),
        ZoneHealth("b", False, 2, 0, "0/2 nodes Ready"),
        ZoneHealth("c", False, 0, 0, "no eligible nodes"),
    ]
    assert [z.message for z in zones] == ["1/1 nodes Ready", "0/2 nodes Ready", "no eligible nodes"]


def test_no_nodes_no_zones() -> None:
    assert zone_health([], UnitSpec()) == []


def test_units_unschedulable_past_the_timeout_make_a_zone_unhealthy(
    node: Callable[..., dict[str, Any]], pod: Callable[..., dict[str, Any]], now: datetime
) -> None:
    nodes = [node("a1", "a"), node("b1", "b")]
    pods = [
        pod("m-a-1", "a", unschedulable_for=400),
        pod("m-a-2", "a", unschedulable_for=30),
        pod("m-b-1", "b", unschedulable_for=100),
        pod("m-b-2", "b", unschedulable_for=900, terminating=True),  # going away: ignored
        pod("m-c-1", "c", phase="Running"),
    ]
    stuck = unschedulable_units(pods, now)
    assert stuck == {
        "a": Stuck(400.0, "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
        "b": Stuck(100.0, "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
    }
    zones = zone_health(nodes, UnitSpec(), stuck=stuck, timeout_s=300)
    assert [z.healthy for z in zones] == [False, True]
    assert zones[0].reason == (
        "units unschedulable for 400s: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    )
    assert all(z.healthy for z in zone_health(nodes, UnitSpec(), stuck=stuck, timeout_s=600))


def test_unschedulable_without_a_time_counts_from_now(
    pod: Callable[..., dict[str, Any]], now: datetime
) -> None:
    stuck_pod = pod("p", "a", unschedulable_for=10)
    del stuck_pod["status"]["conditions"][0]["lastTransitionTime"]
    assert unschedulable_units([stuck_pod], now)["a"].seconds == 0.0
    assert unschedulable_units([{"metadata": {"name": "x"}}], now) == {}


def test_parse_time(now: datetime) -> None:
    assert parse_time("2025-03-01T12:00:00Z") == now
    assert parse_time(now) is now
    assert parse_time("yesterday") is None and parse_time(None) is None
