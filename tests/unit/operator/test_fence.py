"""The write fence on real HTTP: a refused write never reaches the server.

A small aiohttp server records what arrives; the operator's two kinds of
session (the `kubernetes_asyncio` client the handlers write through, and
the session kopf gets from our login handler) are pointed at it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.config import kube_config

from vigil_operator.cluster import handlers
from vigil_operator.cluster.fence import Fence, FencedWrite
from vigil_operator.cluster.kube import new_api_client

pytestmark = pytest.mark.asyncio


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def server() -> AsyncIterator[tuple[str, list[tuple[str, str, str]]]]:
    """Answers anything with an empty object; records (method, path, user agent)."""
    seen: list[tuple[str, str, str]] = []

    async def anything(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, request.headers.get("User-Agent", "")))
        return web.json_response({"metadata": {"name": "x", "resourceVersion": "1"}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_writes_pass_only_inside_the_tenure_reads_always(
    server: tuple[str, list[tuple[str, str, str]]],
) -> None:
    url, seen = server
    clock, expired = Clock(), []
    fence = Fence(clock=clock, on_expired=lambda: expired.append(clock.now))
    async with aiohttp.ClientSession(trace_configs=[fence.trace_config()]) as session:
        with pytest.raises(FencedWrite):  # a standby: never opened
            await session.put(f"{url}/standby")
        assert expired == []  # a standby has nothing to stop

        fence.open_until(110.0)
        clock.now = 109.9
        async with session.patch(f"{url}/leader") as response:
            assert response.status == 200
        clock.now = 110.0  # e.g. thawed after SIGSTOP: the renew deadline has passed
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            with pytest.raises(FencedWrite, match=f"not the leader: {method}"):
                await session.request(method, f"{url}/late")
        async with session.get(f"{url}/read") as response:
            assert response.status == 200
    assert [(m, p) for m, p, _ in seen] == [("PATCH", "/leader"), ("GET", "/read")]
    assert expired == [110.0]  # called once, at the first refused write
    assert fence.refused == 5


async def test_a_closed_fence_refuses_and_a_standalone_one_never_does(
    server: tuple[str, list[tuple[str, str, str]]],
) -> None:
    url, seen = server
    fence = Fence()
    fence.open_until(float("inf"))
    fence.close()  # a graceful stop: closed on purpose, not expired
    async with aiohttp.ClientSession(trace_configs=[fence.trace_config()]) as session:
        with pytest.raises(FencedWrite):
            await session.post(f"{url}/after-stop")
    lone = Fence.open_forever()
    async with (
        aiohttp.ClientSession(trace_configs=[lone.trace_config()]) as session,
        session.post(f"{url}/standalone") as response,
    ):
        assert response.status == 200
    assert [p for _, p, _ in seen] == ["/standalone"]


def _kubeconfig(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


async def test_the_handlers_client_and_kopfs_session_are_both_fenced(
    server: tuple[str, list[tuple[str, str, str]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, seen = server
    # KUBECONFIG is read at import; the loader's default is what both clients use.
    monkeypatch.setattr(
        kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(_kubeconfig(tmp_path, url))
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(client.Configuration, "_default", None)  # loading sets it globally
    clock = Clock()
    fence = Fence(clock=clock)
    fence.open_until(clock.now + 10)
    agent = "vigil-operator/0.1.0 (op-a)"

    api = await new_api_client(user_agent=agent, fence=fence)
    info: Any = await handlers.login(
        memo=kopf.Memo(fence=fence, user_agent=agent),
        logger=logging.getLogger("test"),
        settings=kopf.OperatorSettings(),
    )
    assert isinstance(info, kopf.AiohttpSession)
    kopf_session = info.aiohttp_session
    body = {"metadata": {"name": "x"}}
    try:
        core = client.CoreV1Api(api)
        await core.create_namespaced_config_map("ns", body)
        async with kopf_session.post(f"{url}/api/v1/namespaces/ns/events", json={}) as r:
            assert r.status == 200
        clock.now += 10  # the tenure is over
        with pytest.raises(FencedWrite):
            await core.create_namespaced_config_map("ns", body)
        with pytest.raises(FencedWrite):
            await kopf_session.patch(f"{url}/apis/vigil.dev/v1alpha1/x", json={})
        await core.read_namespaced_config_map("x", "ns")  # reads still flow
    finally:
        await api.close()
        await kopf_session.close()
    assert seen == [
        ("POST", "/api/v1/namespaces/ns/configmaps", agent),
        ("POST", "/api/v1/namespaces/ns/events", agent),
        ("GET", "/api/v1/namespaces/ns/configmaps/x", agent),
    ]
