"""The operator's identity in the emulator: the chart's own ServiceAccount and RBAC.

The chart is rendered with the real helm (``tests/unit/chart/conftest.py``)
for an operator watching the test namespace; its ServiceAccount, Roles and
bindings are created in the emulator, a token for the ServiceAccount comes
from the TokenRequest API, and the operator's kubeconfig carries it. The
emulator authorises every request against those rules, so a verb the chart
does not grant is a 403 there, and the fixture fails the test on any.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from kube_emulator import ApiCall, KubeEmulator
from kube_emulator.fixtures import TEST_NAMESPACE
from tests.unit.chart.conftest import NAMESPACE, Render

RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


@dataclass
class OperatorIdentity:
    """Where the operator logs in from, and what it was refused."""

    kubeconfig: Path
    user: str
    kube: KubeEmulator
    expect_denials: bool = False  # a test that takes a permission away on purpose

    def denials(self) -> list[ApiCall]:
        return [c for c in self.kube.calls if c.user == self.user and c.code == 403]


@pytest.fixture(scope="session")
def chart_rbac(render: Render) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and RBAC, for an operator watching the test namespace."""
    docs = render({"watchNamespaces": [TEST_NAMESPACE]})
    return [d for d in docs if d["kind"] in RBAC_KINDS]


async def install(
    kube: KubeEmulator, api: client.ApiClient, docs: list[dict[str, Any]]
) -> tuple[str, str]:
    """Create the documents as `helm install` would; (user, token) of its ServiceAccount."""
    if kube.get_object("namespaces", NAMESPACE) is None:
        kube.create_namespace(NAMESPACE)
    for doc in docs:
        kube.create_object(doc["kind"], doc, doc["metadata"].get("namespace"))
    (account,) = [d["metadata"] for d in docs if d["kind"] == "ServiceAccount"]
    request = await client.CoreV1Api(api).create_namespaced_service_account_token(
        account["name"],
        account["namespace"],
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    )
    return f"system:serviceaccount:{account['namespace']}:{account['name']}", request.status.token


@pytest_asyncio.fixture(loop_scope="session")
async def operator_identity(
    kube: KubeEmulator,
    kube_api: client.ApiClient,
    kube_namespace: str,
    chart_rbac: list[dict[str, Any]],
    tmp_path: Path,
) -> AsyncIterator[OperatorIdentity]:
    """A kubeconfig with the chart's ServiceAccount token; no request of it may be refused."""
    user, token = await install(kube, kube_api, chart_rbac)
    path = kube.write_kubeconfig(
        tmp_path / "operator-kubeconfig", namespace=kube_namespace, token=token
    )
    identity = OperatorIdentity(path, user, kube)
    yield identity
    denied = identity.denials()
    if denied and not identity.expect_denials:
        refused = sorted({(c.verb, c.resource_id, c.subresource, c.namespace) for c in denied})
        pytest.fail(f"the chart's RBAC refused the operator: {refused}")
