"""`vigil_model_phase{phase}`: one series per phase, 1 for the Model's current
status.phase, gone with the Model (the alert VigilModelHostingFailed reads it)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from vigil_operator.core.status import PHASES
from vigil_operator.metrics import OperatorMetrics

KEY = ("factory", "pcb")


def phases(registry: CollectorRegistry) -> dict[str, float | None]:
    return {
        p: registry.get_sample_value(
            "vigil_model_phase", {"namespace": KEY[0], "model": KEY[1], "phase": p}
        )
        for p in PHASES
    }


def test_the_current_phase_is_1_and_every_other_phase_0() -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    metrics.models.update(KEY, {"phase": "StartingHosting", "desiredUnits": 2}, 2, 4)
    assert phases(metrics.registry) == {p: float(p == "StartingHosting") for p in PHASES}

    metrics.models.update(KEY, {"phase": "HostingFailed", "message": "bad"}, 2, 4)
    assert phases(metrics.registry) == {p: float(p == "HostingFailed") for p in PHASES}


def test_a_status_without_phase_reports_no_phase_and_a_deleted_model_none() -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    metrics.models.update(KEY, {}, 1, 1)
    assert phases(metrics.registry) == dict.fromkeys(PHASES, 0.0)

    metrics.models.forget(KEY)
    assert phases(metrics.registry) == dict.fromkeys(PHASES, None)


def test_zone_series_follow_the_status_zones() -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    status = {
        "zones": [
            {"name": "zone-a", "desiredUnits": 2, "inServiceUnits": 1, "healthy": True},
            {"name": "zone-c", "desiredUnits": 0, "inServiceUnits": 0, "healthy": False},
        ]
    }
    metrics.models.update(KEY, status, 2, 4)

    def sample(name: str, zone: str) -> float | None:
        labels = {"namespace": KEY[0], "model": KEY[1], "zone": zone}
        return metrics.registry.get_sample_value(name, labels)

    assert sample("vigil_zone_desired_inference_units", "zone-a") == 2
    assert sample("vigil_zone_in_service_inference_units", "zone-a") == 1
    assert sample("vigil_zone_healthy", "zone-a") == 1
    assert sample("vigil_zone_healthy", "zone-c") == 0
    metrics.models.update(KEY, {"zones": status["zones"][:1]}, 2, 4)
    assert sample("vigil_zone_healthy", "zone-c") is None  # a zone that left the status
