"""Installing as the README says, and what the API server itself refuses.

The chart installs the CRD and runs the operator; every example applies with
kubectl's strict validation; every bad Model of tests/unit/crd (the same list)
is refused by the API server with its message.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from tests.e2e.api import Api, model_path
from tests.e2e.cluster import SYSTEM_NODE
from tests.e2e.conftest import Cluster, Install, operator_pod
from tests.tools import ROOT
from tests.unit.crd.test_crd import BAD, CEL_MESSAGES, base_model

pytestmark = [pytest.mark.e2e]  # async tests run on the session loop (pyproject)

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


async def test_helm_install_runs_the_operator_under_the_charts_service_account(
    cluster: Cluster, kube: Api, vigil: Install
) -> None:
    assert "STATUS: deployed" in vigil.output, vigil.output
    crd = await kube.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/models.vigil.dev")
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    deployment = await kube.get(f"/apis/apps/v1/namespaces/{vigil.namespace}/deployments/vigil")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    await kube.get(f"/api/v1/namespaces/{vigil.namespace}/serviceaccounts/{account}")
    pod = await operator_pod(kube, vigil)
    assert pod["spec"]["serviceAccountName"] == account
    if vigil.simulated:  # the chart's own Pod, run by a simulated kubelet as a local process
        assert pod["spec"]["nodeName"] == SYSTEM_NODE
        status = pod["status"]["containerStatuses"][0]
        assert status["containerID"].startswith("vigil-e2e://"), status


@pytest.fixture(scope="module")
def example_namespaces(cluster: Cluster, vigil: Install) -> Iterator[None]:
    """The namespaces the examples name (examples/model.yaml: factory), made if missing."""
    wanted = {yaml_namespace(p) for p in EXAMPLES}
    existing = set(cluster.kubectl_run("get", "namespaces", "-o", "name").split())
    made = [ns for ns in sorted(wanted) if f"namespace/{ns}" not in existing]
    for ns in made:
        body = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        cluster.kubectl_run("apply", "-f", write_tmp(cluster, f"ns-{ns}.json", body))
    yield
    for ns in made:
        cluster.kubectl_run("delete", "namespace", ns, "--wait=false", check=False)


def yaml_namespace(path: Path) -> str:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return str(loaded["metadata"].get("namespace") or "default")


def write_tmp(cluster: Cluster, name: str, text: str) -> Path:
    path = cluster.workdir / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_applies_with_strict_validation(
    cluster: Cluster, example_namespaces: None, example: Path
) -> None:
    """Server-side dry run: the API server's whole validation, nothing left running."""
    out = cluster.kubectl_run("apply", "--validate=strict", "--dry-run=server", "-f", example)
    assert "created (server dry run)" in out, out


def test_unknown_field_is_refused_by_strict_validation(cluster: Cluster, vigil: Install) -> None:
    model = base_model()
    model["metadata"]["namespace"] = "default"
    model["spec"]["minReplicas"] = 2
    path = write_tmp(cluster, "unknown-field.json", json.dumps(model))
    out = cluster.kubectl_run("apply", "--validate=strict", "-f", path, check=False)
    assert 'unknown field "spec.minReplicas"' in out, out


def changed_path(before: Any, after: Any) -> str | None:
    """The dotted path the server's message must name: the first value the mutation
    set (a removal only when nothing was set)."""
    set_paths: list[str] = []
    removed: list[str] = []

    def walk(old: Any, new: Any, path: str) -> None:
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                where = f"{path}.{key}" if path else key
                if key not in new:
                    removed.append(where)
                elif old.get(key) != new[key]:
                    walk(old.get(key), new[key], where)
        elif old != new:
            set_paths.append(path)

    walk(before, after, "")
    return (set_paths or removed or [None])[0]


@pytest.mark.parametrize(("case", "mutate", "expected"), BAD, ids=[b[0] for b in BAD])
async def test_bad_model_is_refused_by_the_api_server(
    cluster: Cluster, kube: Api, namespace: str, case: str, mutate: Any, expected: str
) -> None:
    model = base_model()
    model["metadata"]["namespace"] = namespace
    bad = copy.deepcopy(model)
    mutate(bad)
    field = changed_path(model, bad)
    assert field, case
    if case.startswith("status-"):  # status is written through its subresource
        await kube.create(model_path(namespace), model)
        try:
            with pytest.raises(ApiException) as refused:
                await kube.patch(model_path(namespace, model["metadata"]["name"], "status"), bad)
        finally:
            await kube.delete(model_path(namespace, model["metadata"]["name"]))
    else:
        with pytest.raises(ApiException) as refused:
            created = await kube.create(model_path(namespace), bad, fieldValidation="Strict")
            await kube.delete(model_path(namespace, created["metadata"]["name"]))
    message = json.loads(refused.value.body)["message"]
    assert refused.value.status in (400, 422), message
    if field == "metadata.name":  # the server's own name rules may speak first
        assert expected in message or "metadata.name" in message, message
    elif expected in CEL_MESSAGES:
        assert expected in message, message
    else:  # schema errors: worded by the server, naming the field (or the missing key)
        leaf = field.rsplit(".", 1)[-1]
        missing = leaf in message and "required" in message.lower()
        assert field in message or expected in message or missing, message
