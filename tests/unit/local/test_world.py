"""The local world as the core sees it: Nodes, Pods and Deployments built from
unit snapshots, read by the real core (reconcile, zones, status, scraper)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from vigil_operator.core.reconcile import reconcile
from vigil_operator.core.spec import parse_spec
from vigil_operator.core.status import unit_problems
from vigil_operator.core.zones import node_eligible, zone_health
from vigil_operator.local import world
from vigil_operator.local.world import UnitView
from vigil_operator.scraper import metrics_port, pod_ready

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ZONES = {"a": True, "b": True, "c": True}


def model(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "fabric", "namespace": "default", "generation": 1},
        "spec": {
            "artifact": {"uri": "file:///models/fabric.vigil"},
            "minUnits": 1,
            "maxUnits": 3,
            **spec,
        },
    }


def unit(name: str, zone: str, **kw: Any) -> UnitView:
    base = UnitView(
        name=name,
        uid=f"uid-{name}",
        zone=zone,
        created=NOW - timedelta(minutes=1),
        phase="Running",
        ready=True,
        grpc_port=40001,
        metrics_port=40002,
        pid=1234,
    )
    return replace(base, **kw)


def test_nodes_fit_any_unit_spec_and_follow_zone_health() -> None:
    spec = parse_spec(
        {
            "artifact": {"uri": "file:///m.vigil"},
            "unit": {"gpus": 4, "nodeSelector": {"nvidia.com/gpu.product": "A10G"}},
        }
    )
    nodes = world.nodes({"a": True, "b": False}, spec)
    assert [n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in nodes] == ["a", "b"]
    assert all(node_eligible(n, spec.unit) for n in nodes)
    health = {z.name: (z.healthy, z.message) for z in zone_health(nodes, spec.unit)}
    assert health == {"a": (True, "1/1 nodes Ready"), "b": (False, "0/1 nodes Ready")}


def test_a_ready_unit_is_a_ready_pod_the_scraper_can_read() -> None:
    pod = world.pod(unit("u1", "a"), "fabric", "default")
    assert pod_ready(pod)
    assert pod["status"]["podIP"] == "127.0.0.1"
    assert metrics_port(pod) == 40002
    assert pod["metadata"]["labels"] == {"vigil.dev/model": "fabric", "vigil.dev/zone": "a"}


def test_terminating_and_starting_units_are_not_ready() -> None:
    assert not pod_ready(world.pod(unit("u1", "a", terminating=True), "fabric", "default"))
    assert not pod_ready(world.pod(unit("u2", "a", ready=False), "fabric", "default"))
    pending = world.pod(
        unit("u3", "a", ready=False, phase="Pending", grpc_port=None, metrics_port=None),
        "fabric",
        "default",
    )
    assert "podIP" not in pending["status"]


def test_a_crash_looping_unit_reads_as_the_core_reports_it() -> None:
    crashed = unit(
        "fabric-a-x",
        "a",
        ready=False,
        restarts=3,
        waiting_reason="CrashLoopBackOff",
        last_exit_code=1,
        last_message="vigil serve: error: cannot read artifact /m.vigil: No such file",
    )
    problems = unit_problems([world.pod(crashed, "fabric", "default")])
    assert problems == [
        "unit fabric-a-x: container unit CrashLoopBackOff (exit code 1, "
        "vigil serve: error: cannot read artifact /m.vigil: No such file)"
    ]


def test_deployment_counts_ready_units_that_are_not_terminating() -> None:
    units = [
        unit("u1", "a"),
        unit("u2", "a", terminating=True),
        unit("u3", "a", ready=False),
        unit("u4", "b"),
    ]
    dep = world.deployment("fabric", "default", "a", 2, units)
    assert dep["metadata"]["name"] == "fabric-a"
    assert dep["spec"]["replicas"] == 2
    assert dep["status"] == {"replicas": 2, "readyReplicas": 1}


def test_the_core_spreads_over_local_zones_and_moves_a_down_zones_share() -> None:
    body = model(zones=["a", "b", "c"])
    observed = world.observe("fabric", "default", ZONES, {}, [])
    out = reconcile(body, observed, now=NOW, default_image="local", desired_units=3)
    assert out.target == {"a": 1, "b": 1, "c": 1}
    assert out.status["phase"] == "StartingHosting"

    units = [unit("u-a", "a"), unit("u-b", "b"), unit("u-c", "c")]
    body["status"] = out.status
    down = {"a": False, "b": True, "c": True}
    dead = [replace(units[0], ready=False, phase="Pending"), *units[1:]]
    observed = world.observe("fabric", "default", down, {"a": 1, "b": 1, "c": 1}, dead)
    out = reconcile(body, observed, now=NOW, default_image="local")
    assert out.target["a"] == 0 and out.target["b"] + out.target["c"] == 3
    assert min(out.target["b"], out.target["c"]) == 1  # which zone gets 2 is the core's call
    assert out.replicas == out.target  # a's unit serves nothing: freed at once
    zones = {z["name"]: z for z in out.status["zones"]}
    assert zones["a"]["healthy"] is False and zones["a"]["message"] == "0/1 nodes Ready"
    assert out.status["inServiceUnits"] == 2
    assert any(e.reason == "ZoneUnhealthy" for e in out.events)


def test_a_recovered_zone_gets_its_unit_back_surge_first() -> None:
    body = model(zones=["a", "b", "c"])
    body["status"] = {"desiredUnits": 3, "phase": "Hosted"}
    units = [unit("b1", "b"), unit("b2", "b"), unit("c1", "c")]
    observed = world.observe("fabric", "default", ZONES, {"a": 0, "b": 2, "c": 1}, units)
    out = reconcile(body, observed, now=NOW, default_image="local")
    # zone a grows at once; b keeps both Ready units until a's is Ready
    assert out.replicas == {"a": 1, "b": 2, "c": 1}
    units.append(unit("a1", "a"))
    observed = world.observe("fabric", "default", ZONES, out.replicas, units)
    out = reconcile(body, observed, now=NOW, default_image="local")
    assert out.replicas == {"a": 1, "b": 1, "c": 1}
