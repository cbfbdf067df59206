"""The local Model store refuses what the API server would, with the CRD's words."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from vigil_operator.core.crd import ModelValidator
from vigil_operator.local.store import Invalid, ModelStore, crd_path, load_validator

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def validator() -> ModelValidator:
    return load_validator()


def model(name: str = "fabric", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name},
        "spec": {"artifact": {"uri": "file:///srv/fabric.vigil"}, **spec},
    }


def test_the_crd_is_found_in_the_source_tree() -> None:
    assert crd_path().name == "models.vigil.dev.yaml" and crd_path().exists()


def test_created_with_defaults_then_unchanged_then_configured(validator: ModelValidator) -> None:
    store = ModelStore(validator)
    result, obj = store.apply(model(minUnits=1, maxUnits=3), now=NOW)
    assert result == "created"
    assert obj["metadata"]["namespace"] == "default"
    assert obj["metadata"]["generation"] == 1
    assert obj["metadata"]["creationTimestamp"] == "2026-01-01T12:00:00Z"
    assert obj["spec"]["state"] == "Running"  # the CRD's defaults
    assert obj["spec"]["scaling"] == {
        "metric": "utilization",
        "target": 0.6,
        "scaleUpStabilizationSeconds": 0,
        "scaleDownStabilizationSeconds": 300,
    }
    uid = obj["metadata"]["uid"]
    store.set_status(("default", "fabric"), {"desiredUnits": 1})

    assert store.apply(model(minUnits=1, maxUnits=3), now=NOW)[0] == "unchanged"
    result, obj = store.apply(model(minUnits=2, maxUnits=3), now=NOW)
    assert result == "configured"
    assert obj["metadata"]["generation"] == 2 and obj["metadata"]["uid"] == uid
    assert obj["status"] == {"desiredUnits": 1}  # status is the runtime's, kept


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            model(minUnits=3, maxUnits=2),
            'The Model "fabric" is invalid: spec: maxUnits must be greater than or equal to '
            "minUnits",
        ),
        (
            model(scaling={"metric": "utilization", "target": 1.5}),
            "spec.scaling: a utilization target is the busy fraction of a unit and must be at "
            "most 1 (e.g. 0.6)",
        ),
        (model(minUnits=0), "spec.minUnits: 0 is less than the minimum of 1"),
        (model(replicas=3), "Additional properties are not allowed ('replicas' was unexpected)"),
        (model(name="Fabric_1"), "the Model name must be a DNS-1035 label"),
        (
            model(zones=["a", "a"]),
            "spec.zones: zones must not name the same zone twice",
        ),
        (
            {**model(), "kind": "Deployment"},
            'no matches for kind "Deployment" in version "vigil.dev/v1alpha1"',
        ),
        (
            model(artifact={"uri": "pvc://models/fabric.vigil"}),
            "spec.artifact.uri: the local runtime serves file:///PATH artifacts",
        ),
    ],
)
def test_refused_with_the_schemas_message_and_nothing_stored(
    validator: ModelValidator, obj: dict[str, Any], message: str
) -> None:
    store = ModelStore(validator)
    with pytest.raises(Invalid) as refused:
        store.apply(obj, now=NOW)
    assert message in str(refused.value)
    assert len(store) == 0


def test_a_refused_update_keeps_the_model(validator: ModelValidator) -> None:
    store = ModelStore(validator)
    store.apply(model(minUnits=1, maxUnits=3), now=NOW)
    with pytest.raises(Invalid):
        store.apply(model(minUnits=5, maxUnits=3), now=NOW)
    kept = store.get(("default", "fabric"))
    assert kept is not None
    assert kept["spec"]["minUnits"] == 1 and kept["metadata"]["generation"] == 1


def test_models_and_status_survive_a_restart(validator: ModelValidator, tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    store = ModelStore(validator, path)
    store.apply(model("a"), now=NOW)
    store.apply({**model("b"), "metadata": {"name": "b", "namespace": "lab"}}, now=NOW)
    store.set_status(("lab", "b"), {"desiredUnits": 2})
    store.save()
    again = ModelStore(validator, path)
    assert again.load() == []
    assert [o["metadata"]["name"] for o in again] == ["a", "b"]
    assert again.get(("lab", "b"))["status"] == {"desiredUnits": 2}  # type: ignore[index]
    assert again.delete(("default", "a")) is not None
    reloaded = ModelStore(validator, path)
    reloaded.load()
    assert [o["metadata"]["name"] for o in reloaded] == ["b"]
