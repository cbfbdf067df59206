"""The kopf shell: the per-Model `controller.Controller` against Kubernetes.

Nodes, unit Pods and unit Deployments are kept in kopf indexes fed by
watches, so a pass reads them from memory and the API server sees one GET
per Model per reconcile, not three LISTs (`ClusterWorld`). Create, spec
update, resume, a timer and unit Deployment events all run the same
idempotent pass; a daemon per Model runs the autoscaler. `registry` binds
the handlers to one `OperatorSettings`: nothing is configured at import.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

import aiohttp
import kopf
from kubernetes_asyncio.client.exceptions import ApiException

from vigil_operator.cluster.fence import Fence
from vigil_operator.cluster.kube import GROUP, PLURAL, VERSION, ConflictError, Kube
from vigil_operator.controller import Controller
from vigil_operator.core.autoscaling import ScalingState
from vigil_operator.core.manifests import MODEL_LABEL as MODEL_POD_LABEL
from vigil_operator.core.reconcile import Observed, Outcome
from vigil_operator.core.spec import ModelSpec
from vigil_operator.core.status import Event
from vigil_operator.metrics import OperatorMetrics
from vigil_operator.scraper import UnitScraper
from vigil_operator.settings import OperatorSettings

Logger = logging.Logger | logging.LoggerAdapter[Any]  # what kopf passes
MODELS = (GROUP, VERSION, PLURAL)
MANAGED = {"app.kubernetes.io/managed-by": "vigil"}


async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our own annotation prefix and finalizer name, not kopf's defaults.
    settings.persistence.finalizer = "vigil.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="vigil.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="vigil.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # Events are ours, written in words
    settings.watching.server_timeout = 300
    if "kube" not in memo:
        memo.kube = await Kube.connect(user_agent=memo.get("user_agent"), fence=memo.get("fence"))
    if "controller" not in memo:  # the command passes one; tests may not
        memo.controller = Controller(OperatorSettings(), memo.get("metrics") or OperatorMetrics())


async def login(
    memo: kopf.Memo, logger: Logger, settings: kopf.OperatorSettings, **_: Any
) -> kopf.AiohttpSession | None:
    """kopf's own login, in a session of ours: it carries the write fence (so
    finalizers, annotations and Events obey the Lease too) and our User-Agent."""
    info = await kopf.login_via_async_client(logger=logger, settings=settings)
    if info is None:
        return None
    headers = info.as_http_headers()
    if memo.get("user_agent"):
        headers["User-Agent"] = memo.user_agent
    fence: Fence | None = memo.get("fence")
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
        headers=headers,
        proxy=info.proxy_url,
        trust_env=info.trust_env,
        trace_configs=[fence.trace_config()] if fence is not None else None,
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
    )


async def close(memo: kopf.Memo, **_: Any) -> None:
    """Close the API client only once no reconcile is using it: timers and
    daemons may still be mid-reconcile when kopf runs cleanup handlers."""
    await memo.controller.close()
    await memo.kube.close()


def _slim(body: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """A plain-dict snapshot: the index must not hold kopf's live views."""
    out: dict[str, Any] = {}
    for key in keys:
        value = body.get(key)
        if value is not None:
            out[key] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def nodes(body: kopf.Body, **_: Any) -> dict[None, dict[str, Any]]:
    return {None: _slim(body, "metadata", "spec", "status")}


def unit_pods(
    body: kopf.Body, namespace: str | None, labels: Mapping[str, str], **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "", labels[MODEL_POD_LABEL]): _slim(body, "metadata", "spec", "status")}


def unit_deployments(
    body: kopf.Body, namespace: str | None, labels: Mapping[str, str], **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "", labels[MODEL_POD_LABEL]): _slim(body, "metadata", "spec", "status")}


def unit_services(
    body: kopf.Body, namespace: str | None, labels: Mapping[str, str], **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "", labels[MODEL_POD_LABEL]): _slim(body, "metadata", "spec")}


def unit_budgets(
    body: kopf.Body, namespace: str | None, labels: Mapping[str, str], **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "", labels[MODEL_POD_LABEL]): _slim(body, "metadata", "spec")}


CHILD_INDEXES = {
    "unit_deployments": "Deployment",
    "unit_services": "Service",
    "unit_budgets": "PodDisruptionBudget",
}


RETRY_S = 2.0  # transient API trouble: try again soon, not after kopf's default minute
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
P = ParamSpec("P")
R = TypeVar("R")


def _transient(exc: BaseException) -> bool:
    """API trouble that a retry fixes: timeouts, dropped connections, 429 and 5xx."""
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUS
    return isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError)


def _retry_transient(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Transient API trouble is retried soon by kopf (TemporaryError: one log
    line, no traceback); anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kw: P.kwargs) -> R:
        try:
            return await fn(*args, **kw)
        except Exception as exc:
            if _transient(exc):
                raise kopf.TemporaryError(
                    f"Kubernetes API trouble: {exc!r}", delay=RETRY_S
                ) from exc
            raise

    return wrapper


