"""The operator's settings: one typed value, built once by the `vigil` command
from the chart's environment variables (VIGIL_*, an external interface) and
its flags, then passed down. Nothing reads the environment after that."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vigil_operator.core.election import ElectionConfig


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def _resources(env: Mapping[str, str], name: str) -> dict[str, dict[str, str]] | None:
    """JSON like {"requests": {"cpu": "1"}, "limits": {"memory": "4Gi"}}."""
    raw = env.get(name, "")
    if not raw:
        return None
    try:
        value: Any = json.loads(raw)
        out = {
            kind: {str(k): str(v) for k, v in (value.get(kind) or {}).items()}
            for kind in ("requests", "limits")
        }
    except (ValueError, AttributeError):
        raise ValueError(
            f'{name} must be JSON like {{"requests": {{"cpu": "1"}}}}, got {raw!r}'
        ) from None
    return out


@dataclass(frozen=True)
class OperatorSettings:
    default_image: str = "ghcr.io/vigil-dev/vigil-inference:0.1.0"
    reconcile_interval_s: float = 10.0  # the timer: zone health, status freshness
    unschedulable_timeout_s: float = 300.0  # a zone whose units stay Pending this long is unhealthy
    zone_recovery_s: float = 60.0  # an unhealthy zone returns once a node is Ready this long
    unit_ready_timeout_s: float = 600.0  # a unit running this long but not Ready is reported
    cluster_domain: str = "cluster.local"
    metrics_port: int = 8080
    scrape_interval_s: float = 2.0  # how often units' /metrics are read for autoscaling
    stable_window_s: float = 60.0  # autoscaler's averaging window
    panic_window_s: float = 6.0  # autoscaler's short window for saturation
    # units' requests/limits for resources a Model does not name (None: the core's)
    default_resources: dict[str, dict[str, str]] | None = field(default=None)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorSettings:
        """The chart's VIGIL_* variables; what is unset keeps its default."""
        d = cls()
        return cls(
            default_image=env.get("VIGIL_UNIT_IMAGE", d.default_image),
            reconcile_interval_s=_float(env, "VIGIL_RECONCILE_INTERVAL", d.reconcile_interval_s),
            unschedulable_timeout_s=_float(
                env, "VIGIL_UNSCHEDULABLE_TIMEOUT", d.unschedulable_timeout_s
            ),
            zone_recovery_s=_float(env, "VIGIL_ZONE_RECOVERY", d.zone_recovery_s),
            unit_ready_timeout_s=_float(env, "VIGIL_UNIT_READY_TIMEOUT", d.unit_ready_timeout_s),
            cluster_domain=env.get("VIGIL_CLUSTER_DOMAIN", d.cluster_domain),
            metrics_port=int(_float(env, "VIGIL_METRICS_PORT", d.metrics_port)),
            scrape_interval_s=_float(env, "VIGIL_SCRAPE_INTERVAL", d.scrape_interval_s),
            stable_window_s=_float(env, "VIGIL_STABLE_WINDOW", d.stable_window_s),
            panic_window_s=_float(env, "VIGIL_PANIC_WINDOW", d.panic_window_s),
            default_resources=_resources(env, "VIGIL_UNIT_RESOURCES"),
        )


@dataclass(frozen=True)
class RunOptions:
    """How `vigil operator` runs: /healthz, and alone or by election."""

    liveness_port: int = 8081  # 0: no /healthz
    standalone: bool = False
    election: ElectionConfig = field(default_factory=ElectionConfig)
    lease_name: str = "vigil-operator"
    lease_namespace: str = ""  # "": default_lease_namespace()
    identity: str = ""  # "": default_identity()
