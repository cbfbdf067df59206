"""The Model CRD passes the checks kube-apiserver runs when it is created, as
the source file and as the chart renders it; and each check refuses the kind of
mistake it is for, with the server's wording (the first of them shipped: a
`default: {}` under rules that read `self.target`)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from kube_emulator.crd_admission import (
    admission_causes,
    lint_causes,
    refusal_message,
)
from tests.tools import ROOT
from tests.unit.chart.conftest import Render, helm, render

__all__ = ["helm", "render"]  # the chart's fixtures, to render the CRD as helm does

CRD_PATH = ROOT / "crds" / "models.vigil.dev.yaml"
SPEC = "spec.validation.openAPIV3Schema.properties[spec]"


def source() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return loaded


def spec_schema(crd: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return node["properties"]["spec"]  # type: ignore[no-any-return]


def test_the_crd_file_passes_admission_and_lint() -> None:
    crd = source()
    assert admission_causes(crd) == []
    assert lint_causes(crd) == []


def test_the_charts_rendered_crd_passes_admission_and_lint(render: Render) -> None:
    (crd,) = [d for d in render() if d["kind"] == "CustomResourceDefinition"]
    assert admission_causes(crd) == []
    assert lint_causes(crd) == []


# Each: a change to the CRD, the field and the words the server answers with.
Edit = Callable[[dict[str, Any]], None]


def _empty_scaling_default(crd: dict[str, Any]) -> None:
    scaling = spec_schema(crd)["properties"]["scaling"]
    scaling["default"] = {}
    scaling["x-kubernetes-validations"][0]["rule"] = "self.target > 0.0"


def _bad_default(crd: dict[str, Any]) -> None:
    spec_schema(crd)["properties"]["minUnits"]["default"] = 0


def _unknown_field_in_default(crd: dict[str, Any]) -> None:
    spec_schema(crd)["properties"]["scaling"]["default"]["window"] = 60


def _default_breaks_rule(crd: dict[str, Any]) -> None:
    spec_schema(crd)["properties"]["scaling"]["default"]["target"] = 2.0


def _untyped(crd: dict[str, Any]) -> None:
    del spec_schema(crd)["properties"]["unit"]["properties"]["image"]["type"]


def _bad_cel(crd: dict[str, Any]) -> None:
    spec_schema(crd)["x-kubernetes-validations"][0]["rule"] = "self.maxUnits >="


def _unbounded_zones(crd: dict[str, Any]) -> None:
    del spec_schema(crd)["properties"]["zones"]["maxItems"]


def _unbounded_uri(crd: dict[str, Any]) -> None:
    del spec_schema(crd)["properties"]["artifact"]["properties"]["uri"]["maxLength"]


def _typed_branch(crd: dict[str, Any]) -> None:
    limits = spec_schema(crd)["properties"]["unit"]["properties"]["resources"]
    limits["properties"]["limits"]["additionalProperties"]["anyOf"][0]["description"] = "n"


def _metadata_fields(crd: dict[str, Any]) -> None:
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    labels = {"labels": {"type": "object"}}
    root["properties"]["metadata"] = {"type": "object", "properties": labels}


def _bad_column(crd: dict[str, Any]) -> None:
    crd["spec"]["versions"][0]["additionalPrinterColumns"][0]["jsonPath"] = "spec.state["


REFUSED: list[tuple[str, Edit, str, str]] = [
    (
        "empty-default-under-rules",
        _empty_scaling_default,
        f"{SPEC}.properties[scaling].default",
        'Invalid value: "object": no such key: target evaluating rule: '
        "scaling.target must be greater than 0",
    ),
    ("default-below-minimum", _bad_default, f"{SPEC}.properties[minUnits].default", "minimum"),
    (
        "default-unknown-field",
        _unknown_field_in_default,
        f"{SPEC}.properties[scaling].default",
        "'window' was unexpected",
    ),
    (
        "default-breaks-rule",
        _default_breaks_rule,
        f"{SPEC}.properties[scaling].default",
        "a utilization target is the busy fraction",
    ),
    (
        "untyped-field",
        _untyped,
        f"{SPEC}.properties[unit].properties[image].type",
        "Required value: must not be empty",
    ),
    ("rule-does-not-compile", _bad_cel, f"{SPEC}.x-kubernetes-validations[0].rule", "compilation"),
    (
        "iterated-list-unbounded",
        _unbounded_zones,
        f"{SPEC}.properties[zones].x-kubernetes-validations[0].rule",
        "estimated rule cost exceeds budget",
    ),
    (
        "matched-string-unbounded",
        _unbounded_uri,
        f"{SPEC}.properties[artifact].properties[uri].x-kubernetes-validations[0].rule",
        "estimated rule cost exceeds budget",
    ),
    ("non-structural-branch", _typed_branch, "anyOf[0].description", "must be empty"),
    (
        "metadata-fields",
        _metadata_fields,
        "spec.validation.openAPIV3Schema.properties[metadata]",
        "other than name and generateName",
    ),
    (
        "printer-column-path",
        _bad_column,
        "spec.versions[0].additionalPrinterColumns[0].jsonPath",
        "simple json path",
    ),
]


@pytest.mark.parametrize(
    ("edit", "field", "words"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_admission_refuses_each_mistake_with_the_servers_words(
    edit: Edit, field: str, words: str
) -> None:
    crd = copy.deepcopy(source())
    edit(crd)
    causes = admission_causes(crd)
    assert any(f.endswith(field) and words in detail for f, detail in causes), causes


def test_the_refusal_reads_as_the_servers() -> None:
    crd = copy.deepcopy(source())
    _empty_scaling_default(crd)
    message = refusal_message("models.vigil.dev", admission_causes(crd))
    assert message == (
        'CustomResourceDefinition.apiextensions.k8s.io "models.vigil.dev" is invalid: '
        f'{SPEC}.properties[scaling].default: Invalid value: "object": no such key: target '
        "evaluating rule: scaling.target must be greater than 0"
    )
    two = refusal_message("m", [("a", "x"), ("b", "y")])
    assert two.endswith("is invalid: [a: x, b: y]")


def test_lint_finds_an_unguarded_optional_read() -> None:
    crd = copy.deepcopy(source())
    spec_schema(crd)["x-kubernetes-validations"][0]["rule"] = "self.maxUnits >= self.minUnits"
    causes = lint_causes(crd)
    assert [d for _, d in causes] == [
        "Invalid value: 'self.maxUnits >= self.minUnits': reads optional field self.maxUnits "
        "without has(self.maxUnits)",
        "Invalid value: 'self.maxUnits >= self.minUnits': reads optional field self.minUnits "
        "without has(self.minUnits)",
    ]
    assert admission_causes(crd) == []  # the server itself lets it through


def test_lint_finds_a_printer_column_pointing_at_nothing() -> None:
    crd = copy.deepcopy(source())
    crd["spec"]["versions"][0]["additionalPrinterColumns"][1]["jsonPath"] = ".status.desired"
    assert lint_causes(crd) == [
        (
            "spec.versions[0].additionalPrinterColumns[1].jsonPath",
            'Invalid value: ".status.desired": no such field in the schema',
        )
    ]


def test_the_emulator_refuses_such_a_crd_as_the_server_does() -> None:
    """Created through the emulator's API: 422 Invalid with the server's causes."""
    from kube_emulator.errors import ApiError
    from kube_emulator.server import KubeEmulator

    crd = copy.deepcopy(source())
    _empty_scaling_default(crd)
    emulator = KubeEmulator(install_model_crd=False, run_controllers=False)
    with pytest.raises(ApiError) as refused:
        emulator.create_object("customresourcedefinitions", crd)
    assert refused.value.code == 422
    assert refused.value.message == refusal_message("models.vigil.dev", admission_causes(crd))
    causes = refused.value.details["causes"]
    assert causes[0]["field"] == f"{SPEC}.properties[scaling].default"
    emulator.create_object("customresourcedefinitions", source())  # the fixed one is served
    assert emulator.resource_type("models.vigil.dev").kind == "Model"
