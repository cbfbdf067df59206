"""The control API and its client, over a unix socket and over TCP, against a
stand-in runtime that only keeps Models (no processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from vigil_operator.local import api
from vigil_operator.local.api import ApiClient, ApiError, parse_address
from vigil_operator.local.store import Invalid, Key, ModelStore, key_of, load_validator


class Runtime:
    """What `build_app` needs of `LocalRuntime`."""

    def __init__(self) -> None:
        self.store = ModelStore(load_validator())
        self.controllers: dict[Key, Any] = {}
        self.zones = {"a": True, "b": True}

    async def apply(self, obj: dict[str, Any], namespace: str) -> tuple[str, dict[str, Any]]:
        return self.store.apply(obj, now=datetime.now(UTC), namespace=namespace)

    async def delete(self, key: Key) -> bool:
        return self.store.delete(key) is not None

    def zone_list(self) -> list[dict[str, Any]]:
        return [{"name": z, "healthy": up, "units": 0} for z, up in self.zones.items()]

    async def set_zone(self, zone: str, up: bool) -> dict[str, Any]:
        if zone not in self.zones:
            raise Invalid(f"no zone {zone!r}")
        changed, self.zones[zone] = self.zones[zone] != up, up
        return {"zone": zone, "healthy": up, "changed": changed, "killed": [], "inflight": 0}

    def units(self) -> list[dict[str, Any]]:
        return []


MODEL = {
    "apiVersion": "vigil.dev/v1alpha1",
    "kind": "Model",
    "metadata": {"name": "fabric"},
    "spec": {"artifact": {"uri": "file:///srv/fabric.vigil"}, "minUnits": 1, "maxUnits": 2},
}


@pytest_asyncio.fixture(loop_scope="session", params=["unix", "tcp"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    address = f"unix:{tmp_path / 'api.sock'}" if request.param == "unix" else "127.0.0.1:0"
    runner, bound = await api.serve(Runtime(), address)  # type: ignore[arg-type]
    try:
        yield ApiClient(bound)
    finally:
        await runner.cleanup()


def test_addresses() -> None:
    assert parse_address("127.0.0.1:7070") == ("127.0.0.1", 7070)
    assert parse_address(":7070") == ("127.0.0.1", 7070)
    assert parse_address("7070") == ("127.0.0.1", 7070)
    assert parse_address("[::1]:7070") == ("::1", 7070)
    assert parse_address("unix:/run/vigil.sock") == "/run/vigil.sock"
    with pytest.raises(ValueError, match="HOST:PORT or unix:PATH"):
        parse_address("localhost:http")


async def test_apply_get_delete(client: ApiClient) -> None:
    call = asyncio.to_thread
    assert await call(client.healthy)
    assert (await call(client.apply, MODEL, "default"))["result"] == "created"
    assert (await call(client.apply, MODEL, "default"))["result"] == "unchanged"
    models = await call(client.models)
    assert [key_of(m) for m in models] == [("default", "fabric")]
    assert await call(client.models, "other") == []
    assert (await call(client.model, "default", "fabric"))["spec"]["maxUnits"] == 2
    await call(client.delete, "default", "fabric")
    with pytest.raises(ApiError) as missing:
        await call(client.model, "default", "fabric")
    assert missing.value.status == 404
    assert str(missing.value) == 'models.vigil.dev "fabric" not found'


async def test_a_refusal_carries_the_crds_messages(client: ApiClient) -> None:
    bad = {**MODEL, "spec": {**MODEL["spec"], "minUnits": 3}}  # type: ignore[dict-item]
    with pytest.raises(ApiError) as refused:
        await asyncio.to_thread(client.apply, bad, "default")
    assert refused.value.status == 422
    assert refused.value.errors == ["spec: maxUnits must be greater than or equal to minUnits"]


async def test_zones(client: ApiClient) -> None:
    reply = await asyncio.to_thread(client.zone, "a", "down")
    assert reply == {"zone": "a", "healthy": False, "changed": True, "killed": [], "inflight": 0}
    zones = await asyncio.to_thread(client.zones)
    assert [(z["name"], z["healthy"]) for z in zones] == [("a", False), ("b", True)]
    with pytest.raises(ApiError) as unknown:
        await asyncio.to_thread(client.zone, "z", "down")
    assert unknown.value.status == 404


def test_no_runtime_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConnectionError, match="no `vigil local up` answers on unix:"):
        ApiClient(f"unix:{tmp_path / 'none.sock'}").models()
