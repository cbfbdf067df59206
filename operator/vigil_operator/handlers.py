"""kopf handlers: read the world, call the pure core, apply its answer.

Nodes, unit Pods and unit Deployments are kept in kopf indexes fed by
watches, so a reconcile reads them from memory and the API server sees one
GET per Model per reconcile, not three LISTs. Create, spec update, resume and
a timer all run the same idempotent `reconcile_model`, serialised per Model
by a lock, since kopf runs timers beside the event handlers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, ParamSpec, cast

import aiohttp
import kopf
from kubernetes_asyncio.client.exceptions import ApiException

from vigil_operator.config import OperatorConfig
from vigil_operator.core.autoscaling import ScalingState, autoscale, policy_for
from vigil_operator.core.manifests import MODEL_LABEL as MODEL_POD_LABEL
from vigil_operator.core.reconcile import Observed, Outcome, reconcile
from vigil_operator.core.spec import SpecError, parse_spec
from vigil_operator.fence import Fence
from vigil_operator.kube import GROUP, PLURAL, VERSION, ConflictError, Kube
from vigil_operator.metrics import OperatorMetrics
from vigil_operator.scraper import UnitScraper, pod_ready

CONFIG = OperatorConfig.from_env()
Logger = logging.Logger | logging.LoggerAdapter[Any]  # what kopf passes
MODELS = (GROUP, VERSION, PLURAL)
MANAGED = {"app.kubernetes.io/managed-by": "vigil"}


@kopf.on.startup()
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
    memo.setdefault("metrics", OperatorMetrics())
    memo.setdefault("config", CONFIG)
    memo.setdefault("locks", {})  # (namespace, name) -> Lock, shared by every handler


@kopf.on.login()
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


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    """Close the API client only once no reconcile is using it: timers and
    daemons may still be mid-reconcile when kopf runs cleanup handlers."""
    memo.closing = True
    for lock in list(memo.locks.values()):
        async with lock:  # waits for an in-flight reconcile of that Model
            pass
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


@kopf.index("", "v1", "nodes")
def nodes(body: kopf.Body, **_: Any) -> dict[None, dict[str, Any]]:
    return {None: _slim(body, "metadata", "spec", "status")}


@kopf.index("", "v1", "pods", labels={MODEL_POD_LABEL: kopf.PRESENT})
def unit_pods(
    body: kopf.Body, namespace: str | None, labels: Mapping[str, str], **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "", labels[MODEL_POD_LABEL]): _slim(body, "metadata", "spec", "status")}


@kopf.index("apps", "v1", "deployments", labels={**MANAGED, MODEL_POD_LABEL: kopf.PRESENT})
def unit_deployments(
    body: kopf.Body, namespace: str | None, labels: Mapping[str, str], **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "", labels[MODEL_POD_LABEL]): _slim(body, "metadata", "spec", "status")}


@kopf.index("", "v1", "services", labels={**MANAGED, MODEL_POD_LABEL: kopf.PRESENT})
def unit_services(
    body: kopf.Body, namespace: str | None, labels: Mapping[str, str], **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "", labels[MODEL_POD_LABEL]): _slim(body, "metadata", "spec")}


@kopf.index(
    "policy", "v1", "poddisruptionbudgets", labels={**MANAGED, MODEL_POD_LABEL: kopf.PRESENT}
)
def unit_budgets(
    body: kopf.Body, namespace: str | None, labels: Mapping[str, str], **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "", labels[MODEL_POD_LABEL]): _slim(body, "metadata", "spec")}


CHILD_INDEXES = {
    "unit_deployments": "Deployment",
    "unit_services": "Service",
    "unit_budgets": "PodDisruptionBudget",
}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


RETRY_S = 2.0  # transient API trouble: try again soon, not after kopf's default minute
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
P = ParamSpec("P")


def _transient(exc: BaseException) -> bool:
    """API trouble that a retry fixes: timeouts, dropped connections, 429 and 5xx."""
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUS
    return isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError)


def _retry_transient(
    fn: Callable[P, Awaitable[Outcome | None]],
) -> Callable[P, Awaitable[Outcome | None]]:
    """Transient API trouble is retried soon by kopf (TemporaryError: one log
    line, no traceback); anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kw: P.kwargs) -> Outcome | None:
        try:
            return await fn(*args, **kw)
        except Exception as exc:
            if _transient(exc):
                raise kopf.TemporaryError(
                    f"Kubernetes API trouble: {exc!r}", delay=RETRY_S
                ) from exc
            raise

    return wrapper


