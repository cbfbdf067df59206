"""The resource catalog: what discovery lists and how each resource behaves.

Built-in resources are the ones an operator of Vigil touches (and kopf scans);
custom resources come from CustomResourceDefinition objects, created through
the API like on a real cluster, so the project's own CRD file can be applied.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = {
    "status": ("get", "patch", "update"),
    "scale": ("get", "patch", "update"),
    "eviction": ("create",),
    "binding": ("create",),
    "finalize": ("update",),
    "token": ("create",),
}
_SUBRESOURCE_KINDS = {
    "scale": ("Scale", "autoscaling", "v1"),
    "eviction": ("Eviction", "policy", "v1"),
    "binding": ("Binding", "", ""),
    "token": ("TokenRequest", "authentication.k8s.io", "v1"),
}

# The repository root, to find the project's CRD (the schema's single source of truth).
REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_CRD_PATH = REPO_ROOT / "crds" / "models.vigil.dev.yaml"
RBAC = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class ResourceType:
    """One served group/version/plural with the traits that change API semantics."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    # Selectable fields beyond metadata.name / metadata.namespace, as the real registry allows.
    fields: frozenset[str] = frozenset()
    # DNS rule for names: "subdomain" (most), "label" (namespaces), "label1035" (services).
    name_rule: str = "subdomain"
    custom: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def display(self) -> str:
        """How the API server names the resource in messages: ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [root]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        return "/".join(parts)

    def matches(self, text: str) -> bool:
        """Whether a user-facing spelling names this resource.

        Accepted: ``apps/v1/deployments``, ``v1/pods``, ``deployments.apps``,
        ``deployments``, ``deployment``, ``Deployment``, short names (``deploy``).
        """
        if "/" in text:
            return f"{self.api_version}/{self.plural}" == text
        if "." in text:
            return self.display == text or f"{self.plural}.{self.version}.{self.group}" == text
        return text in (self.plural, self.singular, self.kind, *self.short_names)

    def discovery(self) -> list[dict[str, Any]]:
        """Entries of this resource (and its subresources) in an APIResourceList."""
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(ALL_VERBS),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries = [main]
        for sub in sorted(self.subresources):
            kind, group, version = _SUBRESOURCE_KINDS.get(sub, (self.kind, "", ""))
            entry: dict[str, Any] = {
                "name": f"{self.plural}/{sub}",
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": kind,
                "verbs": list(SUBRESOURCE_VERBS.get(sub, ("get",))),
            }
            if group:
                entry["group"], entry["version"] = group, version
            entries.append(entry)
        return entries


_POD_FIELDS = frozenset(
    {
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    }
)
_EVENT_FIELDS = frozenset(
    {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    }
)
_NEW_EVENT_FIELDS = frozenset(
    {
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "regarding.apiVersion",
        "reason",
        "reportingController",
        "type",
    }
)


def _rt(
    gv: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    short: Iterable[str] = (),
    subs: Iterable[str] = ("status",),
    fields: Iterable[str] = (),
    categories: Iterable[str] = (),
    name_rule: str = "subdomain",
) -> ResourceType:
    group, _, version = gv.rpartition("/")
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        singular=kind.lower(),
        short_names=tuple(short),
        categories=tuple(categories),
        subresources=frozenset(subs),
        fields=frozenset(fields),
        name_rule=name_rule,
    )


BUILTIN_RESOURCES: tuple[ResourceType, ...] = (
    _rt(
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        short=["ns"],
        subs=["status", "finalize"],
        fields=["status.phase"],
        name_rule="label",
    ),
    _rt(
        "v1",
        "nodes",
        "Node",
        namespaced=False,
        short=["no"],
        fields=["spec.unschedulable"],
    ),
    _rt(
        "v1",
        "pods",
        "Pod",
        short=["po"],
        subs=["status", "eviction", "binding"],
        fields=_POD_FIELDS,
        categories=["all"],
    ),
    _rt(
        "v1",
        "services",
        "Service",
        short=["svc"],
        fields=["spec.clusterIP", "spec.type"],
        categories=["all"],
        name_rule="label1035",
    ),
    _rt("v1", "endpoints", "Endpoints", short=["ep"], subs=()),
    _rt("v1", "events", "Event", short=["ev"], subs=(), fields=_EVENT_FIELDS),
    _rt("v1", "configmaps", "ConfigMap", short=["cm"], subs=()),
    _rt("v1", "secrets", "Secret", subs=(), fields=["type"]),
    _rt("v1", "serviceaccounts", "ServiceAccount", short=["sa"], subs=["token"]),
    _rt("v1", "persistentvolumeclaims", "PersistentVolumeClaim", short=["pvc"]),
    _rt(
        "apps/v1",
        "deployments",
        "Deployment",
        short=["deploy"],
        subs=["status", "scale"],
        categories=["all"],
    ),
    _rt(
        "apps/v1",
        "replicasets",
        "ReplicaSet",
        short=["rs"],
        subs=["status", "scale"],
        fields=["status.replicas"],
        categories=["all"],
    ),
    _rt(
        "apps/v1",
        "statefulsets",
        "StatefulSet",
        short=["sts"],
        subs=["status", "scale"],
        categories=["all"],
    ),
    _rt("apps/v1", "daemonsets", "DaemonSet", short=["ds"], categories=["all"]),
    _rt("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", short=["pdb"]),
    _rt("events.k8s.io/v1", "events", "Event", short=["ev"], subs=(), fields=_NEW_EVENT_FIELDS),
    _rt("coordination.k8s.io/v1", "leases", "Lease", subs=()),
    *(
        _rt(f"{RBAC}/v1", plural, kind, namespaced=namespaced, subs=(), name_rule="path")
        for plural, kind, namespaced in (
            ("roles", "Role", True),
            ("rolebindings", "RoleBinding", True),
            ("clusterroles", "ClusterRole", False),
            ("clusterrolebindings", "ClusterRoleBinding", False),
        )
    ),
    _rt(
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short=["crd", "crds"],
    ),
)


def crd_resource_types(crd: Mapping[str, Any]) -> list[tuple[ResourceType, dict[str, Any]]]:
    """The served versions of a CRD, each with its openAPIV3Schema (may be empty)."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    result = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        subs = version.get("subresources") or spec.get("subresources") or {}
        schema = (version.get("schema") or spec.get("validation") or {}).get("openAPIV3Schema", {})
        rt = ResourceType(
            group=spec["group"],
            version=version["name"],
            plural=names["plural"],
            kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            singular=names.get("singular") or names["kind"].lower(),
            short_names=tuple(names.get("shortNames", ())),
            categories=tuple(names.get("categories", ())),
            subresources=frozenset(key for key in ("status", "scale") if key in subs),
            custom=True,
        )
        result.append((rt, copy.deepcopy(schema)))
    return result


