"""The elector's loop (retries, renewals, giving up, release) over an in-memory
Lease that enforces resourceVersion, with short real durations."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from vigil_operator.cluster.election import Elector
from vigil_operator.cluster.fence import Fence
from vigil_operator.core.election import ElectionConfig, LeaseRecord

pytestmark = pytest.mark.asyncio
CFG = ElectionConfig(lease_duration_s=1.5, renew_deadline_s=1.0, retry_period_s=0.1)


@dataclass
class MemoryStore:
    """A LeaseStore stand-in: 409 on a stale version, failures on demand."""

    namespace: str = "ns"
    name: str = "lease"
    record: LeaseRecord | None = None
    version: int = 0
    failing: bool = False  # every call raises 503, as an unreachable API server
    writes: list[str] = field(default_factory=list)

    def _check(self) -> None:
        if self.failing:
            raise ApiException(status=503, reason="Service Unavailable")

    async def read(self) -> tuple[LeaseRecord | None, str | None]:
        self._check()
        return self.record, str(self.version) if self.record else None

    async def create(self, record: LeaseRecord) -> str:
        self._check()
        if self.record is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(record)

    async def replace(self, record: LeaseRecord, version: str | None) -> str:
        self._check()
        if version != str(self.version):
            raise ApiException(status=409, reason="Conflict")
        return self._store(record)

    def _store(self, record: LeaseRecord) -> str:
        self.record, self.version = record, self.version + 1
        self.writes.append(record.holder)
        return str(self.version)


def elector(store: MemoryStore, identity: str = "me") -> tuple[Elector, Fence, list[bool]]:
    fence, leading = Fence(), []
    e = Elector(store, identity, CFG, fence, on_leading=leading.append)  # type: ignore[arg-type]
    return e, fence, leading


async def test_acquires_through_api_trouble_and_opens_the_fence_for_the_renew_deadline() -> None:
    store = MemoryStore(failing=True)
    e, fence, leading = elector(store)
    asyncio.get_running_loop().call_later(0.3, setattr, store, "failing", False)
    started = time.monotonic()
    assert await e.acquire(asyncio.Event())
    assert time.monotonic() - started >= 0.3 and leading == [True]
    assert store.writes == ["me"]
    assert fence.valid_until is not None
    assert 0 < fence.valid_until - time.monotonic() <= CFG.renew_deadline_s
    assert fence.is_open


async def test_a_standby_waits_while_the_holder_renews_and_stops_on_request() -> None:
    store = MemoryStore()
    other, _, _ = elector(store, "other")
    assert await other.try_once()
    e, fence, leading = elector(store)
    stop = asyncio.Event()

    async def holder_renews() -> None:
        while not stop.is_set():
            await other.try_once()
            await asyncio.sleep(CFG.retry_period_s)

    renewing = asyncio.create_task(holder_renews())
    asyncio.get_running_loop().call_later(2 * CFG.lease_duration_s, stop.set)
    assert not await e.acquire(stop)  # the holder never let its lease lapse
    await renewing
    assert leading == [] and not fence.is_open and set(store.writes) == {"other"}


async def test_keep_renews_then_gives_up_at_the_renew_deadline_when_the_api_is_gone() -> None:
    store = MemoryStore()
    e, fence, _ = elector(store)
    assert await e.acquire(asyncio.Event())
    keep = asyncio.create_task(e.keep())
    await asyncio.sleep(0.5)
    assert not keep.done() and store.writes.count("me") >= 3  # renewed every retry period
    store.failing = True
    failed_at = time.monotonic()
    reason = await asyncio.wait_for(keep, timeout=CFG.lease_duration_s)
    assert "renew deadline" in reason
    assert time.monotonic() - failed_at <= CFG.renew_deadline_s + CFG.retry_period_s
    assert not fence.is_open  # closed by time, before anyone else could take over


async def test_keep_ends_at_once_when_another_holder_took_the_lease() -> None:
    store = MemoryStore()
    e, _, _ = elector(store)
    assert await e.acquire(asyncio.Event())
    keep = asyncio.create_task(e.keep())
    assert store.record is not None
    store._store(LeaseRecord("thief", 15, None, None, 1))
    reason = await asyncio.wait_for(keep, timeout=3 * CFG.retry_period_s)
    assert reason == "the Lease is now held by thief"


async def test_release_frees_only_a_lease_we_hold() -> None:
    store = MemoryStore()
    e, fence, leading = elector(store)
    assert await e.acquire(asyncio.Event())
    await e.release()
    assert store.record is not None and store.record.holder == ""
    assert not fence.is_open and leading == [True, False]
    other, _, _ = elector(store, "other")
    assert await other.try_once()  # free: taken at the next try, no lease-long wait
    await e.release()  # no longer ours: left alone
    assert store.record.holder == "other"
