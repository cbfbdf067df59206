"""KubeEmulator: kmock's KubernetesEmulator grown into a realistic API server.

kmock contributes the HTTP plumbing (:class:`kmock.Server` on a free loopback
port), the request log and its filtering DSL, test-declared reactions (which
still win: ``kube["patch", kmock.resource("apps/v1/deployments")][:1] << 500``
injects one failure), and ``kube.objects[...]`` with per-object history.

Replaced: kmock's URL parser (it fails on ``/api/v1/namespaces``) and its
state handling. Here the store (:mod:`.store`) applies the API server's
rules, the controllers (:mod:`.controllers`) play the control plane, and this
module speaks HTTP: discovery, CRUD, subresources, list paging and watches.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import inspect
import json
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from ssl import SSLContext
from typing import Any, TypeVar

import aiohttp.test_utils
import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import apps, rendering

from . import auth, errors, openapi, patches, protobuf, selectors, strict, tables
from .controllers import (
    NODE_LEASES,
    Controllers,
    PodStartHook,
    PodStopHook,
    pod_condition,
    set_condition,
)
from .resources import ResourceType, model_crd
from .store import DeleteOptions, Obj, ObjectStore, clone, now_iso, terminating

T = TypeVar("T")
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
GPU = "nvidia.com/gpu"
DEFAULT_ZONES = ("zone-a", "zone-b", "zone-c")
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_JSON = "application/json"


@dataclass(frozen=True)
class Route:
    """A resource URL taken apart (kmock's parser cannot do /api/v1/namespaces)."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    watch_prefix: bool = False  # the deprecated /api/v1/watch/... form


def parse_route(path: str) -> Route | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    watch_prefix = rest[0] == "watch"
    if watch_prefix:
        rest = rest[1:]
        if not rest:
            return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    return Route(
        group,
        version,
        rest[0],
        namespace,
        rest[1] if len(rest) > 1 else None,
        "/".join(rest[2:]) or None,
        watch_prefix,
    )


@dataclass(frozen=True)
class ApiCall:
    """One request as an audit log would record it."""

    verb: str  # get, list, watch, create, update, patch, delete, deletecollection; or the method
    group: str
    version: str
    resource: str  # the plural; "" for non-resource URLs
    subresource: str | None
    namespace: str | None
    name: str | None
    code: int
    path: str
    intercepted: bool = False  # answered by a test-declared kmock reaction
    user: str = ""  # who made it ("" when unauthenticated)
    user_agent: str = ""  # who called, as an audit log's userAgent tells replicas apart

    @property
    def resource_id(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource


def _verb(method: str, route: Route | None, query: Mapping[str, str]) -> str:
    if route is None:
        return method.lower()
    watching = route.watch_prefix or query.get("watch") in _TRUE
    return {
        "GET": "watch" if watching else ("get" if route.name else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if route.name else "deletecollection",
    }.get(method, method.lower())


_ACTIONS = {
    "watch": kmock.action.WATCH,
    "get": kmock.action.FETCH,
    "list": kmock.action.LIST,
    "create": kmock.action.CREATE,
    "update": kmock.action.UPDATE,
    "patch": kmock.action.UPDATE,
    "delete": kmock.action.DELETE,
}


def _json(body: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.json_response(body, status=status, dumps=_dumps)


def _dumps(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"))


def _to_store(instance: Any, attribute: Any, value: Any) -> Any:
    store = getattr(instance, "store", None)
    if store is not None:
        store.default_toleration_seconds = value
    return value


def _to_controllers(instance: Any, attribute: Any, value: Any) -> Any:
    """Keep the controllers' copy of a setting in step when a test changes it."""
    controllers = getattr(instance, "controllers", None)
    if controllers is not None:
        setattr(controllers, attribute.name, value)
    return value


class _TLSServer(aiohttp.test_utils.RawTestServer):
    """kmock's server class, listening with TLS."""

    def __init__(self, *args: Any, ssl_context: SSLContext, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ssl_context = ssl_context

    async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
        await super().start_server(loop=loop, ssl=self.ssl_context, **kwargs)


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """A Kubernetes API server emulator with a simulated control plane.

    Start it with ``async with KubeEmulator(...).serve() as kube:``; point
    clients at ``kube.server_url`` or at ``kube.write_kubeconfig(path)``.

    Timing: a bound pod turns Running and Ready ``pod_start_delay`` seconds
    later; a node whose kubelet stops heartbeating turns Ready=Unknown after
    ``node_monitor_grace_period``; pods of a NotReady node are marked not
    Ready at once and evicted after their tolerationSeconds (``eviction_delay``
    unless they say otherwise); a graceful pod deletion ends when the kubelet
    confirms it, ``pod_termination_delay`` later for the built-in one.
    Hooks: ``pod_started(pod)`` (sync or async) runs when the kubelet starts a
    pod and may return its IP (else 127.x.y.z, unique per pod);
    ``pod_stopped(pod)`` runs once it is gone.
    """

    # These can also be changed on a running emulator (kube.pod_start_delay = 2.0).
    pod_start_delay: float = attrs.field(default=0.5, on_setattr=_to_controllers)
    # DefaultTolerationSeconds: the not-ready/unreachable tolerations given to new pods.
    eviction_delay: int = attrs.field(default=300, on_setattr=_to_store)
    node_monitor_grace_period: float = attrs.field(default=40.0, on_setattr=_to_controllers)
    pod_termination_delay: float = attrs.field(default=0.0, on_setattr=_to_controllers)
    pod_started: PodStartHook | None = attrs.field(default=None, on_setattr=_to_controllers)
    pod_stopped: PodStopHook | None = attrs.field(default=None, on_setattr=_to_controllers)
    run_controllers: bool = True  # False: a bare API server (no GC, no pods, no scheduling)
    run_kubelet: bool = True  # False: nodes are left to an external kubelet (add_node(kubelet=))
    strict_namespaces: bool = True  # creating in a missing namespace is a 404, like the real one
    validate_schemas: bool = True  # CRD openAPIV3Schema validation (422); CEL is not evaluated
    install_model_crd: bool = True  # crds/models.vigil.dev.yaml, or a permissive stand-in
    bookmark_interval: float = 5.0  # BOOKMARK events on watches that allow them
    history_limit: int = 10_000  # watch events kept for resourceVersion resumption (else 410)
    seed: int | None = None  # makes uids and generated names reproducible

    store: ObjectStore = attrs.field(init=False)
    controllers: Controllers = attrs.field(init=False)
    authenticator: auth.Authenticator = attrs.field(init=False)
    calls: list[ApiCall] = attrs.field(init=False, factory=list)
    internal_errors: list[BaseException] = attrs.field(init=False, factory=list)
    _changed: asyncio.Event = attrs.field(init=False, factory=asyncio.Event)
    _closing: bool = attrs.field(init=False, default=False)
    _kmock_resources: dict[tuple[str, str, str], kmock.resource] = attrs.field(
        init=False, factory=dict
    )

    def __attrs_post_init__(self) -> None:
        # Deliberately not kmock's: its fallback reactions would serve its own state.
        self.store = ObjectStore(
            self._objects,
            history_limit=self.history_limit,
            strict_namespaces=self.strict_namespaces,
            validate_schemas=self.validate_schemas,
            seed=self.seed,
        )
        self.store.default_toleration_seconds = self.eviction_delay
        self.controllers = Controllers(
            self.store,
            on_error=self._record_error,
            pod_start_delay=self.pod_start_delay,
            pod_termination_delay=self.pod_termination_delay,
            node_monitor_grace_period=self.node_monitor_grace_period,
        )
        self.controllers.pod_started = self.pod_started
        self.controllers.pod_stopped = self.pod_stopped
        self.store.listeners.append(lambda _: self._changed.set())
        self.authenticator = auth.Authenticator(self.store)
        for name in ("default", "kube-system", "kube-public", NODE_LEASES):
            self.create_namespace(name)
        for plural, body in auth.bootstrap_policy():
            self.create_object(f"rbac.authorization.k8s.io/v1/{plural}", body)
        if self.install_model_crd:
            self.create_object("customresourcedefinitions", model_crd())

    # --- lifecycle ---

    async def __aenter__(self) -> KubeEmulator:
        await super().__aenter__()
        if self.run_controllers and self.controllers._task is None:
            self.controllers.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._closing = True
        self.store.close_watches()
        await self.controllers.stop()
        await super().__aexit__(*exc)

    @contextlib.asynccontextmanager
    async def serve(
        self, host: str = "127.0.0.1", port: int | None = None, ssl: SSLContext | None = None
    ) -> AsyncIterator[KubeEmulator]:
        """Run the emulator and an HTTP server for it (on a free port unless given one);
        HTTPS with ``ssl`` (kubectl sends no credentials over plain HTTP)."""
        async with self:
            if ssl is None:
                server = kmock.Server(self, host=host, port=port)
            else:
                tls = functools.partial(_TLSServer, ssl_context=ssl)
                server = kmock.Server(self, host=host, port=port, server_cls=tls)
            await server.__aenter__()
            try:
                yield self
            finally:
                # Watch streams end first, or aiohttp would wait 60 s for them at shutdown.
                self._closing = True
                self.store.close_watches()
                await server.__aexit__(None, None, None)

    @property
    def server_url(self) -> str:
        return str(self.url).rstrip("/")

    def write_kubeconfig(
        self, path: Path, *, namespace: str = "default", token: str = auth.ADMIN_TOKEN
    ) -> Path:
        """A kubeconfig for kopf, kubectl and kubernetes_asyncio (plain HTTP), by default
        the admin's; ``token`` e.g. from the TokenRequest API, for a ServiceAccount."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "vigil-emulator",
            "clusters": [{"name": "vigil-emulator", "cluster": {"server": self.server_url}}],
            "users": [{"name": "vigil-tester", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "vigil-emulator",
                    "context": {
                        "cluster": "vigil-emulator",
                        "user": "vigil-tester",
                        "namespace": namespace,
                    },
                }
            ],
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    def _record_error(self, error: BaseException) -> None:
        self.internal_errors.append(error)

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """kmock's client shortcuts (``await kube.get(path)``), as the admin unless told."""
        headers = {"Authorization": f"Bearer {auth.ADMIN_TOKEN}", **kwargs.pop("headers", {})}
        return super().request(method, url, headers=headers, **kwargs)

    # --- HTTP entry point ---

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """kmock's entry point, with a Kubernetes-correct URL parser."""
        try:
            request = await self._parse(raw, len(self._requests))
            self._requests.append(request)
            return await self._handle(request)
        except Exception as e:  # an emulator bug: answer 500, and fail the test later
            self._record_error(e)
            return _json(
                errors.ApiError(
                    500,
                    "InternalError",
                    f"emulator error: {e!r}",
                    {"traceback": traceback.format_exc()},
                ).status(),
                500,
            )

    async def _parse(self, raw: aiohttp.web.BaseRequest, request_id: int) -> rendering.Request:
        body = await raw.read()
        data: Any = None
        if body:
            try:
                data = json.loads(body)
            except ValueError:
                data = None
        route = parse_route(raw.path)
        verb = _verb(raw.method, route, raw.query)
        return rendering.Request(
            id=request_id,
            raw_request=raw,
            url=raw.url,
            method=raw.method,
            params=dict(raw.query),
            headers=dict(raw.headers),
            cookies=dict(raw.cookies),
            body=body,
            text=body.decode("utf-8", errors="replace"),
            data=data,
            action=_ACTIONS.get(verb),
            resource=self._kmock_resource(route) if route else None,
            namespace=route.namespace if route else None,
            name=route.name if route else None,
            subresource=route.subresource if route else None,
        )

    def _kmock_resource(self, route: Route) -> kmock.resource:
        key = (route.group, route.version, route.plural)
        found = self._kmock_resources.get(key)
        if found is None:  # building one is slow (protocol checks): once per resource
            found = self._kmock_resources[key] = kmock.resource(*key)
        return found

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None
        route = parse_route(raw.path)
        intercepted = True
        recorded = False
        user = ""

        def record(code: int) -> None:
            """Log the call once: when answered, or when a watch stream starts."""
            nonlocal recorded
            if recorded:
                return
            recorded = True
            self.calls.append(
                ApiCall(
                    verb=_verb(raw.method, route, raw.query),
                    group=route.group if route else "",
                    version=route.version if route else "",
                    resource=route.plural if route else "",
                    subresource=route.subresource if route else None,
                    namespace=route.namespace if route else None,
                    name=route.name if route else None,
                    code=code,
                    path=raw.path,
                    intercepted=intercepted,
                    user=user,
                    user_agent=raw.headers.get("User-Agent", ""),
                )
            )

        try:
            who = self.authenticator.authenticate(raw.headers.get("Authorization"))
            user = who.user
            auth.authorize(self.store, who, self._auth_request(raw, route))
        except errors.ApiError as e:
            intercepted = False
            record(e.code)
            return _json(e.status(), e.code)
        try:
            # Reactions declared by the test (fault injection, overrides) come first.
            response = await apps.RawHandler._handle(self, request)
        except NotImplementedError:
            intercepted = False
            response = await self._serve(raw, route, request.data, record)
        record(response.status)
        return response

    @staticmethod
    def _auth_request(raw: aiohttp.web.BaseRequest, route: Route | None) -> auth.Request:
        """The request's attributes as RBAC sees them (kube-apiserver's RequestInfo)."""
        verb = _verb(raw.method, route, raw.query)
        if route is None:
            return auth.Request(verb, raw.path.rstrip("/") or "/")
        namespace, name = route.namespace, route.name
        if route.group == "" and route.plural == "namespaces" and name:
            namespace = name  # a namespace is its own namespace
        selected = raw.query.get("fieldSelector", "")
        if verb in ("list", "watch") and selected.startswith("metadata.name="):
            name = selected.removeprefix("metadata.name=")
        return auth.Request(
            verb, raw.path, route.group, route.plural, route.subresource, namespace, name
        )

    async def _serve(
        self,
        raw: aiohttp.web.BaseRequest,
        route: Route | None,
        data: Any,
        record: Callable[[int], None],
    ) -> aiohttp.web.StreamResponse:
        try:
            if raw.content_type == protobuf.MEDIA_TYPE and raw.method in ("POST", "PUT"):
                data = protobuf.decode(await raw.read())  # client-go's typed clients
            if route is None:
                return self._non_resource(raw.path)
            return await self._serve_resource(raw, route, data, record)
        except errors.ApiError as e:
            return _json(e.status(), e.code)
        except selectors.SelectorError as e:
            return _json(errors.bad_request(str(e)).status(), 400)

    # --- discovery ---

    def _non_resource(self, path: str) -> aiohttp.web.StreamResponse:
        parts = [p for p in path.split("/") if p]
        catalog = self.store.catalog
        if path.rstrip("/") in ("/healthz", "/livez", "/readyz"):
            return aiohttp.web.Response(text="ok")
        if not parts:
            paths = {"/api", "/api/v1", "/apis", "/version", "/healthz", "/livez", "/readyz"}
            for group, versions in catalog.groups().items():
                paths.add(f"/apis/{group}")
                paths.update(f"/apis/{group}/{v}" for v in versions)
            return _json({"paths": sorted(paths)})
        if parts[:2] == ["openapi", "v3"]:
            return self._openapi_v3("/".join(parts[2:]))
        if parts == ["version"]:
            return _json(
                {
                    "major": "1",
                    "minor": "31",
                    "gitVersion": "v1.31.0-vigil-emulator",
                    "gitCommit": "0000000000000000000000000000000000000000",
                    "gitTreeState": "clean",
                    "buildDate": "2024-08-13T00:00:00Z",
                    "goVersion": "go1.22.5",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }
            )
        if parts == ["api"]:
            return _json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {
                            "clientCIDR": "0.0.0.0/0",
                            "serverAddress": self.server_url.split("//")[-1],
                        }
                    ],
                }
            )
        if parts == ["api", "v1"]:
            return _json(self._resource_list("", "v1"))
        if parts == ["apis"]:
            return _json(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [self._group(g, vs) for g, vs in sorted(catalog.groups().items())],
                }
            )
        groups = catalog.groups()
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
            return _json(
                {"kind": "APIGroup", "apiVersion": "v1", **self._group(parts[1], groups[parts[1]])}
            )
        if len(parts) == 3 and parts[0] == "apis" and parts[2] in groups.get(parts[1], []):
            return _json(self._resource_list(parts[1], parts[2]))
        raise errors.unknown_resource()

    def _openapi_v3(self, group_version: str) -> aiohttp.web.StreamResponse:
        catalog = self.store.catalog
        documents = openapi.documents(list(catalog.types.values()), catalog.schemas)
        if not group_version:
            return _json(openapi.root_document(documents))
        if group_version not in documents:
            raise errors.unknown_resource()
        return _json(documents[group_version])

    @staticmethod
    def _group(group: str, versions: list[str]) -> Obj:
        listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": listed, "preferredVersion": listed[0]}

    def _resource_list(self, group: str, version: str) -> Obj:
        types = self.store.catalog.in_group_version(group, version)
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": [entry for rt in types for entry in rt.discovery()],
        }

    # --- resources ---

    async def _serve_resource(
        self,
        raw: aiohttp.web.BaseRequest,
        route: Route,
        data: Any,
        record: Callable[[int], None],
    ) -> aiohttp.web.StreamResponse:
        rt = self._resource_type(route)
        method, name, sub = raw.method, route.name, route.subresource
        if method == "GET":
            return await self._get(raw, route, rt, record)
        strict_fields = raw.query.get("fieldValidation") == "Strict" and sub is None
        schema = self.store.catalog.schemas.get(rt.key) if strict_fields else None

        def checked(obj: Any) -> Any:
            strict.check(rt, schema, obj)
            return obj

        if method == "POST":
            return self._post(raw, route, rt, data, checked)
        if name is None:
            if method == "DELETE":
                return _json(self._delete_collection(rt, route.namespace, raw.query, data))
            raise errors.method_not_allowed()
        if method == "DELETE":
            if sub is not None:
                raise errors.method_not_allowed()
            options = _delete_options(raw.query, data)
            return _json(self.store.delete(rt, route.namespace, name, options))
        if method not in ("PUT", "PATCH"):
            raise errors.method_not_allowed()
        if sub == "scale":
            return _json(
                self._update_scale(rt, route.namespace, name, method, data, raw.content_type)
            )
        if sub == "finalize" and method == "PUT":
            return _json(self._finalize(rt, name, data))
        if sub not in (None, "status"):
            raise errors.method_not_allowed()
        return await self._write(raw, route, rt, data, checked)

    def _resource_type(self, route: Route) -> ResourceType:
        """The route's resource type, or 404 as the API server answers for a
        path it does not serve (wrong scope, unknown subresource)."""
        rt = self.store.catalog.get(route.group, route.version, route.plural)
        if rt is None:
            raise errors.unknown_resource()
        if route.namespace is not None and not rt.namespaced:
            raise errors.unknown_resource()
        if rt.namespaced and route.name and route.namespace is None:
            raise errors.unknown_resource()
        if route.subresource is not None and route.subresource not in rt.subresources:
            raise errors.unknown_resource()
        return rt

    async def _get(
        self,
        raw: aiohttp.web.BaseRequest,
        route: Route,
        rt: ResourceType,
        record: Callable[[int], None],
    ) -> aiohttp.web.StreamResponse:
        """A watch, a list, or a read (as a Table when kubectl asks for one)."""
        query, ns, name, sub = raw.query, route.namespace, route.name, route.subresource
        labels = selectors.parse_label_selector(query.get("labelSelector"))
        fields = selectors.parse_field_selector(query.get("fieldSelector"), rt.fields)
        if route.watch_prefix or query.get("watch") in _TRUE:
            if name:
                fields.append(selectors.FieldRequirement("metadata.name", False, name))
            return await self._watch(raw, rt, ns, labels, fields, record)
        wants_table = rt.custom and tables.wants_table(raw.headers.get("Accept", ""))
        if name is None:
            listed = self._list(rt, ns, labels, fields, query)
            return _json(self._table(rt, listed["items"], query) if wants_table else listed)
        obj = self.store.read(rt, ns, name)
        if wants_table and sub is None:
            return _json(self._table(rt, [obj], query))
        return _json(self._scale_of(obj) if sub == "scale" else obj)

    def _post(
        self,
        raw: aiohttp.web.BaseRequest,
        route: Route,
        rt: ResourceType,
        data: Any,
        checked: Callable[[Any], Any],
    ) -> aiohttp.web.StreamResponse:
        """A create, or an eviction, binding or token."""
        ns, name, sub = route.namespace, route.name, route.subresource
        if name is None and sub is None:
            if rt.namespaced and ns is None:
                raise errors.method_not_allowed()
            dry_run = bool(raw.query.getall("dryRun", []))
            return _json(self.store.create(rt, ns, checked(data), dry_run=dry_run), 201)
        if name and sub == "eviction":
            return _json(self.controllers.evict(ns or "", name, data or {}), 201)
        if name and sub == "binding":
            return _json(self._bind(ns or "", name, data or {}), 201)
        if name and sub == "token":
            return _json(self._token_request(ns or "", name, data or {}), 201)
        raise errors.method_not_allowed()

    async def _write(
        self,
        raw: aiohttp.web.BaseRequest,
        route: Route,
        rt: ResourceType,
        data: Any,
        checked: Callable[[Any], Any],
    ) -> aiohttp.web.StreamResponse:
        """PUT, or PATCH of any kind (server-side apply may create), of an
        object or its status."""
        ns, name, sub = route.namespace, route.name, route.subresource
        assert name is not None
        dry_run = bool(raw.query.getall("dryRun", []))
        scope = sub or "main"
        content_type = raw.headers.get("Content-Type", "")
        change: Callable[[Any], Any]
        if raw.method == "PUT":

            def change(_: Any) -> Any:
                return checked(data)

        elif patches.is_apply(content_type):
            applied = patches.parse_apply(data, await raw.read())
            if sub is None and self.store.peek(rt, ns, name) is None:
                body = {**applied, "metadata": {**(applied.get("metadata") or {}), "name": name}}
                return _json(self.store.create(rt, ns, checked(body), dry_run=dry_run), 201)

            def change(current: Any) -> Any:
                return checked(patches.apply_configuration(current, applied))

        else:

            def change(current: Any) -> Any:
                return checked(patches.apply_patch(rt, name, current, data, content_type))

        return _json(self.store.update(rt, ns, name, change, scope=scope, dry_run=dry_run))

    def _list(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: list[selectors.Requirement],
        fields: list[selectors.FieldRequirement],
        query: Mapping[str, str],
    ) -> Obj:
        items = self.store.select(rt, namespace, labels, fields)
        rv = str(self.store.rv)
        list_meta: Obj = {"resourceVersion": rv}
        if token := query.get("continue"):
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                after, rv = tuple(state["after"]), state["rv"]
            except (ValueError, KeyError, TypeError) as e:
                raise errors.bad_request(f"continue key is not valid: {e}") from e
            list_meta["resourceVersion"] = rv
            items = [
                i
                for i in items
                if (i["metadata"].get("namespace") or "", i["metadata"]["name"]) > after
            ]
        limit = int(query.get("limit") or 0)
        if 0 < limit < len(items):
            last = items[limit - 1]["metadata"]
            state = {"rv": rv, "after": [last.get("namespace") or "", last["name"]]}
            list_meta["continue"] = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
            list_meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": list_meta,
            "items": items,
        }

    async def _watch(
        self,
        raw: aiohttp.web.BaseRequest,
        rt: ResourceType,
        namespace: str | None,
        labels: list[selectors.Requirement],
        fields: list[selectors.FieldRequirement],
        record: Callable[[int], None],
    ) -> aiohttp.web.StreamResponse:
        query = raw.query
        watch, initial = self.store.watch(
            rt,
            namespace,
            labels,
            fields,
            query.get("resourceVersion"),
            query.get("sendInitialEvents") in _TRUE,
        )
        loop = asyncio.get_running_loop()
        deadline = (
            loop.time() + float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        )
        bookmarks = query.get("allowWatchBookmarks") in _TRUE
        next_bookmark = loop.time() + self.bookmark_interval
        response = aiohttp.web.StreamResponse(headers={"Content-Type": _JSON})
        try:
            await response.prepare(raw)
            record(200)
            for first in initial:
                await response.write(_dumps(first).encode() + b"\n")
            if initial and initial[-1]["type"] == "ERROR":
                return response
            while not self._closing:
                waits = [next_bookmark - loop.time()] if bookmarks else []
                if deadline is not None:
                    waits.append(deadline - loop.time())
                try:
                    event = await asyncio.wait_for(
                        watch.queue.get(), max(0.0, min(waits)) if waits else None
                    )
                except TimeoutError:
                    if deadline is not None and loop.time() >= deadline:
                        break
                    if bookmarks and loop.time() >= next_bookmark:
                        next_bookmark = loop.time() + self.bookmark_interval
                        await response.write(_dumps(self.store.bookmark(rt)).encode() + b"\n")
                    continue
                if event is None:
                    break
                await response.write(_dumps(event).encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            self.store.unwatch(watch)
        return response

    def _delete_collection(
        self, rt: ResourceType, namespace: str | None, query: Mapping[str, str], data: Any
    ) -> Obj:
        labels = selectors.parse_label_selector(query.get("labelSelector"))
        fields = selectors.parse_field_selector(query.get("fieldSelector"), rt.fields)
        options = _delete_options(query, data)
        items = []
        for obj in self.store.select(rt, namespace, labels, fields):
            md = obj["metadata"]
            with contextlib.suppress(errors.ApiError):
                items.append(self.store.delete(rt, md.get("namespace"), md["name"], options))
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self.store.rv)},
            "items": items,
        }

    @staticmethod
    def _scale_of(obj: Obj) -> Obj:
        md = obj["metadata"]
        match_labels = (obj.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: md[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in md
            },
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
            "status": {
                "replicas": obj.get("status", {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(match_labels.items())),
            },
        }

    def _update_scale(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        method: str,
        data: Any,
        content_type: str,
    ) -> Obj:
        def mutate(current: Obj) -> Obj:
            scale = self._scale_of(current)
            if method == "PATCH":
                scale = patches.apply_patch(rt, name, scale, data, content_type)
            elif isinstance(data, dict):
                scale = data
            replicas = (scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise errors.invalid(rt, name, [("spec.replicas", "Invalid value: must be >= 0")])
            current.setdefault("spec", {})["replicas"] = replicas
            wanted = (scale.get("metadata") or {}).get("resourceVersion")
            if wanted:
                current["metadata"]["resourceVersion"] = wanted
            return current

        return self._scale_of(self.store.update(rt, namespace, name, mutate))

    def _table(self, rt: ResourceType, objects: list[Obj], query: Mapping[str, str]) -> Obj:
        crds = self.store.catalog.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        crd = self.store.peek(crds, None, rt.display) if crds else None
        columns = tables.printer_columns(crd, rt.version)
        whole = query.get("includeObject") == "Object"
        return tables.table(objects, columns, str(self.store.rv), whole)

    def _bind(self, namespace: str, name: str, body: Obj) -> Obj:
        target = (body.get("target") or {}).get("name")
        pods = self.controllers.pods
        pod = self.store.read(pods, namespace, name)
        if pod["spec"].get("nodeName"):
            raise errors.conflict(
                pods, name, f"pod {name} is already assigned to node {pod['spec']['nodeName']}"
            )

        def mutate(current: Obj) -> Obj:
            current["spec"]["nodeName"] = target
            pod_condition(current, "PodScheduled", "True")
            return current

        self.store.update(pods, namespace, name, mutate, scope="all")
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }

    def _token_request(self, namespace: str, name: str, body: Obj) -> Obj:
        """The TokenRequest API (``kubectl create token``): a token for a ServiceAccount."""
        account = self.store.read(
            self.store.catalog.types[("", "v1", "serviceaccounts")], namespace, name
        )
        spec = dict(body.get("spec") or {})
        spec.setdefault("expirationSeconds", 3600)
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
            "status": {
                "token": self.authenticator.issue(account),
                "expirationTimestamp": now_iso(spec["expirationSeconds"]),
            },
        }

    def _finalize(self, rt: ResourceType, name: str, data: Any) -> Obj:
        finalizers = ((data or {}).get("spec") or {}).get("finalizers") or []

        def mutate(current: Obj) -> Obj:
            current.setdefault("spec", {})["finalizers"] = finalizers
            return current

        return self.store.update(rt, None, name, mutate, scope="all")

    # --- reading state (for assertions) ---

    def resource_type(self, resource: str | ResourceType) -> ResourceType:
        """Resolve ``apps/v1/deployments``, ``deployments.apps``, ``deployments``, ``deploy``.

        (``kube.resource`` stays kmock's, for its request-filtering DSL.)
        """
        if isinstance(resource, ResourceType):
            return resource
        return self.store.catalog.find(resource)

    def get_object(self, resource: str, name: str, namespace: str | None = None) -> Obj | None:
        """The current object (a copy), or None."""
        obj = self.store.peek(self.resource_type(resource), namespace, name)
        return clone(obj) if obj is not None else None

    def list_objects(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        labels: str | Mapping[str, str] | None = None,
        fields: str | None = None,
    ) -> list[Obj]:
        """Objects (copies) as a list call would return them; labels as text or a dict."""
        rt = self.resource_type(resource)
        if isinstance(labels, Mapping):
            labels = ",".join(f"{k}={v}" for k, v in labels.items())
        return self.store.select(
            rt,
            namespace,
            selectors.parse_label_selector(labels),
            selectors.parse_field_selector(fields, rt.fields),
        )

    def pods(
        self, namespace: str | None = None, labels: str | Mapping[str, str] | None = None
    ) -> list[Obj]:
        return self.list_objects("v1/pods", namespace, labels=labels)

    def deployments(
        self, namespace: str | None = None, labels: str | Mapping[str, str] | None = None
    ) -> list[Obj]:
        return self.list_objects("apps/v1/deployments", namespace, labels=labels)

    def events(
        self,
        namespace: str | None = None,
        *,
        kind: str | None = None,
        name: str | None = None,
        reason: str | None = None,
        type: str | None = None,
    ) -> list[Obj]:
        """Events from both Event APIs, oldest first, normalised for assertions.

        Each is a dict: kind, name, namespace (of the object it is about),
        reason, message, type, source (the reporting component), object (raw).
        """
        result = []
        for resource in ("v1/events", "events.k8s.io/v1/events"):
            for event in self.list_objects(resource, namespace):
                about = event.get("involvedObject") or event.get("regarding") or {}
                source = (
                    event.get("reportingComponent")
                    or event.get("reportingController")
                    or (event.get("source") or {}).get("component", "")
                )
                entry = {
                    "kind": about.get("kind"),
                    "name": about.get("name"),
                    "namespace": about.get("namespace"),
                    "reason": event.get("reason"),
                    "message": event.get("message") or event.get("note"),
                    "type": event.get("type"),
                    "source": source,
                    "object": event,
                }
                wanted = {"kind": kind, "name": name, "reason": reason, "type": type}
                if all(v is None or entry[k] == v for k, v in wanted.items()):
                    result.append(entry)
        result.sort(key=lambda e: int(e["object"]["metadata"]["resourceVersion"]))
        return result

    def ready_pods(
        self, namespace: str | None = None, labels: str | Mapping[str, str] | None = None
    ) -> list[Obj]:
        """Pods that are Ready and not terminating (what endpoints would route to)."""
        return [
            p
            for p in self.pods(namespace, labels)
            if not terminating(p)
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        ]

    def node_of(self, pod: Obj) -> Obj | None:
        name = pod.get("spec", {}).get("nodeName")
        return self.get_object("v1/nodes", name) if name else None

    def zone_of(self, pod: Obj) -> str | None:
        node = self.node_of(pod)
        return node["metadata"]["labels"].get(ZONE_LABEL) if node else None

    # --- writing state (same rules as the API, no HTTP) ---

    def create_object(self, resource: str, body: Obj, namespace: str | None = None) -> Obj:
        rt = self.resource_type(resource)
        ns = namespace or body.get("metadata", {}).get("namespace") if rt.namespaced else None
        return clone(self.store.create(rt, ns, body))

    def patch_object(
        self,
        resource: str,
        name: str,
        patch: Obj,
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> Obj:
        """A merge patch (``None`` deletes a key); ``subresource="status"`` for status."""
        rt = self.resource_type(resource)
        return clone(
            self.store.update(
                rt,
                namespace,
                name,
                lambda current: patches.merge_patch(current, patch),
                scope=subresource or "main",
            )
        )

    def delete_object(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        *,
        propagation: str = "Background",
    ) -> Obj:
        return clone(
            self.store.delete(
                self.resource_type(resource), namespace, name, DeleteOptions(propagation)
            )
        )

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> Obj:
        body: Obj = {
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/metadata.name": name, **(labels or {})},
            }
        }
        return self.create_object("v1/namespaces", body)

    # --- the simulated cluster ---

    def add_node(
        self,
        name: str,
        *,
        zone: str,
        gpus: int = 4,
        cpu: str = "16",
        memory: str = "64Gi",
        region: str = "region-1",
        labels: Mapping[str, str] | None = None,
        taints: Iterable[Obj] = (),
        ready: bool = True,
        address: str | None = None,
        kubelet: bool | None = None,
    ) -> Obj:
        """A registered node, Ready unless told otherwise, with GPUs in allocatable.

        ``kubelet`` (default ``run_kubelet``): the built-in kubelet runs it
        (Lease renewals, pods started and their deletions confirmed); else an
        external kubelet must, or the node turns Unknown after the grace period.
        """
        resources = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi"}
        if gpus:
            resources[GPU] = str(gpus)
        node_labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            ZONE_LABEL: zone,
            REGION_LABEL: region,
            **({"nvidia.com/gpu.present": "true"} if gpus else {}),
            **(labels or {}),
        }
        count = len(self.store.select(self.controllers.nodes)) + 1
        body: Obj = {
            "metadata": {"name": name, "labels": node_labels},
            "spec": {"taints": list(taints)} if taints else {},
            "status": {
                "capacity": dict(resources),
                "allocatable": dict(resources),
                "addresses": [
                    {
                        "type": "InternalIP",
                        "address": address or f"10.0.{count // 250}.{count % 250 + 1}",
                    },
                    {"type": "Hostname", "address": name},
                ],
                "nodeInfo": _node_info(self.store.new_uid),
                "conditions": [
                    {"type": t, "status": "False", "reason": f"KubeletHasNo{t}"}
                    for t in ("MemoryPressure", "DiskPressure", "PIDPressure")
                ],
            },
        }
        holder = {"status": body["status"]}
        if ready:
            set_condition(
                holder, "Ready", "True", "KubeletReady", "kubelet is posting ready status"
            )
        else:
            set_condition(holder, "Ready", "False", "KubeletNotReady", "container runtime is down")
        for cond in body["status"]["conditions"]:
            cond["lastHeartbeatTime"] = cond["lastTransitionTime"] = now_iso()
        node = self.create_object("v1/nodes", body)
        if self.run_kubelet if kubelet is None else kubelet:
            self.controllers.kubelets[name] = True
            self.controllers.renew_lease(node)
        return node

    def add_zones(
        self,
        zones: Iterable[str] = DEFAULT_ZONES,
        *,
        nodes_per_zone: int = 2,
        gpus: int = 4,
        **node_options: Any,
    ) -> list[str]:
        """Nodes ``<zone>-node-<i>`` in each zone; returns their names."""
        names = []
        for zone in zones:
            for i in range(1, nodes_per_zone + 1):
                name = f"{zone}-node-{i}"
                self.add_node(name, zone=zone, gpus=gpus, **node_options)
                names.append(name)
        return names

    def nodes_in_zone(self, zone: str) -> list[str]:
        return [
            n["metadata"]["name"] for n in self.list_objects("v1/nodes", labels={ZONE_LABEL: zone})
        ]

    def zone_down(self, zone: str) -> None:
        """A zone outage: its built-in kubelets stop heartbeating (Unknown after the grace)."""
        self.node_down(*self.nodes_in_zone(zone))

    def zone_up(self, zone: str) -> None:
        self.node_up(*self.nodes_in_zone(zone))

    def node_down(self, *names: str) -> None:
        self.controllers.run_kubelet(names, False)

    def node_up(self, *names: str) -> None:
        self.controllers.run_kubelet(names, True)

    def cordon(self, name: str, unschedulable: bool = True) -> None:
        self.patch_object("v1/nodes", name, {"spec": {"unschedulable": unschedulable or None}})

    def set_pod_ready(self, namespace: str, name: str, ready: bool) -> None:
        """Flip a started pod's readiness, as a failing or recovering probe would."""
        pod = self.store.get(self.controllers.pods, namespace, name)
        self.controllers.hold_unready(pod["metadata"]["uid"], not ready)

        def mutate(current: Obj) -> Obj:
            pod_condition(current, "Ready", "True" if ready else "False")
            pod_condition(current, "ContainersReady", "True" if ready else "False")
            return current

        self.store.update(self.controllers.pods, namespace, name, mutate, scope="status")

    def pod_ip(self, pod: Obj) -> str | None:
        return self.controllers.pod_ip(pod["metadata"]["uid"])

    # --- waiting and counting ---

    async def wait_for(
        self,
        predicate: Callable[[], T | Awaitable[T]],
        timeout: float = 5.0,  # noqa: ASYNC109 - a poll budget, like kopf's and pytest's
        *,
        interval: float = 0.05,
        message: str | None = None,
    ) -> T:
        """Poll ``predicate`` (sync or async) until truthy; re-check at once on any change.

        An AssertionError inside counts as "not yet"; the last one is reported
        on timeout, so predicates can be written as plain asserts. A predicate
        that is costly to run (listing hundreds of objects) is re-checked at
        most every 4x its own run time on changes, so it cannot take more than
        a fifth of the event loop from the emulator; cheap ones are unaffected.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: AssertionError | None = None
        while True:
            self._changed.clear()
            began = time.perf_counter()
            result: Any = None
            try:
                result = predicate()
            except AssertionError as e:
                last = e
            spent = time.perf_counter() - began  # the synchronous part blocks the loop
            try:
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return result  # type: ignore[no-any-return]
            except AssertionError as e:
                last = e
            remaining = deadline - loop.time()
            if remaining <= 0:
                what = message or getattr(predicate, "__name__", repr(predicate))
                detail = f"; last assertion: {last}" if last else ""
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}{detail}")
            pause = min(4 * spent, interval, remaining)
            if pause >= 0.001:
                await asyncio.sleep(pause)
            if not self._changed.is_set():
                with contextlib.suppress(TimeoutError):
                    wait = max(0.0, min(interval, remaining) - pause)
                    await asyncio.wait_for(self._changed.wait(), wait)

    def count(
        self,
        verb: str | None = None,
        resource: str | None = None,
        *,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
        code: int | None = None,
    ) -> int:
        """How many requests matched; ``resource`` in any spelling ``resource()`` accepts."""
        key = self.resource_type(resource).key if resource else None
        return sum(
            1
            for call in self.calls
            if (verb is None or call.verb == verb)
            and (key is None or (call.group, call.version, call.resource) == key)
            and (namespace is None or call.namespace == namespace)
            and (name is None or call.name == name)
            and (subresource is None or call.subresource == subresource)
            and (code is None or call.code == code)
        )

    def call_counts(self) -> Counter[tuple[str, str]]:
        """Counter of (verb, resource) like ("patch", "models.vigil.dev/status")."""
        counts: Counter[tuple[str, str]] = Counter()
        for call in self.calls:
            rid = call.resource_id or call.path
            counts[(call.verb, f"{rid}/{call.subresource}" if call.subresource else rid)] += 1
        return counts

    def reset_calls(self) -> None:
        self.calls.clear()


def _delete_options(query: Mapping[str, str], data: Any) -> DeleteOptions:
    body = data if isinstance(data, dict) else {}
    propagation = body.get("propagationPolicy") or query.get("propagationPolicy")
    orphan = body.get("orphanDependents", query.get("orphanDependents"))
    if propagation is None and orphan is not None:
        propagation = "Orphan" if orphan in (True, *_TRUE) else "Background"
    if propagation not in (None, "Background", "Foreground", "Orphan"):
        raise errors.bad_request(f"unsupported propagationPolicy {propagation!r}")
    grace = body.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
    preconditions = body.get("preconditions") or {}
    return DeleteOptions(
        propagation=propagation or "Background",
        grace_seconds=int(grace) if grace is not None else None,
        uid=preconditions.get("uid"),
        resource_version=preconditions.get("resourceVersion"),
        dry_run=bool(body.get("dryRun") or query.get("dryRun")),
    )


def _node_info(new_uid: Callable[[], str]) -> Obj:
    """What a kubelet reports of its machine (IDs unique per node)."""
    return {
        "architecture": "amd64",
        "bootID": new_uid(),
        "containerRuntimeVersion": "containerd://1.7.20",
        "kernelVersion": "6.1.0",
        "kubeProxyVersion": "v1.31.0",
        "kubeletVersion": "v1.31.0",
        "machineID": new_uid().replace("-", ""),
        "operatingSystem": "linux",
        "osImage": "Ubuntu 22.04.4 LTS",
        "systemUUID": new_uid(),
    }