# A permissive stand-in used only while crds/models.vigil.dev.yaml does not exist yet.
BUILTIN_MODEL_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "models.vigil.dev"},
    "spec": {
        "group": "vigil.dev",
        "scope": "Namespaced",
        "names": {
            "plural": "models",
            "singular": "model",
            "kind": "Model",
            "listKind": "ModelList",
        },
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}


def model_crd() -> dict[str, Any]:
    """The project's Model CRD if it exists, else the permissive stand-in."""
    if MODEL_CRD_PATH.exists():
        return load_crd(MODEL_CRD_PATH)
    return copy.deepcopy(BUILTIN_MODEL_CRD)


def load_crd(path: Path) -> dict[str, Any]:
    """The first CustomResourceDefinition document in a YAML file."""
    with path.open(encoding="utf-8") as f:
        for doc in yaml.safe_load_all(f):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                return doc
    raise ValueError(f"{path}: no CustomResourceDefinition document")


@dataclass
class Catalog:
    """The served resources, keyed by (group, version, plural), with CRD schemas."""

    types: dict[tuple[str, str, str], ResourceType] = field(default_factory=dict)
    schemas: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def builtin(cls) -> Catalog:
        return cls({rt.key: rt for rt in BUILTIN_RESOURCES})

    def add(self, rt: ResourceType, schema: dict[str, Any] | None = None) -> None:
        self.types[rt.key] = rt
        if schema:
            self.schemas[rt.key] = schema
        else:
            self.schemas.pop(rt.key, None)

    def remove(self, rt: ResourceType) -> None:
        self.types.pop(rt.key, None)
        self.schemas.pop(rt.key, None)

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get((group, version, plural))

    def find(self, text: str) -> ResourceType:
        """Resolve a user-facing spelling; core v1 wins ties (``events``)."""
        found = [rt for rt in self.types.values() if rt.matches(text)]
        if not found:
            raise KeyError(f"unknown resource {text!r}")
        found.sort(key=lambda rt: (rt.group != "", rt.group, rt.version))
        return found[0]

    def groups(self) -> dict[str, list[str]]:
        """Group name -> served versions (preferred first), the core group excluded."""
        result: dict[str, list[str]] = {}
        for rt in self.types.values():
            if rt.group and rt.version not in result.setdefault(rt.group, []):
                result[rt.group].append(rt.version)
        return result

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return sorted(
            (rt for rt in self.types.values() if rt.group == group and rt.version == version),
            key=lambda rt: rt.plural,
        )