@_retry_transient
async def reconcile_model(
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    logger: Logger,
    kwargs: Mapping[str, Any],
    desired_units: int | None = None,
    scaling_reason: str = "",
) -> Outcome | None:
    """One idempotent pass for one Model. `kwargs` are the handler's, holding the
    indexes `nodes`, `unit_pods` and `unit_deployments` (kopf passes them by name)."""
    nodes: kopf.Index[None, Any] = kwargs["nodes"]
    unit_pods: kopf.Index[tuple[str, str], Any] = kwargs["unit_pods"]
    unit_deployments: kopf.Index[tuple[str, str], Any] = kwargs["unit_deployments"]
    if namespace is None:  # Models are namespaced; kopf's types allow None
        return None
    lock: asyncio.Lock = memo.locks.setdefault((namespace, name), asyncio.Lock())
    kube: Kube = memo.kube
    metrics: OperatorMetrics = memo.metrics
    config: OperatorConfig = memo.config
    async with lock:
        if memo.get("closing"):  # the operator is stopping; the client is going away
            return None
        started = time.perf_counter()
        body = await kube.get_model(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        key = (namespace, name)
        observed = Observed(
            nodes=list(nodes.get(None, [])),
            pods=list(unit_pods.get(key, [])),
            deployments=list(unit_deployments.get(key, [])),
        )
        outcome = reconcile(
            body,
            observed,
            now=_now(),
            default_image=config.default_image,
            unschedulable_timeout_s=config.unschedulable_timeout_s,
            zone_recovery_s=config.zone_recovery_s,
            unit_ready_timeout_s=config.unit_ready_timeout_s,
            cluster_domain=config.cluster_domain,
            default_resources=config.default_resources,
            desired_units=desired_units,
            scaling_reason=scaling_reason,
        )
        cache = {  # the children as the watches last saw them
            (kind, o["metadata"]["name"]): o
            for index, kind in CHILD_INDEXES.items()
            for o in kwargs[index].get(key, [])
        }
        try:
            for obj in outcome.apply:
                kopf.adopt(obj, owner=body)  # type: ignore[arg-type]
                result = await kube.apply(obj, cache.get((obj["kind"], obj["metadata"]["name"])))
                if result != "unchanged":
                    logger.info("%s %s %s", result, obj["kind"], obj["metadata"]["name"])
            for dep in outcome.delete_deployments:
                await kube.delete_deployment(namespace, dep)
                logger.info("deleted Deployment %s", dep)
        except ConflictError as exc:
            raise kopf.TemporaryError(str(exc), delay=1) from exc
        previous = body.get("status") or {}
        if outcome.status != previous:  # a no-op write would wake every watcher
            await kube.patch_model_status(namespace, name, outcome.status)
        for event in outcome.events:
            kopf.event(
                kopf.Body(cast(kopf.RawBody, body)),
                type=event.type,
                reason=event.reason,
                message=event.message,
            )
        _record(metrics, key, previous, outcome)
        metrics.reconcile_duration.observe(time.perf_counter() - started)
        return outcome


def _record(
    metrics: OperatorMetrics, key: tuple[str, str], previous: Mapping[str, Any], outcome: Outcome
) -> None:
    spec = outcome.spec
    low = spec.min_units if spec else 0
    high = (spec.max_units or spec.min_units) if spec else 0
    metrics.models.update(key, outcome.status, low, high)
    before, after = previous.get("desiredUnits"), outcome.status.get("desiredUnits")
    if before is not None and after is not None and before != after:
        metrics.models.count_decision(key, "up" if after > before else "down")


@kopf.on.resume(*MODELS, backoff=RETRY_S)
@kopf.on.create(*MODELS, backoff=RETRY_S)
@kopf.on.update(*MODELS, field="spec", backoff=RETRY_S)
async def on_change(
    namespace: str | None, name: str, memo: kopf.Memo, logger: Logger, **kwargs: Any
) -> None:
    await reconcile_model(namespace, name, memo, logger, kwargs)


@kopf.timer(*MODELS, interval=CONFIG.reconcile_interval_s, initial_delay=1.0, backoff=RETRY_S)
async def on_timer(
    namespace: str | None, name: str, memo: kopf.Memo, logger: Logger, **kwargs: Any
) -> None:
    await reconcile_model(namespace, name, memo, logger, kwargs)


@kopf.on.event("apps", "v1", "deployments", labels={**MANAGED, MODEL_POD_LABEL: kopf.PRESENT})
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


@kopf.daemon(*MODELS, cancellation_timeout=5.0, backoff=RETRY_S)
async def autoscaler(
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    logger: Logger,
    stopped: kopf.DaemonStopped,
    spec: kopf.Spec,
    status: kopf.Status,
    **kwargs: Any,
) -> None:
    """Per Model: scrape its Ready units, run the policy, reconcile on a change.

    `spec` and `status` are kopf's live views, so spec edits reach the next tick.
    """
    if namespace is None:
        return
    key = (namespace, name)
    config: OperatorConfig = memo.config
    metrics: OperatorMetrics = memo.metrics
    state = ScalingState()
    async with aiohttp.ClientSession() as session:
        scraper = UnitScraper(session)
        while not stopped:
            try:
                model = parse_spec(dict(spec))
            except SpecError:
                model = None
            cfg = (
                None
                if model is None
                else policy_for(
                    model,
                    stable_window_s=config.stable_window_s,
                    panic_window_s=config.panic_window_s,
                )
            )
            if cfg is None:
                state = ScalingState()  # no autoscaling: minUnits (or 0) rules
            else:
                pods = list(kwargs["unit_pods"].get(key, []))
                ready = sum(pod_ready(p) for p in pods)
                if state.desired is None:
                    state = replace(state, desired=int(status.get("desiredUnits") or 0) or None)
                sample = await scraper.sample(pods, cfg.metric)
                decision, state = autoscale(cfg, state, sample, time.monotonic(), ready)
                if decision.load is not None:
                    metrics.models.observe_load(key, cfg.metric, decision.load)
                if decision.changed:
                    logger.info("scaling: %s", decision.reason)
                    await reconcile_model(
                        namespace, name, memo, logger, kwargs, decision.desired, decision.reason
                    )
            await stopped.wait(config.scrape_interval_s)


@kopf.on.delete(*MODELS, optional=True)
def on_delete(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Children go by garbage collection (owner references); series go here."""
    memo.metrics.models.forget((namespace or "", name))
    memo.locks.pop((namespace, name), None)
