"""`vigil local get` prints what `kubectl get` prints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from vigil_operator.local.table import format_table, human_duration, models_table

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (200, "3m20s"),
        (599, "9m59s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (5 * 3600 + 10 * 60, "5h10m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (8 * 86400, "8d"),
        (800 * 86400, "2y70d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_ages_as_kubectl_writes_them(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_columns_are_the_crds_printer_columns() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "models.vigil.dev.yaml").read_text())
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    default = [c["name"].upper() for c in columns if not c.get("priority")]
    wide = [c["name"].upper() for c in columns if c.get("priority")]
    table = models_table([], NOW, wide=True)
    assert table.split() == ["NAME", *default, *wide]


def model(name: str, ns: str = "default", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "creationTimestamp": (NOW - timedelta(seconds=200)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": {"state": "Running", "minUnits": 1, **({"maxUnits": 4} if name != "b" else {})},
        "status": status,
    }


def test_models_table_aligned_like_kubectl() -> None:
    models = [
        model("pcb-inspector", desiredUnits=3, inServiceUnits=2),
        model("b", desiredUnits=1, inServiceUnits=1),
        model("new"),
    ]
    assert models_table(models, NOW) == (
        "NAME            STATE     DESIRED   INSERVICE   MIN   MAX   AGE\n"
        "pcb-inspector   Running   3         2           1     4     3m20s\n"
        "b               Running   1         1           1           3m20s\n"
        "new             Running                         1     4     3m20s"
    )


def test_wide_and_all_namespaces() -> None:
    m = model("m", "lab", phase="Hosted", endpoint="127.0.0.1:50051", desiredUnits=1)
    lines = models_table([m], NOW, wide=True, namespaces=True).splitlines()
    assert lines[0].split() == [
        "NAMESPACE",
        "NAME",
        "STATE",
        "DESIRED",
        "INSERVICE",
        "MIN",
        "MAX",
        "AGE",
        "PHASE",
        "ENDPOINT",
    ]
    assert lines[1].split() == [
        "lab",
        "m",
        "Running",
        "1",
        "1",
        "4",
        "3m20s",
        "Hosted",
        "127.0.0.1:50051",
    ]


def test_minimum_column_width_and_last_column_unpadded() -> None:
    # widest cell + 3, but at least 6; the last column is not padded
    assert format_table(["A", "B"], [["x", "yy"], [None, None]]) == "A     B\nx     yy\n"
    assert format_table(["A", "B"], [[True, 1]]) == "A      B\ntrue   1"
