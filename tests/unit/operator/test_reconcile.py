"""Whole reconcile steps against a tiny simulated cluster: hosting, zone failover
and surge-first recovery, scaling, stopping, invalid specs."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import kubernetes_validate

from vigil_operator.core.reconcile import Observed, Outcome, deployment_counts, reconcile
from vigil_operator.core.status import Event

ABC = ["us-east-1a", "us-east-1b", "us-east-1c"]
IMAGE = "ghcr.io/vigil/inference:0.1.0"
Obj = dict[str, Any]


class Cluster:
    """Deployments whose units become Ready on the next step when their zone has a
    Ready node, and a Model whose status is written back after each reconcile."""

    def __init__(self, node: Callable[..., Obj], model: Obj, now: datetime) -> None:
        self.nodes = {z: [node(f"{z}-{i}", z) for i in range(2)] for z in ABC}
        self.node = node
        self.model = model
        self.deployments: dict[str, Obj] = {}
        self.now = now
        self.events: list[Event] = []

    def zone_down(self, zone: str) -> None:
        self.nodes[zone] = [
            self.node(n["metadata"]["name"], zone, ready=False) for n in self.nodes[zone]
        ]
        for dep in self.deployments.values():
            if dep["metadata"]["labels"]["vigil.dev/zone"] == zone:
                dep["status"]["readyReplicas"] = 0

    def zone_up(self, zone: str) -> None:
        self.nodes[zone] = [self.node(n["metadata"]["name"], zone) for n in self.nodes[zone]]

    def step(self, desired: int | None = None, reason: str = "") -> Outcome:
        self.now += timedelta(seconds=10)
        observed = Observed(
            nodes=[n for ns in self.nodes.values() for n in ns],
            deployments=list(self.deployments.values()),
        )
        out = reconcile(
            copy.deepcopy(self.model),
            observed,
            now=self.now,
            default_image=IMAGE,
            desired_units=desired,
            scaling_reason=reason,
        )
        for obj in out.apply:
            if obj["kind"] == "Deployment":
                name, zone = obj["metadata"]["name"], obj["metadata"]["labels"]["vigil.dev/zone"]
                old = self.deployments.get(name, {"status": {"readyReplicas": 0}})
                zone_ready = any(
                    n["status"]["conditions"][1]["status"] == "True"
                    for n in self.nodes.get(zone, [])
                )
                # Units asked for last step are Ready now (if the zone can run them).
                ready_now = min(old["status"]["readyReplicas"], obj["spec"]["replicas"])
                obj = {**obj, "status": {"readyReplicas": ready_now}}
                obj["_next_ready"] = obj["spec"]["replicas"] if zone_ready else 0
                self.deployments[name] = obj
        for name in out.delete_deployments:
            del self.deployments[name]
        self.model["status"] = out.status
        self.model["metadata"]["generation"] = self.model["metadata"].get("generation", 1)
        self.events += out.events
        return out

    def settle(self) -> None:
        """Time passes: the units asked for start and become Ready."""
        for dep in self.deployments.values():
            dep["status"]["readyReplicas"] = dep.pop("_next_ready", 0)

    def replicas(self) -> dict[str, int]:
        return deployment_counts(list(self.deployments.values()))[0]


def _model(**spec: Any) -> Obj:
    return {
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Model",
        "metadata": {
            "name": "pcb-inspector",
            "namespace": "factory",
            "generation": 1,
            "uid": "u-1",
        },
        "spec": {
            "artifact": {"uri": "pvc://models/pcb/v3.vigil"},
            "minUnits": 3,
            "maxUnits": 6,
            "zones": ABC,
            **spec,
        },
    }


def test_hosting_failover_and_surge_first_recovery(node: Callable[..., Obj], now: datetime) -> None:
    cluster = Cluster(node, _model(), now)
    first = cluster.step()
    assert first.status["phase"] == "StartingHosting"
    kinds = sorted(o["kind"] for o in first.apply)
    assert kinds == ["Deployment"] * 3 + ["PodDisruptionBudget", "Service"]
    for obj in first.apply:
        kubernetes_validate.validate(obj, "1.37", strict=True)
    assert cluster.replicas() == dict.fromkeys(ABC, 1)
    cluster.settle()
    hosted = cluster.step()
    assert hosted.status["phase"] == "Hosted"
    assert hosted.status["inServiceUnits"] == 3
    assert Event("Normal", "Hosted", "3/3 units in service in 3 zones") in hosted.events

    cluster.zone_down("us-east-1a")
    failover = cluster.step()
    assert failover.target == {"us-east-1a": 0, "us-east-1b": 2, "us-east-1c": 1}
    assert cluster.replicas() == {"us-east-1a": 0, "us-east-1b": 2, "us-east-1c": 1}
    assert failover.status["phase"] == "Hosted"  # still serving, degraded
    assert failover.events == [
        Event(
            "Warning",
            "ZoneUnhealthy",
            "zone us-east-1a unhealthy (0/2 nodes Ready): moved 1 unit to us-east-1b",
        ),
    ]
    cluster.settle()
    assert cluster.step().status["inServiceUnits"] == 3

    cluster.zone_up("us-east-1a")
    back = cluster.step()
    # Surge first: 1a gets its unit back, 1b keeps its extra until that one is Ready.
    assert cluster.replicas() == {"us-east-1a": 1, "us-east-1b": 2, "us-east-1c": 1}
    assert back.events[0].reason == "ZoneRecovered"
    assert back.status["conditions"][1]["reason"] == "Rebalancing"
    cluster.settle()
    cluster.step()
    assert cluster.replicas() == dict.fromkeys(ABC, 1)
    cluster.settle()
    steady = cluster.step()
    assert steady.status["conditions"][1]["reason"] == "Steady"
    assert steady.events == []


def test_autoscaler_decisions_are_clamped_and_kept(node: Callable[..., Obj], now: datetime) -> None:
    cluster = Cluster(node, _model(), now)
    cluster.step()
    up = cluster.step(desired=5, reason="utilization 0.9 above target 0.6")
    assert up.status["desiredUnits"] == 5
    assert (
        Event("Normal", "ScaledUp", "desired units 3 -> 5: utilization 0.9 above target 0.6")
        in up.events
    )
    assert cluster.replicas() == {"us-east-1a": 2, "us-east-1b": 2, "us-east-1c": 1}
    assert cluster.step().status["desiredUnits"] == 5  # None keeps the last decision
    assert cluster.step(desired=50).status["desiredUnits"] == 6
    assert cluster.step(desired=0).status["desiredUnits"] == 3


def test_stopping_scales_to_zero_and_keeps_the_children(
    node: Callable[..., Obj], now: datetime
) -> None:
    cluster = Cluster(node, _model(), now)
    cluster.step()
    cluster.settle()
    cluster.step()
    cluster.model["spec"]["state"] = "Stopped"
    stopping = cluster.step()
    assert cluster.replicas() == dict.fromkeys(ABC, 0)
    assert stopping.status["phase"] == "StoppingHosting"
    pdb = next(o for o in stopping.apply if o["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 0
    cluster.settle()
    assert cluster.step().status["phase"] == "Stopped"


def test_removed_zone_drains_surge_first_then_is_deleted(
    node: Callable[..., Obj], now: datetime
) -> None:
    cluster = Cluster(node, _model(minUnits=2, zones=ABC[:2]), now)
    cluster.step()
    cluster.settle()
    cluster.step()
    cluster.model["spec"]["zones"] = ABC[1:]
    moving = cluster.step()
    assert cluster.replicas() == dict.fromkeys(ABC, 1)
    assert moving.delete_deployments == []
    draining = [z for z in moving.status["zones"] if z["name"] == "us-east-1a"]
    assert draining[0]["message"].startswith("draining")
    cluster.settle()
    done = cluster.step()  # 1c's unit is Ready: 1a's may go, and its Deployment with it
    assert done.delete_deployments == ["pcb-inspector-us-east-1a"]
    assert cluster.replicas() == {"us-east-1b": 1, "us-east-1c": 1}
    assert done.status["zones"][-1]["message"].startswith("draining")  # until it is gone
    assert [z["name"] for z in cluster.step().status["zones"]] == ["us-east-1b", "us-east-1c"]


def test_invalid_spec_reports_hosting_failed_and_touches_nothing(
    node: Callable[..., Obj], now: datetime
) -> None:
    cluster = Cluster(node, _model(), now)
    cluster.step()
    cluster.model["spec"]["maxUnits"] = 1
    out = cluster.step()
    assert out.spec is None and out.apply == [] and out.delete_deployments == []
    assert out.status["phase"] == "HostingFailed"
    assert out.status["message"] == "maxUnits must be greater than or equal to minUnits"
    assert out.events == [Event("Warning", "HostingFailed", out.status["message"])]
    assert cluster.replicas() == dict.fromkeys(ABC, 1)
    bad_name = _model()
    bad_name["metadata"]["name"] = "PCB"
    assert (
        "DNS-1035"
        in reconcile(bad_name, Observed(), now=now, default_image=IMAGE).status["message"]
    )


def test_unschedulable_units_move_after_the_timeout(
    node: Callable[..., Obj], pod: Callable[..., Obj], now: datetime
) -> None:
    nodes = [node(f"{z}-0", z) for z in ABC]
    model = _model()
    pods = [pod("p", "us-east-1c", unschedulable_for=400, now=now)]
    early = reconcile(
        model,
        Observed(nodes=nodes, pods=pods),
        now=now,
        default_image=IMAGE,
        unschedulable_timeout_s=600,
    )
    assert early.target == dict.fromkeys(ABC, 1)
    late = reconcile(model, Observed(nodes=nodes, pods=pods), now=now, default_image=IMAGE)
    assert late.target == {"us-east-1a": 2, "us-east-1b": 1, "us-east-1c": 0}
    zone_c = late.status["zones"][2]
    assert zone_c["healthy"] is False
    assert zone_c["message"].startswith("units unschedulable for 400s: 0/3 nodes are available")


def test_auto_zones_without_labelled_nodes(node: Callable[..., Obj], now: datetime) -> None:
    model = _model()
    del model["spec"]["zones"]
    out = reconcile(model, Observed(nodes=[node("kind", None)]), now=now, default_image=IMAGE)
    assert out.target == {}
    assert [o["kind"] for o in out.apply] == ["Service", "PodDisruptionBudget"]
    assert "topology.kubernetes.io/zone" in out.status["message"]
    assert out.status["phase"] == "StartingHosting"


def _ready_since(cluster: Cluster, zone: str, ready: bool) -> None:
    """The zone's nodes turn Ready (or not) now, as a kubelet reports it."""
    for n in cluster.nodes[zone]:
        cond = n["status"]["conditions"][1]
        if (cond["status"] == "True") != ready:
            cond["status"] = "True" if ready else "False"
            cond["lastTransitionTime"] = cluster.now.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_flapping_zone_fails_over_once_and_returns_once_settled(
    node: Callable[..., Obj], now: datetime
) -> None:
    """Nodes of one zone flap Ready/NotReady every 10 s step for 5 minutes: units
    leave that zone once and do not come back until its nodes stay Ready 60 s."""
    cluster = Cluster(node, _model(), now)
    cluster.step()
    cluster.settle()
    assert cluster.step().status["phase"] == "Hosted"
    placements = []
    for i in range(30):
        _ready_since(cluster, "us-east-1a", ready=i % 2 == 1)
        if i % 2 == 0:
            cluster.zone_down("us-east-1a")  # its units go unready with the node
        out = cluster.step()
        cluster.settle()
        placements.append(out.target["us-east-1a"])
    moves = sum(1 for a, b in itertools.pairwise(placements) if a != b)
    assert placements[0] == 0 and moves == 0, placements  # out at the first flap, stays out
    zone = {z["name"]: z for z in cluster.model["status"]["zones"]}["us-east-1a"]
    assert zone["healthy"] is False
    assert zone["message"] == "2/2 nodes Ready, none yet for 60s"
    ups = [e for e in cluster.events if e.reason in ("ZoneUnhealthy", "ZoneRecovered")]
    assert [e.reason for e in ups] == ["ZoneUnhealthy"]

    # The last flap left the nodes Ready at the last step's start; from then on they stay.
    backs = []
    for _ in range(8):
        out = cluster.step()
        cluster.settle()
        backs.append(out.target["us-east-1a"])
    assert backs == [0, 0, 0, 0, 1, 1, 1, 1], backs  # back once Ready 60 s (5 steps), not before
    ups = [e for e in cluster.events if e.reason in ("ZoneUnhealthy", "ZoneRecovered")]
    assert [e.reason for e in ups] == ["ZoneUnhealthy", "ZoneRecovered"]
