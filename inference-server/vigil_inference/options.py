"""The inference unit's settings, each default stated once.

`vigil train` fills a TrainConfig, `vigil serve` a ServeOptions (with its
ServingConfig) and `vigil detect` a DetectOptions; the trainer, the server and
the client take these objects, and the command's parser shows their defaults.
Plain frozen dataclasses and the standard library only: the parser imports
this module, and `vigil --help` and `vigil detect` must start without torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Final, Literal, TypeVar

from vigil.v1.wire import GRPC_PORT, METRICS_PORT

# Without anomalous examples, the share of normal images the threshold is set
# to flag. The highest held-out normal score (the old rule) sits near the
# 1/(n+1) quantile of n held-out images and missed most real defects.
DEFAULT_TARGET_FPR: Final = 0.05

T = TypeVar("T")
DetectFormat = Literal["vigil", "lookout"]
DETECT_FORMATS: Final[tuple[DetectFormat, ...]] = ("vigil", "lookout")


def _cpus() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How `vigil train` fits a model."""

    input_size: int | None = None  # None: candidates from the images' size
    coreset_ratio: float = 0.1
    max_bank: int = 2048
    holdout: float = 0.2
    seed: int = 0
    backbone: str | None = None  # None: every default candidate backbone
    feature_layers: tuple[str, ...] = ()  # empty: the backbone's defaults
    target_fpr: float = DEFAULT_TARGET_FPR  # normal-only threshold
    blur_sigma: float = 4.0
    batch_size: int = 8
    device: str = "auto"
    version: str = ""


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """Batching and admission limits of one unit."""

    max_batch_size: int = 16
    max_batch_delay_s: float = 0.005
    max_queue: int = 64
    # Decoding threads. The model's runtime already uses every core, so more
    # decoders than spare cores slow the model down (2 cores: 1 decoder
    # serves ~20 % more images/s than 2).
    prepare_workers: int = min(4, max(1, _cpus() - 1))


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """Where `vigil serve` listens, how it runs the model and how long it drains.

    The ports are the unit's contract (`vigil.v1.wire`), which the operator's
    manifests also pass explicitly.
    """

    host: str = "[::]"
    port: int = GRPC_PORT
    metrics_port: int = METRICS_PORT
    device: str = "auto"
    runtime: str = "auto"
    grace_seconds: float = 20.0
    serving: ServingConfig = dataclasses.field(default_factory=ServingConfig)


@dataclasses.dataclass(frozen=True)
class DetectOptions:
    """How `vigil detect` asks a unit."""

    timeout_s: float = 30.0  # per request
    format: DetectFormat = "vigil"


def from_flags(cls: type[T], args: argparse.Namespace, **given: Any) -> T:
    """`cls` from parsed flags: each field a flag of the same name set (not
    None), then `given`; the others keep their defaults. Flags are named for
    the fields, so no setting is spelled out a third time between them."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    flags = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return cls(**{**flags, **given})
