"""The thin shell around `core.election`: read and write the Lease, keep time, lead.

`Elector.acquire` tries every retry period (jittered) until this replica
holds the Lease; `Elector.keep` renews it every retry period and returns as
soon as the tenure is over (the renew deadline passed without a successful
renewal, or someone else holds the Lease). Each successful write of the Lease
moves the `Fence` forward to `sent + renew deadline`; the fence, not this
loop, is what stops writes on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from vigil_operator.cluster.fence import Fence
from vigil_operator.cluster.kube import _json
from vigil_operator.core.election import (
    JITTER,
    Create,
    ElectionConfig,
    LeaseRecord,
    Memory,
    Update,
    Wait,
    attempt,
    released,
    tenure_end,
)

log = logging.getLogger("vigil.election")


class LeaseStore:
    """One Lease through `kubernetes_asyncio`, as raw JSON (no generated models)."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self.coordination = client.CoordinationV1Api(api)
        self.namespace, self.name = namespace, name

    async def read(self) -> tuple[LeaseRecord | None, str | None]:
        try:
            body = await _json(
                self.coordination.read_namespaced_lease(
                    self.name, self.namespace, _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None, None
            raise
        return LeaseRecord.from_spec(body.get("spec")), body["metadata"].get("resourceVersion")

    def _body(self, record: LeaseRecord, version: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if version is not None:
            meta["resourceVersion"] = version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": record.to_spec(),
        }

    async def create(self, record: LeaseRecord) -> str:
        """The new resourceVersion; ApiException 409 when someone created it first."""
        body = await _json(
            self.coordination.create_namespaced_lease(
                self.namespace,
                self._body(record, None),  # type: ignore[arg-type]  # raw JSON, as kube.py sends
                _preload_content=False,
            )
        )
        return str(body["metadata"]["resourceVersion"])

    async def replace(self, record: LeaseRecord, version: str | None) -> str:
        """The new resourceVersion; ApiException 409 when it changed since `version`."""
        body = await _json(
            self.coordination.replace_namespaced_lease(
                self.name,
                self.namespace,
                self._body(record, version),  # type: ignore[arg-type]  # raw JSON
                _preload_content=False,
            )
        )
        return str(body["metadata"]["resourceVersion"])


TRANSIENT = (ApiException, aiohttp.ClientError, TimeoutError, ConnectionError)


class Elector:
    def __init__(
        self,
        store: LeaseStore,
        identity: str,
        config: ElectionConfig,
        fence: Fence,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_leading: Callable[[bool], None] = lambda _: None,
    ) -> None:
        self.store, self.identity, self.config, self.fence = store, identity, config, fence
        self.clock, self.wall, self.on_leading = clock, wall, on_leading
        self.memory = Memory()
        self.holder = ""  # who held the Lease at the last read, for logs
        self._random = random.Random()

    def _period(self) -> float:
        return self.config.retry_period_s * self._random.uniform(1.0, JITTER)

    async def try_once(self) -> bool:
        """One read and, when the core says so, one guarded write. True: we hold it."""
        lease, version = await self.store.read()
        action, self.memory = attempt(
            lease,
            version,
            self.memory,
            now=self.clock(),
            wall=self.wall(),
            identity=self.identity,
            config=self.config,
        )
        if isinstance(action, Wait):
            if action.holder != self.holder:
                log.info("the Lease is held by %s; standing by", action.holder)
            self.holder = action.holder
            return False
        sent = self.clock()
        try:
            if isinstance(action, Create):
                new_version = await self.store.create(action.record)
            else:
                assert isinstance(action, Update)
                new_version = await self.store.replace(action.record, action.version)
        except ApiException as exc:
            if exc.status == 409 or (exc.status == 404 and isinstance(action, Update)):
                return False  # someone else wrote first: read again next time
            raise  # e.g. 404 on create: no such namespace; 403: no RBAC for Leases
        self.memory = Memory(action.record, new_version, sent)
        self.holder = self.identity
        self.fence.open_until(tenure_end(sent, self.config))
        return True

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Until this replica leads (True) or `stop` is set (False)."""
        log.info("%s is a candidate for the Lease %s/%s", self.identity, *self._where())
        while not stop.is_set():
            try:
                if await self.try_once():
                    log.info("%s acquired the Lease; leading", self.identity)
                    self.on_leading(True)
                    return True
            except TRANSIENT as exc:
                log.warning("could not read or write the Lease: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._period())
        return False

    async def keep(self) -> str:
        """Renew every retry period; return why the tenure ended."""
        while True:
            await asyncio.sleep(self.config.retry_period_s)
            remaining = (self.fence.valid_until or 0.0) - self.clock()
            if remaining <= 0:
                return "the renew deadline passed"
            try:
                async with asyncio.timeout(remaining):
                    renewed = await self.try_once()
            except TimeoutError:
                return "the renew deadline passed while renewing"
            except TRANSIENT as exc:
                log.warning("could not renew the Lease: %r", exc)
                continue
            if not renewed and self.holder != self.identity:
                return f"the Lease is now held by {self.holder}"

    async def release(self) -> None:
        """Leave the Lease free (a graceful stop), so a standby takes over at its next
        try instead of after the lease duration. Call it only once nothing writes."""
        self.fence.close()
        self.on_leading(False)
        with contextlib.suppress(*TRANSIENT):
            lease, version = await self.store.read()
            if lease is not None and lease.holder == self.identity:
                await self.store.replace(released(lease, wall=self.wall()), version)
                log.info("%s released the Lease", self.identity)

    def _where(self) -> tuple[str, str]:
        return self.store.namespace, self.store.name
