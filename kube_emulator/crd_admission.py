"""What kube-apiserver checks when a CustomResourceDefinition is created or
updated, so that a CRD a real cluster refuses is refused here too.

`admission_causes` reproduces the apiextensions checks that have bitten us or
are cheap to get right, worded as the server words them (the field path is
`spec.validation.openAPIV3Schema...` when every version shares one schema, as
the server's internal form has it):

- the schema is structural: every field typed (or int-or-string /
  preserve-unknown-fields), nothing but validation inside anyOf/allOf/oneOf/not
  (the int-or-string `anyOf: [{type: integer}, {type: string}]` aside), the root
  `metadata` restricted to name and generateName;
- every `default` validates against its own subschema, including its CEL rules
  and those below it, *as written*: nested defaults are not filled in first
  (a real v1.36 server refused `scaling: {default: {}}` under a rule reading
  `self.target` with "no such key: target evaluating rule: ...");
- every CEL rule compiles; `oldSelf` only where old and new correlate (not
  under the items of an atomic list);
- rules stay inside the CEL cost budget: a rule that iterates a list, map or
  string (`all`, `exists`, `map`, `matches`, `size`, ...) needs a bound
  (`maxItems`, `maxProperties`, `maxLength`) on what it iterates, and on the
  strings inside an iterated list. This is a conservative stand-in for the
  server's cost estimator, which multiplies those bounds: a rule refused here
  may pass there only if the server's estimate is looser, never the reverse
  for unbounded inputs;
- map-type lists key on required (or defaulted) scalar fields;
- printer columns have JSONPaths the server can parse.

`lint_causes` adds what a careful author checks but the server does not: rules
guard optional fields with `has()` (an unguarded read fails at request time
with "no such key" wherever defaulting did not fill the field), and printer
columns point at fields the schema has. The emulator refuses on
`admission_causes` only, so it refuses no CRD a real cluster accepts; the
tests hold our CRD to both.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import celpy
import jsonschema
from celpy import CELParseError

from vigil_operator.core.crd import ModelValidator, to_json_schema

Cause = tuple[str, str]  # (field, "Invalid value: ..." / "Forbidden: ..." / ...)

_BRANCHES = ("anyOf", "allOf", "oneOf", "not")
_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]
_NOT_IN_BRANCHES = ("type", "default", "description", "nullable", "additionalProperties")
_ITERATING = re.compile(
    r"\.(all|exists|exists_one|map|filter|matches|contains|startsWith|endsWith|split|"
    r"indexOf|lastIndexOf|find|findAll|replace|join)\("
)
_COST_HINT = (
    "estimated rule cost exceeds budget by factor of more than 100x (try simplifying the "
    "rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and "
    "strings are declared)"
)
_JSONPATH = re.compile(r"^\.[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*|\[\d+\])*$")


def admission_causes(crd: Mapping[str, Any]) -> list[Cause]:
    """Every reason kube-apiserver would refuse `crd`, as (field, detail) pairs."""
    causes: list[Cause] = []
    versions = list((crd.get("spec") or {}).get("versions") or [])
    schemas = [((v.get("schema") or {}).get("openAPIV3Schema")) for v in versions]
    shared = len(versions) > 0 and all(s == schemas[0] for s in schemas)
    for i, (version, schema) in enumerate(zip(versions, schemas, strict=True)):
        if not isinstance(schema, Mapping):
            causes.append((f"spec.versions[{i}].schema.openAPIV3Schema", "Required value"))
            continue
        if shared and i > 0:
            continue  # one shared schema is checked (and reported) once
        base = (
            "spec.validation.openAPIV3Schema"
            if shared
            else (f"spec.versions[{i}].schema.openAPIV3Schema")
        )
        causes += _structural(schema, base)
        causes += _rules(schema, base)
        if not causes:  # defaults are checked against a well-formed schema only
            causes += _defaults(schema, base)
        for j, column in enumerate(version.get("additionalPrinterColumns") or []):
            path = column.get("jsonPath", "")
            if not _JSONPATH.match(path):
                field = f"spec.versions[{i}].additionalPrinterColumns[{j}].jsonPath"
                causes.append((field, f'Invalid value: "{path}": must be a simple json path'))
    return causes


def lint_causes(crd: Mapping[str, Any]) -> list[Cause]:
    """What the server lets through but fails users: unguarded optional reads in
    rules, printer columns pointing at nothing."""
    causes: list[Cause] = []
    for i, version in enumerate((crd.get("spec") or {}).get("versions") or []):
        schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
        base = f"spec.versions[{i}].schema.openAPIV3Schema"
        for path, node in _nodes(schema, base):
            for k, rule in enumerate(node.get("x-kubernetes-validations") or []):
                for field in _unguarded(rule["rule"], node, root=path == base):
                    causes.append(
                        (
                            f"{path}.x-kubernetes-validations[{k}].rule",
                            f"Invalid value: {rule['rule']!r}: reads optional field "
                            f"self.{field} without has(self.{field})",
                        )
                    )
        for j, column in enumerate(version.get("additionalPrinterColumns") or []):
            path = column.get("jsonPath", "")
            if path.startswith(".metadata."):
                continue
            if _resolve(schema, path) is None:
                causes.append(
                    (
                        f"spec.versions[{i}].additionalPrinterColumns[{j}].jsonPath",
                        f'Invalid value: "{path}": no such field in the schema',
                    )
                )
    return causes


def refusal_message(name: str, causes: list[Cause]) -> str:
    """The Status message of the 422, as the server writes it."""
    text = ", ".join(f"{field}: {detail}" for field, detail in causes)
    joined = f"[{text}]" if len(causes) > 1 else text
    return f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: {joined}'


# --- checks ------------------------------------------------------------------------------


def _nodes(node: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every schema node reachable through properties, items and additionalProperties."""
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        if isinstance(sub, Mapping):
            yield from _nodes(sub, f"{path}.properties[{name}]")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), Mapping):
            yield from _nodes(node[key], f"{path}.{key}")


