"""The dashboard and the alert rules name only metrics the code exports
(checked here without Prometheus: the live check is
tests/integration/observability), and the dashboard is well formed for
Grafana's sidecar."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from prometheus_client import generate_latest

from tests.unit.chart.conftest import CHART
from vigil_inference.metrics import InferenceMetrics
from vigil_operator.metrics import OperatorMetrics

DASHBOARD = json.loads((CHART / "dashboards" / "vigil.json").read_text())
RULES = yaml.safe_load((CHART / "rules" / "vigil.rules.yaml").read_text())
METRIC = re.compile(r"\b(vigil_[a-z_]+|up)\b")


def exported() -> set[str]:
    """Every sample name the operator and a unit expose, with a Model known."""
    operator = OperatorMetrics()
    key = ("factory", "pcb")
    status = {"phase": "Hosted", "desiredUnits": 2, "inServiceUnits": 2}
    operator.models.update(key, {**status, "zones": [{"name": "a", "inServiceUnits": 2}]}, 1, 4)
    operator.models.observe_load(key, "utilization", 0.5)
    operator.reconcile_duration.observe(0.01)
    unit = InferenceMetrics()
    unit.observe_batch(2, 0.01)
    unit.request_duration.observe(0.02)
    text = (generate_latest(operator.registry) + generate_latest(unit.registry)).decode()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    return names | {"up"}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]


def test_dashboard_and_alerts_name_only_exported_metrics() -> None:
    names = exported()
    used = {
        m
        for p in panels(DASHBOARD)
        for t in p.get("targets", [])
        for m in METRIC.findall(t["expr"])
    }
    used |= {m for g in RULES["groups"] for r in g["rules"] for m in METRIC.findall(r["expr"])}
    assert used - names == set()
    # Everything a unit or the operator exports is on the dashboard.
    on_dashboard = {
        m
        for p in panels(DASHBOARD)
        for t in p.get("targets", [])
        for m in METRIC.findall(t["expr"])
    }
    suffix = re.compile(r"_(bucket|sum|count)$")
    families = {suffix.sub("", n) for n in names if not n.endswith("_created")} - {"up"}
    assert families - {suffix.sub("", n) for n in on_dashboard} == set()


def test_dashboard_is_well_formed_for_the_sidecar() -> None:
    assert DASHBOARD["uid"] and DASHBOARD["title"] == "Vigil"
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace", "model"}
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(DASHBOARD)]
    assert len(ids) == len(set(ids))
    for panel in panels(DASHBOARD):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["description"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            if not re.search(r"vigil_(reconcile|operator)_", target["expr"]):  # not per Model
                assert 'namespace="$namespace"' in target["expr"], target["expr"]
                assert 'model=~"$model"' in target["expr"], target["expr"]
