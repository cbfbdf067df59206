"""Rendering charts/vigil with the real helm (see tests/tools.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tools import ROOT, require

CHART = ROOT / "charts" / "vigil"
RELEASE, NAMESPACE = "vigil", "vigil-system"

# Every toggle on: monitoring, the dashboard, a namespaced operator.
ALL_ON: dict[str, Any] = {
    "prometheus": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
    },
    "grafana": {"dashboard": {"enabled": True, "annotations": {"grafana_folder": "Vigil"}}},
    "watchNamespaces": ["factory", "lab"],
    "verbose": True,
    "extraArgs": ["--verbose"],
    "extraEnv": [{"name": "VIGIL_SCRAPE_INTERVAL", "value": "5"}],
    "serviceAccount": {"annotations": {"example.com/role": "vigil"}},
    "podAnnotations": {"example.com/scrape": "false"},
    "priorityClassName": "system-cluster-critical",
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "system"}],
    "commonLabels": {"team": "vision"},
}

Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def helm() -> Path:
    return require("helm")


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def render(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Render:
    """render(values=None, *extra_args) -> the manifests `helm template` prints."""
    cache: dict[str, list[dict[str, Any]]] = {}
    folder = tmp_path_factory.mktemp("values")

    def run(values: dict[str, Any] | None = None, *extra: str) -> list[dict[str, Any]]:
        text = yaml.safe_dump(values or {}, sort_keys=True)
        key = text + "\0".join(extra)
        if key not in cache:
            path = folder / f"values-{len(cache)}.yaml"
            path.write_text(text)
            out = run_helm(
                helm,
                "template",
                RELEASE,
                str(CHART),
                "--namespace",
                NAMESPACE,
                "-f",
                str(path),
                *extra,
            ).stdout
            cache[key] = [d for d in yaml.safe_load_all(out) if d]
        return [dict(d) for d in cache[key]]

    return run


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]
