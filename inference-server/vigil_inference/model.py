"""A loaded anomaly model, ready to score batches: what the server serves.

CONTRACT STUB: being implemented. The server codes against this surface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vigil_inference.images import ImageHeader


@dataclass(frozen=True)
class Detection:
    """One image's result, in Lookout's terms (see anomaly.proto)."""

    is_anomalous: bool
    confidence: float  # in [0, 1]: confidence in is_anomalous
    anomaly_score: float
    threshold: float
    area_fraction: float  # share of pixels above the threshold, [0, 1]
    mask_png: bytes | None  # RGB PNG at the request image's size, when asked for
    model_version: str


@dataclass(frozen=True)
class ModelInfo:
    """What DescribeModel reports, read from the artifact's metadata."""

    model_version: str
    backbone: str
    feature_layers: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width)
    threshold: float
    memory_bank_size: int
    artifact_sha256: str
    created_at: str
    f1: float
    precision: float
    recall: float
    auroc: float
    training_images: int
    normal_test_images: int
    anomalous_test_images: int
    threshold_independent: bool


class AnomalyModel:
    """Scores images. `prepare` and `detection` are thread-safe; `predict`
    is called from one executor thread at a time."""

    info: ModelInfo
    device: str  # "cpu" or "cuda:0"
    runtime: str  # "onnxruntime" or "torch"

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", runtime: str = "auto") -> AnomalyModel:
        raise NotImplementedError

    def prepare(self, data: bytes, header: ImageHeader) -> Any:
        """Decode and preprocess one validated image (raises InvalidImage)."""
        raise NotImplementedError

    def predict(self, inputs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Score prepared images: (scores [N], anomaly maps [N, H, W])."""
        raise NotImplementedError

    def detection(
        self, score: float, amap: np.ndarray, image_size: tuple[int, int], return_mask: bool
    ) -> Detection:
        """Turn one score and map into a Detection; image_size is (width, height)."""
        raise NotImplementedError

    def warmup(self, max_batch_size: int) -> None:
        """Run the batch sizes the server will use once, before reporting SERVING."""
        raise NotImplementedError