def _structural(schema: Mapping[str, Any], base: str) -> list[Cause]:
    causes: list[Cause] = []
    for path, node in _nodes(schema, base):
        loose = node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        if not node.get("type") and not loose:
            causes.append(
                (f"{path}.type", "Required value: must not be empty for specified object fields")
            )
        for key in _BRANCHES:
            branches = node.get(key)
            if branches is None:
                continue
            listed = branches if isinstance(branches, list) else [branches]
            if (
                key == "anyOf"
                and node.get("x-kubernetes-int-or-string")
                and (listed == _INT_OR_STRING)
            ):
                continue
            for b, branch in enumerate(listed):
                for forbidden in _NOT_IN_BRANCHES:
                    if forbidden in branch:
                        causes.append(
                            (
                                f"{path}.{key}[{b}].{forbidden}",
                                "Forbidden: must be empty to be structural",
                            )
                        )
    meta = (schema.get("properties") or {}).get("metadata")
    if isinstance(meta, Mapping):
        extra = set(meta.get("properties") or {}) - {"name", "generateName"}
        extra |= set(meta) - {"type", "properties", "description"}
        if extra:
            causes.append(
                (
                    f"{base}.properties[metadata]",
                    "Forbidden: must not specify anything other than name and "
                    "generateName, but metadata is implicitly specified",
                )
            )
    for path, node in _nodes(schema, base):
        keys = node.get("x-kubernetes-list-map-keys") or []
        items = node.get("items") or {}
        for key in keys:
            field = (items.get("properties") or {}).get(key) or {}
            if key not in (items.get("required") or []) and "default" not in field:
                causes.append(
                    (
                        f"{path}.items.properties[{key}]",
                        "Required value: this property is in x-kubernetes-list-map-keys, so it "
                        "must have a default or be a required property",
                    )
                )
    return causes


def _rules(schema: Mapping[str, Any], base: str) -> list[Cause]:
    causes: list[Cause] = []
    env = celpy.Environment()
    for path, node in _nodes(schema, base):
        for k, rule in enumerate(node.get("x-kubernetes-validations") or []):
            field = f"{path}.x-kubernetes-validations[{k}].rule"
            text = rule.get("rule", "")
            try:
                env.compile(text)
            except CELParseError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else "syntax error"
                causes.append((field, f"Invalid value: {text!r}: compilation failed: {first}"))
                continue
            if "oldSelf" in text and ".items" in path and _under_atomic_list(schema, path, base):
                causes.append(
                    (
                        field,
                        "Forbidden: oldSelf cannot be used on the uncorrelatable portion of the "
                        "schema within " + path,
                    )
                )
            if _unbounded_iteration(text, node):
                causes.append((field, f"Forbidden: {_COST_HINT}"))
    return causes


