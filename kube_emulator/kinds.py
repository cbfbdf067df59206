"""Per-kind defaulting and validation, the subset an operator would trip over.

Real registries default and validate far more; these are the rules that
catch an operator's bugs early: a Deployment whose selector does not match
its template, an invalid name, a change to an immutable field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import crd_admission, selectors
from .resources import ResourceType

if TYPE_CHECKING:
    from .store import ObjectStore

Obj = dict[str, Any]
_POD_MUTABLE_SPEC = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")


def _is(rt: ResourceType, group: str, kind: str) -> bool:
    return rt.group == group and rt.kind == kind and not rt.custom


def qos_class(pod: Obj) -> str:
    containers = pod.get("spec", {}).get("containers") or []
    requests = [c.get("resources", {}).get("requests") or {} for c in containers]
    limits = [c.get("resources", {}).get("limits") or {} for c in containers]
    if not any(requests) and not any(limits):
        return "BestEffort"
    guaranteed = all(
        lim.get("cpu") and lim.get("memory") and {**lim, **req} == lim
        for req, lim in zip(requests, limits, strict=True)
    )
    return "Guaranteed" if guaranteed else "Burstable"


def prepare_create(rt: ResourceType, obj: Obj, store: ObjectStore) -> None:
    spec = obj.setdefault("spec", {}) if not rt.custom and rt.kind not in _SPECLESS else None
    if _is(rt, "", "Namespace"):
        assert spec is not None
        spec.setdefault("finalizers", ["kubernetes"])
        obj["status"] = {"phase": "Active"}
    elif _is(rt, "", "Pod"):
        assert spec is not None
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        _default_tolerations(spec, store.default_toleration_seconds)
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(obj)}
    elif _is(rt, "apps", "Deployment"):
        assert spec is not None
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            strategy["type"] = "RollingUpdate"
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxSurge", "25%")
            rolling.setdefault("maxUnavailable", "25%")
    elif _is(rt, "", "Service"):
        assert spec is not None
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if not spec.get("clusterIP"):
            n = store.random.randrange(1, 65_000)
            spec["clusterIP"] = f"10.96.{n // 256}.{n % 256}"
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    elif _is(rt, "apiextensions.k8s.io", "CustomResourceDefinition"):
        assert spec is not None
        names = spec.get("names", {})
        versions = spec.get("versions") or []
        obj["status"] = {
            "acceptedNames": {k: v for k, v in names.items() if k != "listKind"},
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
            ],
            "storedVersions": [v["name"] for v in versions if v.get("storage")],
        }


def _default_tolerations(spec: Obj, seconds: int) -> None:
    """The DefaultTolerationSeconds admission plugin: how long a pod outlives its node."""
    tolerations = spec.get("tolerations") or []
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(
            t.get("key") in (key, None, "") and t.get("effect") in ("NoExecute", None, "")
            for t in tolerations
        ):
            tolerations.append(
                {
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": seconds,
                }
            )
    if tolerations:
        spec["tolerations"] = tolerations


_SPECLESS = {
    "Event",
    "ConfigMap",
    "Secret",
    "ServiceAccount",
    "Endpoints",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
}


def validate(rt: ResourceType, obj: Obj) -> list[tuple[str, str]]:
    causes: list[tuple[str, str]] = []
    spec = obj.get("spec") or {}
    if _is(rt, "apps", "Deployment"):
        selector = spec.get("selector")
        template_labels = (spec.get("template") or {}).get("metadata", {}).get("labels") or {}
        if not selector:
            causes.append(("spec.selector", "Required value"))
        else:
            try:
                reqs = selectors.selector_from_object(selector)
            except selectors.SelectorError as e:
                causes.append(("spec.selector", f"Invalid value: {e}"))
            else:
                if not reqs:
                    causes.append(("spec.selector", "Invalid value: empty selector is invalid"))
                elif not selectors.matches(reqs, template_labels):
                    causes.append(
                        (
                            "spec.template.metadata.labels",
                            f"Invalid value: {template_labels}: `selector` does not match "
                            "template `labels`",
                        )
                    )
        if not isinstance(spec.get("replicas", 1), int) or spec.get("replicas", 1) < 0:
            causes.append(("spec.replicas", "Invalid value: must be a non-negative integer"))
        causes += _containers((spec.get("template") or {}).get("spec") or {}, "spec.template.spec")
    elif _is(rt, "", "Pod"):
        causes += _containers(spec, "spec")
    elif _is(rt, "policy", "PodDisruptionBudget"):
        if "minAvailable" in spec and "maxUnavailable" in spec:
            causes.append(
                ("spec", "Invalid value: minAvailable and maxUnavailable cannot be both set")
            )
    elif _is(rt, "apiextensions.k8s.io", "CustomResourceDefinition"):
        causes += crd_admission.admission_causes(obj)
        names = spec.get("names") or {}
        expected = f"{names.get('plural')}.{spec.get('group')}"
        if obj["metadata"]["name"] != expected:
            causes.append(
                (
                    "metadata.name",
                    f'Invalid value: must be spec.names.plural+"."+spec.group: "{expected}"',
                )
            )
        if not spec.get("versions"):
            causes.append(("spec.versions", "Required value"))
    return causes


def _containers(pod_spec: Obj, where: str) -> list[tuple[str, str]]:
    containers = pod_spec.get("containers") or []
    if not containers:
        return [(f"{where}.containers", "Required value")]
    causes = []
    for i, container in enumerate(containers):
        if not container.get("name"):
            causes.append((f"{where}.containers[{i}].name", "Required value"))
        if not container.get("image"):
            causes.append((f"{where}.containers[{i}].image", "Required value"))
    return causes


def validate_update(rt: ResourceType, new: Obj, old: Obj, scope: str) -> list[tuple[str, str]]:
    causes: list[tuple[str, str]] = []
    if _is(rt, "apps", "Deployment"):
        if (new.get("spec") or {}).get("selector") != (old.get("spec") or {}).get("selector"):
            causes.append(("spec.selector", "Invalid value: field is immutable"))
    elif _is(rt, "", "Pod") and scope == "main":
        new_spec = dict(new.get("spec") or {})
        old_spec = dict(old.get("spec") or {})
        for key in _POD_MUTABLE_SPEC:
            new_spec.pop(key, None)
            old_spec.pop(key, None)
        for spec in (new_spec, old_spec):
            spec["containers"] = [
                {k: v for k, v in c.items() if k != "image"} for c in spec.get("containers") or []
            ]
        if new_spec != old_spec:
            causes.append(
                (
                    "spec",
                    "Forbidden: pod updates may not change fields other than "
                    "`spec.containers[*].image`, `spec.activeDeadlineSeconds`, "
                    "`spec.tolerations` (only additions to existing tolerations), "
                    "`spec.terminationGracePeriodSeconds`",
                )
            )
    elif _is(rt, "", "Service"):
        new_spec, old_spec = new.setdefault("spec", {}), old.get("spec") or {}
        if not new_spec.get("clusterIP") and old_spec.get("clusterIP"):
            new_spec["clusterIP"] = old_spec["clusterIP"]
            new_spec.setdefault("clusterIPs", old_spec.get("clusterIPs"))
        elif new_spec.get("clusterIP") != old_spec.get("clusterIP"):
            causes.append(("spec.clusterIP", "Invalid value: field is immutable"))
    elif _is(rt, "", "Namespace"):
        old_finalizers = (old.get("spec") or {}).get("finalizers")
        if old_finalizers is not None and scope != "all":
            new.setdefault("spec", {})["finalizers"] = old_finalizers
    return causes
