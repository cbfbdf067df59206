"""CRD structural schemas: pruning, defaulting and OpenAPI validation.

The API server drops fields a CRD's schema does not declare (unless
``x-kubernetes-preserve-unknown-fields``), fills ``default:`` values, and
rejects objects that break the schema with a 422. An operator can come to
rely on all three without noticing, so the emulator does them too, and
evaluates the schema's CEL rules (``x-kubernetes-validations``, transition
rules against the old object on updates, values an update leaves unchanged
not re-checked as with the API server's ratcheting) with the operator's own evaluator
(:class:`vigil_operator.core.crd.ModelValidator`), worded as the API server
words them: ``spec: Invalid value: "object": <the rule's message>``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from vigil_operator.core.crd import ModelValidator

_ALWAYS_KEPT = ("apiVersion", "kind", "metadata")
Validator = Callable[[dict[str, Any], dict[str, Any] | None], list[tuple[str, str]]]


def prune_and_default(schema: dict[str, Any], obj: dict[str, Any]) -> None:
    _walk(schema, obj, root=True)


def _walk(schema: dict[str, Any], value: Any, *, root: bool = False) -> None:
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and isinstance(sub, dict) and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        additional = schema.get("additionalProperties")
        keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields") or additional is True
        embedded = root or schema.get("x-kubernetes-embedded-resource")
        for key in list(value):
            if embedded and key in _ALWAYS_KEPT:
                continue
            if key in props:
                _walk(props[key], value[key])
            elif isinstance(additional, dict):
                _walk(additional, value[key])
            elif not keep_unknown and (props or schema.get("type") == "object"):
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _walk(schema["items"], item)


def _to_json_schema(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "format", "default"):
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: _to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_to_json_schema(sub) for sub in value]
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if schema.get("x-kubernetes-embedded-resource"):
        out.get("properties", {}).pop("metadata", None)  # the API server checks metadata itself
    return out


def validate(
    schema: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None
) -> list[tuple[str, str]]:
    """(field, message) pairs for what breaks the schema, worded like the API server."""
    return compile_validator(schema)(obj, old)


def compile_validator(schema: dict[str, Any]) -> Validator:
    """:func:`validate` for one schema, converted once (callers cache it per schema)."""
    import jsonschema

    rules = ModelValidator.of_schema(schema)
    json_schema = _to_json_schema({**schema, "x-kubernetes-embedded-resource": True})
    validator = jsonschema.Draft7Validator(json_schema)

    def check(obj: dict[str, Any], old: dict[str, Any] | None) -> list[tuple[str, str]]:
        causes = []
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in error.absolute_path) or "<root>"
            causes.append((path, f"Invalid value: {error.instance!r}: {error.message}"))
        if causes:  # rules may assume the schema's types: evaluated on valid objects only
            return causes
        for path, rule, reason in rules.rule_failures(obj, old, ratchet=True):
            kind = rule.schema.get("type", "object")
            causes.append((path or "<nil>", f'Invalid value: "{kind}": {reason}'))
        return causes

    return check
