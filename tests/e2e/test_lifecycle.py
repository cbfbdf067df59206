"""One Model's life on the cluster, with real units: hosted over zones, scaled by
real gRPC load, through a zone outage and back, stopped and started, the
operator SIGKILLed mid-reconcile, deleted.

The tests run in file order on one Model (each unit start costs a model load,
seconds on 2 busy cores). They need simulated kubelets in process mode: each
unit Pod is a real ``vigil serve`` process on its own loopback address, which
the load goes to. A zone outage stops that zone's kubelets, so its Nodes stop
heartbeating as they would on any real control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
import pytest_asyncio
import yaml

from tests.e2e.api import Api, Obj, model_path
from tests.e2e.cluster import Kubelets, eventually, kill_container
from tests.e2e.conftest import Cluster, Install, operator_pod
from vigil.v1 import anomaly_pb2, anomaly_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAME = "pcb"
SELECTOR = f"vigil.dev/model={NAME}"
UNIT_START_S = 240  # a unit's model load on a busy 2-core machine, or a GPU node's cold start
# Zones: a real node lifecycle controller notices silence after 40-50 s.
OUTAGE_S = 120


@pytest.fixture(scope="module")
def sim(kubelets: Kubelets | None) -> Kubelets:
    if kubelets is None:
        pytest.skip("the cluster has nodes of its own: the lifecycle needs simulated kubelets")
    return kubelets


def ready(obj: Obj) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def zone_of(pod: Obj) -> str:
    return str(pod["metadata"]["labels"]["vigil.dev/zone"])


async def status(kube: Api, namespace: str) -> Obj:
    model = await kube.get(model_path(namespace, NAME))
    return dict(model.get("status") or {})


async def unit_pods(kube: Api, namespace: str) -> list[Obj]:
    pods = await kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=SELECTOR)
    return list(pods["items"])


async def serving(kube: Api, namespace: str) -> list[Obj]:
    """Ready unit Pods that are not terminating: what clients are routed to."""
    return [
        p
        for p in await unit_pods(kube, namespace)
        if ready(p) and not p["metadata"].get("deletionTimestamp")
    ]


def at(kube: Api, namespace: str, units: int, phase: str = "Hosted") -> Callable[[], Any]:
    async def check() -> Obj:
        s = await status(kube, namespace)
        got = (s.get("phase"), s.get("desiredUnits"), s.get("inServiceUnits"))
        assert got == (phase, units, units), s
        assert len(await serving(kube, namespace)) == units
        return s

    check.__name__ = f"{phase} with {units} units in service"
    return check


async def children(kube: Api, namespace: str) -> dict[str, list[Obj]]:
    listed = {
        "deployments": f"/apis/apps/v1/namespaces/{namespace}/deployments",
        "services": f"/api/v1/namespaces/{namespace}/services",
        "poddisruptionbudgets": f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets",
        "pods": f"/api/v1/namespaces/{namespace}/pods",
    }
    return {
        kind: (await kube.get(path, labelSelector=SELECTOR))["items"]
        for kind, path in listed.items()
    }


class Load:
    """Real DetectAnomalies calls over gRPC, spread over the Ready units."""

    def __init__(self, kube: Api, namespace: str, image: bytes, concurrency: int = 12) -> None:
        self.kube, self.namespace, self.image = kube, namespace, image
        self.concurrency = concurrency
        self.targets: list[str] = []
        self.channels: dict[str, grpc.aio.Channel] = {}  # one per unit, as a gRPC client keeps
        self.ok = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def _refresh(self) -> None:
        while True:
            pods = await serving(self.kube, self.namespace)
            self.targets = [f"{p['status']['podIP']}:50051" for p in pods]
            await asyncio.sleep(1)

    async def _worker(self, offset: int) -> None:
        request = anomaly_pb2.DetectAnomaliesRequest(image=self.image, content_type="image/png")
        for i in itertools.count(offset):
            if not self.targets:
                await asyncio.sleep(0.2)
                continue
            target = self.targets[i % len(self.targets)]
            if target not in self.channels:
                self.channels[target] = grpc.aio.insecure_channel(target)
            stub = anomaly_pb2_grpc.AnomalyDetectionStub(self.channels[target])
            try:
                await stub.DetectAnomalies(request, timeout=30)
                self.ok += 1
            except grpc.RpcError:
                await asyncio.sleep(0.05)  # refused when saturated, or the unit went away

    async def __aenter__(self) -> Load:
        self._tasks = [asyncio.create_task(self._refresh())]
        self._tasks += [asyncio.create_task(self._worker(i)) for i in range(self.concurrency)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for channel in self.channels.values():
            await channel.close()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def model(
    cluster: Cluster, kube: Api, namespace: str, artifact_uri: str, sim: Kubelets
) -> AsyncIterator[Obj]:
    body: Obj = {
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "artifact": {"uri": artifact_uri},
            "minUnits": 2,
            "maxUnits": 3,
            "scaling": {
                "metric": "utilization",
                "target": 0.5,
                "scaleUpStabilizationSeconds": 0,
                # Longer than a unit's start: on one machine a new unit adds no CPU,
                # so the busy fraction per unit drops as soon as it serves.
                "scaleDownStabilizationSeconds": 30,
            },
            "unit": {"gpus": 1},
        },
    }
    path = cluster.workdir / "model.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    out = cluster.kubectl_run("apply", "--validate=strict", "-f", path)
    assert f"model.vigil.dev/{NAME} created" in out, out
    yield body
    with contextlib.suppress(Exception):
        await kube.delete(model_path(namespace, NAME))


async def test_starting_hosting_then_hosted_spread_over_zones(
    cluster: Cluster, kube: Api, namespace: str, model: Obj
) -> None:
    phases: list[str] = []

    async def hosted() -> Obj:
        s = await status(kube, namespace)
        if s.get("phase") and (not phases or phases[-1] != s["phase"]):
            phases.append(s["phase"])
        return await at(kube, namespace, 2)()

    await eventually(hosted, UNIT_START_S, every_s=0.3, what="Hosted")
    assert phases[0] == "StartingHosting" and phases[-1] == "Hosted", phases
    units = await serving(kube, namespace)
    assert len({zone_of(p) for p in units}) == 2, [zone_of(p) for p in units]
    deployments = (await children(kube, namespace))["deployments"]
    assert sum(d["spec"]["replicas"] for d in deployments) == 2

    table = cluster.kubectl_run("get", "models", "-n", namespace).splitlines()
    assert table[0].split() == ["NAME", "STATE", "DESIRED", "INSERVICE", "MIN", "MAX", "AGE"]
    assert table[1].split()[:6] == [NAME, "Running", "2", "2", "2", "3"], table


async def test_load_scales_up_to_max_units_and_back_down(
    kube: Api, namespace: str, model: Obj, png_image: Callable[..., bytes]
) -> None:
    async with Load(kube, namespace, png_image(1)) as load:
        await eventually(at(kube, namespace, 3), UNIT_START_S, what="scaled up to maxUnits")
        assert load.ok > 0
    await eventually(at(kube, namespace, 2), 120, what="scaled back down to minUnits")


async def test_zone_outage_refills_healthy_zones_and_recovery_moves_back_surge_first(
    kube: Api, namespace: str, model: Obj, sim: Kubelets
) -> None:
    before = sorted(zone_of(p) for p in await serving(kube, namespace))
    down = before[0]
    sim.stop(down)
    try:

        async def refilled() -> bool:
            units = await serving(kube, namespace)
            assert len(units) == 2 and down not in {zone_of(p) for p in units}, units
            s = await status(kube, namespace)
            degraded = [c for c in s["conditions"] if c["type"] == "ZoneDegraded"]
            assert degraded and degraded[0]["status"] == "True", s["conditions"]
            return True

        await eventually(refilled, OUTAGE_S + UNIT_START_S, what="units refilled elsewhere")
    finally:
        sim.start(down)
    lowest = 2

    async def moved_back() -> bool:
        nonlocal lowest
        units = await serving(kube, namespace)
        lowest = min(lowest, len(units))
        assert sorted(zone_of(p) for p in units) == before, units
        s = await status(kube, namespace)
        degraded = [c for c in s["conditions"] if c["type"] == "ZoneDegraded"]
        assert degraded and degraded[0]["status"] == "False", s["conditions"]
        return True

    await eventually(moved_back, OUTAGE_S + UNIT_START_S, every_s=0.2, what="units moved back")
    assert lowest >= 2, f"in-service units dropped to {lowest} while moving back"


async def test_stopped_scales_to_zero_and_running_brings_units_back(
    kube: Api, namespace: str, model: Obj
) -> None:
    await kube.patch(model_path(namespace, NAME), {"spec": {"state": "Stopped"}})

    async def stopped() -> bool:
        s = await status(kube, namespace)
        assert (s.get("phase"), s.get("desiredUnits")) == ("Stopped", 0), s
        assert await unit_pods(kube, namespace) == []
        return True

    await eventually(stopped, 120, what="Stopped with no unit Pods left")
    await kube.patch(model_path(namespace, NAME), {"spec": {"state": "Running"}})
    await eventually(at(kube, namespace, 2), UNIT_START_S, what="Hosted again")


async def test_operator_killed_mid_reconcile_converges_without_duplicates(
    kube: Api, namespace: str, model: Obj, vigil: Install
) -> None:
    pod = await operator_pod(kube, vigil)
    container = pod["status"]["containerStatuses"][0]
    await kube.patch(model_path(namespace, NAME), {"spec": {"minUnits": 3}})
    kill_container(container["containerID"])  # while it reacts to the change

    async def restarted() -> bool:
        again = await operator_pod(kube, vigil)
        assert again["status"]["containerStatuses"][0]["restartCount"] > container["restartCount"]
        return True

    await eventually(restarted, 120, what="the operator restarted by its kubelet")
    await eventually(at(kube, namespace, 3), UNIT_START_S, what="3 units after the restart")
    found = await children(kube, namespace)
    zones = [d["metadata"]["labels"]["vigil.dev/zone"] for d in found["deployments"]]
    assert len(zones) == len(set(zones)), zones  # one Deployment per zone
    assert sum(d["spec"]["replicas"] for d in found["deployments"]) == 3
    assert len(found["services"]) == 1 and len(found["poddisruptionbudgets"]) == 1
    assert len([p for p in found["pods"] if not p["metadata"].get("deletionTimestamp")]) == 3


async def test_deletion_removes_every_child(kube: Api, namespace: str, model: Obj) -> None:
    await kube.delete(model_path(namespace, NAME))

    async def gone() -> bool:
        found = await children(kube, namespace)
        assert all(not items for items in found.values()), {
            kind: [i["metadata"]["name"] for i in items] for kind, items in found.items()
        }
        models = await kube.get(model_path(namespace))
        assert models["items"] == [], json.dumps(models["items"])[:300]
        return True

    await eventually(gone, 120, what="every child removed")
