"""A small control plane: the controllers an operator of Deployments relies on.

One background loop runs the controllers whenever the store changes (or a
timer is due). Each controller is a synchronous pass, so a pass sees one
consistent state, and writes only what differs (no-op writes would bump
resourceVersions and wake every watcher for nothing).

The passes are incremental, like the real controllers' work queues: every
committed change marks what it can affect (its owners and dependents for the
GC, the owning Deployment, the pod for the kubelet, the budgets selecting it,
the pods of a changed node, ...), and a pass visits only those. A full pass
runs at start, on :meth:`Controllers.poke` and when a timer is due.

- garbage collector: owner references, Background / Foreground / Orphan;
- namespace controller: empties a terminating namespace, then removes it;
- deployment controller: pods straight from the Deployment (no ReplicaSets),
  rolling updates by ``pod-template-hash``, status like apps/v1's;
- scheduler: taints, nodeSelector, required node affinity, resource fit;
- kubelet (built in, per node, switchable off for an external one): renews
  the node's Lease in ``kube-node-lease``, starts bound pods after
  ``pod_start_delay`` (Running and Ready), confirms graceful deletions by
  deleting with ``gracePeriodSeconds=0``;
- node lifecycle: a node unheard of (no Lease renewal, no Ready heartbeat)
  for ``node_monitor_grace_period`` turns Ready=Unknown; NotReady/Unknown
  nodes get the not-ready/unreachable NoSchedule taint, then NoExecute unless
  every node is down (full disruption); their pods go not Ready, and are
  evicted after their toleration's ``tolerationSeconds``;
- disruption controller: PodDisruptionBudget status, and the eviction API.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import hashlib
import heapq
import inspect
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from . import errors, scheduling, selectors
from .store import NAME_CHARS, Change, DeleteOptions, ObjectStore, clone, now_iso, terminating

NODE_LEASES = "kube-node-lease"

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name) of a namespaced object
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


def _owner_refs(obj: Obj, old: Obj | None) -> list[Obj]:
    """The owner references of an object's new and previous versions."""
    refs: list[Obj] = list(obj["metadata"].get("ownerReferences") or ())
    if old is not None:
        refs += old.get("metadata", {}).get("ownerReferences") or ()
    return refs


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
        pod_termination_delay: float = 0.0,
        node_monitor_grace_period: float = 40.0,
    ) -> None:
        self.store = store
        self.on_error = on_error
        self.pod_start_delay = pod_start_delay
        self.pod_termination_delay = pod_termination_delay
        self.node_monitor_grace_period = node_monitor_grace_period
        # Nodes the built-in kubelet runs: True while it heartbeats (False: stopped, as
        # in a zone outage); nodes not listed belong to an external kubelet.
        self.kubelets: dict[str, bool] = {}
        self._heard: dict[str, float] = {}  # node -> when a heartbeat was last seen
        self._full_disruption = False
        self.pod_started: PodStartHook | None = None
        self.pod_stopped: PodStopHook | None = None
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._monitor_task: asyncio.Task[None] | None = None
        self._timers: list[float] = []
        self._timer_set: set[float] = set()
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._running: dict[str, PodRuntime] = {}
        self._failed: set[str] = set()
        self._held_unready: set[str] = set()  # pods a test marked not Ready
        self._terminating_since: dict[str, float] = {}
        self._node_down_since: dict[str, float] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._ip_counter = 1
        # Work queues (ordered sets) filled by _on_change; each controller drains its own.
        self._resync = True  # a full pass: at start, on poke(), when a timer is due
        self._gc_queue: dict[str, None] = {}  # uids
        self._namespace_queue: dict[str, None] = {}
        self._deployment_queue: dict[Key, None] = {}
        self._kubelet_queue: dict[Key, None] = {}
        self._node_queue: dict[str, None] = {}
        self._node_pod_queue: dict[Key, None] = {}  # pods on NotReady nodes
        self._pdb_queue: dict[Key, None] = {}
        self._schedule = False  # pending pods, or what they could fit into, changed
        # Indexes kept from the changes.
        self._pending: dict[Key, None] = {}  # pods waiting for the default scheduler
        self._pod_node: dict[Key, str] = {}  # bound pods -> node name
        self._on_node: dict[str, dict[Key, None]] = {}  # node name -> bound pods
        self._pod_load: dict[Key, tuple[str, dict[str, Fraction]]] = {}  # counted requests
        self._pdb_index: dict[
            Key, tuple[tuple[str, tuple[str, str] | None], list[selectors.Requirement] | None]
        ] = {}
        self._pdbs_by_label: dict[tuple[str, tuple[str, str] | None], dict[Key, None]] = {}
        self._selectors: dict[str, tuple[Any, list[selectors.Requirement]]] = {}
        self._hashes: dict[str, tuple[Any, str]] = {}  # deployment uid -> (template, hash)
        types = store.catalog.types
        self.pods = types[("", "v1", "pods")]
        self.nodes = types[("", "v1", "nodes")]
        self.namespaces = types[("", "v1", "namespaces")]
        self.events = types[("", "v1", "events")]
        self.deployments = types[("apps", "v1", "deployments")]
        self.pdbs = types[("policy", "v1", "poddisruptionbudgets")]
        self.leases = types[("coordination.k8s.io", "v1", "leases")]
        store.listeners.append(self._on_change)
        store.graceful = self._graceful

    # --- lifecycle ---

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kube-emulator-controllers")
        self._monitor_task = asyncio.create_task(self._monitor(), name="kube-emulator-heartbeats")

    async def stop(self) -> None:
        candidates = [self._task, self._monitor_task, *self._starting.values()]
        tasks = [t for t in candidates if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        for uid in list(self._running):
            self._stop_pod(uid)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def poke(self) -> None:
        """Run a full pass of every controller soon."""
        self._resync = True
        self._dirty.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._dirty.clear()
            now = loop.time()
            if self._timers and self._timers[0] <= now:
                self._resync = True  # what a timer waits for is re-checked by a full pass
                while self._timers and self._timers[0] <= now:
                    self._timer_set.discard(heapq.heappop(self._timers))
            try:
                self.reconcile()
            except Exception as e:
                self._resync = True  # the queues it drained may hold unfinished work
                self.on_error(e)
            now = loop.time()
            timeout = max(0.0, self._timers[0] - now) if self._timers else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout)

    def _wake_at(self, when: float) -> None:
        if when not in self._timer_set:
            self._timer_set.add(when)
            heapq.heappush(self._timers, when)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _on_change(self, change: Change) -> None:
        """Queue what a committed change can affect, for each controller."""
        self._dirty.set()
        rt_key, obj, old = change.rt.key, change.obj, change.old
        md = obj["metadata"]
        deleted = change.type == "DELETED"
        namespace, name, uid = md.get("namespace"), md["name"], md.get("uid", "")
        # GC: the object as a dependent and as an owner; its owners (a foreground
        # deletion waits for it); its dependents (an owner gone or going).
        self._gc_queue[uid] = None
        for ref in _owner_refs(obj, old):
            self._gc_queue[ref.get("uid", "")] = None
        if deleted or terminating(obj):
            for _, dependent in self.store.dependents(uid):
                self._gc_queue[dependent["metadata"]["uid"]] = None
        if rt_key == self.namespaces.key:
            self._namespace_queue[name] = None
        elif namespace and change.rt.namespaced:
            ns = self.store.peek(self.namespaces, None, namespace)
            if ns is not None and terminating(ns):
                self._namespace_queue[namespace] = None
        if rt_key == self.pods.key:
            self._pod_changed(change, (namespace, name))
        elif rt_key == self.deployments.key:
            self._deployment_queue[(namespace, name)] = None
        elif rt_key == self.nodes.key:
            if deleted:
                self._heard.pop(name, None)
                self.kubelets.pop(name, None)
            elif _ready_heartbeat(obj) != _ready_heartbeat(old or {}):
                self._heard[name] = time.monotonic()
            self._node_queue[name] = None
            self._kubelet_queue.update(self._on_node.get(name, {}))
            self._schedule = True
        elif rt_key == self.leases.key and namespace == NODE_LEASES and not deleted:
            if (obj.get("spec") or {}).get("renewTime") != ((old or {}).get("spec") or {}).get(
                "renewTime"
            ):
                self._heard[name] = time.monotonic()
        elif rt_key == self.pdbs.key:
            self._index_pdb((namespace, name), None if deleted else obj)
            if not deleted:
                self._pdb_queue[(namespace, name)] = None
        if deleted:
            self._hashes.pop(uid, None)
            self._selectors.pop(uid, None)
        if deleted and rt_key == self.pods.key:
            self._stop_pod(uid)  # a start in progress re-checks the pod when its hook returns
            self._failed.discard(uid)
            self._held_unready.discard(uid)
            self._terminating_since.pop(uid, None)

    def _pod_changed(self, change: Change, key: Key) -> None:
        obj, old = change.obj, change.old
        deleted = change.type == "DELETED"
        spec = obj.get("spec") or {}
        md = obj["metadata"]
        # The owning Deployment.
        for ref in _owner_refs(obj, old):
            owner = self.store.by_uid(ref.get("uid", ""))
            if owner is not None and owner[0].key == self.deployments.key:
                omd = owner[1]["metadata"]
                self._deployment_queue[(omd["namespace"], omd["name"])] = None
        # The scheduler: pending pods, and the load on each node.
        if (
            not deleted
            and not spec.get("nodeName")
            and not terminating(obj)
            and spec.get("schedulerName") in (None, "default-scheduler")
        ):
            self._pending[key] = None
            self._schedule = True  # new, or changed (tolerations, a test's patch): try again
        else:
            self._pending.pop(key, None)
        node_name = None if deleted else spec.get("nodeName") or None
        before = self._pod_node.get(key)
        if before != node_name:
            if before is not None:
                self._on_node.get(before, {}).pop(key, None)
                del self._pod_node[key]
            if node_name is not None:
                self._on_node.setdefault(node_name, {})[key] = None
                self._pod_node[key] = node_name
        counted = node_name is not None and (obj.get("status") or {}).get("phase") not in (
            "Succeeded",
            "Failed",
        )
        if counted:
            assert node_name is not None
            load = self._pod_load.get(key)
            if load is None or load[0] != node_name:
                self._pod_load[key] = (node_name, scheduling.pod_requests(obj))
                self._schedule = True
        elif self._pod_load.pop(key, None) is not None:
            self._schedule = True
        # The kubelet and the node lifecycle controller.
        if node_name is not None or before is not None:
            self._kubelet_queue[key] = None
        if node_name is not None and not deleted:
            self._node_pod_queue[key] = None
        # Disruption budgets selecting the pod, before or after.
        namespace = md.get("namespace") or ""
        for labels in (selectors.labels_of(obj), selectors.labels_of(old or {})):
            for bucket in (None, *labels.items()):
                for pdb_key in self._pdbs_by_label.get((namespace, bucket), ()):
                    reqs = self._pdb_index[pdb_key][1]
                    if reqs is None or selectors.matches(reqs, labels):
                        self._pdb_queue[pdb_key] = None

    def _index_pdb(self, key: Key, pdb: Obj | None) -> None:
        """File a budget under one pair of its matchLabels, so a pod finds its budgets fast."""
        previous = self._pdb_index.pop(key, None)
        if previous is not None:
            bucket = self._pdbs_by_label.get(previous[0], {})
            bucket.pop(key, None)
        selector = None if pdb is None else (pdb.get("spec") or {}).get("selector")
        if selector is None:
            return  # selects no pods
        reqs: list[selectors.Requirement] | None
        try:
            reqs = selectors.selector_from_object(selector)
        except selectors.SelectorError:
            reqs = None  # re-checked on every pod change, to report the error as before
        match_labels = selector.get("matchLabels") or {} if reqs is not None else {}
        pair = next(iter(sorted(match_labels.items())), None)
        index_key = (key[0], (pair[0], str(pair[1])) if pair else None)
        self._pdb_index[key] = (index_key, reqs)
        self._pdbs_by_label.setdefault(index_key, {})[key] = None

    def _graceful(self, rt: Any, obj: Obj) -> bool:
        """Bound pods terminate through their kubelet; namespaces through their controller."""
        if rt.key == self.namespaces.key:
            return True
        if rt.key != self.pods.key or not obj.get("spec", {}).get("nodeName"):
            return False
        return (obj.get("status") or {}).get("phase") not in ("Succeeded", "Failed")

    def reconcile(self, *, full: bool = False) -> None:
        """One pass of every controller, in dependency order, over what changed.

        ``full`` (or a pending :meth:`poke`, or a due timer): over everything.
        """
        full = full or self._resync
        self._resync = False
        self._node_lifecycle(full)
        self._garbage_collector(full)
        self._namespace_controller(full)
        self._deployment_controller(full)
        self._scheduler(full)
        self._kubelet(full)
        self._disruption_controller(full)

    # --- helpers ---

    def _delete(
        self, rt: Any, obj: Obj, propagation: str = "Background", grace_seconds: int | None = None
    ) -> None:
        md = obj["metadata"]
        options = DeleteOptions(propagation, grace_seconds)
        try:
            self.store.delete(rt, md.get("namespace"), md["name"], options)
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

    def _garbage_collector(self, full: bool) -> None:
        if full:
            self._gc_queue.clear()
            live = [(rt, obj) for rt, obj in self.store.iter_all()]
        else:
            uids, self._gc_queue = self._gc_queue, {}
            live = [found for uid in uids if (found := self.store.by_uid(uid)) is not None]
        for rt, obj in live:
            refs = obj["metadata"].get("ownerReferences") or []
            if not refs or terminating(obj):
                continue
            owners = [self.store.by_uid(ref.get("uid", "")) for ref in refs]
            if all(owner is None for owner in owners) or any(
                owner is not None
                and terminating(owner[1])
                and "foregroundDeletion" in (owner[1]["metadata"].get("finalizers") or [])
                for owner in owners
            ):
                self._delete(rt, obj)
        for rt, obj in live:
            finalizers = obj["metadata"].get("finalizers") or []
            if not terminating(obj):
                continue
            uid = obj["metadata"]["uid"]
            if "orphan" in finalizers:
                for drt, dep in self.store.dependents(uid):
                    self._update(drt, dep, functools.partial(_drop_owner, uid=uid), "main")
                self._update(rt, obj, lambda o: _drop_finalizer(o, "orphan"), "main")
            elif "foregroundDeletion" in finalizers and not self.store.dependents(uid):
                self._update(rt, obj, lambda o: _drop_finalizer(o, "foregroundDeletion"), "main")

    # --- namespace controller ---

    def _namespace_controller(self, full: bool) -> None:
        names, self._namespace_queue = self._namespace_queue, {}
        if full:
            names = {ns["metadata"]["name"]: None for ns in self.store.iter(self.namespaces)}
        for name in names:
            ns = self.store.peek(self.namespaces, None, name)
            if ns is None or not terminating(ns):
                continue
            content = list(self.store.in_namespace(name))
            for rt, obj in content:
                if not terminating(obj):
                    self._delete(rt, obj)
            if not content:
                self.store.finish_deletion(self.namespaces, None, name)

    # --- deployment controller ---

    def _deployment_controller(self, full: bool) -> None:
        keys, self._deployment_queue = self._deployment_queue, {}
        if full:
            keys = {
                (d["metadata"]["namespace"], d["metadata"]["name"]): None
                for d in self.store.iter(self.deployments)
            }
        for namespace, name in keys:
            deploy = self.store.peek(self.deployments, namespace, name)
            if deploy is None or terminating(deploy):
                continue
            self._reconcile_deployment(deploy)

    def _owned_pods(self, deploy: Obj) -> list[Obj]:
        md = deploy["metadata"]
        return [
            pod
            for rt, pod in self.store.dependents(md["uid"])
            if rt.key == self.pods.key and pod["metadata"].get("namespace") == md["namespace"]
        ]

    def _template_hash(self, deploy: Obj) -> str:
        """``template_hash`` of the pod template, computed once per template version."""
        template = deploy["spec"].get("template") or {}
        uid = deploy["metadata"]["uid"]
        cached = self._hashes.get(uid)
        if cached is None or (cached[0] is not template and cached[0] != template):
            cached = self._hashes[uid] = (template, template_hash(template))
        return cached[1]

    def _reconcile_deployment(self, deploy: Obj) -> None:
        spec = deploy["spec"]
        replicas = int(spec.get("replicas", 1))
        thash = self._template_hash(deploy)

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
            template = clone(deploy["spec"].get("template") or {})
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

        probe = {**deploy, "status": clone(deploy.get("status") or {})}
        mutate(probe)
        if _without_times(probe.get("status")) != _without_times(deploy.get("status")):
            self._update(self.deployments, deploy, mutate, "status")

    # --- scheduler ---

    def _scheduler(self, full: bool) -> None:
        if not (full or self._schedule):
            return
        self._schedule = False
        pending = [
            pod
            for namespace, name in list(self._pending)
            if (pod := self.store.peek(self.pods, namespace, name)) is not None
        ]
        if not pending:
            return
        nodes = sorted(self.store.iter(self.nodes), key=lambda n: n["metadata"]["name"])
        used: dict[str, dict[str, Fraction]] = {n["metadata"]["name"]: {} for n in nodes}
        for node_name, requests in self._pod_load.values():
            if node_name in used:
                totals = used[node_name]
                for name, quantity in requests.items():
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

    def _kubelet(self, full: bool) -> None:
        now = self._now()
        keys, self._kubelet_queue = self._kubelet_queue, {}
        if full:
            keys = dict.fromkeys(self._pod_node)
        for namespace, name in keys:
            pod = self.store.peek(self.pods, namespace, name)
            if pod is not None and pod["spec"].get("nodeName"):
                self._kubelet_pod(pod, now)

    def _kubelet_pod(self, pod: Obj, now: float) -> None:
        md = pod["metadata"]
        uid = md["uid"]
        node = self.store.peek(self.nodes, None, pod["spec"]["nodeName"])
        if node is None:  # the pod garbage collector's job: its node is gone
            self.store.remove(self.pods, md["namespace"], md["name"])
            return
        node_ok = self._kubelet_up(node)
        if terminating(pod):
            if node_ok and pod_ready(pod):
                self._update(self.pods, pod, lambda o: pod_condition(o, "Ready", "False"), "status")
            if node_ok:
                since = self._terminating_since.setdefault(uid, now)
                due = since + self.pod_termination_delay
                if now >= due:  # the kubelet's confirmation: containers stopped
                    self._delete(self.pods, pod, grace_seconds=0)
                else:
                    self._wake_at(due)
            return
        if not node_ok or uid in self._failed:
            return
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
        return pod if node is not None and self._kubelet_up(node) else None

    def _kubelet_up(self, node: Obj) -> bool:
        """The built-in kubelet runs this node, heartbeats, and the node is Ready."""
        return self.kubelets.get(node["metadata"]["name"], False) and scheduling.node_ready(node)

    async def _start_pod(self, uid: str, namespace: str, name: str) -> None:
        try:
            await asyncio.sleep(self.pod_start_delay)
            pod = self._current_pod(uid, namespace, name)
            if pod is None:
                return
            ip: str | None = None
            if self.pod_started is not None:
                result = self.pod_started(clone(pod))
                ip = await result if inspect.isawaitable(result) else result
            self._running[uid] = PodRuntime(ip or self._allocate_ip(), clone(pod))
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
        found = self.store.by_uid(uid)
        if found is None or found[0].key != self.pods.key:
            return
        md = found[1]["metadata"]
        self._kubelet_queue[(md["namespace"], md["name"])] = None
        self._dirty.set()

    # --- node lifecycle ---

    async def _monitor(self) -> None:
        """Built-in kubelets renew their Leases; nodes unheard of turn Unknown."""
        while True:
            try:
                self.heartbeat()
            except Exception as e:
                self.on_error(e)
            await asyncio.sleep(self.node_monitor_grace_period / 4)

    def heartbeat(self) -> None:
        """One beat: renew the running kubelets' Leases, then check every node's last one."""
        now = time.monotonic()
        for node in self.store.iter(self.nodes):
            name = node["metadata"]["name"]
            if self.kubelets.get(name):
                self.renew_lease(node)
            heard = self._heard.setdefault(name, now)
            stale = now - heard > self.node_monitor_grace_period
            if stale and scheduling.condition_status(node, "Ready") != "Unknown":
                self._update(self.nodes, node, _mark_unknown, "status")

    def renew_lease(self, node: Obj) -> None:
        md = node["metadata"]
        lease = self.store.peek(self.leases, NODE_LEASES, md["name"])
        renewed = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if lease is not None:
            self._update(self.leases, lease, lambda o: o["spec"].update(renewTime=renewed), "main")
            return
        owner = {"apiVersion": "v1", "kind": "Node", "name": md["name"], "uid": md["uid"]}
        body = {
            "metadata": {"name": md["name"], "ownerReferences": [owner]},
            "spec": {
                "holderIdentity": md["name"],
                "leaseDurationSeconds": 40,
                "renewTime": renewed,
            },
        }
        self.store.create(self.leases, NODE_LEASES, body)

    def _node_lifecycle(self, full: bool) -> None:
        now = self._now()
        names, self._node_queue = self._node_queue, {}
        pod_keys, self._node_pod_queue = self._node_pod_queue, {}
        nodes = list(self.store.iter(self.nodes))
        # Every node down: the real controller's full disruption, where nothing is evicted.
        full_disruption = bool(nodes) and not any(scheduling.node_ready(n) for n in nodes)
        if full or full_disruption != self._full_disruption:
            self._full_disruption = full_disruption
            names = {n["metadata"]["name"]: None for n in nodes}
        for name in names:
            node = self.store.peek(self.nodes, None, name)
            if node is None:
                continue
            key = self._condition_taint(node)
            self._ensure_condition_taints(node, key, not full_disruption)
            if key is None or full_disruption:
                self._node_down_since.pop(name, None)
            if key is None:
                continue
            for namespace, pod_name in list(self._on_node.get(name, {})):
                pod = self.store.peek(self.pods, namespace, pod_name)
                if pod is not None:
                    self._node_not_ready_pod(pod, name, key, now)
        # Pods that changed on a NotReady node whose own state did not change.
        for namespace, pod_name in pod_keys:
            pod = self.store.peek(self.pods, namespace, pod_name)
            node_name = pod["spec"].get("nodeName") if pod is not None else None
            if pod is None or not node_name or node_name in names:
                continue
            node = self.store.peek(self.nodes, None, node_name)
            if node is not None and (key := self._condition_taint(node)) is not None:
                self._node_not_ready_pod(pod, node_name, key, now)

    @staticmethod
    def _condition_taint(node: Obj) -> str | None:
        """The taint a node's Ready condition calls for: None when Ready."""
        status = scheduling.condition_status(node, "Ready")
        if status == "True":
            return None
        return (
            scheduling.UNREACHABLE_TAINT
            if status in (None, "Unknown")
            else scheduling.NOT_READY_TAINT
        )

    def _node_not_ready_pod(self, pod: Obj, node_name: str, key: str, now: float) -> None:
        """A pod of a NotReady node: not Ready at once, evicted once its toleration ends."""
        if pod["spec"].get("nodeName") != node_name or terminating(pod):
            return
        if scheduling.condition_status(pod, "Ready") != "False":
            self._update(
                self.pods,
                pod,
                lambda o: pod_condition(o, "Ready", "False", "NodeNotReady", "Node is not ready"),
                "status",
            )
        since = self._node_down_since.get(node_name)
        delay = self._toleration_seconds(pod, {"key": key, "effect": "NoExecute"})
        if since is None or delay is None:
            return  # no NoExecute taint (full disruption), or tolerated for ever
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

    @staticmethod
    def _toleration_seconds(pod: Obj, taint: Obj) -> float | None:
        """How long a pod stays on a NoExecute taint: 0 untolerated, None for ever."""
        for tol in pod["spec"].get("tolerations") or []:
            if scheduling.tolerates([tol], taint):
                seconds = tol.get("tolerationSeconds")
                return None if seconds is None else float(seconds)
        return 0.0

    def _ensure_condition_taints(self, node: Obj, key: str | None, no_execute: bool) -> None:
        """NoSchedule first, then NoExecute (unless told not to), like the real controller."""
        name = node["metadata"]["name"]
        condition_keys = (scheduling.NOT_READY_TAINT, scheduling.UNREACHABLE_TAINT)
        taints = node.get("spec", {}).get("taints") or []
        wanted = [t for t in taints if t.get("key") not in condition_keys]
        no_schedule = {"key": key, "effect": "NoSchedule"}
        if key:
            wanted.append(no_schedule)
            if no_execute:
                wanted.append({"key": key, "effect": "NoExecute", "timeAdded": now_iso()})
                self._node_down_since.setdefault(name, self._now())
        if _without_added(wanted) == _without_added(taints):
            return
        steps = [wanted]
        if key and no_execute and no_schedule not in taints:
            steps.insert(0, wanted[:-1])
        for step in steps:

            def mutate(obj: Obj, step: list[Obj] = step) -> None:
                spec = obj.setdefault("spec", {})
                if step:
                    spec["taints"] = step
                else:
                    spec.pop("taints", None)

            self._update(self.nodes, node, mutate, "main")

    # --- disruption controller ---

    def _disruption_controller(self, full: bool) -> None:
        keys, self._pdb_queue = self._pdb_queue, {}
        if full:
            keys = {
                (p["metadata"]["namespace"], p["metadata"]["name"]): None
                for p in self.store.iter(self.pdbs)
            }
        for namespace, name in keys:
            pdb = self.store.peek(self.pdbs, namespace, name)
            if pdb is None:
                continue
            status = self.pdb_status(pdb)
            if _without_times(status) != _without_times(pdb.get("status")):
                self._update(
                    self.pdbs, pdb, functools.partial(_set_status, status=status), "status"
                )

    def pdb_pods(self, pdb: Obj) -> list[Obj]:
        selector = pdb.get("spec", {}).get("selector")
        if selector is None:
            return []
        uid = pdb["metadata"]["uid"]
        cached = self._selectors.get(uid)
        if cached is None or (cached[0] is not selector and cached[0] != selector):
            cached = self._selectors[uid] = (selector, selectors.selector_from_object(selector))
        pods = self.store.find(self.pods, pdb["metadata"]["namespace"], cached[1])
        return [pod for pod in pods if not terminating(pod)]

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
        old_conditions = clone((pdb.get("status") or {}).get("conditions") or [])
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

    def run_kubelet(self, names: Iterable[str], running: bool) -> None:
        """Start (a Lease renewal and Ready at once) or stop the built-in kubelet of nodes."""
        for name in names:
            node = self.store.peek(self.nodes, None, name)
            if node is None or name not in self.kubelets:
                raise KeyError(f"no node {name!r} with the built-in kubelet")
            self.kubelets[name] = running
            if running:
                self.renew_lease(node)
                self.set_node_ready(
                    [name], "True", "KubeletReady", "kubelet is posting ready status"
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


def _ready_heartbeat(node: Obj) -> str | None:
    """What every status post of a kubelet changes (the controller keeps it as it was)."""
    for cond in (node.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return cond.get("lastHeartbeatTime")  # type: ignore[no-any-return]
    return None


def _mark_unknown(node: Obj) -> None:
    """The node lifecycle controller's verdict on a silent kubelet (heartbeat times kept)."""
    for cond in node.get("status", {}).get("conditions") or []:
        if cond.get("status") != "Unknown":
            cond["lastTransitionTime"] = now_iso()
        cond.update(
            status="Unknown",
            reason="NodeStatusUnknown",
            message="Kubelet stopped posting node status.",
        )


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
