"""parse_spec: the CRD's defaults, typed values, and refusals with user-facing words."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from vigil_operator.core.crd import ModelValidator
from vigil_operator.core.spec import (
    MSG_MAX_LT_MIN,
    Artifact,
    ModelSpec,
    ScalingSpec,
    SpecError,
    Toleration,
    UnitSpec,
    parse_artifact_uri,
    parse_quantity,
    parse_spec,
    validate_name,
)

MINIMAL = {"artifact": {"uri": "file:///models/m.vigil"}}


def test_minimal_spec_gets_the_crds_defaults(crd_validator: ModelValidator) -> None:
    spec = parse_spec(MINIMAL)
    assert spec == ModelSpec(artifact=parse_artifact_uri("file:///models/m.vigil"))
    assert spec.state == "Running" and spec.min_units == 1 and spec.max_units is None
    assert spec.zones is None
    assert spec.scaling == ScalingSpec("utilization", 0.6, 0, 300)
    assert spec.unit == UnitSpec(gpus=1)
    assert spec.unit.image == ""
    body = {
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "m"},
        "spec": dict(MINIMAL),
    }
    assert parse_spec(crd_validator.default(body)["spec"]) == spec


@pytest.mark.parametrize("name", ["model.yaml", "model-cpu.yaml", "model-autoscaling.yaml"])
def test_examples_parse_the_same_with_or_without_api_defaults(
    name: str, example: Callable[[str], dict[str, Any]], crd_validator: ModelValidator
) -> None:
    body = example(name)
    assert parse_spec(body["spec"]) == parse_spec(crd_validator.default(body)["spec"])


def test_design_example_values(example: Callable[[str], dict[str, Any]]) -> None:
    spec = parse_spec(example("model.yaml")["spec"])
    assert spec.artifact_uri == "pvc://models/pcb-inspector/v3.vigil"
    assert spec.artifact == Artifact(
        "pvc://models/pcb-inspector/v3.vigil", "pvc", "models", "pcb-inspector/v3.vigil"
    )
    assert (spec.min_units, spec.max_units) == (2, 8)
    assert spec.zones == ("us-east-1a", "us-east-1b", "us-east-1c")
    assert spec.unit.tolerations == (Toleration("nvidia.com/gpu", "Exists", "", "NoSchedule"),)
    assert spec.unit.resources == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"memory": "8Gi"},
    }


def test_artifact_kinds() -> None:
    assert parse_artifact_uri("https://h:8443/a/m.vigil?x=1").kind == "http"
    assert parse_artifact_uri("http://h/m").kind == "http"
    file = parse_artifact_uri("file:///opt/models/m.vigil")
    assert (file.kind, file.path) == ("file", "/opt/models/m.vigil")
    pvc = parse_artifact_uri("pvc://shared.models/a/b/m.vigil")
    assert (pvc.kind, pvc.claim, pvc.path) == ("pvc", "shared.models", "a/b/m.vigil")
    for bad in ("s3://b/m", "pvc://c", "pvc://C/m", "file://rel", "https://", "m.vigil"):
        with pytest.raises(SpecError, match=r"artifact\.uri must be"):
            parse_artifact_uri(bad)


def test_bounds_floor_and_clamp() -> None:
    spec = parse_spec({**MINIMAL, "minUnits": 2, "maxUnits": 5})
    assert (spec.floor, spec.ceiling) == (2, 5)
    assert [spec.clamp(n) for n in (0, 2, 4, 9)] == [2, 2, 4, 5]
    fixed = parse_spec({**MINIMAL, "minUnits": 3})
    assert fixed.ceiling == 3 and fixed.clamp(10) == 3
    stopped = parse_spec({**MINIMAL, "minUnits": 3, "state": "Stopped"})
    assert (stopped.running, stopped.floor, stopped.clamp(7)) == (False, 0, 0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"artifact": {"uri": "file:///m"}, "minUnits": 3, "maxUnits": 2}, MSG_MAX_LT_MIN),
        ({"artifact": {"uri": "file:///m"}, "minUnits": True}, "minUnits must be a whole number"),
        ({"artifact": {"uri": "file:///m"}, "maxUnits": "4"}, "maxUnits must be a whole number"),
        ({"artifact": "file:///m"}, "artifact must be an object"),
        ({}, "artifact is required"),
        ({"artifact": {"uri": 3}}, "artifact.uri is required"),
        ({"artifact": {"uri": "file:///" + "m" * 2048}}, "at most 2048"),
        ({**MINIMAL, "zones": "us-east-1a"}, "zones must be a list"),
        ({**MINIMAL, "zones": ["a", 1]}, "zone 1 is not a zone label value"),
        ({**MINIMAL, "scaling": {"target": True}}, "scaling.target must be a number"),
        ({**MINIMAL, "scaling": {"metric": "rps", "target": 2e6}}, "at most 1000000"),
        ({**MINIMAL, "unit": {"gpus": 1.0}}, "unit.gpus must be a whole number"),
        ({**MINIMAL, "unit": {"nodeSelector": {"a": 1}}}, "nodeSelector must map"),
        ({**MINIMAL, "unit": {"tolerations": {"key": "k"}}}, "must be a list"),
        ({**MINIMAL, "unit": {"tolerations": ["k"]}}, "must be an object"),
        ({**MINIMAL, "unit": {"image": 5}}, "unit.image must be a string"),
        (
            {**MINIMAL, "unit": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": 1}}}},
            "unit.resources.requests.cpu (2) exceeds its limit (1)",
        ),
        (
            {**MINIMAL, "unit": {"resources": {"limits": {"memory": "lots"}}}},
            "unit.resources.limits.memory: 'lots' is not a Kubernetes quantity",
        ),
    ],
)
def test_refusals_name_the_problem(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    assert message in str(caught.value)


def test_not_a_mapping() -> None:
    with pytest.raises(SpecError, match="spec must be an object"):
        parse_spec([])  # type: ignore[arg-type]


def test_null_fields_take_defaults() -> None:
    """A YAML key with no value (None) reads as absent, as the API server prunes nulls."""
    spec = parse_spec(
        {
            **MINIMAL,
            "state": None,
            "minUnits": None,
            "maxUnits": None,
            "zones": None,
            "scaling": None,
            "unit": None,
        }
    )
    assert spec == parse_spec(MINIMAL)


def test_tolerations_round_trip_to_pod_form() -> None:
    raw = [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "team", "value": "vision"},
        {"operator": "Exists"},
        {
            "key": "k",
            "operator": "Equal",
            "value": "v",
            "effect": "NoExecute",
            "tolerationSeconds": 30,
        },
    ]
    spec = parse_spec({**MINIMAL, "unit": {"tolerations": raw}})
    assert [t.to_k8s() for t in spec.unit.tolerations] == [
        {"operator": "Exists", "key": "gpu", "effect": "NoSchedule"},
        {"operator": "Equal", "key": "team", "value": "vision"},
        {"operator": "Exists"},
        {
            "operator": "Equal",
            "key": "k",
            "value": "v",
            "effect": "NoExecute",
            "tolerationSeconds": 30,
        },
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8", Decimal(8)),
        (4, Decimal(4)),
        ("500m", Decimal("0.5")),
        ("1.5", Decimal("1.5")),
        ("2Gi", Decimal(2 * 2**30)),
        ("1k", Decimal(1000)),
        ("3M", Decimal(3_000_000)),
        ("1e3", Decimal(1000)),
        ("128974848", Decimal(128974848)),
    ],
)
def test_quantities(text: object, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "lots", "1.2.3", "2 Gi", "Gi", True])
def test_bad_quantities(text: object) -> None:
    with pytest.raises(SpecError):
        parse_quantity(text)


def test_names() -> None:
    for good in ("m", "pcb-inspector", "a" * 63, "v3"):
        validate_name(good)
    for bad in ("", "3d", "Pcb", "a_b", "a" * 64, "-a", "a-", "a.b"):
        with pytest.raises(SpecError, match="DNS-1035"):
            validate_name(bad)
