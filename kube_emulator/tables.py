"""``meta.k8s.io/v1`` Tables for custom resources: what ``kubectl get`` prints.

kubectl asks for ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and
prints the server's columns: for a CRD, Name and its
``additionalPrinterColumns`` (``date`` columns as ages, as kube-apiserver
renders them), or Name and Created At without any. Only simple JSONPaths
(``.spec.minUnits``) are resolved. Built-in kinds get no Table; kubectl then
prints names only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

_NAME = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace.",
    "priority": 0,
}
_CREATED = {"name": "Created At", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def wants_table(accept: str) -> bool:
    return any(
        "as=Table" in part and "g=meta.k8s.io" in part and "v=v1" in part
        for part in accept.split(",")
    )


def printer_columns(crd: Obj | None, version: str) -> list[Obj]:
    for served in ((crd or {}).get("spec") or {}).get("versions") or []:
        if served.get("name") == version:
            return list(served.get("additionalPrinterColumns") or [_CREATED])
    return [_CREATED]


def _resolve(obj: Any, path: str) -> Any:
    for key in path.strip().lstrip(".").split("."):
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration, as ``kubectl get`` shows ages."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    hours = s // 3600
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    return f"{days}d{hours % 24}h" if days < 8 and hours % 24 else f"{days}d"


def _cell(column: Obj, obj: Obj) -> Any:
    value = _resolve(obj, column.get("jsonPath", ""))
    if column.get("type") == "date" and isinstance(value, str):
        began = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return human_duration((datetime.now(UTC) - began).total_seconds())
    return value


def table(objects: list[Obj], columns: list[Obj], resource_version: str, whole: bool) -> Obj:
    """The Table of ``objects``; rows carry the object, or only its metadata."""
    definitions = [_NAME] + [
        {
            "name": c["name"],
            "type": c.get("type", "string"),
            "format": c.get("format", ""),
            "description": c.get("description", ""),
            "priority": c.get("priority", 0),
        }
        for c in columns
    ]
    rows = [
        {
            "cells": [obj["metadata"]["name"], *(_cell(c, obj) for c in columns)],
            "object": obj
            if whole
            else {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            },
        }
        for obj in objects
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }
