"""End-to-end fixtures: a cluster, simulated kubelets when it has no nodes, Vigil from the chart.

- KUBECONFIG set: that cluster (it must answer; no silent fallback).
  Otherwise the API-server emulator runs as its own process over HTTPS.
- A cluster without schedulable nodes of its own (a bare control plane, the
  emulator) gets simulated kubelets (:mod:`tests.e2e.kubelet`): two Nodes per
  zone in three zones with 4 GPUs each, and a zone-less system Node that runs
  the chart's operator Pod as a local ``vigil operator`` process with the
  chart's flags and a token of the chart's ServiceAccount.
- ``helm install vigil charts/vigil`` as the README says, into its own
  namespace, the CRD from the chart.

The fixtures are package-scoped: the emulator, the kubelets and the operator
stop when the suite ends, not with the whole test session.

Under ``make test`` (VIGIL_E2E_REQUIRED=1) or CI=true a skipped e2e test is a
failure: CI must never pass by skipping the suite.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import config
from kubernetes_asyncio.client.exceptions import ApiException

from tests.e2e.api import Api
from tests.e2e.cluster import (
    SYSTEM_ROLE_LABEL,
    ZONES,
    Kubelets,
    Process,
    env_flag,
    eventually,
    run,
    start_emulator,
)
from tests.e2e.kubelet import SIMULATED_LABEL
from tests.tools import ROOT, free_port, require

E2E_DIR = Path(__file__).resolve().parent


def _required() -> bool:
    return env_flag("VIGIL_E2E_REQUIRED") or env_flag("CI")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None]:
    outcome = yield
    report = outcome.get_result()
    in_suite = E2E_DIR in Path(str(item.path)).parents
    if report.skipped and _required() and in_suite and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"e2e test skipped under VIGIL_E2E_REQUIRED/CI: {report.longrepr}"


@dataclass
class Cluster:
    kubeconfig: Path
    emulated: bool
    workdir: Path
    kubectl: Path
    helm: Path

    def kubectl_run(self, *args: str | Path, check: bool = True) -> str:
        return run([self.kubectl, *args], kubeconfig=self.kubeconfig, check=check)

    def helm_run(self, *args: str | Path, check: bool = True) -> str:
        return run([self.helm, *args], kubeconfig=self.kubeconfig, check=check)


@dataclass
class Install:
    namespace: str
    release: str
    output: str
    simulated: bool  # the operator runs on a simulated kubelet


def _wait_served(cluster: Cluster) -> None:
    """/readyz, then OpenAPI v3 (a real server serves it a few seconds after /readyz)."""
    import time

    for path in ("/readyz", "/openapi/v3"):
        deadline = time.monotonic() + 120
        while True:
            out = cluster.kubectl_run("get", "--raw", path, check=False)
            if out.strip() == "ok" or (path != "/readyz" and out.lstrip().startswith("{")):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} not served in 120 s: {out[-500:]}")
            time.sleep(0.5)


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("e2e")
    kubectl, helm = require("kubectl"), require("helm")
    named = os.environ.get("KUBECONFIG", "")
    emulator: Process | None = None
    if named:
        missing = [p for p in named.split(os.pathsep) if p and not Path(p).is_file()]
        if missing:
            pytest.fail(f"KUBECONFIG names files that do not exist: {missing}", pytrace=False)
        kubeconfig = Path(named.split(os.pathsep)[0])
    else:
        emulator, kubeconfig = start_emulator(workdir)
    found = Cluster(kubeconfig, emulator is not None, workdir, kubectl, helm)
    try:
        _wait_served(found)
        yield found
    finally:
        if emulator is not None:
            emulator.stop()
            if emulator.popen is not None and emulator.popen.returncode not in (0, -15):
                print(f"emulator exited {emulator.popen.returncode}:\n{emulator.tail()}")


@pytest_asyncio.fixture(loop_scope="session", scope="package")
async def kube(cluster: Cluster) -> AsyncIterator[Api]:
    api_client = await config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield Api(api_client)
    finally:
        await api_client.close()


def _own_schedulable_nodes(cluster: Cluster) -> list[str]:
    nodes = json.loads(cluster.kubectl_run("get", "nodes", "-o", "json"))["items"]
    own = []
    for node in nodes:
        labels = node["metadata"].get("labels") or {}
        taints = (node.get("spec") or {}).get("taints") or []
        if labels.get(SIMULATED_LABEL) or (node.get("spec") or {}).get("unschedulable"):
            continue
        if any(t.get("effect") == "NoSchedule" for t in taints):
            continue  # control-plane nodes
        own.append(node["metadata"]["name"])
    return own


@pytest.fixture(scope="package")
def kubelets(cluster: Cluster) -> Iterator[Kubelets | None]:
    """Simulated kubelets, or None when the cluster has schedulable nodes of its own."""
    if _own_schedulable_nodes(cluster):
        yield None
        return
    sim = Kubelets(cluster.kubeconfig, cluster.workdir)
    for key in ("system", *ZONES):
        sim.start(key)
    try:
        yield sim
    finally:
        sim.stop_all()
        if not cluster.emulated:
            cluster.kubectl_run("delete", "nodes", *sim.node_names, "--wait=false", check=False)


@pytest.fixture(scope="package")
def vigil(cluster: Cluster, kubelets: Kubelets | None) -> Iterator[Install]:
    """``helm install vigil charts/vigil``; on simulated kubelets, pinned to the system node."""
    namespace = f"vigil-e2e-system-{uuid.uuid4().hex[:5]}"
    args: list[str | Path] = ["install", "vigil", ROOT / "charts" / "vigil", "-n", namespace]
    args += ["--create-namespace"]
    if kubelets is not None:
        # The operator runs as a local process: its ports are this machine's.
        overrides = {
            "nodeSelector": {SYSTEM_ROLE_LABEL: "system"},
            # Simulated Pods share this machine's network, so two replicas would
            # bind the same ports; the two-replica election runs in test_leader.py.
            "replicaCount": 1,
            "metrics": {"port": free_port()},
            "livenessProbe": {"port": free_port()},
            "reconcileIntervalSeconds": 1,
            "zoneRecoverySeconds": 5,  # a recovered zone takes units back after 5 s Ready
            "extraEnv": [
                {"name": "VIGIL_SCRAPE_INTERVAL", "value": "0.5"},
                {"name": "VIGIL_STABLE_WINDOW", "value": "6"},
                {"name": "VIGIL_PANIC_WINDOW", "value": "1.5"},
            ],
        }
        for key, value in overrides.items():
            args += ["--set-json", f"{key}={json.dumps(value)}"]
    output = cluster.helm_run(*args)
    try:
        yield Install(namespace, "vigil", output, kubelets is not None)
    finally:
        cluster.helm_run("uninstall", "vigil", "-n", namespace, "--wait", check=False)
        cluster.kubectl_run("delete", "namespace", namespace, "--wait=false", check=False)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def namespace(kube: Api, vigil: Install) -> AsyncIterator[str]:
    """A namespace for one test module's Models, removed after it."""
    name = f"vigil-e2e-{uuid.uuid4().hex[:6]}"
    await kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    try:
        await kube.delete(f"/api/v1/namespaces/{name}")
    except ApiException as e:
        if e.status != 404:
            raise


@pytest.fixture(scope="package")
def artifact_uri(
    kubelets: Kubelets | None,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> str:
    """What units load: VIGIL_E2E_ARTIFACT, else a model trained here (simulated kubelets)."""
    if os.environ.get("VIGIL_E2E_ARTIFACT"):
        return os.environ["VIGIL_E2E_ARTIFACT"]
    if kubelets is None:
        pytest.skip("set VIGIL_E2E_ARTIFACT to an artifact URI the unit image can load")
    path: Path = request.getfixturevalue("trained_model_path")
    return path.resolve().as_uri()


async def operator_pod(kube: Api, install: Install) -> dict[str, Any]:
    """The chart's operator Pod once it runs (Ready)."""

    async def ready() -> dict[str, Any]:
        pods = await kube.get(
            f"/api/v1/namespaces/{install.namespace}/pods",
            labelSelector="app.kubernetes.io/component=operator",
        )
        running = [
            p
            for p in pods["items"]
            if not p["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (p.get("status") or {}).get("conditions") or []
            )
        ]
        assert len(running) == 1, [p["metadata"]["name"] for p in pods["items"]]
        return running[0]

    return await eventually(ready, 120, what="the operator Pod Ready")
