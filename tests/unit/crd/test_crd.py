"""The Model CRD: a valid CustomResourceDefinition, examples accepted, bad Models
refused with the message a user should see, every CEL rule live, and the
operator's own spec check refusing the same Models with the same words."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from vigil_operator.core import spec as specmod
from vigil_operator.core.crd import ModelValidator, Rule
from vigil_operator.core.spec import SpecError, parse_spec, validate_name

ROOT = Path(__file__).resolve().parents[3]
CRD_PATH = ROOT / "crds" / "models.vigil.dev.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return loaded


@pytest.fixture(scope="module")
def validator(crd: dict[str, Any]) -> ModelValidator:
    return ModelValidator(crd)


def base_model() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "model.yaml").read_text())
    return loaded


def _nodes(node: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), Mapping):
            yield from _nodes(node[key], f"{path}[{key}]")


# --- the CRD itself ----------------------------------------------------------------------


def test_crd_is_a_valid_custom_resource_definition(crd: dict[str, Any]) -> None:
    kubernetes_validate.validate(crd, "1.37", strict=True)
    assert crd["metadata"]["name"] == "models.vigil.dev"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == ("Model", "models", "model")
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns_are_the_contract(crd: dict[str, Any]) -> None:
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    default = [c["name"] for c in columns if not c.get("priority")]
    assert default == ["State", "Desired", "InService", "Min", "Max", "Age"]
    paths = {c["name"]: c["jsonPath"] for c in columns}
    assert paths["State"] == ".spec.state"
    assert paths["Desired"] == ".status.desiredUnits"
    assert paths["InService"] == ".status.inServiceUnits"
    assert (paths["Min"], paths["Max"]) == (".spec.minUnits", ".spec.maxUnits")


def test_schema_is_structural_and_bounded(crd: dict[str, Any]) -> None:
    """Every node typed; lists and free strings bounded so CEL's cost estimate stays low."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _nodes(schema):
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("type") == "string" and path not in (".apiVersion", ".kind"):
            assert "maxLength" in node or "enum" in node or "format" in node, path
        if node.get("type") == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, path


def test_spec_defaults_match_design(validator: ModelValidator) -> None:
    model = {
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "m"},
        "spec": {"artifact": {"uri": "file:///m.vigil"}},
    }
    spec = validator.default(model)["spec"]
    assert spec["state"] == "Running"
    assert spec["minUnits"] == 1
    assert "maxUnits" not in spec and "zones" not in spec
    assert spec["scaling"] == {
        "metric": "utilization",
        "target": 0.6,
        "scaleUpStabilizationSeconds": 0,
        "scaleDownStabilizationSeconds": 300,
    }
    assert spec["unit"] == {"gpus": 1}
    assert validator.errors(model) == []


# --- examples ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_accepted(path: Path, validator: ModelValidator) -> None:
    model = yaml.safe_load(path.read_text())
    assert validator.errors(model) == []
    parse_spec(model["spec"])
    validate_name(model["metadata"]["name"])


def test_examples_cover_the_three_cases() -> None:
    specs = {p.name: yaml.safe_load(p.read_text())["spec"] for p in EXAMPLES}
    assert {"model.yaml", "model-cpu.yaml", "model-autoscaling.yaml"} <= set(specs)
    assert specs["model-cpu.yaml"]["unit"]["gpus"] == 0
    assert "maxUnits" not in specs["model-cpu.yaml"]
    assert specs["model-autoscaling.yaml"]["maxUnits"] > specs["model-autoscaling.yaml"]["minUnits"]


def test_a_full_status_is_accepted(validator: ModelValidator) -> None:
    model = base_model()
    model["status"] = {
        "phase": "Hosted",
        "message": "3/3 units in service in 3 zones",
        "desiredUnits": 3,
        "inServiceUnits": 3,
        "zones": [{"name": "us-east-1a", "desiredUnits": 1, "inServiceUnits": 1, "healthy": True}],
        "endpoint": "dns:///pcb-inspector.factory.svc.cluster.local:50051",
        "observedGeneration": 4,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "observedGeneration": 4,
                "lastTransitionTime": "2024-05-01T12:00:00Z",
                "reason": "Hosted",
                "message": "",
            }
        ],
    }
    assert validator.errors(model) == []


