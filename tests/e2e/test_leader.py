"""Two operator replicas, one active, on the cluster: the chart's operator command
runs as two local processes with the chart's flags and ServiceAccount
(tests/e2e/operators.py), each behind its own proxy so what each one *sent* to
the API server is known, on any cluster.

The leader is SIGKILLed while a zone outage is being handled: the standby takes
over within a lease, finishes the failover, and no child is duplicated or lost.
The leader is SIGSTOPped (a partition, as it sees it): it loses the Lease, and
when it resumes it writes nothing and exits instead of acting on what it saw.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.e2e.api import Api, Obj, create_model, hosted, model_path
from tests.e2e.cluster import ZONES, Kubelets, eventually
from tests.e2e.conftest import Cluster, Install
from tests.e2e.operators import elected, local_operators, non_lease

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

UNIT_START_S = 240
LEASE_S, RENEW_S, RETRY_S = 15.0, 10.0, 2.0  # the chart's defaults (client-go's)
OUTAGE_S = 120  # a real node lifecycle controller notices silence after 40-50 s


@pytest.fixture(scope="module")
def sim(kubelets: Kubelets | None) -> Kubelets:
    if kubelets is None:
        pytest.skip("the zone outage needs simulated kubelets")
    return kubelets


async def _children(kube: Api, namespace: str, name: str) -> dict[str, list[str]]:
    selector = f"vigil.dev/model={name}"
    paths = {
        "deployments": f"/apis/apps/v1/namespaces/{namespace}/deployments",
        "services": f"/api/v1/namespaces/{namespace}/services",
        "pdbs": f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets",
    }
    out = {
        kind: sorted(
            o["metadata"]["name"] for o in (await kube.get(p, labelSelector=selector))["items"]
        )
        for kind, p in paths.items()
    }
    pods = await kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)
    out["pods"] = sorted(
        p["metadata"]["name"] for p in pods["items"] if not p["metadata"].get("deletionTimestamp")
    )
    return out


async def test_sigkill_of_the_leader_mid_failover_hands_over_without_duplicates(
    cluster: Cluster, kube: Api, vigil: Install, namespace: str, artifact_uri: str, sim: Kubelets
) -> None:
    async with local_operators(cluster, kube, vigil, ["replica-a", "replica-b"]) as replicas:
        leader = await elected(replicas)
        standby = next(r for r in replicas if r is not leader)
        assert await standby.leader() == 0.0
        assert non_lease(standby.writes()) == {}, standby.writes()  # a standby writes nothing

        await create_model(kube, namespace, "failover", artifact_uri, 3)
        await eventually(hosted(kube, namespace, "failover", 3), UNIT_START_S)
        before = await _children(kube, namespace, "failover")
        assert len(before["deployments"]) == 3

        down = ZONES[0]
        sim.stop(down)
        try:

            async def failover_begun() -> bool:
                found = await kube.get(
                    f"/apis/apps/v1/namespaces/{namespace}/deployments",
                    labelSelector="vigil.dev/model=failover",
                )
                replicas = {
                    d["metadata"]["labels"]["vigil.dev/zone"]: int(d["spec"]["replicas"])
                    for d in found["items"]
                }
                moved = max(n for zone, n in replicas.items() if zone != down) > 1
                assert moved, f"the failover has not begun: {replicas}"  # replacements asked for
                return True

            await eventually(failover_begun, OUTAGE_S, every_s=0.2, what="the failover begun")
            leader.signal(signal.SIGKILL)
            killed = time.monotonic()
            new = await elected([standby], within_s=LEASE_S + 4 * RETRY_S + 30)
            takeover_s = time.monotonic() - killed
            assert new is standby
            assert takeover_s < LEASE_S + 4 * RETRY_S + 30, takeover_s

            async def finished() -> Obj:
                s = await hosted(kube, namespace, "failover", 3)()
                zones = {z["name"]: z for z in s["zones"]}
                assert zones[down]["healthy"] is False and zones[down]["inServiceUnits"] == 0, s
                return s

            await eventually(finished, UNIT_START_S, what="the failover finished")
            after = await _children(kube, namespace, "failover")
            assert after["deployments"] == before["deployments"]  # none duplicated, none lost
            assert after["services"] == ["failover"] and after["pdbs"] == ["failover"]
            assert len(after["pods"]) == 3 and not any(down in p for p in after["pods"])
            assert non_lease(standby.writes()), "the new leader did nothing?"
        finally:
            sim.start(down)
        await kube.delete(model_path(namespace, "failover"))


async def test_a_frozen_leader_loses_the_lease_and_writes_nothing_when_thawed(
    cluster: Cluster, kube: Api, vigil: Install, namespace: str, artifact_uri: str
) -> None:
    async with local_operators(cluster, kube, vigil, ["replica-c", "replica-d"]) as replicas:
        leader = await elected(replicas)
        standby = next(r for r in replicas if r is not leader)
        await create_model(kube, namespace, "frozen", artifact_uri, 1)
        await eventually(hosted(kube, namespace, "frozen", 1), UNIT_START_S)

        leader.signal(signal.SIGSTOP)  # time passes without it, as in a partition
        await elected([standby], within_s=LEASE_S + 4 * RETRY_S + 30)
        # Freeze the new leader briefly too and give the old one work it would act on
        # the moment it thaws: then any write it makes would show, nobody else writes.
        standby.signal(signal.SIGSTOP)
        frozen = time.monotonic()
        await kube.patch(model_path(namespace, "frozen"), {"spec": {"minUnits": 2}})
        sent = dict(leader.proxy.requests)
        leader.signal(signal.SIGCONT)
        assert leader.process.popen is not None

        async def exited() -> bool:  # polled: the proxies run on this loop, never block it
            assert not leader.alive(), "the thawed leader is still running"
            return True

        await eventually(exited, 15, every_s=0.1, what="the thawed leader gone")
        standby.signal(signal.SIGCONT)
        assert time.monotonic() - frozen < RENEW_S, "the test froze the new leader too long"
        assert leader.process.popen.returncode == 1, leader.log()[-2000:]
        assert "leadership lost" in leader.log()
        assert non_lease(leader.writes(sent)) == {}, leader.writes(sent)

        await eventually(hosted(kube, namespace, "frozen", 2), UNIT_START_S)
        assert non_lease(standby.writes()), "the rightful leader did nothing?"
        await kube.delete(model_path(namespace, "frozen"))