def _defaults(schema: Mapping[str, Any], base: str) -> list[Cause]:
    causes: list[Cause] = []
    checker = ModelValidator.of_schema(schema)
    for path, node in _nodes(schema, base):
        if "default" not in node:
            continue
        value = node["default"]
        shown = _type_name(value)
        field = f"{path}.default"
        errors = list(jsonschema.Draft202012Validator(to_json_schema(node)).iter_errors(value))
        for error in errors:
            causes.append((field, f'Invalid value: "{shown}": {error.message}'))
        if errors:
            continue
        for found in checker.check(node, value):
            reason = found.split(": ", 1)[1]
            causes.append((field, f'Invalid value: "{shown}": {reason}'))
    return causes


# --- helpers -----------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string"


def _under_atomic_list(schema: Mapping[str, Any], path: str, base: str) -> bool:
    """True when `path` lies below the items of a list that is not a map or set."""
    for parent_path, node in _nodes(schema, base):
        if (
            path.startswith(parent_path + ".items")
            and node.get("type") == "array"
            and node.get("x-kubernetes-list-type") not in ("map", "set")
        ):
            return True
    return False


def _accessed(rule: str) -> Iterator[list[str]]:
    """Field chains read from `self` in a rule (method calls and macros excluded)."""
    for match in re.finditer(r"\bself((?:\.[A-Za-z_]\w*)+)(\s*\()?", rule):
        chain = match.group(1).split(".")[1:]
        if match.group(2):  # the last name is a method or macro: self.x.all(...)
            chain = chain[:-1]
        if chain:
            yield chain


def _sub(node: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    props = node.get("properties") or {}
    if name in props:
        sub: Mapping[str, Any] = props[name]
        return sub
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, Mapping) else None


def _unguarded(rule: str, node: Mapping[str, Any], *, root: bool) -> list[str]:
    """Optional fields `rule` reads without a has() guard on them."""
    missing = []
    for chain in _accessed(rule):
        here: Mapping[str, Any] | None = node
        for depth, name in enumerate(chain):
            if here is None:
                break
            dotted = ".".join(chain[: depth + 1])
            always = root and dotted in ("metadata", "metadata.name")
            required = name in (here.get("required") or [])
            guarded = re.search(rf"has\(\s*self\.{re.escape(dotted)}\s*\)", rule)
            if not (always or required or guarded) and dotted not in missing:
                missing.append(dotted)
            here = _sub(here, name)
    return missing


def _unbounded_iteration(rule: str, node: Mapping[str, Any]) -> bool:
    """A rule that iterates something with no bound on its size."""
    targets: list[Mapping[str, Any]] = []
    for match in _ITERATING.finditer(rule):
        before = rule[: match.start()]
        chain = re.search(r"\bself((?:\.[A-Za-z_]\w*)*)$", before)
        if chain is None:
            continue  # a local variable (e.g. z in self.all(z, z.matches(...)))
        here: Mapping[str, Any] | None = node
        for name in [n for n in chain.group(1).split(".") if n]:
            here = _sub(here, name) if here is not None else None
        if here is not None:
            targets.append(here)
    for target in targets:
        kind = target.get("type")
        if kind == "array":
            if "maxItems" not in target:
                return True
            items = target.get("items") or {}
            if items.get("type") == "string" and "maxLength" not in items and "enum" not in items:
                return True
        elif (kind == "string" and "maxLength" not in target and "enum" not in target) or (
            kind == "object" and "additionalProperties" in target and "maxProperties" not in target
        ):
            return True
    return False


def _resolve(schema: Mapping[str, Any], path: str) -> Mapping[str, Any] | None:
    here: Mapping[str, Any] | None = schema
    for name in re.findall(r"\.([A-Za-z_][\w-]*)", path):
        here = _sub(here, name) if here is not None else None
    return here
