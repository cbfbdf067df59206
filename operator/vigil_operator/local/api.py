"""The control API of `vigil local up`, and the client the other `vigil local`
subcommands use.

JSON over HTTP on 127.0.0.1 (or a unix socket: `unix:/path`), for this
machine only:

    GET    /healthz
    GET    /v1/models[?namespace=NS]      {"items": [Model, ...]}
    POST   /v1/models?namespace=NS Model  {"result": created|configured|unchanged, "object"}
    GET    /v1/models/NS/NAME             Model (with status)
    DELETE /v1/models/NS/NAME             {"result": "deleted"}, once its units have stopped
    GET    /v1/models/NS/NAME/events      {"items": [{time, type, reason, message}, ...]}
    GET    /v1/zones                      {"items": [{name, healthy, units}, ...]}
    POST   /v1/zones/ZONE/down or /up     {zone, healthy, changed, killed, inflight}
    GET    /v1/units                      {"items": [{name, model, zone, pid, ready, ...}]}

Refusals are {"error": message, "errors": [...]} with 422 (invalid), 404
(no such Model or zone) or 400 (not JSON).
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlencode

if TYPE_CHECKING:
    from aiohttp import web

    from vigil_operator.local.control import LocalRuntime

DEFAULT_ADDRESS: Final = "127.0.0.1:7070"
ENV_ADDRESS: Final = "VIGIL_LOCAL_API"


def parse_address(address: str) -> tuple[str, int] | str:
    """`HOST:PORT`, `:PORT` or `PORT` (host 127.0.0.1) -> (host, port); `unix:PATH` -> PATH."""
    if address.startswith("unix:"):
        return address.removeprefix("unix:")
    host, sep, port = address.rpartition(":")
    if not sep:
        host, port = "", address
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{address!r} is not HOST:PORT or unix:PATH") from None
    return (host.strip("[]") or "127.0.0.1", number)


# -- server --------------------------------------------------------------------


def _json(body: Any, status: int = 200) -> web.Response:
    from aiohttp import web  # here: the client side of this module starts without aiohttp

    return web.json_response(body, status=status)


def _error(status: int, message: str, errors: list[str] | None = None) -> web.Response:
    return _json({"error": message, "errors": errors or [message]}, status)


def _key(request: web.Request) -> tuple[str, str]:
    return request.match_info["namespace"], request.match_info["name"]


def _no_model(request: web.Request) -> web.Response:
    return _error(404, f'models.vigil.dev "{_key(request)[1]}" not found')


class _Handlers:
    """One method a route (see the module docstring), over one runtime."""

    def __init__(self, runtime: LocalRuntime) -> None:
        self.runtime = runtime

    async def healthz(self, _: web.Request) -> web.Response:
        return _json({"ok": True})

    async def list_models(self, request: web.Request) -> web.Response:
        ns = request.query.get("namespace")
        items = [m for m in self.runtime.store if ns is None or m["metadata"]["namespace"] == ns]
        return _json({"items": items})

    async def get_model(self, request: web.Request) -> web.Response:
        obj = self.runtime.store.get(_key(request))
        return _no_model(request) if obj is None else _json(obj)

    async def apply_model(self, request: web.Request) -> web.Response:
        from vigil_operator.local.store import DEFAULT_NAMESPACE, Invalid

        try:
            obj = await request.json()
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            return _error(400, "the body must be a JSON object")
        ns = request.query.get("namespace") or DEFAULT_NAMESPACE
        try:
            result, stored = await self.runtime.apply(obj, ns)
        except Invalid as exc:
            return _error(422, str(exc), exc.errors)
        return _json({"result": result, "object": stored})

    async def delete_model(self, request: web.Request) -> web.Response:
        if not await self.runtime.delete(_key(request)):
            return _no_model(request)
        return _json({"result": "deleted"})

    async def model_events(self, request: web.Request) -> web.Response:
        ctrl = self.runtime.controllers.get(_key(request))
        return _no_model(request) if ctrl is None else _json({"items": list(ctrl.events)})

    async def zones(self, _: web.Request) -> web.Response:
        return _json({"items": self.runtime.zone_list()})

    async def zone_action(self, request: web.Request) -> web.Response:
        from vigil_operator.local.store import Invalid

        action = request.match_info["action"]
        if action not in ("down", "up"):
            return _error(404, f"no action {action!r}: down or up")
        try:
            result = await self.runtime.set_zone(request.match_info["zone"], action == "up")
        except Invalid as exc:
            return _error(404, str(exc))
        return _json(result)

    async def units(self, _: web.Request) -> web.Response:
        return _json({"items": self.runtime.units()})


def build_app(runtime: LocalRuntime) -> web.Application:
    from aiohttp import web

    h = _Handlers(runtime)
    app = web.Application()
    app.router.add_get("/healthz", h.healthz)
    app.router.add_get("/v1/models", h.list_models)
    app.router.add_post("/v1/models", h.apply_model)
    app.router.add_get("/v1/models/{namespace}/{name}", h.get_model)
    app.router.add_delete("/v1/models/{namespace}/{name}", h.delete_model)
    app.router.add_get("/v1/models/{namespace}/{name}/events", h.model_events)
    app.router.add_get("/v1/zones", h.zones)
    app.router.add_post("/v1/zones/{zone}/{action}", h.zone_action)
    app.router.add_get("/v1/units", h.units)
    return app


async def serve(runtime: LocalRuntime, address: str) -> tuple[web.AppRunner, str]:
    """Start the API on `address`; returns the runner and the address bound."""
    from aiohttp import web

    where = parse_address(address)
    runner = web.AppRunner(build_app(runtime), access_log=None)
    await runner.setup()
    try:
        if isinstance(where, str):
            site: web.BaseSite = web.UnixSite(runner, where)
            await site.start()
            return runner, f"unix:{where}"
        host, port = where
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        await web.SockSite(runner, sock).start()
        return runner, f"{host}:{sock.getsockname()[1]}"
    except OSError as exc:
        await runner.cleanup()
        raise RuntimeError(
            f"cannot serve the control API on {address} ({exc.strerror}); is another "
            "`vigil local up` running? pass --api"
        ) from None


# -- client ----------------------------------------------------------------------


class ApiError(Exception):
    """The runtime refused; `status` is the HTTP status, the message its words."""

    def __init__(self, status: int, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or [message]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class ApiClient:
    """Blocking and stdlib-only, so `vigil local get` starts in a blink."""

    def __init__(self, address: str = DEFAULT_ADDRESS, timeout: float = 120.0) -> None:
        self.address = address
        self._where = parse_address(address)
        self.timeout = timeout

    def _connection(self) -> http.client.HTTPConnection:
        if isinstance(self._where, str):
            return _UnixConnection(self._where, self.timeout)
        host, port = self._where
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def call(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> Any:
        if query:
            path = f"{path}?{urlencode(query)}"
        conn = self._connection()
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except OSError as exc:
            raise ConnectionError(
                f"no `vigil local up` answers on {self.address} ({exc.strerror or exc}); "
                f"start one, or point --api (or ${ENV_ADDRESS}) at it"
            ) from None
        finally:
            conn.close()
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            raise ApiError(response.status, raw.decode(errors="replace")[:300]) from None
        if response.status >= 400:
            raise ApiError(response.status, payload.get("error", ""), payload.get("errors"))
        return payload

    # The calls the subcommands make.

    def healthy(self) -> bool:
        try:
            self.call("GET", "/healthz")
        except (ConnectionError, ApiError):
            return False
        return True

    def models(self, namespace: str | None = None) -> list[dict[str, Any]]:
        query = {"namespace": namespace} if namespace else None
        items: list[dict[str, Any]] = self.call("GET", "/v1/models", query=query)["items"]
        return items

    def model(self, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.call("GET", f"/v1/models/{quote(namespace)}/{quote(name)}")
        return obj

    def apply(self, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        reply: dict[str, Any] = self.call("POST", "/v1/models", obj, {"namespace": namespace})
        return reply

    def delete(self, namespace: str, name: str) -> None:
        self.call("DELETE", f"/v1/models/{quote(namespace)}/{quote(name)}")

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        path = f"/v1/models/{quote(namespace)}/{quote(name)}/events"
        items: list[dict[str, Any]] = self.call("GET", path)["items"]
        return items

    def zones(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call("GET", "/v1/zones")["items"]
        return items

    def zone(self, zone: str, action: str) -> dict[str, Any]:
        reply: dict[str, Any] = self.call("POST", f"/v1/zones/{quote(zone)}/{action}")
        return reply

    def units(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call("GET", "/v1/units")["items"]
        return items
