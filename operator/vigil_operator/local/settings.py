"""The local runtime's settings: plain values, cheap to import (the command's
flags take their defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from vigil.v1.wire import GRPC_PORT, METRICS_PORT
from vigil_operator.settings import OperatorSettings

DEFAULT_ZONES: Final = ("zone-a", "zone-b", "zone-c")
LOCAL_IMAGE: Final = "local"  # units are processes here; the core still names an image


@dataclass(frozen=True)
class LocalConfig:
    """`vigil local up`'s settings; its flags show these defaults."""

    zones: tuple[str, ...] = DEFAULT_ZONES
    host: str = "127.0.0.1"  # client endpoint and metrics
    port: int = GRPC_PORT
    metrics_port: int = METRICS_PORT
    state_dir: Path = Path(".vigil-local")
    grace_s: float = 15.0
    serve_args: tuple[str, ...] = ()
    serving_nice: int = 0  # see units.Launch
    operator: OperatorSettings = field(
        default_factory=lambda: OperatorSettings(reconcile_interval_s=1.0)
    )
