"""The API server's checks of a Model, without an API server.

Given the CRD (as a dict; reading the file is the caller's business), this
applies the schema's defaults, validates the result against the structural
schema turned into JSON Schema (unknown fields rejected, as kubectl's strict
field validation does), and evaluates every `x-kubernetes-validations` CEL rule
at its place in the object, with `oldSelf` for transition rules on updates.
The local runtime uses it so `vigil local apply` refuses what `kubectl apply`
refuses; the tests use it to prove every rule in the CRD live.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import celpy
import jsonschema
from celpy import celtypes
from celpy.evaluation import CELEvalError

_MISSING: Any = object()


@dataclass(frozen=True)
class Rule:
    """One CEL rule and the schema node it sits on; `path` uses `[]`/`{}` for items."""

    path: str
    rule: str
    message: str
    schema: Mapping[str, Any]

    @property
    def transition(self) -> bool:
        return "oldSelf" in self.rule


def to_json_schema(node: Mapping[str, Any]) -> dict[str, Any]:
    """A structural OpenAPI v3 schema as Draft 2020-12 JSON Schema, without the
    Kubernetes extensions; objects with properties refuse unknown fields."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("default", "description", "format"):
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = to_json_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [to_json_schema(sub) for sub in value]
        else:
            out[key] = copy.deepcopy(value)
    if node.get("nullable"):
        out.pop("nullable")
        out["type"] = [out["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def apply_defaults(node: Mapping[str, Any], value: Any) -> Any:
    """Structural defaulting: a missing property with a default gets it, then the
    defaults inside it (so `default: {}` fills an object's own defaults)."""
    if isinstance(value, dict):
        for name, sub in (node.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
        extra = node.get("additionalProperties")
        if isinstance(extra, Mapping):
            for name in value:
                if name not in (node.get("properties") or {}):
                    value[name] = apply_defaults(extra, value[name])
    elif isinstance(value, list) and isinstance(node.get("items"), Mapping):
        return [apply_defaults(node["items"], item) for item in value]
    return value


def to_cel(node: Mapping[str, Any], value: Any) -> Any:
    """A JSON value as CEL sees it under its schema (numbers of `type: number` are doubles)."""
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int) and node.get("type") != "number":
        return celtypes.IntType(value)
    if isinstance(value, int | float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, list):
        items = node.get("items") or {}
        return celtypes.ListType([to_cel(items, v) for v in value])
    if isinstance(value, dict):
        props = node.get("properties") or {}
        extra = node.get("additionalProperties")
        return celtypes.MapType(
            {
                celtypes.StringType(k): to_cel(
                    props.get(k, extra if isinstance(extra, Mapping) else {}), v
                )
                for k, v in value.items()
            }
        )
    return None


def _iter_rules(node: Mapping[str, Any], path: str) -> Iterator[Rule]:
    for rule in node.get("x-kubernetes-validations") or []:
        message = rule.get("message") or f"failed rule: {rule['rule']}"
        yield Rule(path, rule["rule"], " ".join(message.split()), node)
    for name, sub in (node.get("properties") or {}).items():
        yield from _iter_rules(sub, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), Mapping):
        yield from _iter_rules(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), Mapping):
        yield from _iter_rules(node["additionalProperties"], f"{path}{{}}")


