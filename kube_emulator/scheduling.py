"""What kube-scheduler checks before it binds a pod to a node.

Filters, in the scheduler's own order of reporting: taints/tolerations,
``spec.unschedulable``, ``nodeSelector`` plus required node affinity, and
resource fit (requests against allocatable minus what bound pods request).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

_SUFFIXES: dict[str, int | Fraction] = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(?:[eE]([+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$")

NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"


def parse_quantity(value: object) -> Fraction:
    """A Kubernetes quantity ("500m", "16Gi", "4", 2) as an exact number."""
    if isinstance(value, int | float):
        return Fraction(value)
    m = _QUANTITY.match(str(value).strip())
    if not m:
        raise ValueError(f"quantities must match the regular expression: {value!r}")
    number = Fraction(m[1])
    if m[2] is not None:
        return number * Fraction(10) ** int(m[2])
    return number * Fraction(_SUFFIXES[m[3] or ""])


def pod_requests(pod: Mapping[str, Any]) -> dict[str, Fraction]:
    """Summed container requests; a limit stands in for a missing request, as defaulting does."""
    total: dict[str, Fraction] = {}
    for container in pod.get("spec", {}).get("containers") or []:
        resources = container.get("resources") or {}
        requests = dict(resources.get("limits") or {}) | dict(resources.get("requests") or {})
        for name, quantity in requests.items():
            total[name] = total.get(name, Fraction(0)) + parse_quantity(quantity)
    return total


def node_allocatable(node: Mapping[str, Any]) -> dict[str, Fraction]:
    status = node.get("status", {})
    raw = status.get("allocatable") or status.get("capacity") or {}
    return {name: parse_quantity(q) for name, q in raw.items()}


def node_ready(node: Mapping[str, Any]) -> bool:
    return condition_status(node, "Ready") == "True"


def condition_status(obj: Mapping[str, Any], kind: str) -> str | None:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind:
            status: str = cond.get("status", "Unknown")
            return status
    return None


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        operator = tol.get("operator", "Equal")
        if not tol.get("key") and operator == "Exists":
            return True
        if tol.get("key") != taint.get("key"):
            continue
        if operator == "Exists" or tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def _expression_matches(expr: Mapping[str, Any], values: Mapping[str, str]) -> bool:
    key, op, wanted = expr.get("key", ""), expr.get("operator"), expr.get("values") or []
    present = key in values
    match op:
        case "In":
            return present and values[key] in wanted
        case "NotIn":
            return not present or values[key] not in wanted
        case "Exists":
            return present
        case "DoesNotExist":
            return not present
        case "Gt" | "Lt":
            try:
                number, bound = int(values[key]), int(wanted[0])
            except (KeyError, IndexError, ValueError):
                return False
            return number > bound if op == "Gt" else number < bound
    return False


def _term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches no objects
    labels = node.get("metadata", {}).get("labels") or {}
    node_fields = {"metadata.name": node.get("metadata", {}).get("name", "")}
    return all(_expression_matches(e, labels) for e in exprs) and all(
        _expression_matches(f, node_fields) for f in fields
    )


def affinity_matches(pod: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """``nodeSelector`` and the required node affinity (terms ORed, expressions ANDed)."""
    spec = pod.get("spec", {})
    labels = node.get("metadata", {}).get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (
        (spec.get("affinity") or {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution")
    )
    if required is None:
        return True
    return any(_term_matches(term, node) for term in required.get("nodeSelectorTerms") or [])


def misfit(
    pod: Mapping[str, Any], node: Mapping[str, Any], used: Mapping[str, Fraction]
) -> str | None:
    """Why the pod cannot go to the node (the scheduler's wording), or None when it fits."""
    tolerations = pod.get("spec", {}).get("tolerations") or []
    for taint in node.get("spec", {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
    if node.get("spec", {}).get("unschedulable") and not tolerates(
        tolerations, {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
    ):
        return "node(s) were unschedulable"
    if not affinity_matches(pod, node):
        return "node(s) didn't match Pod's node affinity/selector"
    allocatable = node_allocatable(node)
    requests = pod_requests(pod)
    if "pods" in allocatable:
        requests["pods"] = Fraction(1)
    for name in sorted(requests):
        if requests[name] and requests[name] > allocatable.get(name, 0) - used.get(name, 0):
            return f"Insufficient {name}"
    return None


def unschedulable_message(reasons: Iterable[str], nodes: int) -> str:
    counts = Counter(reasons)
    parts = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
    suffix = (
        f" preemption: 0/{nodes} nodes are available: {nodes} Preemption is not helpful for "
        "scheduling."
    )
    return (
        f"0/{nodes} nodes are available: {parts}.{suffix}"
        if parts
        else ("0/0 nodes are available." + suffix)
    )
