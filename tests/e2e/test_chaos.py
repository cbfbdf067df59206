"""Chaos on the cluster: the operator keeps its promises while the API server goes
away and comes back, watches expire, status writes conflict, a zone's nodes flap
and a unit never turns Ready. docs/reliability.md says what each test does to the
system and what it proved.

The faults that concern the operator's own link to the API server are injected by
a proxy in front of it (tests/e2e/faults.py), so they work on any cluster: the
chart's operator replicas step aside for this module (scaled to 0) and the chart's
operator command runs here as a local process, with the chart's flags, as the
chart's ServiceAccount, through the proxy. Node and unit faults come from the
simulated kubelets (SIGUSR1: their Nodes report NotReady; SIGUSR2: their Pods'
readiness probes fail), as a flapping container runtime or a hung unit would.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.e2e.api import Api, Obj, create_model, hosted, model_path
from tests.e2e.cluster import ZONES, Kubelets, eventually
from tests.e2e.conftest import Cluster, Install
from tests.e2e.operators import LocalOperator, elected, local_operators

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

UNIT_START_S = 240
OUTAGE_S = 6.0  # shorter than the leader's renew deadline (10 s): it must keep the Lease
ZONE_RECOVERY_S = 15.0  # the operator's zoneRecoverySeconds for this module
UNIT_READY_TIMEOUT_S = 60.0  # above a unit's start on a busy machine (10-40 s)


@pytest.fixture(scope="module")
def sim(kubelets: Kubelets | None) -> Kubelets:
    if kubelets is None:
        pytest.skip("node and unit faults need simulated kubelets")
    return kubelets


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def operator(
    cluster: Cluster, kube: Api, vigil: Install, sim: Kubelets
) -> AsyncIterator[LocalOperator]:
    """The chart's operator, alone, as a local process behind a fault proxy."""
    env = {
        "VIGIL_ZONE_RECOVERY": str(ZONE_RECOVERY_S),
        "VIGIL_UNIT_READY_TIMEOUT": str(UNIT_READY_TIMEOUT_S),
    }
    async with local_operators(cluster, kube, vigil, ["chaos"], env) as (only,):
        await elected([only])
        yield only


async def _model(kube: Api, namespace: str, name: str) -> Obj:
    return await kube.get(model_path(namespace, name))


async def _replicas(kube: Api, namespace: str, name: str) -> dict[str, int]:
    found = await kube.get(
        f"/apis/apps/v1/namespaces/{namespace}/deployments", labelSelector=f"vigil.dev/model={name}"
    )
    return {
        d["metadata"]["labels"]["vigil.dev/zone"]: int(d["spec"].get("replicas") or 0)
        for d in found["items"]
    }


async def test_api_server_outage_while_scaling(
    kube: Api, namespace: str, artifact_uri: str, operator: LocalOperator
) -> None:
    """The API server goes away for OUTAGE_S right after a Model is scaled: the
    operator survives, keeps its Lease, reconnects its watches and applies the change
    it may never have seen an event for."""
    await create_model(kube, namespace, "outage", artifact_uri, 1)
    await eventually(hosted(kube, namespace, "outage", 1), UNIT_START_S)
    pid = operator.pid
    watches_before = sum(n for k, n in operator.proxy.requests.items() if k.startswith("GET"))
    await kube.patch(model_path(namespace, "outage"), {"spec": {"minUnits": 2}})
    await operator.proxy.down()
    await asyncio.sleep(OUTAGE_S)  # the fault itself lasts this long
    assert operator.alive(), operator.log()[-3000:]
    await operator.proxy.up()
    back = time.monotonic()
    await eventually(hosted(kube, namespace, "outage", 2), UNIT_START_S)
    converged_s = time.monotonic() - back
    assert operator.alive() and operator.pid == pid, "the operator restarted"
    assert await operator.leader() == 1.0, "leadership lost over a short outage"
    reads_after = sum(n for k, n in operator.proxy.requests.items() if k.startswith("GET"))
    assert reads_after > watches_before  # it came back through the proxy
    assert "Traceback" not in operator.log(), operator.log()[-3000:]
    assert converged_s < UNIT_START_S


async def test_watch_expiry_is_survived_by_a_relist(
    kube: Api, namespace: str, operator: LocalOperator
) -> None:
    """Every open watch gets 410 Expired: the operator relists and still sees the
    next change.

    The two are checked apart: the periodic reconcile reads the Model itself, so
    the change may land before the relist (kopf relists 0.1-1 s after the 410).
    """
    models = "/apis/vigil.dev/v1alpha1/models"  # the operator watches all namespaces
    await operator.proxy.watching(models)  # it may still be reopening after the outage
    lists_before = operator.proxy.lists[models]
    expired = await operator.proxy.expire_watches()
    assert expired[models] == 1, expired
    assert len(expired) >= 3, expired  # Models, Deployments and Pods at least
    await kube.patch(model_path(namespace, "outage"), {"spec": {"minUnits": 1}})

    async def relisted() -> bool:
        assert operator.proxy.lists[models] > lists_before, dict(operator.proxy.lists)
        return True

    await eventually(relisted, 30, what="a relist of Models after the 410")
    await eventually(hosted(kube, namespace, "outage", 1), 120)
    assert operator.alive(), operator.log()[-3000:]