# --- bad Models --------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(model: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = model
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return mutate


def _drop(path: str) -> Mutation:
    def mutate(model: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = model
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


TOL = {"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}

# (id, mutation, substring expected among the API server's errors)
BAD: list[tuple[str, Mutation, str]] = [
    ("max-below-min", _set("spec.maxUnits", 1), specmod.MSG_MAX_LT_MIN),
    ("min-zero", _set("spec.minUnits", 0), "spec.minUnits: 0 is less than the minimum of 1"),
    ("min-negative", _set("spec.minUnits", -3), "spec.minUnits: -3 is less than the minimum"),
    ("max-above-cap", _set("spec.maxUnits", 1001), "spec.maxUnits: 1001 is greater than"),
    ("min-not-integer", _set("spec.minUnits", 1.5), "spec.minUnits: 1.5 is not of type 'integer'"),
    ("duplicate-zones", _set("spec.zones", ["a", "b", "a"]), specmod.MSG_ZONES_REPEAT),
    ("empty-zones", _set("spec.zones", []), "spec.zones: [] should be non-empty"),
    ("empty-zone-name", _set("spec.zones", ["a", ""]), "spec.zones.1: '' should be non-empty"),
    ("zone-with-space", _set("spec.zones", ["us east"]), "spec.zones.0: 'us east' does not match"),
    ("too-many-zones", _set("spec.zones", [f"z{i}" for i in range(17)]), "'z16'] is too long"),
    ("target-zero", _set("spec.scaling.target", 0), specmod.MSG_TARGET_POSITIVE),
    ("target-negative", _set("spec.scaling.target", -0.5), specmod.MSG_TARGET_POSITIVE),
    ("utilization-above-1", _set("spec.scaling.target", 1.5), specmod.MSG_UTILIZATION_LE_1),
    ("target-string", _set("spec.scaling.target", "0.6"), "is not of type 'number'"),
    ("unknown-state", _set("spec.state", "Paused"), "spec.state: 'Paused' is not one of"),
    ("unknown-metric", _set("spec.scaling.metric", "latency"), "'latency' is not one of"),
    ("missing-artifact", _drop("spec.artifact"), "spec: 'artifact' is a required property"),
    ("missing-uri", _set("spec.artifact", {}), "spec.artifact: 'uri' is a required property"),
    ("empty-uri", _set("spec.artifact.uri", ""), "spec.artifact.uri: '' should be non-empty"),
    ("s3-uri", _set("spec.artifact.uri", "s3://bucket/m.vigil"), specmod.MSG_URI),
    ("pvc-without-path", _set("spec.artifact.uri", "pvc://models"), specmod.MSG_URI),
    ("file-relative", _set("spec.artifact.uri", "file://m.vigil"), specmod.MSG_URI),
    ("uri-with-space", _set("spec.artifact.uri", "https://h/a b.vigil"), specmod.MSG_URI),
    ("gpus-negative", _set("spec.unit.gpus", -1), "spec.unit.gpus: -1 is less than the minimum"),
    ("gpus-too-many", _set("spec.unit.gpus", 17), "spec.unit.gpus: 17 is greater than"),
    (
        "stabilization-too-long",
        _set("spec.scaling.scaleDownStabilizationSeconds", 3601),
        "spec.scaling.scaleDownStabilizationSeconds: 3601 is greater than the maximum of 3600",
    ),
    (
        "stabilization-negative",
        _set("spec.scaling.scaleUpStabilizationSeconds", -1),
        "spec.scaling.scaleUpStabilizationSeconds: -1 is less than the minimum of 0",
    ),
    (
        "gpu-in-resources",
        _set("spec.unit.resources", {"limits": {"nvidia.com/gpu": 1}}),
        specmod.MSG_GPU_IN_RESOURCES,
    ),
    (
        "bad-quantity",
        _set("spec.unit.resources", {"requests": {"memory": "lots"}}),
        "spec.unit.resources.requests.memory: 'lots' does not match",
    ),
    (
        "toleration-exists-with-value",
        _set("spec.unit.tolerations", [{"key": "k", "operator": "Exists", "value": "v"}]),
        specmod.MSG_TOL_EXISTS_VALUE,
    ),
    (
        "toleration-empty-key-equal",
        _set("spec.unit.tolerations", [{"value": "v"}]),
        specmod.MSG_TOL_EMPTY_KEY,
    ),
    (
        "toleration-seconds-noschedule",
        _set("spec.unit.tolerations", [{**TOL, "tolerationSeconds": 30}]),
        specmod.MSG_TOL_SECONDS,
    ),
    (
        "toleration-bad-effect",
        _set("spec.unit.tolerations", [{**TOL, "effect": "Sometimes"}]),
        "'Sometimes' is not one of",
    ),
    ("unknown-field", _set("spec.minReplicas", 2), "'minReplicas' was unexpected"),
    ("name-uppercase", _set("metadata.name", "PCB-Inspector"), specmod.MSG_NAME),
    ("name-too-long", _set("metadata.name", "m" * 64), specmod.MSG_NAME),
    ("name-starts-with-digit", _set("metadata.name", "3d-inspector"), specmod.MSG_NAME),
    ("status-unknown-phase", _set("status.phase", "Running"), "status.phase: 'Running' is not"),
]
# Refused by the API server only: the operator ignores unknown fields (pruned).
NOT_A_SPEC_ERROR = {"unknown-field"}
CEL_MESSAGES = {
    specmod.MSG_MAX_LT_MIN,
    specmod.MSG_ZONES_REPEAT,
    specmod.MSG_TARGET_POSITIVE,
    specmod.MSG_UTILIZATION_LE_1,
    specmod.MSG_URI,
    specmod.MSG_GPU_IN_RESOURCES,
    specmod.MSG_TOL_EXISTS_VALUE,
    specmod.MSG_TOL_EMPTY_KEY,
    specmod.MSG_TOL_SECONDS,
    specmod.MSG_NAME,
}


@pytest.mark.parametrize(("mutate", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_model_is_refused_with_a_clear_message(
    mutate: Mutation, expected: str, validator: ModelValidator
) -> None:
    model = base_model()
    mutate(model)
    errors = validator.errors(model)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(("mutate", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_operator_refuses_the_same_models(
    request: pytest.FixtureRequest, mutate: Mutation, expected: str
) -> None:
    """parse_spec/validate_name re-check the CRD's rules, with the CEL rules' own words."""
    case = request.node.callspec.id
    model = base_model()
    mutate(model)
    if case in NOT_A_SPEC_ERROR or case.startswith("status-"):
        parse_spec(model["spec"])
        return
    with pytest.raises(SpecError) as caught:
        validate_name(model["metadata"]["name"])
        parse_spec(model["spec"])
    if expected in CEL_MESSAGES:
        assert str(caught.value) == expected


def test_cel_messages_in_the_crd_are_the_operators(validator: ModelValidator) -> None:
    assert {r.message for r in validator.rules} - CEL_MESSAGES == {
        "status.observedGeneration must not go backwards"
    }


def test_good_edge_values_are_accepted(validator: ModelValidator) -> None:
    for mutate in (
        _set("spec.maxUnits", 2),  # == minUnits
        _set("spec.scaling.target", 1),  # utilization 1, given as an integer
        _set("spec.scaling", {"metric": "rps", "target": 250}),
        _set("spec.scaling", {"metric": "concurrency", "target": 1.5}),
        _set("spec.unit.gpus", 0),
        _set("spec.zones", ["eu-west-1_a", "zone.b"]),
        _set("spec.artifact.uri", "http://10.0.0.1:8080/m.vigil?v=3"),
        _set("spec.unit.resources", {"requests": {"cpu": 2, "memory": "1.5Gi"}}),
        _set("spec.unit.tolerations", [{"operator": "Exists"}]),
        _set(
            "spec.unit.tolerations",
            [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}],
        ),
    ):
        model = base_model()
        mutate(model)
        assert validator.errors(model) == []
        parse_spec(model["spec"])


# --- updates -----------------------------------------------------------------------------


def test_spec_fields_may_all_change_on_update(validator: ModelValidator) -> None:
    """No spec field is immutable: a new artifact, other zones or GPUs roll out."""
    old = base_model()
    new = copy.deepcopy(old)
    new["spec"].update(
        artifact={"uri": "https://models.example.com/pcb/v4.vigil"},
        zones=["us-east-1b"],
        minUnits=1,
        state="Stopped",
    )
    new["spec"]["unit"]["gpus"] = 2
    assert validator.errors(new, old=old) == []


def test_observed_generation_cannot_go_backwards(validator: ModelValidator) -> None:
    old = base_model()
    old["status"] = {"observedGeneration": 5}
    newer = copy.deepcopy(old)
    newer["status"]["observedGeneration"] = 6
    assert validator.errors(newer, old=old) == []
    stale = copy.deepcopy(old)
    stale["status"]["observedGeneration"] = 4
    assert validator.errors(stale, old=old) == [
        "status.observedGeneration: status.observedGeneration must not go backwards"
    ]
    assert validator.errors(stale) == []  # a create has no oldSelf


# --- every rule is live ------------------------------------------------------------------

# For each rule (by message): a value at the rule's place that fails it, one that passes,
# and for transition rules the old value.
LIVE: dict[str, tuple[Any, Any, Any]] = {
    specmod.MSG_NAME: ({"metadata": {"name": "Bad"}}, {"metadata": {"name": "good"}}, None),
    specmod.MSG_MAX_LT_MIN: ({"minUnits": 3, "maxUnits": 2}, {"minUnits": 3}, None),
    specmod.MSG_URI: ("ftp://h/m", "pvc://c/m.vigil", None),
    specmod.MSG_ZONES_REPEAT: (["a", "a"], ["a", "b"], None),
    specmod.MSG_TARGET_POSITIVE: (
        {"metric": "rps", "target": 0.0},
        {"metric": "rps", "target": 0.1},
        None,
    ),
    specmod.MSG_UTILIZATION_LE_1: (
        {"metric": "utilization", "target": 1.01},
        {"metric": "rps", "target": 1.01},
        None,
    ),
    specmod.MSG_GPU_IN_RESOURCES: (
        {"requests": {"nvidia.com/gpu": 1}},
        {"requests": {"cpu": 1}},
        None,
    ),
    specmod.MSG_TOL_EXISTS_VALUE: (
        {"key": "k", "operator": "Exists", "value": "v"},
        {"key": "k", "operator": "Exists"},
        None,
    ),
    specmod.MSG_TOL_EMPTY_KEY: ({"operator": "Equal"}, {"operator": "Exists"}, None),
    specmod.MSG_TOL_SECONDS: (
        {"operator": "Exists", "tolerationSeconds": 5},
        {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5},
        None,
    ),
    "status.observedGeneration must not go backwards": (3, 4, 4),
}


def test_every_rule_is_covered(validator: ModelValidator) -> None:
    assert {r.message for r in validator.rules} == set(LIVE)


@pytest.mark.parametrize("message", sorted(LIVE))
def test_rule_fails_on_a_crafted_value_and_passes_on_a_good_one(
    message: str, validator: ModelValidator
) -> None:
    (rule,) = [r for r in validator.rules if r.message == message]
    bad, good, old = LIVE[message]
    extra = (old,) if rule.transition else ()
    assert validator.evaluate(rule, bad, *extra) is False
    assert validator.evaluate(rule, good, *extra) is True


def test_rule_kinds(validator: ModelValidator) -> None:
    transition = [r for r in validator.rules if r.transition]
    assert [r.path for r in transition] == ["status.observedGeneration"]
    assert all(isinstance(r, Rule) and r.rule for r in validator.rules)
