"""The local shell: the per-Model `controller.Controller` against local processes.

Per Model (`LocalModel`, the controller's `World` here), a timer loop
reconciles every `reconcile_interval_s` (and at once when a unit becomes
Ready, stops being Ready or exits, as the operator's Deployment-event handler
does), and an autoscaler loop runs the controller's autoscaler tick every
`scrape_interval_s`. The world describes its zones and units to the core as
Nodes and Pods (see `world`), takes the plan (replicas per zone), and plays
the Deployment controller to start and stop unit processes (see
`deployments`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from wsgiref.simple_server import WSGIServer

import aiohttp
import grpc
from prometheus_client import start_http_server

from vigil_operator.controller import Controller
from vigil_operator.core.autoscaling import ScalingState
from vigil_operator.core.manifests import deployment_name
from vigil_operator.core.reconcile import Observed, Outcome
from vigil_operator.core.spec import ModelSpec
from vigil_operator.core.status import Event, format_time
from vigil_operator.local import world
from vigil_operator.local.deployments import plan_zone
from vigil_operator.local.documents import artifact_file
from vigil_operator.local.proxy import Backend, ClientEndpoint, RouteError
from vigil_operator.local.settings import LOCAL_IMAGE, LocalConfig
from vigil_operator.local.store import Invalid, Key, ModelStore, key_of
from vigil_operator.local.units import Launch, Unit, Zones
from vigil_operator.metrics import OperatorMetrics
from vigil_operator.scraper import UnitScraper

log = logging.getLogger("vigil.local")

_NAME_CHARS: Final = "bcdfghjklmnpqrstvwxz2456789"  # as Kubernetes' generated names


def unit_status(unit: Unit) -> str:
    """A word for `get units`, as kubectl's STATUS column."""
    if unit.deleting:
        return "Terminating"
    if unit.waiting_reason:
        return unit.waiting_reason
    if unit.phase == "Running":
        return "Running" if unit.ready else "Starting"
    return unit.phase


class LocalModel:
    """One Model's world: its zone Deployments (replicas per zone) and unit
    processes, and its loops, which drive the shared `controller.Controller`."""

    def __init__(self, runtime: LocalRuntime, key: Key) -> None:
        self.runtime, self.key = runtime, key
        self.replicas: dict[str, int] = {}  # zone -> replicas, as the core last set them
        self.template = ""  # the artifact path units run
        self.units: dict[str, Unit] = {}
        self.events: deque[dict[str, str]] = deque(maxlen=100)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping: set[asyncio.Task[None]] = set()
        self._addresses: dict[str, str] = {}  # unit -> the address the endpoint knows

    @property
    def body(self) -> dict[str, Any]:
        return self.runtime.store.get(self.key) or {}

    def start(self) -> None:
        name = f"{self.key[0]}/{self.key[1]}"
        self._tasks = [
            asyncio.create_task(self._timer(), name=f"reconcile {name}"),
            asyncio.create_task(self._autoscaler(), name=f"autoscale {name}"),
        ]
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def views(self) -> list[world.UnitView]:
        return [u.view() for u in self.units.values()]

    # -- the loops -----------------------------------------------------------

    async def _timer(self) -> None:
        interval = self.runtime.config.operator.reconcile_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                await self.reconcile()
            except Exception:  # a bug must not stop the Model's loop
                log.exception("reconcile of %s/%s failed", *self.key)

    async def _autoscaler(self) -> None:
        controller = self.runtime.controller
        scraper = UnitScraper(self.runtime.session)
        state = ScalingState()
        while True:
            try:
                state = await controller.autoscale(self.key, self, scraper, state)
            except Exception:
                log.exception("autoscaling of %s/%s failed", *self.key)
            await asyncio.sleep(controller.settings.scrape_interval_s)

    async def reconcile(self) -> Outcome | None:
        return await self.runtime.controller.reconcile(self.key, self)

    # -- the World the controller reads and writes -----------------------------

    def current(self) -> Mapping[str, Any] | None:
        return self.runtime.store.get(self.key)

    async def read_model(self) -> Mapping[str, Any] | None:
        return self.runtime.store.get(self.key)

    def observe(self, spec: ModelSpec | None) -> Observed:
        zones = self.runtime.zones.health()
        return world.observe(self.key[1], self.key[0], zones, self.replicas, self.views(), spec)

    def unit_pods(self) -> Sequence[Mapping[str, Any]]:
        return [world.pod(v, self.key[1], self.key[0]) for v in self.views()]

    def status_fields(self) -> Mapping[str, Any]:
        return {"endpoint": self.runtime.client_address}

    async def write_status(self, status: Mapping[str, Any]) -> None:
        self.runtime.store.set_status(self.key, dict(status))

    def emit(self, body: Mapping[str, Any], event: Event) -> None:
        self.events.append(
            {
                "time": format_time(datetime.now(UTC)),
                "type": event.type,
                "reason": event.reason,
                "message": event.message,
            }
        )
        level = logging.WARNING if event.type == "Warning" else logging.INFO
        log.log(level, "%s/%s %s: %s", *self.key, event.reason, event.message)

    def note(self, message: str) -> None:
        log.debug("%s/%s %s", *self.key, message)

    async def apply(self, body: Mapping[str, Any], outcome: Outcome) -> None:
        """Set the zones' replicas to the core's plan, then start and stop units.
        The Service and PodDisruptionBudget have local stand-ins: the client
        endpoint, and the surge-first replicas the core already plans."""
        if outcome.spec is None:
            return  # an invalid spec: units already serving keep serving
        self.template = artifact_file(outcome.spec.artifact.uri)
        for zone, replicas in outcome.replicas.items():
            if zone in outcome.target or replicas > 0:
                self.replicas[zone] = replicas  # the zone's Deployment, applied
            else:
                self.replicas.pop(zone, None)  # its Deployment, deleted
        self._sync()

    def _sync(self) -> None:
        """The Deployment controller's part: each zone towards its replicas."""
        live = [v for v in self.views() if not v.terminating]
        for zone in sorted(set(self.replicas) | {v.zone for v in live}):
            here = [v for v in live if v.zone == zone]
            start, stop = plan_zone(here, self.replicas.get(zone, 0), self.template)
            for name in stop:
                self._delete_unit(self.units[name])
            for _ in range(start):
                self._start_unit(zone)

    def _start_unit(self, zone: str) -> None:
        suffix = "".join(random.choice(_NAME_CHARS) for _ in range(5))
        name = f"{deployment_name(self.key[1], zone)}-{suffix}"
        unit = Unit(
            name, zone, self.template, self.runtime.launch, self.runtime.zones, self._unit_changed
        )
        self.units[name] = unit
        unit.start()

    def _delete_unit(self, unit: Unit, grace_s: float | None = None) -> asyncio.Task[None]:
        async def go() -> None:
            try:
                await unit.delete(grace_s)
            finally:
                self.units.pop(unit.name, None)
                self._unit_changed(unit)

        task = asyncio.create_task(go(), name=f"stop {unit.name}")
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        return task

    def _unit_changed(self, unit: Unit) -> None:
        old, new = self._addresses.get(unit.name), unit.address
        if old is not None and old != new:
            del self._addresses[unit.name]
            task = asyncio.create_task(self.runtime.endpoint.release(old))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        if new is not None and unit.name in self.units:
            self._addresses[unit.name] = new
        self.wake()

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Stop the loops, then every unit (SIGTERM, SIGKILL after the grace period)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self.runtime.controller.locks.setdefault(self.key, asyncio.Lock()):
            for unit in list(self.units.values()):
                self._delete_unit(unit, grace_s)
        while self._stopping:
            await asyncio.gather(*list(self._stopping), return_exceptions=True)