async def test_a_burst_of_status_conflicts_is_retried_through(
    kube: Api, namespace: str, operator: LocalOperator
) -> None:
    """20 status writes in a row answered 409 Conflict: the operator retries until one
    lands; the status catches up with the spec."""
    path = model_path(namespace, "outage")
    operator.proxy.conflict("PATCH", r"/models/outage/status$", times=20)
    await kube.patch(path, {"spec": {"scaling": {"target": 0.5}}})
    await eventually(hosted(kube, namespace, "outage", 1), 120)
    injected = sum(n for k, n in operator.proxy.injected.items() if k.startswith("409"))
    assert injected == 20, operator.proxy.injected
    assert operator.alive(), operator.log()[-3000:]
    assert "Traceback" not in operator.log(), operator.log()[-3000:]  # retried, not crashed
    await kube.delete(path)


async def test_a_flapping_zone_moves_units_once(
    kube: Api, namespace: str, artifact_uri: str, operator: LocalOperator, sim: Kubelets
) -> None:
    """A zone's nodes report NotReady and Ready every 3 s for 30 s (a flapping
    container runtime): its units leave once and come back once, after its nodes have
    stayed Ready zoneRecoverySeconds, never back and forth with the flaps."""
    await create_model(kube, namespace, "flap", artifact_uri, 3)
    await eventually(hosted(kube, namespace, "flap", 3), UNIT_START_S)
    zone = ZONES[0]
    seen: list[int] = []

    async def record() -> None:
        while True:
            replicas = (await _replicas(kube, namespace, "flap")).get(zone, 0)
            if not seen or seen[-1] != replicas:
                seen.append(replicas)
            await asyncio.sleep(0.5)

    recorder = asyncio.create_task(record())
    try:
        for _ in range(10):  # 5 NotReady spells, each followed by Ready
            sim.signal(zone, signal.SIGUSR1)
            await asyncio.sleep(3)
        await eventually(hosted(kube, namespace, "flap", 3), ZONE_RECOVERY_S + UNIT_START_S)

        async def returned() -> bool:
            assert seen[-1] == 1, seen
            return True

        await eventually(returned, ZONE_RECOVERY_S + UNIT_START_S, what="units back in the zone")
    finally:
        recorder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder
    moves = len(seen) - 1
    assert seen[0] == 1 and moves <= 2, f"{zone} replicas went {seen}"
    events = await kube.get(
        f"/api/v1/namespaces/{namespace}/events",
        fieldSelector="involvedObject.name=flap,reason=ZoneUnhealthy",
    )
    assert len(events["items"]) == 1, [e["message"] for e in events["items"]]
    await kube.delete(model_path(namespace, "flap"))


async def test_a_unit_that_never_turns_ready_is_reported_and_the_rest_serve(
    kube: Api, namespace: str, artifact_uri: str, operator: LocalOperator, sim: Kubelets
) -> None:
    """The units of one zone never pass their readiness probe: the Model is Hosted on
    the other two, its status and a Warning Event name the stuck unit, and once the
    unit turns Ready the report clears."""
    zone = ZONES[2]
    sim.signal(zone, signal.SIGUSR2)  # its Pods' readiness probes fail from now on
    try:
        await create_model(kube, namespace, "stuck", artifact_uri, 3)

        async def reported() -> Obj:
            model = await _model(kube, namespace, "stuck")
            s = model.get("status") or {}
            assert (s.get("phase"), s.get("inServiceUnits")) == ("Hosted", 2), s
            assert "not Ready" in s.get("message", ""), s
            scaling = next(c for c in s["conditions"] if c["type"] == "Scaling")
            assert scaling["reason"] == "UnitsNotReady", scaling
            return s

        s = await eventually(reported, UNIT_START_S + UNIT_READY_TIMEOUT_S, what="reported")
        assert f"stuck-{zone}" in s["message"], s["message"]

        async def warned() -> Obj:  # Events are posted a moment after the status
            events = await kube.get(
                f"/api/v1/namespaces/{namespace}/events", fieldSelector="involvedObject.name=stuck"
            )
            found = [e for e in events["items"] if e["reason"] == "UnitsNotReady"]
            assert len(found) == 1, [(e["reason"], e["message"]) for e in events["items"]]
            return dict(found[0])

        event = await eventually(warned, 30, what="one UnitsNotReady Event")
        assert event["type"] == "Warning" and f"stuck-{zone}" in event["message"], event
    finally:
        sim.signal(zone, signal.SIGUSR2)
    await eventually(hosted(kube, namespace, "stuck", 3), 120)
    model = await _model(kube, namespace, "stuck")
    scaling = next(c for c in model["status"]["conditions"] if c["type"] == "Scaling")
    assert scaling["reason"] != "UnitsNotReady"
    await kube.delete(model_path(namespace, "stuck"))
