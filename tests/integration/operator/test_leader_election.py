"""Two real `vigil operator` processes against the emulated API server: a
replica restarted after the leader exits stands by and writes nothing, and a
graceful stop hands the Lease over at once. Electing one, SIGKILL mid-failover
and SIGSTOP then thaw run on the cluster in tests/e2e/test_leader.py.

The scenarios read the cluster only through the public API, by polling (the
Lease, Models, Deployments, Pods), so they port to a real cluster as they
are. Two things are the emulator's: `kube.zone_down` (on a cluster: stop the
zone's kubelets or cordon and taint its nodes) and `kube.calls`, the call
log that tells which replica wrote what by its User-Agent (on a cluster:
the audit log's `userAgent`).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from kube_emulator import ApiCall, KubeEmulator, OperatorProcess
from tests.tools import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.kube_emulator(pod_start_delay=0.3, node_monitor_grace_period=1, eviction_delay=0),
]

GROUP, VERSION, PLURAL = "vigil.dev", "v1alpha1", "models"
LEASE = "vigil-operator"
# Short enough for a test, long enough that a loaded 2-core box does not
# starve a healthy leader past its renew deadline.
LEASE_S, RENEW_S, RETRY_S = 6.0, 4.0, 0.5
READS = frozenset({"get", "list", "watch"})
T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], within: float, every: float = 0.1) -> T:
    """Poll `check` until it returns without AssertionError; its last error after `within` s."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(every)


class Replica:
    """One `vigil operator` process with its own identity, metrics and /healthz ports."""

    def __init__(self, identity: str, kubeconfig: Path, namespace: str, log: Path) -> None:
        self.identity = identity
        self.metrics_port, self.health_port = free_port(), free_port()
        self.process = OperatorProcess(
            [
                sys.executable,
                "-m",
                "vigil_cli",
                "operator",
                f"--namespace={namespace}",
                f"--metrics-port={self.metrics_port}",
                f"--liveness-port={self.health_port}",
                "--reconcile-interval=1",
                "--default-image=vigil/unit:test",
                f"--identity={identity}",
                f"--lease-duration={LEASE_S}",
                f"--renew-deadline={RENEW_S}",
                f"--retry-period={RETRY_S}",
            ],
            kubeconfig=kubeconfig,
            log_path=log,
        )

    @property
    def user_agent(self) -> str:
        return f"vigil-operator/0.1.0 ({self.identity})"

    def signal(self, sig: signal.Signals) -> None:
        assert self.process.process is not None
        self.process.process.send_signal(sig)

    def _get(self, port: int, path: str) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).read().decode()

    def leader_gauge(self) -> float:
        for line in self._get(self.metrics_port, "/metrics").splitlines():
            if line.startswith("vigil_operator_leader "):
                return float(line.split()[1])
        raise AssertionError("no vigil_operator_leader series")

    def healthz(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self._get(self.health_port, "/healthz"))
        return body

    async def gauges(self) -> float:
        """The gauge, once the process serves it (it takes a second to start)."""

        async def read() -> float:
            try:
                return self.leader_gauge()
            except OSError as exc:
                raise AssertionError(f"{self.identity} serves no metrics yet: {exc}") from exc

        return await eventually(read, within=20)


@pytest_asyncio.fixture(loop_scope="session")
async def replicas(
    kubeconfig: Path, kube_namespace: str, tmp_path: Path
) -> AsyncIterator[list[Replica]]:
    pair = [
        Replica(name, kubeconfig, kube_namespace, tmp_path / f"{name}.log")
        for name in ("op-a", "op-b")
    ]
    for r in pair:
        await r.process.__aenter__()
    try:
        yield pair
    finally:
        for r in pair:
            if r.process.process is not None and r.process.running:
                r.signal(signal.SIGCONT)  # a frozen one must be able to stop
            await r.process.stop()
        for r in pair:
            print(f"--- {r.identity}\n{r.process.tail(40)}")


async def lease(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    return dict(
        (await client.CoordinationV1Api(api).read_namespaced_lease(LEASE, namespace)).spec.to_dict()
    )


async def holder(api: client.ApiClient, namespace: str) -> str:
    try:
        spec = await lease(api, namespace)
    except client.ApiException as exc:
        raise AssertionError(f"no Lease yet: {exc.status}") from exc
    assert spec["holder_identity"], "the Lease is not held"
    return str(spec["holder_identity"])


async def elected(api: client.ApiClient, namespace: str, pair: list[Replica]) -> Replica:
    """The replica holding the Lease, once its gauge says so and the other's says not."""

    async def check() -> Replica:
        name = await holder(api, namespace)
        leader = next((r for r in pair if r.identity == name), None)
        assert leader is not None, f"{name} still holds the Lease"
        gauges = {r.identity: await r.gauges() for r in pair if r.process.running}
        assert gauges == {r.identity: float(r is leader) for r in pair if r.process.running}
        return leader

    return await eventually(check, within=30)


async def create_model(api: client.ApiClient, namespace: str, name: str, units: int) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Model",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"artifact": {"uri": "file:///m.vigil"}, "minUnits": units, "unit": {"gpus": 1}},
    }
    await client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body
    )


async def model_status(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    body = await client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return dict(body.get("status") or {})


async def hosted(api: client.ApiClient, namespace: str, name: str, units: int) -> dict[str, Any]:
    s = await model_status(api, namespace, name)
    assert s.get("phase") == "Hosted", s
    assert s.get("desiredUnits") == units == s.get("inServiceUnits"), s
    return s


def writes_by(calls: list[ApiCall], replica: Replica) -> list[str]:
    """What one replica changed, from the emulator's call log (a cluster's audit log)."""
    return [
        f"{c.verb} {c.resource}/{c.name or ''}{'/' + c.subresource if c.subresource else ''}"
        for c in calls
        if c.user_agent == replica.user_agent and c.verb not in READS
    ]


async def test_a_restarted_replica_stands_by_and_writes_nothing(
    kube: KubeEmulator,
    kube_api: client.ApiClient,
    kube_namespace: str,
    replicas: list[Replica],
    kubeconfig: Path,
    tmp_path: Path,
) -> None:
    """What Kubernetes does after a leader exits: a fresh process, a new identity."""
    leader = await elected(kube_api, kube_namespace, replicas)
    standby = next(r for r in replicas if r is not leader)
    await standby.process.stop()
    await create_model(kube_api, kube_namespace, "pcb", 2)
    restarted = Replica("op-c", kubeconfig, kube_namespace, tmp_path / "op-c.log")
    async with restarted.process:
        assert await restarted.gauges() == 0.0
        await eventually(lambda: hosted(kube_api, kube_namespace, "pcb", 2), within=20)
        await asyncio.sleep(3 * RETRY_S)
        assert await restarted.gauges() == 0.0 and restarted.healthz()["leader"] is False
        assert writes_by(kube.calls, restarted) == []
        await leader.process.stop()  # a graceful stop releases the Lease: no lease-long wait
        stopped_at = time.monotonic()
        await elected(kube_api, kube_namespace, [restarted])
        assert time.monotonic() - stopped_at < LEASE_S, "the Lease was not released"
        assert "released the Lease" in leader.process.log
