"""The API server's storage semantics, transport-free and synchronous.

Every operation is a plain function that either raises :class:`ApiError` or
commits at once; with no ``await`` inside, each one is atomic on the event
loop, so watch replay and live events cannot interleave or reorder.

Every write is also recorded in kmock's :class:`kmock.ObjectsArray`, so
tests keep kmock's ``emulator.objects[...]`` assertions and per-object history
(a soft-deleted object ends its history with ``None``, as with kmock's own
emulator). That array is a record for assertions: writing to it directly
bypasses the store, which serves from its own index of live objects.

Scale: reads go through indexes kept on every commit (live objects per
resource and namespace, per uid, dependents per owner uid, and per label
pair), watch fan-out only visits the watches of the changed resource, and
stored objects are never mutated in place (a write stores a new dict), so
copies are made only where an object leaves the store.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import marshal
import random
import re
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import kmock

from . import errors, kinds, schemas, selectors
from .resources import Catalog, ResourceType, crd_resource_types

Obj = dict[str, Any]
_T = TypeVar("_T")
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what the API server's generateName uses
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_PATH_SEGMENT = re.compile(r"^(?!\.\.?$)[^/%]+$")
# Fields the server owns; clients cannot set them on create or change them on update.
_CRDS = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
_SERVER_META = (
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "resourceVersion",
)


def clone(value: _T) -> _T:
    """A deep copy of JSON-like data, several times faster than ``copy.deepcopy``."""
    return cast(_T, _clone(value))


def _clone(value: Any) -> Any:
    try:  # C speed for plain dicts, lists, strings and numbers
        return marshal.loads(marshal.dumps(value))
    except ValueError:  # anything else (a dict subclass, an object): the slow way
        return copy.deepcopy(value)


def now_iso(offset_seconds: float = 0) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(obj: Obj) -> Obj:
    result: Obj = obj.setdefault("metadata", {})
    return result


def terminating(obj: Obj) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))


@dataclass
class Change:
    """One committed write, as watchers and controllers see it."""

    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    rt: ResourceType
    obj: Obj  # the new state; for DELETED, the last state
    old: Obj | None


@dataclass
class DeleteOptions:
    propagation: str = "Background"  # Background | Foreground | Orphan
    grace_seconds: int | None = None
    uid: str | None = None  # preconditions
    resource_version: str | None = None
    dry_run: bool = False


@dataclass(eq=False)
class Watch:
    """A live watch: filters plus a queue of JSON-ready events (None ends it)."""

    rt: ResourceType
    namespace: str | None
    labels: list[selectors.Requirement]
    fields: list[selectors.FieldRequirement]
    queue: asyncio.Queue[Obj | None] = field(default_factory=asyncio.Queue)

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        return selectors.matches(self.labels, selectors.labels_of(obj)) and all(
            req.matches(obj) for req in self.fields
        )

    def event_for(self, change: Change) -> Obj | None:
        """The event this watcher sees; selector moves become ADDED / DELETED like the real one."""
        if change.rt.key != self.rt.key:
            return None
        now, before = self.matches(change.obj), self.matches(change.old)
        if change.type == "DELETED":
            kind = "DELETED" if now else None
        elif now and before:
            kind = "MODIFIED"
        elif now:
            kind = "ADDED"
        elif before:
            kind = "DELETED"
        else:
            kind = None
        return None if kind is None else {"type": kind, "object": change.obj}

    def offer(self, change: Change) -> None:
        if (event := self.event_for(change)) is not None:
            self.queue.put_nowait(event)

    def close(self) -> None:
        self.queue.put_nowait(None)


class ObjectStore:
    """Objects, resource versions, watches and the rules of writing them.

    ``create``, ``update``, ``delete`` and ``read`` return the stored object,
    shared with readers and watchers: never mutate it (``clone`` it first).
    ``get`` and ``select`` return copies.
    """

    def __init__(
        self,
        objects: kmock.ObjectsArray,
        *,
        history_limit: int = 10_000,
        strict_namespaces: bool = True,
        validate_schemas: bool = True,
        seed: int | None = None,
    ) -> None:
        self.catalog = Catalog.builtin()
        self.objects = objects
        self.rv = 1000
        self.history: deque[Change] = deque(maxlen=history_limit)
        self.compacted_rv = 0  # events up to this rv are gone: older watches get 410
        self.watches: set[Watch] = set()
        self.listeners: list[Callable[[Change], None]] = []
        self.strict_namespaces = strict_namespaces
        self.validate_schemas = validate_schemas
        # The DefaultTolerationSeconds admission plugin's value (the real flags' default).
        self.default_toleration_seconds = 300
        # Decides whether a DELETE is graceful (pods on a node): set by the controllers.
        self.graceful: Callable[[ResourceType, Obj], bool] | None = None
        self.random = random.Random(seed)
        self._kres: dict[tuple[str, str, str], kmock.resource] = {}
        # Live objects per resource, by kmock key: reads never scan every object.
        self._live: dict[tuple[str, str, str], dict[tuple[Any, ...], Obj]] = {}
        # ... per resource and namespace, by name;
        self._by_ns: dict[tuple[str, str, str], dict[str | None, dict[str, Obj]]] = {}
        # ... by uid; dependents by owner uid (dangling owners included);
        self._by_uid: dict[str, tuple[ResourceType, Obj]] = {}
        self._dependents: dict[str, dict[tuple[tuple[str, str, str], str | None, str], None]] = {}
        # ... and per resource and label pair, by kmock key.
        self._by_label: dict[tuple[str, str, str], dict[tuple[str, str], dict[Any, Obj]]] = {}
        self._watches_by_rt: dict[tuple[str, str, str], set[Watch]] = {}
        self._validators: dict[tuple[str, str, str], tuple[Obj, schemas.Validator]] = {}

    # --- reading (internal reads return stored dicts: never mutate them) ---

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> tuple[Any, ...]:
        kres = self._kres.get(rt.key)
        if kres is None:
            kres = self._kres[rt.key] = kmock.resource(rt.group, rt.version, rt.plural)
        return (kres, namespace if rt.namespaced else None, name)

    def peek(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        return self._live.get(rt.key, {}).get(self._key(rt, namespace, name))

    def iter(self, rt: ResourceType, namespace: str | None = None) -> Iterator[Obj]:
        """Live objects (a snapshot: writing while iterating is safe), oldest key first."""
        if namespace is None:
            yield from list(self._live.get(rt.key, {}).values())
        else:
            yield from list(self._by_ns.get(rt.key, {}).get(namespace, {}).values())

    def in_namespace(self, namespace: str) -> Iterator[tuple[ResourceType, Obj]]:
        """Every live namespaced object of a namespace, whatever its resource."""
        for rt_key, by_ns in list(self._by_ns.items()):
            rt = self.catalog.types.get(rt_key)
            if rt is not None and rt.namespaced:
                for obj in list(by_ns.get(namespace, {}).values()):
                    yield rt, obj

    def by_uid(self, uid: str) -> tuple[ResourceType, Obj] | None:
        return self._by_uid.get(uid)

    def dependents(self, uid: str) -> list[tuple[ResourceType, Obj]]:
        """Live objects with an owner reference to ``uid``."""
        found = []
        for rt_key, namespace, name in list(self._dependents.get(uid, ())):
            rt = self.catalog.types.get(rt_key)
            obj = self._by_ns.get(rt_key, {}).get(namespace, {}).get(name)
            if rt is not None and obj is not None:
                found.append((rt, obj))
        return found

    def find(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        labels: list[selectors.Requirement] | None = None,
        fields: list[selectors.FieldRequirement] | None = None,
    ) -> list[Obj]:
        """Matching live objects (stored dicts: never mutate them), unordered.

        Equality and ``in`` requirements narrow the candidates through the label index.
        """
        candidates: Collection[Obj] | None = None
        if labels:
            index = self._by_label.get(rt.key, {})
            for req in labels:
                if req.op not in ("=", "in"):
                    continue
                hits: dict[Any, Obj] = {}
                for value in req.values:
                    hits.update(index.get((req.key, value), {}))
                if candidates is None or len(hits) < len(candidates):
                    candidates = hits.values()
        if candidates is None:
            candidates = list(self.iter(rt, namespace))
        return [
            obj
            for obj in candidates
            if (namespace is None or obj["metadata"].get("namespace") == namespace)
            and selectors.matches(labels or [], selectors.labels_of(obj))
            and all(req.matches(obj) for req in fields or [])
        ]

    def iter_all(self) -> Iterator[tuple[ResourceType, Obj]]:
        for rt_key, objs in list(self._live.items()):
            rt = self.catalog.types.get(rt_key)
            if rt is not None:
                for obj in list(objs.values()):
                    yield rt, obj

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        return clone(self.read(rt, namespace, name))

    def read(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        """The stored object (never mutate it), or a 404."""
        obj = self.peek(rt, namespace, name)
        if obj is None:
            raise errors.not_found(rt, name)
        return obj

    def select(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        labels: list[selectors.Requirement] | None = None,
        fields: list[selectors.FieldRequirement] | None = None,
    ) -> list[Obj]:
        """Matching objects in etcd's key order (namespace, name), deep-copied."""
        found = self.find(rt, namespace, labels, fields)
        found.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        return [clone(obj) for obj in found]

    # --- committing ---

    def _commit(self, rt: ResourceType, new: Obj, old: Obj | None, kind: str) -> Obj:
        self.rv += 1
        meta(new)["resourceVersion"] = str(self.rv)
        namespace, name = new["metadata"].get("namespace"), new["metadata"]["name"]
        key = self._key(rt, namespace, name)
        if key in self.objects:
            self.objects[key].history.append(new)
        else:
            self.objects[key] = new
        live = self._live.setdefault(rt.key, {})
        previous = live.get(key)
        if previous is not None:
            self._unindex(rt, key, previous)
        if kind == "DELETED":
            self.objects[key].delete()
            live.pop(key, None)
        else:
            live[key] = new
            self._index(rt, key, new)
        stored = new
        change = Change(self.rv, kind, rt, stored, old)
        if len(self.history) == self.history.maxlen:
            self.compacted_rv = self.history[0].rv
        self.history.append(change)
        for watch in list(self._watches_by_rt.get(rt.key, ())):
            watch.offer(change)
        for listener in list(self.listeners):
            listener(change)
        if kind == "DELETED" and rt.key == _CRDS:
            self._unregister_crd(stored)  # its custom resources go with it
        return stored

    def _index(self, rt: ResourceType, key: tuple[Any, ...], obj: Obj) -> None:
        md = obj["metadata"]
        namespace, name = key[1], key[2]
        self._by_ns.setdefault(rt.key, {}).setdefault(namespace, {})[name] = obj
        if uid := md.get("uid"):
            self._by_uid[uid] = (rt, obj)
        for ref in md.get("ownerReferences") or ():
            self._dependents.setdefault(ref.get("uid", ""), {})[(rt.key, namespace, name)] = None
        by_label = self._by_label.setdefault(rt.key, {})
        for pair in (md.get("labels") or {}).items():
            by_label.setdefault(pair, {})[key] = obj

    def _unindex(self, rt: ResourceType, key: tuple[Any, ...], obj: Obj) -> None:
        md = obj["metadata"]
        namespace, name = key[1], key[2]
        in_ns = self._by_ns.get(rt.key, {}).get(namespace)
        if in_ns is not None:
            in_ns.pop(name, None)
        uid = md.get("uid")
        if uid and self._by_uid.get(uid, (None, None))[1] is obj:
            del self._by_uid[uid]
        for ref in md.get("ownerReferences") or ():
            owner = ref.get("uid", "")
            deps = self._dependents.get(owner)
            if deps is not None:
                deps.pop((rt.key, namespace, name), None)
                if not deps:
                    del self._dependents[owner]
        by_label = self._by_label.get(rt.key, {})
        for pair in (md.get("labels") or {}).items():
            objs = by_label.get(pair)
            if objs is not None:
                objs.pop(key, None)
                if not objs:
                    del by_label[pair]

    # --- creating ---

    def _generate_name(self, rt: ResourceType, namespace: str | None, prefix: str) -> str:
        prefix = prefix[:58]
        while True:
            name = prefix + "".join(self.random.choice(NAME_CHARS) for _ in range(5))
            if self.peek(rt, namespace, name) is None:
                return name

    def new_uid(self) -> str:
        return str(uuid.UUID(int=self.random.getrandbits(128), version=4))

    def _check_namespace(self, namespace: str) -> None:
        if not self.strict_namespaces:
            return
        ns_rt = self.catalog.types[("", "v1", "namespaces")]
        ns = self.peek(ns_rt, None, namespace)
        if ns is None:
            raise errors.not_found(ns_rt, namespace)
        if terminating(ns):
            raise errors.forbidden(
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated"
            )

    def _validate_meta(self, rt: ResourceType, obj: Obj) -> list[tuple[str, str]]:
        causes = []
        name = obj["metadata"]["name"]
        rule, pattern, limit = {
            "label": ("a lowercase RFC 1123 label", _LABEL, 63),
            "label1035": ("a DNS-1035 label", _LABEL1035, 63),
            "path": ("a path segment name", _PATH_SEGMENT, 253),  # RBAC: "system:discovery"
        }.get(rt.name_rule, ("a lowercase RFC 1123 subdomain", _SUBDOMAIN, 253))
        if not isinstance(name, str) or len(name) > limit or not pattern.match(name):
            causes.append(
                (
                    "metadata.name",
                    f'Invalid value: "{name}": {rule} must consist of lower case alphanumeric '
                    f"characters or '-' (and '.' for subdomains), start and end with an "
                    f"alphanumeric character, and be at most {limit} characters",
                )
            )
        for key, value in (obj["metadata"].get("labels") or {}).items():
            if error := selectors.label_key_error(key):
                causes.append(("metadata.labels", f'Invalid value: "{key}": {error}'))
            if error := selectors.label_value_error(value):
                causes.append(("metadata.labels", f'Invalid value: "{value}": {error}'))
        for key in obj["metadata"].get("annotations") or {}:
            if error := selectors.label_key_error(key):
                causes.append(("metadata.annotations", f'Invalid value: "{key}": {error}'))
        for i, ref in enumerate(obj["metadata"].get("ownerReferences") or []):
            for required in ("apiVersion", "kind", "name", "uid"):
                if not ref.get(required):
                    causes.append((f"metadata.ownerReferences[{i}].{required}", "Required value"))
        return causes

    def _check_type(self, rt: ResourceType, obj: Obj) -> None:
        if obj.get("apiVersion") not in (None, rt.api_version) or obj.get("kind") not in (
            None,
            rt.kind,
        ):
            raise errors.bad_request(
                f"the API version in the data ({obj.get('apiVersion')}) and the kind "
                f"({obj.get('kind')}) do not match the URL's {rt.api_version} {rt.kind}"
            )
        if not isinstance(obj.get("metadata", {}), dict):
            raise errors.bad_request("metadata must be an object")

    def create(
        self, rt: ResourceType, namespace: str | None, body: Any, *, dry_run: bool = False
    ) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of a create must be a JSON object")
        obj = clone(body)
        self._check_type(rt, obj)
        md = meta(obj)
        ns: str | None = None
        if rt.namespaced:
            if namespace and md.get("namespace") not in (None, "", namespace):
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            ns = namespace or md.get("namespace") or None
            if not ns:
                raise errors.bad_request("a namespace is required for a namespaced resource")
            md["namespace"] = ns
            self._check_namespace(ns)
        else:
            md.pop("namespace", None)
        if not md.get("name"):
            if not md.get("generateName"):
                raise errors.invalid(
                    rt, "", [("metadata.name", "Required value: name or generateName is required")]
                )
            md["name"] = self._generate_name(rt, ns, md["generateName"])
        name = md["name"]
        if self.peek(rt, ns, name) is not None:
            raise errors.already_exists(rt, name)
        for server_field in _SERVER_META:
            md.pop(server_field, None)
        md.pop("managedFields", None)
        md["uid"] = self.new_uid()
        md["creationTimestamp"] = now_iso()
        md["generation"] = 1
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if rt.has_status and rt.kind != "Node":  # nodes register with their status
            obj.pop("status", None)
        kinds.prepare_create(rt, obj, self)
        causes = self._validate_meta(rt, obj) + kinds.validate(rt, obj)
        causes += self._apply_schema(rt, obj)
        if causes:
            raise errors.invalid(rt, name, causes)
        if dry_run:
            return obj
        created = self._commit(rt, obj, None, "ADDED")
        if rt.key == _CRDS:
            self._register_crd(created)
        return created

    def _apply_schema(
        self, rt: ResourceType, obj: Obj, old: Obj | None = None
    ) -> list[tuple[str, str]]:
        schema = self.catalog.schemas.get(rt.key)
        if not schema:
            return []
        schemas.prune_and_default(schema, obj)
        if not self.validate_schemas:
            return []
        cached = self._validators.get(rt.key)
        if cached is None or cached[0] is not schema:  # compiled once per schema
            cached = self._validators[rt.key] = (schema, schemas.compile_validator(schema))
        return cached[1](obj, old)

    def _register_crd(self, crd: Obj) -> None:
        for rt, schema in crd_resource_types(crd):
            self.catalog.add(rt, schema)

    # --- updating ---

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        mutate: Callable[[Obj], Any],
        *,
        scope: str = "main",
        dry_run: bool = False,
    ) -> Obj:
        """Write ``mutate(copy of current)`` back under the API's rules.

        ``scope`` is "main" (the object; ``.status`` kept as it was when the
        resource has a status subresource), "status" (only ``.status`` taken),
        or "all" (controllers: spec and status at once, e.g. a pod binding).
        """
        current = self.peek(rt, namespace, name)
        if current is None:
            raise errors.not_found(rt, name)
        proposed = mutate(clone(current))
        if not isinstance(proposed, dict) or not isinstance(proposed.get("metadata", {}), dict):
            raise errors.bad_request("the object must be a JSON object with object metadata")
        pmeta = proposed.get("metadata", {})
        wanted_rv = pmeta.get("resourceVersion")
        if wanted_rv not in (None, "") and str(wanted_rv) != current["metadata"]["resourceVersion"]:
            raise errors.conflict(rt, name)
        if pmeta.get("name") not in (None, name):
            raise errors.bad_request(
                f"the name of the object ({pmeta.get('name')}) does not match the name on the "
                f"URL ({name})"
            )
        if rt.namespaced and pmeta.get("namespace") not in (None, "", namespace):
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        if scope == "status":
            result = clone(current)
            if "status" in proposed:
                result["status"] = proposed["status"]
            else:
                result.pop("status", None)
            if causes := self._apply_schema(rt, result, current):
                raise errors.invalid(rt, name, causes)
        else:
            result = self._merge_server_fields(rt, proposed, current, scope)
            causes = self._validate_meta(rt, result) + kinds.validate(rt, result)
            causes += kinds.validate_update(rt, result, current, scope)
            causes += self._apply_schema(rt, result, current)
            if causes:
                raise errors.invalid(rt, name, causes)
            if _spec_part(result) != _spec_part(current):
                result["metadata"]["generation"] = current["metadata"].get("generation", 0) + 1
        if result == current:  # a no-op: no new resourceVersion, no watch event
            return current
        if dry_run:
            return result
        released = terminating(result) and not result["metadata"].get("finalizers")
        if released and not result["metadata"].get("deletionGracePeriodSeconds"):
            return self._commit(rt, result, current, "DELETED")
        updated = self._commit(rt, result, current, "MODIFIED")
        if rt.key == _CRDS:
            self._register_crd(updated)
        return updated

    def _merge_server_fields(self, rt: ResourceType, new: Obj, current: Obj, scope: str) -> Obj:
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        md = meta(new)
        md.pop("managedFields", None)
        cmd = current["metadata"]
        for key in (*_SERVER_META, "name", "namespace"):
            if key in cmd:
                md[key] = cmd[key]
            else:
                md.pop(key, None)
        if scope == "main" and rt.has_status:
            if "status" in current:
                new["status"] = clone(current["status"])  # pruning must not touch the stored one
            else:
                new.pop("status", None)
        if terminating(current):
            added = set(md.get("finalizers") or []) - set(cmd.get("finalizers") or [])
            if added:
                raise errors.unprocessable(
                    rt,
                    cmd["name"],
                    f'{rt.kind} "{cmd["name"]}" is invalid: metadata.finalizers: Forbidden: no '
                    "new finalizers can be added if the object is being deleted, found new "
                    f"finalizers {sorted(added)}",
                )
        if not md.get("finalizers"):
            md.pop("finalizers", None)
        return new

    # --- deleting ---

    def delete(
        self, rt: ResourceType, namespace: str | None, name: str, options: DeleteOptions
    ) -> Obj:
        current = self.peek(rt, namespace, name)
        if current is None:
            raise errors.not_found(rt, name)
        cmd = current["metadata"]
        if options.uid and options.uid != cmd.get("uid"):
            raise errors.conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {options.uid}, UID in object meta: "
                f"{cmd.get('uid')}",
            )
        if options.resource_version and options.resource_version != cmd.get("resourceVersion"):
            raise errors.conflict(
                rt,
                name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{options.resource_version}, ResourceVersion in object meta: "
                f"{cmd.get('resourceVersion')}",
            )
        if options.dry_run:
            return current
        if terminating(current):
            if options.grace_seconds != 0 or not cmd.get("deletionGracePeriodSeconds"):
                return current
            if not cmd.get("finalizers"):  # e.g. the kubelet confirming a pod's end
                return self._commit(rt, clone(current), current, "DELETED")
            result = clone(current)
            result["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._commit(rt, result, current, "MODIFIED")
        result = clone(current)
        md = result["metadata"]
        finalizers = list(md.get("finalizers") or [])
        extra = {"Orphan": "orphan", "Foreground": "foregroundDeletion"}.get(options.propagation)
        if extra and extra not in finalizers:
            finalizers.append(extra)
        graceful = options.grace_seconds != 0 and bool(self.graceful and self.graceful(rt, current))
        if rt.kind == "Namespace" and not rt.group:
            graceful = True
            result.setdefault("status", {})["phase"] = "Terminating"
        if not finalizers and not graceful:
            return self._commit(rt, result, current, "DELETED")
        grace = 0
        if graceful:
            default = result.get("spec", {}).get("terminationGracePeriodSeconds", 30)
            grace = options.grace_seconds if options.grace_seconds is not None else default
        md["deletionTimestamp"] = now_iso(grace)
        md["deletionGracePeriodSeconds"] = grace
        if finalizers:
            md["finalizers"] = finalizers
        return self._commit(rt, result, current, "MODIFIED")

    def finish_deletion(self, rt: ResourceType, namespace: str | None, name: str) -> None:
        """Complete a graceful deletion (the kubelet or a controller is done with it)."""
        current = self.peek(rt, namespace, name)
        if current is None or not terminating(current) or current["metadata"].get("finalizers"):
            return
        self._commit(rt, clone(current), current, "DELETED")

    def remove(self, rt: ResourceType, namespace: str | None, name: str) -> None:
        """Drop an object at once, finalizers or not (CRD cleanup, force deletion)."""
        current = self.peek(rt, namespace, name)
        if current is not None:
            self._commit(rt, clone(current), current, "DELETED")

    def _unregister_crd(self, crd: Obj) -> None:
        for crt, _ in crd_resource_types(crd):
            for obj in list(self.iter(crt)):
                self.remove(crt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            self.catalog.remove(crt)

    # --- watching ---

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: list[selectors.Requirement],
        fields: list[selectors.FieldRequirement],
        since: str | None,
        send_initial_events: bool = False,
    ) -> tuple[Watch, list[Obj]]:
        """Register a watch and return the events it starts with.

        No (or "0") resourceVersion, or ``sendInitialEvents``: synthetic ADDED
        for what exists (then a BOOKMARK marking their end, if asked for).
        A resourceVersion: the changes after it, or a 410 ERROR if compacted.
        """
        watch = Watch(rt, namespace, labels, fields)
        events: list[Obj] = []
        if send_initial_events or since in (None, "", "0"):
            events = [
                {"type": "ADDED", "object": obj}
                for obj in self.iter(rt, namespace)
                if watch.matches(obj)
            ]
            if send_initial_events:
                events.append(self.bookmark(rt, initial_events_end=True))
        else:
            try:
                start = int(since or "")
            except ValueError as e:
                raise errors.bad_request(f"invalid resource version: {since!r}") from e
            if start < self.compacted_rv:
                error = errors.gone(
                    f"too old resource version: {start} ({self.compacted_rv + 1})"
                ).status()
                return watch, [{"type": "ERROR", "object": error}]
            newer = itertools.takewhile(lambda c: c.rv > start, reversed(self.history))
            for change in reversed(list(newer)):
                if (event := watch.event_for(change)) is not None:
                    events.append(event)
        self.watches.add(watch)
        self._watches_by_rt.setdefault(rt.key, set()).add(watch)
        return watch, events

    def bookmark(self, rt: ResourceType, *, initial_events_end: bool = False) -> Obj:
        md: Obj = {"resourceVersion": str(self.rv)}
        if initial_events_end:
            md["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "type": "BOOKMARK",
            "object": {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": md},
        }

    def unwatch(self, watch: Watch) -> None:
        self.watches.discard(watch)
        self._watches_by_rt.get(watch.rt.key, set()).discard(watch)

    def close_watches(self) -> None:
        for watch in list(self.watches):
            watch.close()
        self.watches.clear()
        self._watches_by_rt.clear()


def _spec_part(obj: Obj) -> Obj:
    """What bumps ``metadata.generation``: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
