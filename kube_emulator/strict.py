"""``fieldValidation=Strict``: refuse what pruning would silently drop.

kubectl (``--validate=strict``, its default) and helm send it on every write.
The API server then answers 400 instead of pruning unknown fields of a custom
resource, worded as kube-apiserver words it. Built-in kinds are not described
in this emulator (:mod:`.openapi`), so only custom resources are checked.
"""

from __future__ import annotations

from typing import Any

from . import errors
from .resources import ResourceType

_ALWAYS_KEPT = ("apiVersion", "kind", "metadata")


def unknown_fields(schema: dict[str, Any], obj: Any) -> list[str]:
    """Dotted paths of the fields the structural schema does not declare."""
    found: list[str] = []
    _walk(schema, obj, "", found, root=True)
    return found


def _walk(
    schema: dict[str, Any], value: Any, path: str, found: list[str], root: bool = False
) -> None:
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields") or additional is True
        embedded = root or schema.get("x-kubernetes-embedded-resource")
        for key, sub in value.items():
            where = f"{path}.{key}" if path else key
            if embedded and key in _ALWAYS_KEPT:
                continue
            if key in props:
                _walk(props[key], sub, where, found)
            elif isinstance(additional, dict):
                _walk(additional, sub, where, found)
            elif not keep_unknown and (props or schema.get("type") == "object"):
                found.append(where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _walk(schema["items"], item, f"{path}[{i}]", found)


def check(rt: ResourceType, schema: dict[str, Any] | None, obj: Any) -> None:
    """Raise the API server's 400 when ``obj`` has fields ``schema`` does not declare."""
    if not schema or not isinstance(obj, dict):
        return
    unknown = unknown_fields(schema, obj)
    if unknown:
        listed = ", ".join(f'unknown field "{path}"' for path in unknown)
        raise errors.bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            f"strict decoding error: {listed}"
        )
