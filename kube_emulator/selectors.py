"""Label and field selectors, in both the query-string and the object forms.

Query strings follow ``k8s.io/apimachinery/pkg/labels`` (``=``, ``==``, ``!=``,
``in``, ``notin``, ``key``, ``!key``, ``>``/``<``); objects are
``metav1.LabelSelector`` (``matchLabels`` plus ``matchExpressions``). A bad
selector raises :class:`SelectorError`, which the API turns into a 400.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
LABEL_KEY = re.compile(
    rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_NAME}$"
)
LABEL_VALUE = re.compile(rf"^({_NAME})?$")
_SET_TERM = re.compile(r"^(?P<key>[^\s!=<>()]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")


class SelectorError(ValueError):
    pass


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.op:
            case "=" | "in":
                return present and value in self.values
            case "!=" | "notin":
                return not present or value not in self.values
            case "exists":
                return present
            case "!exists":
                return not present
            case "gt" | "lt":
                try:
                    number = int(value or "")
                except ValueError:
                    return False
                bound = int(self.values[0])
                return number > bound if self.op == "gt" else number < bound
        raise AssertionError(self.op)


def label_key_error(key: str) -> str | None:
    if len(key.rpartition("/")[2]) > 63 or not LABEL_KEY.match(key):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character (prefix: a DNS subdomain)"
        )
    return None


def label_value_error(value: object) -> str | None:
    if not isinstance(value, str):
        return "label values must be strings"
    if len(value) > 63 or not LABEL_VALUE.match(value):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, "
            "'-', '_' or '.', and must start and end with an alphanumeric character "
            "(at most 63 characters)"
        )
    return None


def _split_top_level(text: str) -> list[str]:
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced parentheses in selector {text!r}")
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise SelectorError(f"unbalanced parentheses in selector {text!r}")
    terms.append("".join(current))
    return terms


def _checked(req: Requirement) -> Requirement:
    if error := label_key_error(req.key):
        raise SelectorError(f"unable to parse requirement: invalid label key {req.key!r}: {error}")
    for value in req.values:
        if req.op in ("gt", "lt"):
            if not re.fullmatch(r"-?\d+", value):
                raise SelectorError(f"unable to parse requirement: {value!r} is not an integer")
        elif error := label_value_error(value):
            raise SelectorError(
                f"unable to parse requirement: invalid label value {value!r}: {error}"
            )
    return req


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse ``labelSelector=`` into requirements; an empty string selects everything."""
    if not text or not text.strip():
        return []
    reqs = []
    for raw in _split_top_level(text):
        term = raw.strip()
        if not term:
            raise SelectorError(f"unable to parse requirement: empty term in {text!r}")
        if m := _SET_TERM.match(term):
            values = tuple(v.strip() for v in m["values"].split(",") if v.strip())
            if not values:
                raise SelectorError(f"unable to parse requirement: {term!r} has no values")
            reqs.append(_checked(Requirement(m["key"], m["op"], values)))
        elif term.startswith("!"):
            reqs.append(_checked(Requirement(term[1:].strip(), "!exists")))
        elif "!=" in term:
            key, _, value = term.partition("!=")
            reqs.append(_checked(Requirement(key.strip(), "!=", (value.strip(),))))
        elif "==" in term or "=" in term:
            key, _, value = term.partition("==") if "==" in term else term.partition("=")
            reqs.append(_checked(Requirement(key.strip(), "=", (value.strip(),))))
        elif ">" in term or "<" in term:
            op = "gt" if ">" in term else "lt"
            key, _, value = term.partition(">" if op == "gt" else "<")
            reqs.append(_checked(Requirement(key.strip(), op, (value.strip(),))))
        elif re.search(r"[\s()]", term):
            raise SelectorError(f"unable to parse requirement: {term!r}")
        else:
            reqs.append(_checked(Requirement(term, "exists")))
    return reqs


def selector_from_object(selector: Mapping[str, Any] | None) -> list[Requirement]:
    """A ``metav1.LabelSelector`` as requirements (``{}`` selects everything)."""
    if not selector:
        return []
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is None:
            raise SelectorError(f"{expr.get('operator')!r} is not a valid selector operator")
        reqs.append(Requirement(expr["key"], op, tuple(expr.get("values") or ())))
    return reqs


def matches(reqs: Iterable[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(req.matches(labels) for req in reqs)


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    labels: Mapping[str, str] = obj.get("metadata", {}).get("labels") or {}
    return labels


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    negated: bool
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return (field_value(obj, self.path) == self.value) != self.negated


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """A field as the API server compares it: a string, "" when absent."""
    if path == "source":  # core/v1 events select on source.component
        path = "source.component"
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return ""
        current = current[part]
    if isinstance(current, bool):
        return "true" if current else "false"
    return "" if current is None else str(current)


def parse_field_selector(text: str | None, allowed: Iterable[str]) -> list[FieldRequirement]:
    """Parse ``fieldSelector=``; fields other than ``allowed`` are refused as the API does."""
    if not text or not text.strip():
        return []
    allowed = {"metadata.name", "metadata.namespace", *allowed}
    reqs = []
    for raw in text.split(","):
        term = raw.strip()
        if "!=" in term:
            path, _, value = term.partition("!=")
            negated = True
        elif "==" in term or "=" in term:
            path, _, value = term.partition("==") if "==" in term else term.partition("=")
            negated = False
        else:
            raise SelectorError(f"invalid selector: '{term}'; can't understand '{term}'")
        path = path.strip()
        if path not in allowed:
            raise SelectorError(f'field label not supported: "{path}"')
        reqs.append(FieldRequirement(path, negated, value.strip()))
    return reqs
