"""What the served emulator (``__main__``) needs and the in-process one may lack.

Each piece is installed only when the emulator does not do it itself, so the
process behaves like a bare control plane either way:

- no built-in kubelet: Pods run only where a (simulated) kubelet runs them,
  and a deleted Pod stays Terminating until its kubelet confirms;
- the node lifecycle controller's heartbeat check: a Node whose Lease in
  ``kube-node-lease`` (or, without one, whose Ready condition) has not been
  renewed for the grace period turns Ready=Unknown, "Kubelet stopped posting
  node status.", as kube-controller-manager does;
- the RBAC resources, so a chart's Roles and bindings can be stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import attrs

from . import errors, scheduling
from .resources import ResourceType
from .server import KubeEmulator

LEASE_NAMESPACE = "kube-node-lease"

_RBAC = (
    ("roles", "Role", True),
    ("rolebindings", "RoleBinding", True),
    ("clusterroles", "ClusterRole", False),
    ("clusterrolebindings", "ClusterRoleBinding", False),
)


def install(kube: KubeEmulator, *, grace_period: float) -> list[asyncio.Task[None]]:
    """Add what ``kube`` lacks; returns the background tasks to cancel at exit."""
    fields = attrs.fields_dict(KubeEmulator)
    catalog = kube.store.catalog
    for plural, kind, namespaced in _RBAC:
        if catalog.get("rbac.authorization.k8s.io", "v1", plural) is None:
            catalog.add(
                ResourceType(
                    group="rbac.authorization.k8s.io",
                    version="v1",
                    plural=plural,
                    kind=kind,
                    namespaced=namespaced,
                    singular=kind.lower(),
                )
            )
    if kube.get_object("v1/namespaces", LEASE_NAMESPACE) is None:
        kube.create_namespace(LEASE_NAMESPACE)
    tasks = []
    if "run_kubelet" not in fields:
        kube.controllers._kubelet = lambda full: None  # type: ignore[method-assign]
        # Deleted Pods on a Node stay Terminating until their kubelet confirms.
        kube.pod_termination_delay = 3600.0
    if "node_monitor_grace_period" not in fields:
        tasks.append(asyncio.create_task(_node_monitor(kube, grace_period)))
    return tasks


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    return None


def last_heartbeat(kube: KubeEmulator, node: dict[str, Any]) -> float | None:
    """The newest of the node's Lease renewal and Ready heartbeat, as seconds since the epoch."""
    name = node["metadata"]["name"]
    lease = kube.get_object("coordination.k8s.io/v1/leases", name, LEASE_NAMESPACE)
    times = [_parse_time(((lease or {}).get("spec") or {}).get("renewTime"))]
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            times.append(_parse_time(cond.get("lastHeartbeatTime")))
    known = [t for t in times if t is not None]
    return max(known) if known else _parse_time(node["metadata"].get("creationTimestamp"))


async def _node_monitor(kube: KubeEmulator, grace_period: float) -> None:
    period = max(0.2, grace_period / 8)
    while True:
        await asyncio.sleep(period)
        now = datetime.now(UTC).timestamp()
        for node in kube.list_objects("v1/nodes"):
            if scheduling.condition_status(node, "Ready") == "Unknown":
                continue
            seen = last_heartbeat(kube, node)
            if seen is not None and now - seen > grace_period:
                with contextlib.suppress(errors.ApiError):
                    kube.node_down(node["metadata"]["name"])
