"""The chart's operator as local processes behind fault proxies, on any cluster.

For tests that must reach into the operator's own process (SIGKILL, SIGSTOP) or
its link to the API server (cut, expire, conflict), the chart's operator
Deployment steps aside (scaled to 0) and `local_operators` starts the chart's
own command (its args and env, as the chart renders them) here, once per name,
each as the chart's ServiceAccount (a TokenRequest token) and each through its
own `ApiProxy`, so a test can see what each replica sent. The Deployment is
scaled back when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.api import Api, Obj
from tests.e2e.cluster import Process, eventually
from tests.e2e.conftest import Cluster, Install
from tests.e2e.faults import ApiProxy, proxy_for, through
from tests.tools import free_port

OPERATOR_PODS = "app.kubernetes.io/component=operator"


@dataclass
class LocalOperator:
    identity: str
    process: Process
    proxy: ApiProxy
    metrics_port: int

    def alive(self) -> bool:
        return self.process.running

    @property
    def pid(self) -> int:
        assert self.process.popen is not None
        return self.process.popen.pid

    def signal(self, sig: signal.Signals) -> None:
        assert self.process.popen is not None
        self.process.popen.send_signal(sig)

    def log(self) -> str:
        return self.process.log.read_text(encoding="utf-8", errors="replace")

    def writes(self, since: Mapping[str, int] | None = None) -> dict[str, int]:
        """Requests other than reads this replica sent (since a `requests` snapshot)."""
        before = since or {}
        return {
            key: n - before.get(key, 0)
            for key, n in self.proxy.requests.items()
            if not key.startswith("GET ") and n > before.get(key, 0)
        }

    async def leader(self) -> float:
        """The replica's vigil_operator_leader gauge."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.metrics_port)
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        body = (await reader.read()).decode()
        writer.close()
        for line in body.splitlines():
            if line.startswith("vigil_operator_leader "):
                return float(line.split()[1])
        raise AssertionError("no vigil_operator_leader gauge")


def non_lease(writes: Mapping[str, int]) -> dict[str, int]:
    return {k: n for k, n in writes.items() if "/leases" not in k}


async def operator_deployment(kube: Api, install: Install) -> Obj:
    found = await kube.get(
        f"/apis/apps/v1/namespaces/{install.namespace}/deployments", labelSelector=OPERATOR_PODS
    )
    (deployment,) = found["items"]
    return deployment


async def scale(kube: Api, deployment: Obj, replicas: int) -> None:
    """Scale the chart's operator and wait until exactly that many Pods exist."""
    md = deployment["metadata"]
    path = f"/apis/apps/v1/namespaces/{md['namespace']}/deployments/{md['name']}"
    await kube.patch(path, {"spec": {"replicas": replicas}})

    async def settled() -> bool:
        pods = await kube.get(
            f"/api/v1/namespaces/{md['namespace']}/pods", labelSelector=OPERATOR_PODS
        )
        assert len(pods["items"]) == replicas, [p["metadata"]["name"] for p in pods["items"]]
        return True

    await eventually(settled, 120, what=f"the chart's operator at {replicas} replicas")


def _kubeconfig(cluster: Cluster) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(cluster.kubeconfig.read_text(encoding="utf-8"))
    return loaded


@contextlib.asynccontextmanager
async def local_operators(
    cluster: Cluster,
    kube: Api,
    install: Install,
    identities: list[str],
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[list[LocalOperator]]:
    deployment = await operator_deployment(kube, install)
    replicas = int(deployment["spec"].get("replicas", 1))
    template = deployment["spec"]["template"]["spec"]
    container = template["containers"][0]
    account = template.get("serviceAccountName", "default")
    token_path = f"/api/v1/namespaces/{install.namespace}/serviceaccounts/{account}/token"
    await scale(kube, deployment, 0)
    started: list[LocalOperator] = []
    try:
        for identity in identities:
            token = await kube.create(token_path, {"spec": {"expirationSeconds": 3600}})
            kubeconfig = _kubeconfig(cluster)
            proxy = await proxy_for(kubeconfig).start()
            mine = through(kubeconfig, proxy)
            context = next(c for c in mine["contexts"] if c["name"] == mine["current-context"])
            context["context"]["namespace"] = install.namespace
            user = {"token": token["status"]["token"]}
            mine["users"] = [{"name": context["context"]["user"], "user": user}]
            path = cluster.workdir / f"operator-{identity}.kubeconfig"
            path.write_text(yaml.safe_dump(mine), encoding="utf-8")
            metrics_port, liveness_port = free_port(), free_port()
            args = [
                a
                for a in container.get("args", [])
                if not a.startswith(("--metrics-port", "--liveness-port", "--identity"))
            ]
            args += [
                f"--metrics-port={metrics_port}",
                f"--liveness-port={liveness_port}",
                f"--identity={identity}",
            ]
            environment = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
            environment.update(env or {})
            environment["KUBECONFIG"] = str(path)
            vigil = str(Path(sys.executable).with_name("vigil"))
            log = cluster.workdir / f"operator-{identity}.log"
            process = Process([vigil, *args], log, env=environment).start()
            started.append(LocalOperator(identity, process, proxy, metrics_port))
        yield started
    finally:
        for operator in started:
            with contextlib.suppress(ProcessLookupError):
                operator.signal(signal.SIGCONT)  # a frozen one must be able to stop
            operator.process.stop()
            await operator.proxy.stop()
        await scale(kube, deployment, replicas)


async def elected(operators: list[LocalOperator], within_s: float = 60) -> LocalOperator:
    """The one replica whose gauge says it leads, once exactly one does."""

    async def one() -> LocalOperator:
        leading = []
        for operator in operators:
            assert operator.alive(), f"{operator.identity} exited:\n{operator.log()[-2000:]}"
            with contextlib.suppress(OSError):
                if await operator.leader() == 1.0:
                    leading.append(operator)
        assert len(leading) == 1, [o.identity for o in leading]
        return leading[0]

    return await eventually(one, within_s, every_s=0.2, what="one leader")
