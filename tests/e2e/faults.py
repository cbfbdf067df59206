"""A fault-injecting HTTP proxy between the operator and the API server.

The chaos tests need the API server to go away and come back, watches to
expire, and status writes to conflict, on any cluster: a real control plane
cannot be stopped by a test, and the emulator's back doors are not allowed in
the e2e suite. So the operator under test talks to this proxy (its kubeconfig
names the proxy, with the operator's own bearer token passed through), and the
proxy forwards to the real API server (TLS verified with the cluster's CA),
streaming watch responses as they come. A test then calls:

- `down()` / `up()`: every open connection is cut and new ones are refused
  (the listening socket is closed), as when kube-apiserver restarts;
- `expire_watches()`: each open watch gets the `ERROR` event with a 410
  `Expired` Status that a real server sends when the watched resourceVersion
  is compacted, and ends, so the client must relist;
- `conflict(method, path_pattern, times)`: the next `times` matching requests
  are answered 409 Conflict without reaching the server, as when another
  writer keeps winning the resourceVersion race.

`requests` counts what went through, `injected` what was answered here.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


@dataclass
class _Rule:
    method: str
    pattern: re.Pattern[str]
    times: int


@dataclass
class ApiProxy:
    """Forwards 127.0.0.1:`port` to `upstream`; see the module docstring."""

    upstream: str
    ca_data: bytes | None = None  # PEM; None: plain http or system CAs
    insecure: bool = False
    port: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    lists: Counter[str] = field(default_factory=Counter)  # GETs that are not watches, by path
    injected: Counter[str] = field(default_factory=Counter)
    _rules: list[_Rule] = field(default_factory=list)
    _watches: dict[web.StreamResponse, str] = field(default_factory=dict)  # open: path
    _runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None
    _session: aiohttp.ClientSession | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> ApiProxy:
        ssl_ctx: ssl.SSLContext | bool = True
        if self.insecure:
            ssl_ctx = False
        elif self.ca_data:
            ssl_ctx = ssl.create_default_context(cadata=self.ca_data.decode())
        connector = aiohttp.TCPConnector(ssl=ssl_ctx, limit=0)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await self.up()
        return self

    async def stop(self) -> None:
        await self.down()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def up(self) -> None:
        """Listen again (on the same port once one was chosen)."""
        if self._site is not None or self._runner is None:
            return
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        server = self._site._server
        if self.port == 0 and server is not None:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def down(self) -> None:
        """Refuse new connections and cut every open one, watches included."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None and self._runner.server is not None:
            for proto in list(self._runner.server.connections):
                proto.force_close()

    def conflict(self, method: str, path_pattern: str, times: int) -> None:
        """Answer the next `times` requests matching (method, path regex) with 409."""
        self._rules.append(_Rule(method.upper(), re.compile(path_pattern), times))

    async def watching(self, path: str, within_s: float = 60) -> None:
        """Wait until a watch of `path` is open through the proxy.

        A client reopens a watch after a server timeout or an outage (with kopf's
        backoff), so a test that expires watches first waits for the one it means.
        """
        deadline = asyncio.get_running_loop().time() + within_s
        while path not in self._watches.values():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no watch of {path} opened in {within_s:.0f} s")
            await asyncio.sleep(0.1)

    async def expire_watches(self) -> Counter[str]:
        """Send each open watch a 410 Expired ERROR event and end it; the paths."""
        expired: Counter[str] = Counter()
        for response, path in list(self._watches.items()):
            event = {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": "too old resource version (expired by the chaos proxy)",
                    "reason": "Expired",
                    "code": 410,
                },
            }
            self._watches.pop(response, None)  # its relay stops forwarding at once
            try:
                await response.write(json.dumps(event).encode() + b"\n")
                await response.write_eof()
            except (ConnectionError, RuntimeError):
                pass
            expired[path] += 1
        self.injected["watch-expired"] += expired.total()
        return expired

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            return await self._relay(request)
        finally:
            self._tasks.discard(task)

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        key = f"{request.method} {request.path}"
        self.requests[key] += 1
        watching = request.query.get("watch", "").lower() in ("true", "1")
        if request.method == "GET" and not watching:
            self.lists[request.path] += 1
        for rule in self._rules:
            if (
                rule.times > 0
                and rule.method == request.method
                and rule.pattern.search(request.path)
            ):
                rule.times -= 1
                self.injected[f"409 {key}"] += 1
                return web.json_response(_conflict(request.path), status=409)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        upstream = self.upstream.rstrip("/") + request.rel_url.raw_path_qs
        async with self._session.request(
            request.method, upstream, headers=headers, data=body or None, allow_redirects=False
        ) as answer:
            response = web.StreamResponse(status=answer.status, reason=answer.reason)
            for k, v in answer.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    response.headers[k] = v
            await response.prepare(request)
            if watching:
                self._watches[response] = request.path
            try:
                async for chunk in answer.content.iter_any():
                    if watching and response not in self._watches:
                        break  # expired: the client must relist
                    await response.write(chunk)
                if not watching or response in self._watches:
                    await response.write_eof()
            finally:
                self._watches.pop(response, None)
            return response


def _conflict(path: str) -> dict[str, Any]:
    name = path.rstrip("/").split("/")[-2 if path.endswith("/status") else -1]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'Operation cannot be fulfilled on "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        "reason": "Conflict",
        "details": {"name": name},
        "code": 409,
    }


def proxy_for(kubeconfig: dict[str, Any]) -> ApiProxy:
    """A proxy to the current context's API server (token users only: a bearer token
    passes through, a client certificate would not)."""
    import base64
    from pathlib import Path

    context_name = kubeconfig["current-context"]
    context = next(c["context"] for c in kubeconfig["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in kubeconfig["clusters"] if c["name"] == context["cluster"])
    ca: bytes | None = None
    if cluster.get("certificate-authority-data"):
        ca = base64.b64decode(cluster["certificate-authority-data"])
    elif cluster.get("certificate-authority"):
        ca = Path(cluster["certificate-authority"]).read_bytes()
    return ApiProxy(
        upstream=cluster["server"],
        ca_data=ca,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )


def through(kubeconfig: dict[str, Any], proxy: ApiProxy) -> dict[str, Any]:
    """The same kubeconfig with its current cluster reached through `proxy`."""
    out = json.loads(json.dumps(kubeconfig))
    context_name = out["current-context"]
    context = next(c["context"] for c in out["contexts"] if c["name"] == context_name)
    for entry in out["clusters"]:
        if entry["name"] == context["cluster"]:
            entry["cluster"] = {"server": proxy.url}
    return out
