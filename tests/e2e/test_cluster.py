"""Against a real cluster: runs when KUBECONFIG points at one with Vigil installed
(`helm install vigil charts/vigil`), skipped otherwise.

Set VIGIL_E2E_ARTIFACT to an artifact URI the unit image can load (e.g.
`file:///models/demo.vigil` baked into it) and VIGIL_E2E_HOSTED=1 to also wait
for the units to become Ready; without them the test checks what the operator
creates and reports, which needs no GPU and no model.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

KUBECONFIG = os.environ.get("KUBECONFIG", "")
if not KUBECONFIG or not all(Path(p).is_file() for p in KUBECONFIG.split(os.pathsep)):
    pytest.skip("KUBECONFIG does not point at a cluster", allow_module_level=True)

from kubernetes_asyncio import client, config  # noqa: E402
from kubernetes_asyncio.client.exceptions import ApiException  # noqa: E402

GROUP, VERSION, PLURAL = "vigil.dev", "v1alpha1", "models"


@pytest_asyncio.fixture(loop_scope="session")
async def api() -> AsyncIterator[client.ApiClient]:
    c = await config.new_client_from_config()
    try:
        await client.ApiextensionsV1Api(c).read_custom_resource_definition("models.vigil.dev")
    except ApiException as exc:
        await c.close()
        pytest.skip(f"Vigil is not installed in this cluster ({exc.status})")
    yield c
    await c.close()


@pytest_asyncio.fixture(loop_scope="session")
async def namespace(api: client.ApiClient) -> AsyncIterator[str]:
    name = f"vigil-e2e-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    await core.create_namespace({"metadata": {"name": name}})
    yield name
    await core.delete_namespace(name)


async def wait(check: Any, within_s: float) -> Any:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        try:
            result = await check()
            if result:
                return result
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(2)


async def test_model_lifecycle(api: client.ApiClient, namespace: str) -> None:
    custom, apps = client.CustomObjectsApi(api), client.AppsV1Api(api)
    artifact = os.environ.get("VIGIL_E2E_ARTIFACT", "file:///models/demo.vigil")
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Model",
        "metadata": {"name": "e2e", "namespace": namespace},
        "spec": {"artifact": {"uri": artifact}, "minUnits": 2, "unit": {"gpus": 0}},
    }
    with pytest.raises(ApiException) as rejected:  # the CRD's CEL rules, server side
        bad = {**body, "spec": {**body["spec"], "maxUnits": 1}}
        await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, bad)
    assert rejected.value.status == 422 and "maxUnits" in str(rejected.value.body)

    await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    async def placed() -> bool:
        deps = (
            await apps.list_namespaced_deployment(namespace, label_selector="vigil.dev/model=e2e")
        ).items
        assert deps and sum(d.spec.replicas for d in deps) == 2
        model = await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "e2e")
        assert (model.get("status") or {}).get("desiredUnits") == 2
        return True

    await wait(placed, 120)
    if os.environ.get("VIGIL_E2E_HOSTED"):

        async def hosted() -> bool:
            model = await custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "e2e"
            )
            assert model["status"]["phase"] == "Hosted", model["status"]
            return True

        await wait(hosted, 600)
    await custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "e2e")

    async def collected() -> bool:
        deps = (
            await apps.list_namespaced_deployment(namespace, label_selector="vigil.dev/model=e2e")
        ).items
        assert deps == []
        return True

    await wait(collected, 120)