@dataclass
class ClusterWorld:
    """One Model as the controller sees it through kopf: the indexes (in
    `kwargs`, by name, as kopf passes them) for reads, the API for writes."""

    namespace: str
    name: str
    kube: Kube
    logger: Logger
    kwargs: Mapping[str, Any]
    live: Mapping[str, Any] | None = None  # kopf's live body (the autoscaler's)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def _indexed(self, index: str) -> list[Any]:
        return list(self.kwargs[index].get(self.key, []))

    def current(self) -> Mapping[str, Any] | None:
        if self.live is None:
            return None
        return {"spec": dict(self.live.get("spec") or {}), "status": self.live.get("status") or {}}

    async def read_model(self) -> Mapping[str, Any] | None:
        return await self.kube.get_model(self.namespace, self.name)

    def observe(self, spec: ModelSpec | None) -> Observed:
        return Observed(
            nodes=list(self.kwargs["nodes"].get(None, [])),
            pods=self._indexed("unit_pods"),
            deployments=self._indexed("unit_deployments"),
        )

    def unit_pods(self) -> Sequence[Mapping[str, Any]]:
        return self._indexed("unit_pods")

    def status_fields(self) -> Mapping[str, Any]:
        return {}

    async def apply(self, body: Mapping[str, Any], outcome: Outcome) -> None:
        cache = {  # the children as the watches last saw them
            (kind, o["metadata"]["name"]): o
            for index, kind in CHILD_INDEXES.items()
            for o in self._indexed(index)
        }
        try:
            for obj in outcome.apply:
                kopf.adopt(obj, owner=body)  # type: ignore[arg-type]
                cached = cache.get((obj["kind"], obj["metadata"]["name"]))
                result = await self.kube.apply(obj, cached)
                if result != "unchanged":
                    self.note(f"{result} {obj['kind']} {obj['metadata']['name']}")
            for dep in outcome.delete_deployments:
                await self.kube.delete_deployment(self.namespace, dep)
                self.note(f"deleted Deployment {dep}")
        except ConflictError as exc:
            raise kopf.TemporaryError(str(exc), delay=1) from exc

    async def write_status(self, status: Mapping[str, Any]) -> None:
        try:
            await self.kube.patch_model_status(self.namespace, self.name, dict(status))
        except ConflictError as exc:  # retried soon, one log line, no traceback
            raise kopf.TemporaryError(str(exc), delay=1) from exc

    def emit(self, body: Mapping[str, Any], event: Event) -> None:
        kopf.event(
            kopf.Body(cast(kopf.RawBody, body)),
            type=event.type,
            reason=event.reason,
            message=event.message,
        )

    def note(self, message: str) -> None:
        self.logger.info("%s", message)


@_retry_transient
async def reconcile_model(
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    logger: Logger,
    kwargs: Mapping[str, Any],
) -> Outcome | None:
    """One pass for one Model. `kwargs` are the handler's, holding the indexes."""
    if namespace is None:  # Models are namespaced; kopf's types allow None
        return None
    world = ClusterWorld(namespace, name, memo.kube, logger, kwargs)
    controller: Controller = memo.controller
    return await controller.reconcile(world.key, world)


async def on_change(
    namespace: str | None, name: str, memo: kopf.Memo, logger: Logger, **kwargs: Any
) -> None:
    await reconcile_model(namespace, name, memo, logger, kwargs)


async def on_unit_change(
    event: Mapping[str, Any],
    namespace: str | None,
    labels: Mapping[str, str],
    memo: kopf.Memo,
    logger: Logger,
    **kwargs: Any,
) -> None:
    """Units became Ready or went away: refresh the owner's status now, not at
    the next tick, so inServiceUnits follows the Pods within moments."""
    if event.get("type") not in ("MODIFIED", "DELETED") or "kube" not in memo:
        return
    await reconcile_model(namespace, labels[MODEL_POD_LABEL], memo, logger, kwargs)


async def autoscaler(
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    logger: Logger,
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    **kwargs: Any,
) -> None:
    """Per Model: scrape its Ready units, run the policy, reconcile on a change.
    `body` is kopf's live view, so spec edits reach the next tick."""
    if namespace is None:
        return
    controller: Controller = memo.controller
    world = ClusterWorld(namespace, name, memo.kube, logger, kwargs, live=body)
    state = ScalingState()
    async with aiohttp.ClientSession() as session:
        scraper = UnitScraper(session)
        while not stopped:
            state = await _retry_transient(controller.autoscale)(world.key, world, scraper, state)
            await stopped.wait(controller.settings.scrape_interval_s)


def on_delete(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Children go by garbage collection (owner references); series go here."""
    memo.controller.forget((namespace or "", name))


def registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """Every handler, bound to `settings` (the timer's interval)."""
    reg = kopf.OperatorRegistry()
    kopf.on.startup(registry=reg)(configure)
    kopf.on.login(registry=reg)(login)
    kopf.on.cleanup(registry=reg)(close)
    kopf.index("", "v1", "nodes", registry=reg)(nodes)
    units: dict[str, Any] = {MODEL_POD_LABEL: kopf.PRESENT}
    managed: dict[str, Any] = {**MANAGED, **units}
    kopf.index("", "v1", "pods", labels=units, registry=reg)(unit_pods)
    kopf.index("apps", "v1", "deployments", labels=managed, registry=reg)(unit_deployments)
    kopf.index("", "v1", "services", labels=managed, registry=reg)(unit_services)
    kopf.index("policy", "v1", "poddisruptionbudgets", labels=managed, registry=reg)(unit_budgets)
    for on in (kopf.on.resume, kopf.on.create):
        on(*MODELS, backoff=RETRY_S, registry=reg)(on_change)
    kopf.on.update(*MODELS, field="spec", backoff=RETRY_S, registry=reg)(on_change)
    kopf.timer(
        *MODELS,
        interval=settings.reconcile_interval_s,
        initial_delay=1.0,
        backoff=RETRY_S,
        registry=reg,
        id="on_timer",
    )(on_change)
    kopf.on.event("apps", "v1", "deployments", labels=managed, registry=reg)(on_unit_change)
    kopf.daemon(*MODELS, cancellation_timeout=5.0, backoff=RETRY_S, registry=reg)(autoscaler)
    kopf.on.delete(*MODELS, optional=True, registry=reg)(on_delete)
    return reg
