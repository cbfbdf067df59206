"""OpenAPI v3 discovery (``/openapi/v3``), as much as kubectl and helm read.

kubectl 1.35 and helm 4 validate what they send (``--validate=strict``, helm's
default) by asking the server: when the PATCH operation of a kind lists the
``fieldValidation`` query parameter, they send ``fieldValidation=Strict`` and
leave the check to the server (see :mod:`.strict`); otherwise they would fall
back to a client-side check against ``/openapi/v2`` in protobuf, which is not
served. kubectl's client-side apply also reads which patch types a kind's PATCH
accepts: strategic merge for built-in kinds, JSON merge for custom resources.

Each group/version document lists, per resource, the item path with its
operations tagged ``x-kubernetes-group-version-kind``, and a schema per kind:
a CRD's ``openAPIV3Schema``, a bare object for built-in kinds (their fields are
not described; the server does not check them strictly either).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resources import ResourceType

Obj = dict[str, Any]

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"

_QUERY = ("dryRun", "fieldManager", "fieldValidation", "pretty")


def gv_path(rt: ResourceType) -> str:
    """The root's key for a resource's group/version: ``api/v1``, ``apis/apps/v1``."""
    return f"apis/{rt.group}/{rt.version}" if rt.group else f"api/{rt.version}"


def schema_name(rt: ResourceType) -> str:
    """io.k8s.api.apps.v1.Deployment; a CRD's reversed group: dev.vigil.v1alpha1.Model."""
    if rt.custom:
        return ".".join([*reversed(rt.group.split(".")), rt.version, rt.kind])
    group = (rt.group or "core").split(".")[0]
    return f"io.k8s.api.{group}.{rt.version}.{rt.kind}"


def _gvk(rt: ResourceType) -> Obj:
    return {"group": rt.group, "version": rt.version, "kind": rt.kind}


def _operation(rt: ResourceType, action: str, body: tuple[str, ...] = ()) -> Obj:
    ref = {"$ref": f"#/components/schemas/{schema_name(rt)}"}
    op: Obj = {
        "operationId": f"{action}{rt.kind}",
        "parameters": [
            {"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
            for name in _QUERY
        ],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ref}}}
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(rt),
    }
    if body:
        op["requestBody"] = {"content": {media: {"schema": ref} for media in body}}
    return op


def group_version_document(
    group_version: str, types: list[ResourceType], schemas: dict[tuple[str, str, str], Obj]
) -> Obj:
    """The document served at /openapi/v3/<group_version>."""
    paths: Obj = {}
    components: Obj = {}
    for rt in types:
        patch_types = (
            (JSON_PATCH, MERGE, APPLY) if rt.custom else (JSON_PATCH, MERGE, STRATEGIC, APPLY)
        )
        item = rt.path("{namespace}" if rt.namespaced else None, "{name}")
        paths[item] = {
            "get": _operation(rt, "get"),
            "put": _operation(rt, "put", ("*/*",)),
            "patch": _operation(rt, "patch", patch_types),
            "delete": _operation(rt, "delete"),
        }
        collection = rt.path("{namespace}" if rt.namespaced else None)
        paths[collection] = {"post": _operation(rt, "post", ("*/*",))}
        schema = dict(schemas.get(rt.key) or {"type": "object"})
        schema["x-kubernetes-group-version-kind"] = [_gvk(rt)]
        components[schema_name(rt)] = schema
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": group_version},
        "paths": paths,
        "components": {"schemas": components},
    }


def root_document(documents: dict[str, Obj]) -> Obj:
    """The index at /openapi/v3: each group/version with a content-hashed URL."""
    paths = {}
    for key, doc in sorted(documents.items()):
        digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64]
        paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest.upper()}"}
    return {"paths": paths}


def documents(
    types: list[ResourceType], schemas: dict[tuple[str, str, str], Obj]
) -> dict[str, Obj]:
    """Every served group/version's document, keyed as the root lists them."""
    by_gv: dict[str, list[ResourceType]] = {}
    for rt in types:
        by_gv.setdefault(gv_path(rt), []).append(rt)
    return {
        gv: group_version_document(gv, sorted(rts, key=lambda r: r.plural), schemas)
        for gv, rts in by_gv.items()
    }
