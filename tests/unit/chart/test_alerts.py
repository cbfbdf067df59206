"""The alert rules, by Prometheus's own promtool: `check rules` (syntax, PromQL,
templates) and `test rules` (alerts.test.yaml: each alert fires in one
scenario, with its rendered summary and description, and stays silent in
others)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.tools import require
from tests.unit.chart.conftest import CHART

RULES = CHART / "rules" / "vigil.rules.yaml"
SCENARIOS = Path(__file__).with_name("alerts.test.yaml")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(require("promtool")), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", str(SCENARIOS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_scenario() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    scenarios = yaml.safe_load(SCENARIOS.read_text())
    assert scenarios["rule_files"] == ["../../../charts/vigil/rules/vigil.rules.yaml"]
    fired: set[str] = set()
    silent: set[str] = set()
    for test in scenarios["tests"]:
        for case in test.get("alert_rule_test", []):
            expected = case["exp_alerts"]
            (fired if expected else silent).add(case["alertname"])
            for alert in expected:
                assert set(alert["exp_annotations"]) == {"summary", "description"}
    assert fired == alerts, f"alerts never fired: {alerts - fired}"
    # Besides an evaluation that expects nothing, each firing scenario holds
    # series that must not fire: promtool compares the full list of alerts.
    assert silent == alerts, f"alerts never checked silent: {alerts - silent}"
