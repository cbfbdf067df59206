"""A small control plane: the controllers an operator of Deployments relies on.

One background loop re-runs every controller whenever the store changes (or a
timer is due). Each controller is a synchronous pass over the store, so a pass
sees one consistent state, and writes only what differs (no-op writes would
bump resourceVersions and wake every watcher for nothing).

- garbage collector: owner references, Background / Foreground / Orphan;
- namespace controller: empties a terminating namespace, then removes it;
- deployment controller: pods straight from the Deployment (no ReplicaSets),
  rolling updates by ``pod-template-hash``, status like apps/v1's;
- scheduler: taints, nodeSelector, required node affinity, resource fit;
- kubelet: starts bound pods after ``pod_start_delay`` (Running and Ready),
  finishes graceful deletions on Ready nodes;
- node lifecycle: NotReady taints, pods marked not Ready, evicted after
  ``eviction_delay`` (they stay Terminating until the node is back);
- disruption controller: PodDisruptionBudget status, and the eviction API.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import hashlib
import heapq
import inspect
import json
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from . import errors, scheduling, selectors
from .store import NAME_CHARS, DeleteOptions, ObjectStore, now_iso, terminating

Obj = dict[str, Any]
PodStartHook = Callable[[Obj], Awaitable[str | None] | str | None]
PodStopHook = Callable[[Obj], Awaitable[None] | None]
ErrorSink = Callable[[BaseException], None]


def set_condition(
    obj: Obj,
    kind: str,
    status: str,
    reason: str | None = None,
    message: str | None = None,
    **extra: Any,
) -> None:
    """Set a status condition, keeping lastTransitionTime unless the status flips.

    ``extra`` carries the kind-specific fields: deployments ``lastUpdateTime``,
    nodes ``lastHeartbeatTime``; see :func:`pod_condition` for pods.
    """
    conditions = obj.setdefault("status", {}).setdefault("conditions", [])
    for cond in conditions:
        if cond.get("type") == kind:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = now_iso()
            cond["status"] = status
            break
    else:
        cond = {"type": kind, "status": status, "lastTransitionTime": now_iso()}
        conditions.append(cond)
    cond.update(extra)
    for key, value in (("reason", reason), ("message", message)):
        if value is not None:
            cond[key] = value
        else:
            cond.pop(key, None)


def pod_condition(
    obj: Obj, kind: str, status: str, reason: str | None = None, message: str | None = None
) -> None:
    set_condition(obj, kind, status, reason, message, lastProbeTime=None)


def _without_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_times(v)
            for k, v in value.items()
            if k
            not in ("lastTransitionTime", "lastUpdateTime", "lastProbeTime", "lastHeartbeatTime")
        }
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def resolve_int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        exact = Fraction(int(value[:-1]) * total, 100)
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(NAME_CHARS[b % len(NAME_CHARS)] for b in digest[:10])


def pod_ready(pod: Obj) -> bool:
    return scheduling.condition_status(pod, "Ready") == "True"


def owned_by(obj: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def _creation_key(obj: Obj) -> tuple[str, str]:
    return (obj["metadata"].get("creationTimestamp", ""), obj["metadata"]["name"])


@dataclass
class PodRuntime:
    """A pod the kubelet started: what the stop hook needs."""

    ip: str
    pod: Obj


class Controllers:
    """Runs the simulated controllers against an :class:`ObjectStore`."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        on_error: ErrorSink,
        pod_start_delay: float = 0.5,
        eviction_delay: float = 0.0,
        pod_termination_delay: float = 0.0,
    ) -> None:
        self.store = store
        self.on_error = on_error
        self.pod_start_delay = pod_start_delay
        self.eviction_delay = eviction_delay
        self.pod_termination_delay = pod_termination_delay
        self.pod_started: PodStartHook | None = None
        self.pod_stopped: PodStopHook | None = None
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timers: list[float] = []
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._running: dict[str, PodRuntime] = {}
        self._failed: set[str] = set()
        self._held_unready: set[str] = set()  # pods a test marked not Ready
        self._terminating_since: dict[str, float] = {}
        self._node_down_since: dict[str, float] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._ip_counter = 1
        types = store.catalog.types
        self.pods = types[("", "v1", "pods")]
        self.nodes = types[("", "v1", "nodes")]
        self.namespaces = types[("", "v1", "namespaces")]
        self.events = types[("", "v1", "events")]
        self.deployments = types[("apps", "v1", "deployments")]
        self.pdbs = types[("policy", "v1", "poddisruptionbudgets")]
        store.listeners.append(self._on_change)
        store.graceful = self._graceful

    # --- lifecycle ---

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kube-emulator-controllers")

    async def stop(self) -> None:
        tasks = [t for t in [self._task, *self._starting.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        for uid in list(self._running):
            self._stop_pod(uid)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def poke(self) -> None:
        self._dirty.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._dirty.clear()
            try:
                self.reconcile()
            except Exception as e:
                self.on_error(e)
            now = loop.time()
            while self._timers and self._timers[0] <= now:
                heapq.heappop(self._timers)
            timeout = self._timers[0] - now if self._timers else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout)

    def _wake_at(self, when: float) -> None:
        heapq.heappush(self._timers, when)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _on_change(self, change: Any) -> None:
        self._dirty.set()
        if change.type == "DELETED" and change.rt.key == self.pods.key:
            uid = change.obj["metadata"]["uid"]
            self._stop_pod(uid)  # a start in progress re-checks the pod when its hook returns
            self._failed.discard(uid)
            self._held_unready.discard(uid)
            self._terminating_since.pop(uid, None)

    def _graceful(self, rt: Any, obj: Obj) -> bool:
        """Bound pods terminate through the kubelet; namespaces through their controller."""
        if rt.key == self.namespaces.key:
            return True
        if rt.key != self.pods.key or not obj.get("spec", {}).get("nodeName"):
            return False
        node = self.store.peek(self.nodes, None, obj["spec"]["nodeName"])
        if node is None:
            return False
        return self.pod_termination_delay > 0 or not scheduling.node_ready(node)

    def reconcile(self) -> None:
        """One pass of every controller, in dependency order."""
        self._node_lifecycle()
        self._garbage_collector()
        self._namespace_controller()
        self._deployment_controller()
        self._scheduler()
        self._kubelet()
        self._disruption_controller()

    # --- helpers ---

    def _delete(self, rt: Any, obj: Obj, propagation: str = "Background") -> None:
        md = obj["metadata"]
        try:
            self.store.delete(rt, md.get("namespace"), md["name"], DeleteOptions(propagation))
        except errors.ApiError as e:
            if e.code != 404:
                raise

    def _update(self, rt: Any, obj: Obj, mutate: Callable[[Obj], None], scope: str) -> None:
        def apply(current: Obj) -> Obj:
            mutate(current)
            return current

        md = obj["metadata"]
        try:
            self.store.update(rt, md.get("namespace"), md["name"], apply, scope=scope)
        except errors.ApiError as e:
            if e.code != 404:
                raise

    def event(self, rt: Any, obj: Obj, kind: str, reason: str, message: str, source: str) -> None:
        """Record a core/v1 Event about an object, as a controller would."""
        md = obj["metadata"]
        now = now_iso()
        namespace = md.get("namespace") or "default"
        body: Obj = {
            "metadata": {"generateName": f"{md['name']}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": rt.api_version,
                "kind": rt.kind,
                "name": md["name"],
                "namespace": md.get("namespace"),
                "uid": md.get("uid"),
                "resourceVersion": md.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": source},
            "reportingComponent": source,
            "reportingInstance": source,
        }
        with contextlib.suppress(errors.ApiError):  # best-effort, like the real recorders
            self.store.create(self.events, namespace, body)

    # --- garbage collector ---

    def _garbage_collector(self) -> None:
        live = {obj["metadata"]["uid"]: (rt, obj) for rt, obj in self.store.iter_all()}
        dependents: dict[str, list[tuple[Any, Obj]]] = {}
        for rt, obj in live.values():
            for ref in obj["metadata"].get("ownerReferences") or []:
                dependents.setdefault(ref.get("uid", ""), []).append((rt, obj))
        for rt, obj in live.values():
            refs = obj["metadata"].get("ownerReferences") or []
            if not refs or terminating(obj):
                continue
            owners = [live.get(ref.get("uid", "")) for ref in refs]
            if all(owner is None for owner in owners) or any(
                owner is not None
                and terminating(owner[1])
                and "foregroundDeletion" in (owner[1]["metadata"].get("finalizers") or [])
                for owner in owners
            ):
                self._delete(rt, obj)
        for uid, (rt, obj) in live.items():
            finalizers = obj["metadata"].get("finalizers") or []
            if not terminating(obj):
                continue
            if "orphan" in finalizers:
                for drt, dep in dependents.get(uid, []):
                    self._update(drt, dep, functools.partial(_drop_owner, uid=uid), "main")
                self._update(rt, obj, lambda o: _drop_finalizer(o, "orphan"), "main")
            elif "foregroundDeletion" in finalizers and not any(
                self._exists(drt, dep) for drt, dep in dependents.get(uid, [])
            ):
                self._update(rt, obj, lambda o: _drop_finalizer(o, "foregroundDeletion"), "main")

    def _exists(self, rt: Any, obj: Obj) -> bool:
        md = obj["metadata"]
        current = self.store.peek(rt, md.get("namespace"), md["name"])
        return current is not None and current["metadata"]["uid"] == md["uid"]

    # --- namespace controller ---

    def _namespace_controller(self) -> None:
        for ns in list(self.store.iter(self.namespaces)):
            if not terminating(ns):
                continue
            name = ns["metadata"]["name"]
            content = [
                (rt, obj)
                for rt, obj in self.store.iter_all()
                if rt.namespaced and obj["metadata"].get("namespace") == name
            ]
            for rt, obj in content:
                if not terminating(obj):
                    self._delete(rt, obj)
            if not content:
                self.store.finish_deletion(self.namespaces, None, name)

    # --- deployment controller ---

    def _deployment_controller(self) -> None:
        for deploy in list(self.store.iter(self.deployments)):
            if terminating(deploy):
                continue
            self._reconcile_deployment(deploy)

    def _owned_pods(self, deploy: Obj) -> list[Obj]:
        md = deploy["metadata"]
        return [
            pod for pod in self.store.iter(self.pods, md["namespace"]) if owned_by(pod, md["uid"])
        ]

    def _reconcile_deployment(self, deploy: Obj) -> None:
        spec = deploy["spec"]
        replicas = int(spec.get("replicas", 1))
        thash = template_hash(spec.get("template") or {})

        def split() -> tuple[list[Obj], list[Obj]]:
            active = [
                p
                for p in self._owned_pods(deploy)
                if not terminating(p)
                and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            ]
            new = [p for p in active if selectors.labels_of(p).get("pod-template-hash") == thash]
            return new, [p for p in active if p not in new]

        new, old = split()
        strategy = spec.get("strategy") or {}
        if strategy.get("type") == "Recreate":
            if old:
                for pod in old:
                    self._delete(self.pods, pod)
            elif not any(terminating(p) for p in self._owned_pods(deploy)):
                self._scale(deploy, new, replicas, thash)
        elif not old:
            self._scale(deploy, new, replicas, thash)
        else:
            rolling = strategy.get("rollingUpdate") or {}
            surge = resolve_int_or_percent(rolling.get("maxSurge", "25%"), replicas, round_up=True)
            unavailable = resolve_int_or_percent(
                rolling.get("maxUnavailable", "25%"), replicas, round_up=False
            )
            if surge == 0 and unavailable == 0:
                unavailable = 1
            wanted_new = max(len(new), min(replicas, replicas + surge - len(old)))
            self._scale(deploy, new, wanted_new, thash)
            new, old = split()
            spare = sum(map(pod_ready, new + old)) - (replicas - unavailable)
            for pod in _deletion_order(old):
                if not pod_ready(pod):
                    self._delete(self.pods, pod)
                elif spare > 0:
                    self._delete(self.pods, pod)
                    spare -= 1
        self._deployment_status(deploy, thash, replicas, strategy)

    def _scale(self, deploy: Obj, pods: list[Obj], replicas: int, thash: str) -> None:
        md = deploy["metadata"]
        if len(pods) > replicas:
            for pod in _deletion_order(pods)[: len(pods) - replicas]:
                self._delete(self.pods, pod)
        for _ in range(replicas - len(pods)):
            template = copy.deepcopy(deploy["spec"].get("template") or {})
            tmeta = template.get("metadata") or {}
            labels = dict(tmeta.get("labels") or {}, **{"pod-template-hash": thash})
            pod_meta: Obj = {
                "generateName": f"{md['name']}-{thash}-",
                "namespace": md["namespace"],
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": md["name"],
                        "uid": md["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            }
            if tmeta.get("annotations"):
                pod_meta["annotations"] = dict(tmeta["annotations"])
            body = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta}
            body["spec"] = template.get("spec") or {}
            try:
                self.store.create(self.pods, md["namespace"], body)
            except errors.ApiError as e:  # e.g. a terminating namespace, an invalid template
                self.event(
                    self.deployments,
                    deploy,
                    "Warning",
                    "FailedCreate",
                    e.message,
                    "deployment-controller",
                )
                return

    def _deployment_status(self, deploy: Obj, thash: str, replicas: int, strategy: Obj) -> None:
        active = [p for p in self._owned_pods(deploy) if not terminating(p)]
        updated = [p for p in active if selectors.labels_of(p).get("pod-template-hash") == thash]
        ready = sum(map(pod_ready, active))
        rolling = strategy.get("rollingUpdate") or {}
        max_unavailable = (
            resolve_int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
            if strategy.get("type", "RollingUpdate") == "RollingUpdate"
            else 0
        )
        complete = len(updated) == replicas == len(active) and ready >= replicas
        counts = {
            "replicas": len(active),
            "updatedReplicas": len(updated),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, replicas - ready),
        }
        generation = deploy["metadata"].get("generation", 1)

        def mutate(obj: Obj) -> None:
            status = obj.setdefault("status", {})
            status["observedGeneration"] = generation
            for key, value in counts.items():  # apps/v1 omits zero counts (omitempty)
                if value:
                    status[key] = value
                else:
                    status.pop(key, None)
            available = ready >= replicas - max_unavailable
            set_condition(
                obj,
                "Available",
                "True" if available else "False",
                "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
                lastUpdateTime=now_iso(),
            )
            set_condition(
                obj,
                "Progressing",
                "True",
                "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                f'ReplicaSet "{deploy["metadata"]["name"]}-{thash}" '
                + ("has successfully progressed." if complete else "is progressing."),
                lastUpdateTime=now_iso(),
            )

        probe = copy.deepcopy(deploy)
        mutate(probe)
        if _without_times(probe.get("status")) != _without_times(deploy.get("status")):
            self._update(self.deployments, deploy, mutate, "status")

    # --- scheduler ---

    def _scheduler(self) -> None:
        nodes = sorted(self.store.iter(self.nodes), key=lambda n: n["metadata"]["name"])
        used: dict[str, dict[str, Fraction]] = {n["metadata"]["name"]: {} for n in nodes}
        pending = []
        for pod in self.store.iter(self.pods):
            node_name = pod["spec"].get("nodeName")
            if not node_name:
                if not terminating(pod) and pod["spec"].get("schedulerName") in (
                    None,
                    "default-scheduler",
                ):
                    pending.append(pod)
            elif node_name in used and pod["status"].get("phase") not in ("Succeeded", "Failed"):
                totals = used[node_name]
                for name, quantity in scheduling.pod_requests(pod).items():
                    totals[name] = totals.get(name, Fraction(0)) + quantity
                totals["pods"] = totals.get("pods", Fraction(0)) + 1
        for pod in sorted(pending, key=_creation_key):
            reasons, fits = [], []
            for node in nodes:
                why = scheduling.misfit(pod, node, used[node["metadata"]["name"]])
                if why:
                    reasons.append(why)
                else:
                    fits.append(node)
            if fits:
                # The least loaded node, which spreads a Deployment's pods like the real scoring.
                node = min(
                    fits,
                    key=lambda n: (
                        used[n["metadata"]["name"]].get("pods", 0),
                        n["metadata"]["name"],
                    ),
                )
                self._bind(pod, node)
                totals = used[node["metadata"]["name"]]
                for name, quantity in scheduling.pod_requests(pod).items():
                    totals[name] = totals.get(name, Fraction(0)) + quantity
                totals["pods"] = totals.get("pods", Fraction(0)) + 1
            else:
                self._unschedulable(pod, scheduling.unschedulable_message(reasons, len(nodes)))

    def _bind(self, pod: Obj, node: Obj) -> None:
        node_name = node["metadata"]["name"]

        def mutate(obj: Obj) -> None:
            obj["spec"]["nodeName"] = node_name
            pod_condition(obj, "PodScheduled", "True")

        self._update(self.pods, pod, mutate, "all")
        md = pod["metadata"]
        self.event(
            self.pods,
            pod,
            "Normal",
            "Scheduled",
            f"Successfully assigned {md['namespace']}/{md['name']} to {node_name}",
            "default-scheduler",
        )

    def _unschedulable(self, pod: Obj, message: str) -> None:
        for cond in pod["status"].get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("message") == message:
                return

        self._update(
            self.pods,
            pod,
            lambda o: pod_condition(o, "PodScheduled", "False", "Unschedulable", message),
            "status",
        )
        self.event(self.pods, pod, "Warning", "FailedScheduling", message, "default-scheduler")

    # --- kubelet ---

    def _kubelet(self) -> None:
        now = self._now()
        for pod in list(self.store.iter(self.pods)):
            node_name = pod["spec"].get("nodeName")
            if not node_name:
                continue
            md = pod["metadata"]
            uid = md["uid"]
            node = self.store.peek(self.nodes, None, node_name)
            if node is None:  # the pod garbage collector's job: its node is gone
                self.store.remove(self.pods, md["namespace"], md["name"])
                continue
            node_ok = scheduling.node_ready(node)
            if terminating(pod):
                if node_ok and pod_ready(pod):
                    self._update(
                        self.pods, pod, lambda o: pod_condition(o, "Ready", "False"), "status"
                    )
                if node_ok:
                    since = self._terminating_since.setdefault(uid, now)
                    due = since + self.pod_termination_delay
                    if now >= due:
                        self.store.finish_deletion(self.pods, md["namespace"], md["name"])
                    else:
                        self._wake_at(due)
                continue
            if not node_ok or uid in self._failed:
                continue
            if uid in self._running:
                if not pod_ready(pod) and uid not in self._held_unready:
                    self._update(self.pods, pod, _mark_ready, "status")
            elif uid not in self._starting:
                self._starting[uid] = asyncio.create_task(
                    self._start_pod(uid, md["namespace"], md["name"]), name=f"start {md['name']}"
                )

    def _current_pod(self, uid: str, namespace: str, name: str) -> Obj | None:
        pod = self.store.peek(self.pods, namespace, name)
        if pod is None or pod["metadata"]["uid"] != uid or terminating(pod):
            return None
        node = self.store.peek(self.nodes, None, pod["spec"].get("nodeName", ""))
        return pod if node is not None and scheduling.node_ready(node) else None

    async def _start_pod(self, uid: str, namespace: str, name: str) -> None:
        try:
            await asyncio.sleep(self.pod_start_delay)
            pod = self._current_pod(uid, namespace, name)
            if pod is None:
                return
            ip: str | None = None
            if self.pod_started is not None:
                result = self.pod_started(copy.deepcopy(pod))
                ip = await result if inspect.isawaitable(result) else result
            self._running[uid] = PodRuntime(ip or self._allocate_ip(), copy.deepcopy(pod))
            pod = self._current_pod(uid, namespace, name)
            if pod is None:
                self._stop_pod(uid)
                return
            node = self.store.peek(self.nodes, None, pod["spec"]["nodeName"]) or {}
            ip, ready = self._running[uid].ip, uid not in self._held_unready
            self._update(self.pods, pod, lambda o: _mark_running(o, node, ip, ready), "status")
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._failed.add(uid)
            self.on_error(e)
            message = repr(e)
            pod = self.store.peek(self.pods, namespace, name)
            if pod is not None and pod["metadata"]["uid"] == uid:
                self._update(self.pods, pod, lambda o: _mark_failed_start(o, message), "status")
        finally:
            self._starting.pop(uid, None)

    def _allocate_ip(self) -> str:
        """127.0.0.2, .3, ...: distinct loopback addresses local processes can bind."""
        while True:
            self._ip_counter += 1
            n = self._ip_counter
            octets = ((n >> 16) & 255, (n >> 8) & 255, n & 255)
            if octets[2] not in (0, 255):
                return f"127.{octets[0]}.{octets[1]}.{octets[2]}"

    def _stop_pod(self, uid: str) -> None:
        runtime = self._running.pop(uid, None)
        if runtime is None or self.pod_stopped is None:
            return
        try:
            result = self.pod_stopped(runtime.pod)
        except Exception as e:
            self.on_error(e)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._background.add(task)
            task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.on_error(task.exception())  # type: ignore[arg-type]

    def pod_ip(self, uid: str) -> str | None:
        runtime = self._running.get(uid)
        return runtime.ip if runtime else None

    def hold_unready(self, uid: str, held: bool) -> None:
        (self._held_unready.add if held else self._held_unready.discard)(uid)
        self.poke()

    # --- node lifecycle ---

    def _node_lifecycle(self) -> None:
        now = self._now()
        for node in list(self.store.iter(self.nodes)):
            name = node["metadata"]["name"]
            status = scheduling.condition_status(node, "Ready")
            ready = status == "True"
            key = None
            if not ready:
                key = (
                    scheduling.UNREACHABLE_TAINT
                    if status in (None, "Unknown")
                    else scheduling.NOT_READY_TAINT
                )
            self._ensure_condition_taints(node, key)
            if ready:
                self._node_down_since.pop(name, None)
                continue
            since = self._node_down_since.setdefault(name, now)
            taint = {"key": key, "effect": "NoExecute"}
            for pod in list(self.store.iter(self.pods)):
                if pod["spec"].get("nodeName") != name or terminating(pod):
                    continue
                if scheduling.condition_status(pod, "Ready") != "False":
                    self._update(
                        self.pods,
                        pod,
                        lambda o: pod_condition(
                            o, "Ready", "False", "NodeNotReady", "Node is not ready"
                        ),
                        "status",
                    )
                delay = self._eviction_delay(pod, taint)
                if delay is None:
                    continue
                if now >= since + delay:
                    md = pod["metadata"]
                    self.event(
                        self.pods,
                        pod,
                        "Normal",
                        "TaintManagerEviction",
                        f"Marking for deletion Pod {md['namespace']}/{md['name']}",
                        "taint-eviction-controller",
                    )
                    self._delete(self.pods, pod)
                else:
                    self._wake_at(since + delay)

    def _eviction_delay(self, pod: Obj, taint: Obj) -> float | None:
        """When a pod leaves a NotReady node: its toleration's seconds, else the default."""
        for tol in pod["spec"].get("tolerations") or []:
            if scheduling.tolerates([tol], taint):
                seconds = tol.get("tolerationSeconds")
                return None if seconds is None else float(seconds)
        return self.eviction_delay

    def _ensure_condition_taints(self, node: Obj, key: str | None) -> None:
        condition_keys = (scheduling.NOT_READY_TAINT, scheduling.UNREACHABLE_TAINT)
        taints = node.get("spec", {}).get("taints") or []
        kept = [t for t in taints if t.get("key") not in condition_keys]
        wanted = kept + (
            [
                {"key": key, "effect": "NoSchedule"},
                {"key": key, "effect": "NoExecute", "timeAdded": now_iso()},
            ]
            if key
            else []
        )
        if _without_added(wanted) == _without_added(taints):
            return

        def mutate(obj: Obj) -> None:
            spec = obj.setdefault("spec", {})
            if wanted:
                spec["taints"] = wanted
            else:
                spec.pop("taints", None)

        self._update(self.nodes, node, mutate, "main")

    # --- disruption controller ---

    def _disruption_controller(self) -> None:
        for pdb in list(self.store.iter(self.pdbs)):
            status = self.pdb_status(pdb)
            if _without_times(status) != _without_times(pdb.get("status")):
                self._update(
                    self.pdbs, pdb, functools.partial(_set_status, status=status), "status"
                )

    def pdb_pods(self, pdb: Obj) -> list[Obj]:
        selector = pdb.get("spec", {}).get("selector")
        if selector is None:
            return []
        reqs = selectors.selector_from_object(selector)
        return [
            pod
            for pod in self.store.iter(self.pods, pdb["metadata"]["namespace"])
            if not terminating(pod) and selectors.matches(reqs, selectors.labels_of(pod))
        ]

    def pdb_status(self, pdb: Obj) -> Obj:
        spec = pdb.get("spec", {})
        pods = self.pdb_pods(pdb)
        expected, healthy = len(pods), sum(map(pod_ready, pods))
        if "minAvailable" in spec:
            desired = resolve_int_or_percent(spec["minAvailable"], expected, round_up=True)
        elif "maxUnavailable" in spec:
            desired = expected - resolve_int_or_percent(
                spec["maxUnavailable"], expected, round_up=True
            )
        else:
            desired = expected
        desired = max(0, desired)
        allowed = max(0, healthy - desired)
        old_conditions = copy.deepcopy((pdb.get("status") or {}).get("conditions") or [])
        status: Obj = {
            "observedGeneration": pdb["metadata"].get("generation", 1),
            "expectedPods": expected,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "disruptionsAllowed": allowed,
            "conditions": old_conditions,
        }
        holder = {"status": status}
        set_condition(
            holder,
            "DisruptionAllowed",
            "True" if allowed else "False",
            "SufficientPods" if allowed else "InsufficientPods",
            "",
            observedGeneration=status["observedGeneration"],
        )
        return status

    def evict(self, namespace: str, name: str, body: Obj) -> Obj:
        """The ``pods/eviction`` subresource: delete the pod unless a budget forbids it."""
        pod = self.store.get(self.pods, namespace, name)
        if not terminating(pod):
            budgets = [
                pdb
                for pdb in self.store.iter(self.pdbs, namespace)
                if pod["metadata"]["uid"] in {p["metadata"]["uid"] for p in self.pdb_pods(pdb)}
            ]
            if len(budgets) > 1:
                raise errors.ApiError(
                    500,
                    "InternalError",
                    "This pod has more than one PodDisruptionBudget, which the eviction "
                    "subresource does not support.",
                )
            for pdb in budgets:
                status = self.pdb_status(pdb)
                ok = (
                    status["disruptionsAllowed"] > 0
                    if pod_ready(pod)
                    else status["currentHealthy"] >= status["desiredHealthy"]
                )
                if not ok:
                    raise errors.too_many_requests(
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        [
                            {
                                "reason": "DisruptionBudget",
                                "message": f"The disruption budget {pdb['metadata']['name']} "
                                f"needs {status['desiredHealthy']} healthy pods and has "
                                f"{status['currentHealthy']} currently",
                            }
                        ],
                    )
            options = body.get("deleteOptions") or {}
            self.store.delete(
                self.pods,
                namespace,
                name,
                DeleteOptions(grace_seconds=options.get("gracePeriodSeconds")),
            )
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }

    # --- test-facing node operations ---

    def set_node_ready(self, names: Iterable[str], status: str, reason: str, message: str) -> None:
        for name in names:
            node = self.store.peek(self.nodes, None, name)
            if node is None:
                raise KeyError(f"no node {name!r}")
            self._update(
                self.nodes,
                node,
                lambda o: set_condition(
                    o, "Ready", status, reason, message, lastHeartbeatTime=now_iso()
                ),
                "status",
            )


def _set_status(obj: Obj, status: Obj) -> None:
    obj["status"] = status


def _drop_owner(obj: Obj, uid: str) -> None:
    refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
    if refs:
        obj["metadata"]["ownerReferences"] = refs
    else:
        obj["metadata"].pop("ownerReferences", None)


def _drop_finalizer(obj: Obj, name: str) -> None:
    obj["metadata"]["finalizers"] = [
        f for f in obj["metadata"].get("finalizers") or [] if f != name
    ]


def _without_added(taints: list[Obj]) -> list[Obj]:
    return [{k: v for k, v in t.items() if k != "timeAdded"} for t in taints]


def _mark_ready(pod: Obj) -> None:
    pod_condition(pod, "Ready", "True")
    pod_condition(pod, "ContainersReady", "True")


def _mark_running(pod: Obj, node: Obj, ip: str, ready: bool) -> None:
    now = now_iso()
    addresses = node.get("status", {}).get("addresses") or []
    host_ip = next((a["address"] for a in addresses if a.get("type") == "InternalIP"), "10.0.0.1")
    status = pod.setdefault("status", {})
    status.update(
        phase="Running",
        hostIP=host_ip,
        hostIPs=[{"ip": host_ip}],
        podIP=ip,
        podIPs=[{"ip": ip}],
        startTime=now,
    )
    for kind in ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"):
        pod_condition(pod, kind, "True" if ready or kind == "Initialized" else "False")
    status["containerStatuses"] = [
        {
            "name": c.get("name"),
            "image": c.get("image"),
            "imageID": f"docker-pullable://{c.get('image')}",
            "containerID": "containerd://"
            + hashlib.sha256(f"{pod['metadata']['uid']}/{c.get('name')}".encode()).hexdigest(),
            "ready": True,
            "started": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": now}},
        }
        for c in pod["spec"].get("containers") or []
    ]


def _mark_failed_start(pod: Obj, message: str) -> None:
    pod.setdefault("status", {})["containerStatuses"] = [
        {
            "name": c.get("name"),
            "image": c.get("image"),
            "ready": False,
            "started": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": "CreateContainerError", "message": message}},
        }
        for c in pod["spec"].get("containers") or []
    ]


def _deletion_order(pods: list[Obj]) -> list[Obj]:
    """The ReplicaSet controller's scale-down order: unscheduled, pending, unready, newest."""
    phases = {"Pending": 0, "Unknown": 1, "Running": 2}
    newest_first = sorted(pods, key=_creation_key, reverse=True)
    return sorted(
        newest_first,
        key=lambda p: (
            bool(p["spec"].get("nodeName")),
            phases.get(p.get("status", {}).get("phase", ""), 0),
            pod_ready(p),
        ),
    )
