"""The write fence: no write leaves the process unless this replica's tenure is current.

Every HTTP session the operator writes through (kopf's and the
`kubernetes_asyncio` client of the handlers) carries the fence's aiohttp
trace hooks. A mutating request (anything but GET, HEAD, OPTIONS) is checked
against the monotonic clock when it starts and again once it has its
connection, the last moment before aiohttp puts its bytes on the socket; a
refused request raises `FencedWrite` and is never sent. Only the elector's
own client, which writes the Lease under resourceVersion guards, is unfenced.

The check is a clock comparison, not a question to the API server, so it
also holds for a process that was frozen (SIGSTOP) past its tenure: whatever
runs first when it thaws finds the tenure over. What it cannot cover is a
freeze between the check and the socket write, microseconds of pure Python;
a request already on the wire when the tenure ends reaches the API server
within the `lease duration - renew deadline` margin (5 s by default).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import aiohttp

from vigil_operator.core.election import may_write

READS = frozenset({"GET", "HEAD", "OPTIONS"})


class FencedWrite(RuntimeError):
    """A write refused because this replica does not (or no longer) lead."""


class Fence:
    """Open until a monotonic deadline the elector moves forward on each renewal.

    `on_expired` runs once, the first time a write is refused after the fence
    had been open: the tenure ran out under a writer's feet, so the process
    should stop leading at once (the CLI exits).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_expired: Callable[[], None] | None = None,
    ) -> None:
        self.clock = clock
        self.on_expired = on_expired
        self.valid_until: float | None = None
        self.unbounded = False  # a lone replica (--standalone): always open
        self.refused = 0
        self._was_open = False

    @classmethod
    def open_forever(cls) -> Fence:
        fence = cls()
        fence.unbounded = True
        return fence

    def open_until(self, deadline: float) -> None:
        self.valid_until = deadline
        self._was_open = True

    def close(self) -> None:
        self.valid_until = None
        self.unbounded = False

    @property
    def is_open(self) -> bool:
        return self.unbounded or may_write(self.valid_until, self.clock())

    @property
    def expired(self) -> bool:
        """It was open and its time ran out (not: closed on purpose, or never opened)."""
        return self._was_open and self.valid_until is not None and not self.is_open

    def check(self, method: str, url: object) -> None:
        if method.upper() in READS or self.is_open:
            return
        self.refused += 1
        if self.expired and self.on_expired is not None:
            callback, self.on_expired = self.on_expired, None
            callback()
        raise FencedWrite(f"not the leader: {method} {url} refused")

    def trace_config(self) -> aiohttp.TraceConfig:
        """Hooks for `aiohttp.ClientSession(trace_configs=[...])`."""
        trace = aiohttp.TraceConfig()

        async def on_start(
            _: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams
        ) -> None:
            ctx.method, ctx.url = params.method, params.url
            self.check(params.method, params.url)

        async def on_connection(_: aiohttp.ClientSession, ctx: SimpleNamespace, __: Any) -> None:
            self.check(getattr(ctx, "method", "POST"), getattr(ctx, "url", "?"))

        trace.on_request_start.append(on_start)
        trace.on_connection_create_end.append(on_connection)
        trace.on_connection_reuseconn.append(on_connection)
        trace.freeze()  # a session freezes it too; one appended later must already be
        return trace
