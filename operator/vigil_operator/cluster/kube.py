"""Writes to the Kubernetes API through the official asyncio client.

`apply` is idempotent: each object carries a hash of what we last wanted
(`vigil.dev/applied-hash`); an unchanged object costs one GET, a replica
change one merge patch, anything else a replace guarded by resourceVersion.
Conflicts (409) are retried with a fresh read, so the operator can be killed
mid-reconcile and converge on restart with no duplicate objects.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from vigil_operator.cluster.fence import Fence

HASH_ANNOTATION: Final = "vigil.dev/applied-hash"
GROUP, VERSION, PLURAL = "vigil.dev", "v1alpha1", "models"
MERGE: Final = "application/merge-patch+json"
_ATTEMPTS: Final = 5


async def new_api_client(
    *, user_agent: str | None = None, fence: Fence | None = None
) -> client.ApiClient:
    """In-cluster service account when running in a Pod, else KUBECONFIG; with
    `fence`, every write through it must pass the fence (see `fence.py`)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config()
    api = client.ApiClient()
    if user_agent:
        api.user_agent = user_agent
    if fence is not None:
        api.rest_client.pool_manager.trace_configs.append(fence.trace_config())
    return api


class ConflictError(RuntimeError):
    """Still conflicting after retries: the caller should retry later."""


def applied_hash(obj: Mapping[str, Any]) -> str:
    """Hash of the desired object, without replicas (the autoscaler moves those
    often; a patch of spec.replicas suffices and keeps the Pods)."""
    body = copy.deepcopy(dict(obj))
    if body.get("kind") == "Deployment":
        body.get("spec", {}).pop("replicas", None)
    body.get("metadata", {}).get("annotations", {}).pop(HASH_ANNOTATION, None)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


async def _json(call: Awaitable[Any]) -> dict[str, Any]:
    """The raw JSON body, or ApiException: the generated models reject objects a
    real API server does return (e.g. a condition without a message)."""
    response = await call
    try:
        raw = await response.read()
    finally:
        response.release()
    if response.status >= 400:  # unpreloaded calls return errors instead of raising
        exc = ApiException(status=response.status, reason=response.reason)
        exc.body = raw.decode(errors="replace")
        raise exc
    data: dict[str, Any] = json.loads(raw or b"{}")
    return data


def _matches(live: Mapping[str, Any], digest: str, desired: Mapping[str, Any]) -> bool:
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    if annotations.get(HASH_ANNOTATION) != digest:
        return False
    want = (desired.get("spec") or {}).get("replicas")
    return want is None or (live.get("spec") or {}).get("replicas") == want


class Kube:
    """The few API calls the operator makes."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.policy = client.PolicyV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    @classmethod
    async def connect(cls, *, user_agent: str | None = None, fence: Fence | None = None) -> Kube:
        return cls(await new_api_client(user_agent=user_agent, fence=fence))

    async def close(self) -> None:
        await self.api.close()

    def _ops(self, kind: str) -> tuple[Callable[..., Awaitable[Any]], ...]:
        """(read, create, replace, patch) for a kind we manage. Spelled out, not
        built by name: the chart's RBAC test derives its verbs from the client
        methods this package names (tests/unit/chart/test_rbac.py)."""
        if kind == "Deployment":
            a = self.apps
            return (
                a.read_namespaced_deployment,
                a.create_namespaced_deployment,
                a.replace_namespaced_deployment,
                a.patch_namespaced_deployment,
            )
        if kind == "Service":
            c = self.core
            return (
                c.read_namespaced_service,
                c.create_namespaced_service,
                c.replace_namespaced_service,
                c.patch_namespaced_service,
            )
        if kind == "PodDisruptionBudget":
            p = self.policy
            return (
                p.read_namespaced_pod_disruption_budget,
                p.create_namespaced_pod_disruption_budget,
                p.replace_namespaced_pod_disruption_budget,
                p.patch_namespaced_pod_disruption_budget,
            )
        raise ValueError(f"the operator does not manage {kind}")

    async def apply(self, obj: Mapping[str, Any], cached: Mapping[str, Any] | None = None) -> str:
        """Create or update `obj`; returns "created", "updated", "scaled" or "unchanged".

        `cached` is the object as a watch last saw it: when it already carries
        what we want, nothing is sent at all (as informer-based controllers do).
        """
        read, create, replace, patch = self._ops(str(obj["kind"]))
        desired = copy.deepcopy(dict(obj))
        meta = desired["metadata"]
        name, ns = meta["name"], meta["namespace"]
        digest = applied_hash(desired)
        meta.setdefault("annotations", {})[HASH_ANNOTATION] = digest
        if cached is not None and _matches(cached, digest, desired):
            return "unchanged"
        for _ in range(_ATTEMPTS):
            try:
                live = await _json(read(name, ns, _preload_content=False))
            except ApiException as exc:
                if exc.status != 404:
                    raise
                try:
                    await _json(create(ns, desired, _preload_content=False))
                    return "created"
                except ApiException as exc2:
                    if exc2.status == 409:  # created meanwhile: read it and go on
                        continue
                    raise
            annotations = (live.get("metadata") or {}).get("annotations") or {}
            try:
                if _matches(live, digest, desired):
                    return "unchanged"
                if annotations.get(HASH_ANNOTATION) == digest:
                    want = (desired.get("spec") or {}).get("replicas")
                    await _json(
                        patch(
                            name,
                            ns,
                            {"spec": {"replicas": want}},
                            _content_type=MERGE,
                            _preload_content=False,
                        )
                    )
                    return "scaled"
                desired["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
                await _json(replace(name, ns, desired, _preload_content=False))
                return "updated"
            except ApiException as exc:
                if exc.status in (404, 409):  # deleted or changed under us: start over
                    continue
                raise
        raise ConflictError(f"{obj['kind']} {ns}/{name} kept changing; will retry")

    async def delete_deployment(self, namespace: str, name: str) -> None:
        try:
            await _json(
                self.apps.delete_namespaced_deployment(name, namespace, _preload_content=False)
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def get_model(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return body

    async def patch_model_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """Write the whole status; lists are replaced (merge patch), so a zone
        that left the status really leaves it."""
        try:
            await self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": dict(status)},
                _content_type=MERGE,  # type: ignore[call-arg]  # accepted, not in the stubs
            )
        except ApiException as exc:
            if exc.status == 409:  # another writer won the race: the next pass writes it
                raise ConflictError(
                    f"Model {namespace}/{name} status conflict; will retry"
                ) from exc
            if exc.status != 404:  # a deleted Model needs no status
                raise
