"""The real operator process (`vigil operator`, kopf) against the emulated API server,
for what the end-to-end suite (tests/e2e: hosting over zones, scaling, zone
outage and surge-first return, Stopped/Running, SIGKILL, deletion) does not
cover: metric series vanishing with their Model, an invalid stored spec, and a
verb the chart's RBAC does not grant.

Each test starts an emulator with nodes in three zones and a simulated
Deployment controller and kubelet, runs `vigil operator` as a subprocess
against its kubeconfig, and drives Models through HTTP as kubectl would.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from kube_emulator import KubeEmulator, OperatorProcess
from tests.integration.operator.chart_rbac import OperatorIdentity
from tests.tools import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.kube_emulator(pod_start_delay=0.3, node_monitor_grace_period=1, eviction_delay=0),
]

INTERVAL = 1.0  # the operator's reconcile timer in these tests
GROUP, VERSION, PLURAL = "vigil.dev", "v1alpha1", "models"


class Operator:
    """A `vigil operator` process plus what tests need to talk to it."""

    def __init__(self, kubeconfig: Path, namespace: str, log: Path) -> None:
        self.metrics_port = free_port()
        self.namespace = namespace
        self.process = OperatorProcess(
            [
                sys.executable,
                "-m",
                "vigil_cli",
                "operator",
                "--namespace",
                namespace,
                "--metrics-port",
                str(self.metrics_port),
                "--liveness-port",
                "0",
                "--reconcile-interval",
                str(INTERVAL),
                "--default-image",
                "vigil/unit:test",
                # A lone replica: a restarted one must not wait out its predecessor's
                # Lease (test_leader_election.py runs the elected pair).
                "--standalone",
            ],
            kubeconfig=kubeconfig,
            log_path=log,
        )

    async def start(self) -> None:
        await self.process.__aenter__()

    async def stop(self) -> None:
        await self.process.stop()

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        return urllib.request.urlopen(url, timeout=5).read().decode()

    def sample(self, name: str, **labels: str) -> float | None:
        want = {"namespace": self.namespace, **labels}
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{"):
                continue
            body, value = line.rsplit(" ", 1)
            pairs = dict(p.split("=", 1) for p in body[len(name) + 1 : -1].split(","))
            if all(pairs.get(k) == f'"{v}"' for k, v in want.items()):
                return float(value)
        return None


@pytest_asyncio.fixture(loop_scope="session")
async def operator(
    operator_identity: OperatorIdentity, kube_namespace: str, tmp_path: Path
) -> AsyncIterator[Operator]:
    """`vigil operator` logged in as the chart's ServiceAccount, under the chart's RBAC."""
    op = Operator(operator_identity.kubeconfig, kube_namespace, tmp_path / "operator.log")
    await op.start()
    try:
        yield op
    finally:
        await op.stop()
        log = op.process.log
        assert "Traceback" not in log, f"the operator crashed or erred:\n{op.process.tail()}"


@pytest.fixture
def models(kube_api: client.ApiClient, kube_namespace: str) -> Models:
    return Models(client.CustomObjectsApi(kube_api), kube_namespace)


class Models:
    def __init__(self, api: client.CustomObjectsApi, namespace: str) -> None:
        self.api, self.ns = api, namespace

    async def create(self, name: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Model",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "artifact": {"uri": "file:///models/pcb.vigil"},
                "minUnits": 3,
                "unit": {"gpus": 1},
                **spec,
            },
        }
        result: dict[str, Any] = await self.api.create_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, body
        )
        return result

    async def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name
        )
        return result

    async def patch(self, name: str, spec: dict[str, Any]) -> None:
        await self.api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.ns,
            PLURAL,
            name,
            {"spec": spec},
            _content_type="application/merge-patch+json",
        )

    async def delete(self, name: str) -> None:
        await self.api.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    async def status(self, name: str) -> dict[str, Any]:
        return (await self.get(name)).get("status") or {}


def hosted(models: Models, name: str, units: int) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def check() -> bool:
        s = await models.status(name)
        assert s.get("phase") == "Hosted", s.get("phase")
        assert s.get("desiredUnits") == units and s.get("inServiceUnits") == units, s
        return True

    return check


async def test_delete_cascades_and_series_vanish(
    kube: KubeEmulator, operator: Operator, models: Models, kube_namespace: str
) -> None:
    await models.create("pcb", minUnits=3)
    await kube.wait_for(hosted(models, "pcb", 3), timeout=20)
    await kube.wait_for(
        lambda: operator.sample("vigil_model_desired_inference_units", model="pcb") == 3
    )
    await models.delete("pcb")

    def gone() -> bool:
        assert kube.get_object("models.vigil.dev", "pcb", kube_namespace) is None
        assert kube.deployments(kube_namespace) == []
        assert kube.get_object("v1/services", "pcb", kube_namespace) is None
        assert kube.get_object("policy/v1/poddisruptionbudgets", "pcb", kube_namespace) is None
        assert kube.pods(kube_namespace, {"vigil.dev/model": "pcb"}) == []
        return True

    await kube.wait_for(gone, timeout=20)
    await kube.wait_for(
        lambda: operator.sample("vigil_model_desired_inference_units", model="pcb") is None,
        timeout=5,
    )
    assert "vigil_zone_in_service_inference_units{" not in operator.metrics()


@pytest.mark.kube_emulator(validate_schemas=False)
async def test_invalid_spec_reports_hosting_failed_without_crashing(
    kube: KubeEmulator, operator: Operator, models: Models, kube_namespace: str
) -> None:
    # The CRD's schema and CEL rules are off, as if a Model had slipped past
    # them (stored under an older CRD): the operator must re-check and say what is wrong.
    await models.create("bad", minUnits=4, maxUnits=2)

    async def failed() -> bool:
        s = await models.status("bad")
        assert s.get("phase") == "HostingFailed", s
        assert "maxUnits" in s.get("message", "") and "minUnits" in s["message"]
        return True

    await kube.wait_for(failed, timeout=20)
    assert kube.deployments(kube_namespace) == []
    assert operator.process.running
    await models.patch("bad", {"maxUnits": 6})
    await kube.wait_for(hosted(models, "bad", 4), timeout=20)


async def test_a_verb_the_chart_does_not_grant_is_refused(
    kube: KubeEmulator,
    operator_identity: OperatorIdentity,
    models: Models,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    """Without `create deployments` in the chart's role the operator is refused
    with the API server's 403, which the fixture turns into a failed test; with
    the verb given back, the next reconcile hosts the Model."""
    operator_identity.expect_denials = True
    role = kube.get_object("clusterroles", "vigil-models")
    assert role is not None
    full = role["rules"]
    cut = [
        {**r, "verbs": [v for v in r["verbs"] if v != "create"]}
        if r["resources"] == ["deployments"]
        else r
        for r in full
    ]
    kube.patch_object("clusterroles", "vigil-models", {"rules": cut})
    op = Operator(operator_identity.kubeconfig, kube_namespace, tmp_path / "operator.log")
    await op.start()
    try:
        await models.create("pcb", minUnits=3)
        (denied, *_) = await kube.wait_for(operator_identity.denials, timeout=20)
        assert (denied.verb, denied.resource_id, denied.namespace) == (
            "create",
            "deployments.apps",
            kube_namespace,
        )
        assert kube.deployments(kube_namespace) == []
        async with await config.new_client_from_config(
            config_file=str(operator_identity.kubeconfig)
        ) as api:
            with pytest.raises(ApiException) as refused:
                await client.AppsV1Api(api).create_namespaced_deployment(
                    kube_namespace, {"metadata": {"name": "x"}}
                )
        assert refused.value.status == 403
        assert json.loads(refused.value.body)["message"] == (
            f'deployments.apps is forbidden: User "{operator_identity.user}" cannot create '
            f'resource "deployments" in API group "apps" in the namespace "{kube_namespace}"'
        )

        kube.patch_object("clusterroles", "vigil-models", {"rules": full})
        await kube.wait_for(hosted(models, "pcb", 3), timeout=30)
    finally:
        await op.stop()