class LocalRuntime:
    """Models, zones, units, the client endpoint and the operator's metrics."""

    def __init__(self, config: LocalConfig, store: ModelStore) -> None:
        self.config = config
        self.store = store
        self.zones = Zones(config.zones)
        self.metrics = OperatorMetrics()
        self.controller = Controller(config.operator, self.metrics, default_image=LOCAL_IMAGE)
        self.endpoint = ClientEndpoint(self.route, self.metrics.registry)
        self.launch = Launch(
            log_dir=config.state_dir / "logs",
            grace_s=config.grace_s,
            extra_args=config.serve_args,
            serving_nice=config.serving_nice,
        )
        self.controllers: dict[Key, LocalModel] = {}
        self.client_address = f"{config.host}:{config.port}"
        self._session: aiohttp.ClientSession | None = None
        self._metrics_server: WSGIServer | None = None
        self.metrics_port = config.metrics_port

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "start() first"
        return self._session

    async def start(self) -> list[str]:
        """Bind the client endpoint and metrics, restore saved Models; returns warnings."""
        try:
            port = self.endpoint.bind(self.client_address)
        except RuntimeError:  # gRPC's words add nothing here
            raise RuntimeError(
                f"cannot serve the client endpoint on {self.client_address}: is the port "
                "taken? pass --port"
            ) from None
        self.client_address = f"{self.config.host}:{port}"
        try:
            server, _ = start_http_server(
                self.config.metrics_port, addr=self.config.host, registry=self.metrics.registry
            )
        except OSError as exc:
            raise RuntimeError(
                f"cannot serve metrics on {self.config.host}:{self.config.metrics_port} "
                f"({exc.strerror}); pass --metrics-port"
            ) from None
        self._metrics_server = server
        self.metrics_port = server.server_port
        await self.endpoint.start()
        self._session = aiohttp.ClientSession()
        warnings = self.store.load()
        for obj in self.store:
            self._controller(key_of(obj))
        return warnings

    async def stop(self) -> None:
        """Stop reconciling, let calls in flight finish, drain every unit."""
        await self.endpoint.stop(grace=min(5.0, self.config.grace_s))
        await asyncio.gather(*(c.shutdown() for c in self.controllers.values()))
        self.store.save()
        if self._session is not None:
            await self._session.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()

    def _controller(self, key: Key) -> LocalModel:
        ctrl = self.controllers.get(key)
        if ctrl is None:
            ctrl = self.controllers[key] = LocalModel(self, key)
            ctrl.start()
        return ctrl

    # -- what the control API offers -----------------------------------------

    async def apply(self, obj: Mapping[str, Any], namespace: str) -> tuple[str, dict[str, Any]]:
        result, stored = self.store.apply(obj, now=datetime.now(UTC), namespace=namespace)
        key = key_of(stored)
        if result != "unchanged":
            log.info("model %s/%s %s", *key, result)
        ctrl = self._controller(key)
        if result != "unchanged":
            await ctrl.reconcile()
        return result, stored

    async def delete(self, key: Key) -> bool:
        """Delete a Model: its units drain and stop (the call returns when they have)."""
        if self.store.delete(key) is None:
            return False
        ctrl = self.controllers.pop(key, None)
        if ctrl is not None:
            await ctrl.shutdown()
        self.controller.forget(key)
        self.endpoint.forget(key)
        log.info("model %s/%s deleted", *key)
        return True

    async def set_zone(self, zone: str, up: bool) -> dict[str, Any]:
        """Zone down: its units are SIGKILLed, as in an outage, and its Node turns
        NotReady, so the core moves its share away. Zone up: back, surge first."""
        if zone not in self.zones.names:
            raise Invalid(f"no zone {zone!r}; the zones are {', '.join(self.zones.names)}")
        changed = self.zones.up(zone) != up
        self.zones.set(zone, up)
        killed: list[dict[str, Any]] = []
        inflight = 0
        if not up:
            for ctrl in self.controllers.values():
                for unit in ctrl.units.values():
                    if unit.zone != zone:
                        continue
                    inflight += self.endpoint.inflight.get(unit.name, 0)
                    if unit.pid is not None:
                        killed.append({"unit": unit.name, "pid": unit.pid})
                    unit.kill()
        if changed:
            log.warning(
                "zone %s %s%s",
                zone,
                "up" if up else "down",
                f": killed {len(killed)} unit(s) ({inflight} calls in flight)" if not up else "",
            )
        for ctrl in self.controllers.values():
            ctrl.wake()
        return {
            "zone": zone,
            "healthy": up,
            "changed": changed,
            "killed": killed,
            "inflight": inflight,
        }

    def route(self, wanted: str | None) -> tuple[Key, Sequence[Backend]]:
        """The client endpoint's routing: the Model asked for, its routable units."""
        keys = sorted(self.controllers)
        if wanted:
            if "/" in wanted:
                ns, _, name = wanted.partition("/")
                matches = [k for k in keys if k == (ns, name)]
            else:
                matches = [k for k in keys if k[1] == wanted]
            if not matches:
                raise RouteError(grpc.StatusCode.NOT_FOUND, f"no model {wanted!r} is applied")
            if len(matches) > 1:
                names = ", ".join("/".join(k) for k in matches)
                raise RouteError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{wanted!r} names several models ({names}): use NAMESPACE/NAME",
                )
            key = matches[0]
        elif len(keys) == 1:
            key = keys[0]
        elif not keys:
            raise RouteError(
                grpc.StatusCode.UNAVAILABLE,
                "no model is applied (vigil local apply -f model.yaml)",
            )
        else:
            raise RouteError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{len(keys)} models are applied ({', '.join('/'.join(k) for k in keys)}): "
                "name one in the vigil-model request metadata",
            )
        units = sorted(self.controllers[key].units.values(), key=lambda u: u.name)
        backends = [Backend(u.name, u.address) for u in units if u.routable and u.address]
        if not backends:
            status = (self.store.get(key) or {}).get("status") or {}
            why = status.get("message") or "no unit in service"
            raise RouteError(
                grpc.StatusCode.UNAVAILABLE,
                f"model {key[0]}/{key[1]} has no unit in service: {why}",
            )
        return key, backends

    def units(self) -> list[dict[str, Any]]:
        out = []
        for key in sorted(self.controllers):
            for unit in sorted(self.controllers[key].units.values(), key=lambda u: u.name):
                out.append(
                    {
                        "name": unit.name,
                        "namespace": key[0],
                        "model": key[1],
                        "zone": unit.zone,
                        "status": unit_status(unit),
                        "ready": unit.ready,
                        "restarts": unit.restarts,
                        "pid": unit.pid,
                        "endpoint": unit.address,
                        "metrics_port": unit.metrics_port,
                        "artifact": unit.template,
                        "created": format_time(unit.created),
                        "log": str(unit.log_path),
                    }
                )
        return out

    def zone_list(self) -> list[dict[str, Any]]:
        counts: dict[str, int] = {}
        for ctrl in self.controllers.values():
            for unit in ctrl.units.values():
                counts[unit.zone] = counts.get(unit.zone, 0) + 1
        return [
            {"name": z, "healthy": up, "units": counts.get(z, 0)}
            for z, up in self.zones.health().items()
        ]
