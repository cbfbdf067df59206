"""The chaos proxy of tests/e2e (faults.py) does to a client what it claims:
cut and restore the API server, expire watches with 410, answer 409s. Run
against the emulator with kubernetes_asyncio, the operator's own client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.e2e.faults import ApiProxy, proxy_for, through

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def _write_through(kubeconfig: Path, proxy: ApiProxy, path: Path) -> None:
    path.write_text(yaml.safe_dump(through(_load(kubeconfig), proxy)))


@pytest_asyncio.fixture(loop_scope="session")
async def proxied(kubeconfig: Path, tmp_path: Path) -> AsyncIterator[tuple[ApiProxy, Any]]:
    proxy = await proxy_for(_load(kubeconfig)).start()
    path = tmp_path / "proxied"
    _write_through(kubeconfig, proxy, path)
    api = await config.new_client_from_config(config_file=str(path))
    try:
        yield proxy, api
    finally:
        await api.close()
        await proxy.stop()


async def test_down_refuses_and_up_restores(
    proxied: tuple[ApiProxy, Any], kube_namespace: str
) -> None:
    proxy, api = proxied
    core = client.CoreV1Api(api)
    assert (await core.read_namespace(kube_namespace)).metadata.name == kube_namespace
    port = proxy.port
    await proxy.down()
    with pytest.raises(aiohttp.ClientConnectionError):
        await core.read_namespace(kube_namespace)
    await proxy.up()
    assert proxy.port == port
    assert (await core.read_namespace(kube_namespace)).metadata.name == kube_namespace


async def test_down_cuts_an_open_watch(proxied: tuple[ApiProxy, Any], kube_namespace: str) -> None:
    proxy, api = proxied
    core = client.CoreV1Api(api)
    seen: list[str] = []

    async def follow() -> None:
        async with watch.Watch().stream(
            core.list_namespaced_config_map, kube_namespace, timeout_seconds=30
        ) as stream:
            async for event in stream:
                seen.append(event["type"])

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.3)
    await proxy.down()
    with pytest.raises((aiohttp.ClientError, asyncio.TimeoutError)):
        await asyncio.wait_for(task, 5)
    await proxy.up()


async def test_expired_watch_gets_410(proxied: tuple[ApiProxy, Any], kube_namespace: str) -> None:
    proxy, api = proxied
    core = client.CoreV1Api(api)
    listed = await core.list_namespaced_config_map(kube_namespace)
    version = listed.metadata.resource_version
    events: list[dict[str, Any]] = []

    async def follow() -> None:
        stream = watch.Watch().stream(
            core.list_namespaced_config_map,
            kube_namespace,
            resource_version=version,
            timeout_seconds=30,
        )
        async with stream:
            async for event in stream:
                events.append(event)

    task = asyncio.create_task(follow())
    path = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    await proxy.watching(path, within_s=5)
    assert await proxy.expire_watches() == {path: 1}, proxy.requests
    with pytest.raises(ApiException) as gone:  # kubernetes_asyncio raises on ERROR 410
        await asyncio.wait_for(task, 5)
    assert gone.value.status == 410
    assert proxy.injected["watch-expired"] == 1


async def test_conflicts_are_answered_then_requests_pass(
    proxied: tuple[ApiProxy, Any], kube_namespace: str
) -> None:
    proxy, api = proxied
    core = client.CoreV1Api(api)
    body = {"metadata": {"name": "c"}, "data": {"a": "1"}}
    await core.create_namespaced_config_map(kube_namespace, body)
    proxy.conflict("PATCH", r"/configmaps/c$", times=3)
    codes = []
    for attempt in range(4):
        try:
            await core.patch_namespaced_config_map(
                "c", kube_namespace, {"data": {"a": f"{attempt}"}}
            )
            codes.append(200)
        except ApiException as exc:
            codes.append(exc.status)
    assert codes == [409, 409, 409, 200]
    assert (await core.read_namespaced_config_map("c", kube_namespace)).data == {"a": "3"}
    assert sum(proxy.injected.values()) == 3
