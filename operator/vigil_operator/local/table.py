"""kubectl-style tables (pure): the Model's printer columns from the CRD, ages
as kubectl writes them, columns aligned as kubectl's tabwriter aligns them
(padding 3, minimum width 6, the last column unpadded)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from vigil_operator.core.zones import parse_time

MIN_WIDTH: Final = 6
PADDING: Final = 3
MODEL_COLUMNS: Final = ("NAME", "STATE", "DESIRED", "INSERVICE", "MIN", "MAX", "AGE")
MODEL_WIDE_COLUMNS: Final = ("PHASE", "ENDPOINT")  # the CRD's priority-1 columns


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery's duration.HumanDuration: 45s, 3m20s, 12m, 5h10m, 3d4h, ..."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 60 * 2:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, (hours // 24) % 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def age(timestamp: object, now: datetime) -> str:
    since = parse_time(timestamp)
    if since is None:
        return "<unknown>"
    return human_duration((now - since).total_seconds())


def cell(value: object) -> str:
    """A cell as kubectl prints it: absent values blank, booleans lower-case."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns padded to their widest cell plus 3 (at least 6); the last column is not padded."""
    table = [list(headers), *([cell(c) for c in row] for row in rows)]
    widths = [
        max(MIN_WIDTH, max(len(r[i]) for r in table) + PADDING) for i in range(len(headers) - 1)
    ]
    lines = []
    for row in table:
        head = "".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
        lines.append((head + row[-1]).rstrip())
    return "\n".join(lines)


def _get(obj: Mapping[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def models_table(
    models: Iterable[Mapping[str, Any]],
    now: datetime,
    *,
    wide: bool = False,
    namespaces: bool = False,
) -> str:
    """`kubectl get models` (with `-o wide`, with `-A`) for these Model objects."""
    headers = [*MODEL_COLUMNS, *(MODEL_WIDE_COLUMNS if wide else ())]
    rows = []
    for m in models:
        row = [
            _get(m, "metadata.name"),
            _get(m, "spec.state"),
            _get(m, "status.desiredUnits"),
            _get(m, "status.inServiceUnits"),
            _get(m, "spec.minUnits"),
            _get(m, "spec.maxUnits"),
            age(_get(m, "metadata.creationTimestamp"), now),
        ]
        if wide:
            row += [_get(m, "status.phase"), _get(m, "status.endpoint")]
        if namespaces:
            row.insert(0, _get(m, "metadata.namespace"))
        rows.append(row)
    if namespaces:
        headers.insert(0, "NAMESPACE")
    return format_table(headers, rows)


def units_table(units: Iterable[Mapping[str, Any]], now: datetime) -> str:
    """`vigil local get units`: one line per unit process."""
    headers = ["NAME", "MODEL", "ZONE", "READY", "STATUS", "RESTARTS", "PID", "ENDPOINT", "AGE"]
    rows = [
        [
            u.get("name"),
            u.get("model"),
            u.get("zone"),
            "1/1" if u.get("ready") else "0/1",
            u.get("status"),
            u.get("restarts"),
            u.get("pid") or "",
            u.get("endpoint") or "",
            age(u.get("created"), now),
        ]
        for u in units
    ]
    return format_table(headers, rows)


def zones_table(zones: Iterable[Mapping[str, Any]]) -> str:
    """`vigil local get zones`: each simulated zone, up or down, and its units."""
    rows = [[z.get("name"), "Up" if z.get("healthy") else "Down", z.get("units")] for z in zones]
    return format_table(["ZONE", "STATUS", "UNITS"], rows)
