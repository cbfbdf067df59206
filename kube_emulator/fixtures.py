"""pytest fixtures: a running emulator, its kubeconfig, and a client for it.

Options come from the ``kube_emulator`` marker, nearest wins, e.g.
``@pytest.mark.kube_emulator(pod_start_delay=0.1, zones=("zone-a", "zone-b"))``:
any :class:`KubeEmulator` field, plus ``zones``, ``nodes_per_zone`` and
``gpus_per_node`` for the cluster it starts with (3 zones x 2 nodes x 4 GPUs).

The fixtures run on the session event loop, so async tests using them need
``pytestmark = pytest.mark.asyncio(loop_scope="session")``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client, config

from .server import DEFAULT_ZONES, KubeEmulator

TEST_NAMESPACE = "vigil-test"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kube_emulator(**options): options for the `kube` API server emulator fixture",
    )


@pytest.fixture
def kube_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("kube_emulator"))):
        options.update(marker.kwargs)
    return options


@pytest.fixture
def kube_namespace() -> str:
    """A namespace that exists in the emulator, and the kubeconfig's default."""
    return TEST_NAMESPACE


@pytest_asyncio.fixture(loop_scope="session")
async def kube(kube_options: dict[str, Any], kube_namespace: str) -> AsyncIterator[KubeEmulator]:
    """A served emulator with nodes in three zones; fails the test on emulator errors."""
    options = dict(kube_options)
    zones = options.pop("zones", DEFAULT_ZONES)
    nodes_per_zone = options.pop("nodes_per_zone", 2)
    gpus = options.pop("gpus_per_node", 4)
    async with KubeEmulator(**options).serve() as emulator:
        emulator.add_zones(zones, nodes_per_zone=nodes_per_zone, gpus=gpus)
        emulator.create_namespace(kube_namespace)
        yield emulator
    if emulator.internal_errors:
        pytest.fail(f"the emulator failed internally: {emulator.internal_errors!r}")


@pytest.fixture
def kubeconfig(kube: KubeEmulator, kube_namespace: str, tmp_path: Path) -> Path:
    """A kubeconfig file pointing at the emulator (give it to processes as KUBECONFIG)."""
    return kube.write_kubeconfig(tmp_path / "kubeconfig", namespace=kube_namespace)


@pytest_asyncio.fixture(loop_scope="session")
async def kube_api(kubeconfig: Path) -> AsyncIterator[client.ApiClient]:
    """A kubernetes_asyncio ApiClient loaded from the kubeconfig, as the operator would."""
    api = await config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield api
    finally:
        await api.close()