class ModelValidator:
    """Defaulting, schema and CEL validation of one CRD version's objects."""

    def __init__(self, crd: Mapping[str, Any], version: str = "v1alpha1") -> None:
        versions = {v["name"]: v for v in crd["spec"]["versions"]}
        self._compile(versions[version]["schema"]["openAPIV3Schema"])

    @classmethod
    def of_schema(cls, schema: Mapping[str, Any]) -> ModelValidator:
        """A validator of one openAPIV3Schema (the API server emulator holds schemas)."""
        validator = cls.__new__(cls)
        validator._compile(schema)
        return validator

    def _compile(self, schema: Mapping[str, Any]) -> None:
        self.schema: Mapping[str, Any] = schema
        self.rules = list(_iter_rules(self.schema, ""))
        self._json = jsonschema.Draft202012Validator(to_json_schema(self.schema))
        env = celpy.Environment()
        self._programs = {r.rule: env.program(env.compile(r.rule)) for r in self.rules}

    def default(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `obj` with the schema's defaults applied."""
        out: dict[str, Any] = apply_defaults(self.schema, copy.deepcopy(dict(obj)))
        return out

    def errors(self, obj: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[str]:
        """Every reason the API server would refuse `obj` (an update of `old`), as
        "path: message"; empty when it would accept it. Defaults are applied first."""
        new = self.default(obj)
        found = [
            f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in sorted(self._json.iter_errors(new), key=lambda e: list(e.absolute_path))
        ]
        before = self.default(old) if old is not None else _MISSING
        found += [
            f"{path or '<root>'}: {reason}"
            for path, _, reason in self._check(self.schema, _cel_root(new), _cel_root(before), "")
        ]
        return found

    def rule_failures(
        self, obj: Mapping[str, Any], old: Mapping[str, Any] | None = None, *, ratchet: bool = False
    ) -> list[tuple[str, Rule, str]]:
        """(path, rule, reason) of every CEL rule `obj` (defaults applied) breaks, transition
        rules against `old` on updates; the API server reports them one by one.
        `ratchet`: values an update leaves as they were are not re-checked
        (the API server's validation ratcheting, GA in Kubernetes 1.33)."""
        before = _cel_root(dict(old)) if old is not None else _MISSING
        return self._check(self.schema, _cel_root(dict(obj)), before, "", ratchet)

    def evaluate(self, rule: Rule, value: Any, old: Any = _MISSING) -> bool:
        """One rule against a value at its place; an evaluation error counts as a failure."""
        return self.failure(rule, value, old) is None

    def failure(self, rule: Rule, value: Any, old: Any = _MISSING) -> str | None:
        """Why `rule` refuses `value`, worded as the API server words it (an evaluation
        error such as a missing field is "no such key: X evaluating rule: MESSAGE");
        None when it holds."""
        activation = {"self": to_cel(rule.schema, value)}
        if old is not _MISSING:
            activation["oldSelf"] = to_cel(rule.schema, old)
        try:
            result = self._programs[rule.rule].evaluate(activation)
        except CELEvalError as exc:
            return f"{_cel_error(exc)} evaluating rule: {rule.message}"
        if isinstance(result, celtypes.BoolType) and bool(result):
            return None
        return rule.message

    def check(self, node: Mapping[str, Any], value: Any, path: str = "") -> list[str]:
        """The CEL rules of `node` and of the nodes below it against `value` as it
        stands (no defaults filled in), as "path: reason": how the API server checks
        a `default` when a CRD is created."""
        return [f"{p or '<root>'}: {why}" for p, _, why in self._check(node, value, _MISSING, path)]

    def _check(
        self, node: Mapping[str, Any], value: Any, old: Any, path: str, ratchet: bool = False
    ) -> list[tuple[str, Rule, str]]:
        if ratchet and value == old:
            return []
        found = []
        for rule in (r for r in self.rules if r.schema is node):
            if rule.transition and old is _MISSING:
                continue
            reason = self.failure(rule, value, old)
            if reason is not None:
                found.append((path, rule, reason))
        if isinstance(value, dict):
            props = node.get("properties") or {}
            extra = node.get("additionalProperties")
            for key, sub_value in value.items():
                sub = props.get(key, extra if isinstance(extra, Mapping) else None)
                if sub is None:
                    continue
                sub_old = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
                found += self._check(
                    sub, sub_value, sub_old, f"{path}.{key}" if path else key, ratchet
                )
        elif isinstance(value, list) and isinstance(node.get("items"), Mapping):
            olds = _correlate(node, value, old)
            for i, item in enumerate(value):
                found += self._check(node["items"], item, olds[i], f"{path}[{i}]", ratchet)
        return found


def _cel_error(exc: CELEvalError) -> str:
    """cel-python's evaluation error in cel-go's words, which the API server shows."""
    text = str(exc.args[0]) if exc.args else str(exc)
    missing = re.fullmatch(r"no such member in mapping: '(.*)'", text)
    return f"no such key: {missing.group(1)}" if missing else text


def _cel_root(obj: Any) -> Any:
    """At the root CEL sees only metadata.name and metadata.generateName."""
    if obj is _MISSING:
        return obj
    meta = obj.get("metadata") or {}
    return {**obj, "metadata": {k: meta[k] for k in ("name", "generateName") if k in meta}}


def _correlate(node: Mapping[str, Any], value: list[Any], old: Any) -> list[Any]:
    """The old item of each new one: only map-type lists correlate, by their keys."""
    keys = node.get("x-kubernetes-list-map-keys")
    if node.get("x-kubernetes-list-type") != "map" or not keys or not isinstance(old, list):
        return [_MISSING] * len(value)
    index = {tuple(o.get(k) for k in keys): o for o in old if isinstance(o, dict)}
    return [
        index.get(tuple(v.get(k) for k in keys), _MISSING) if isinstance(v, dict) else _MISSING
        for v in value
    ]
