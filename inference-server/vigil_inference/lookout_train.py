"""`vigil train --manifest`: from Lookout datasets to the trainer's inputs.

Lookout kept a training and a test dataset. Here the training set's normal
images build the memory bank; the test set's normal images and anomalies
set the threshold and grade it (half each, as `train` does); the training
set's anomalies with masks teach the anomaly types. Given one dataset, its
normal images are split as `--normal` would be, and its anomalies in half
(one half teaches the types, the other sets and grades the threshold).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vigil_inference import anomaly_types
from vigil_inference.lookout import Dataset, DatasetError, Entry, read_datasets
from vigil_inference.options import TrainConfig
from vigil_inference.trainer import TrainResult, train


def _typed(
    teach: Sequence[Entry], test: Sequence[Entry], ds: Dataset
) -> anomaly_types.TypeTraining:
    return anomaly_types.TypeTraining(
        ds.types,
        ds.background_color,
        tuple((e.image, e.mask) for e in teach if e.mask is not None),
        {e.image: e.mask for e in test if e.mask is not None},
    )


def plan(
    train_ds: Dataset, test_ds: Dataset | None, seed: int
) -> tuple[list[Path], list[Path] | None, list[Path], anomaly_types.TypeTraining | None]:
    """(normal, held-out normal or None, test anomalous, types or None)."""
    if test_ds is None:
        anomalies = train_ds.anomalous
        if train_ds.types:
            order = np.random.default_rng(seed).permutation(len(anomalies))
            half = len(anomalies) // 2
            teach = [anomalies[i] for i in order[:half]]
            test = [anomalies[i] for i in order[half:]]
        else:
            teach, test = [], anomalies
        held = None
    else:
        teach, test, held = train_ds.anomalous, test_ds.anomalous, test_ds.normal
        if not held:
            raise DatasetError(f"{test_ds.source}: the test set needs normal images")
    types = None
    if train_ds.types:
        if not teach or not test:
            raise DatasetError(
                f"{train_ds.source}: learning anomaly types needs anomalous images with masks "
                "both to learn from and to test on (at least 2 in one manifest)"
            )
        missing = [e for e in test if e.mask is None]
        if missing:
            raise DatasetError(f"{missing[0].where}: test anomalies need masks to grade types")
        masked = [(e.image, e.mask, e.where) for e in [*teach, *test] if e.mask is not None]
        try:
            anomaly_types.check_masks(masked, train_ds.types)
        except ValueError as exc:
            raise DatasetError(str(exc)) from exc
        types = _typed(teach, test, train_ds)
    return train_ds.normal, held, [e.image for e in test], types


def train_datasets(
    paths: Sequence[str | Path], out: str | Path, cfg: TrainConfig, quiet: bool = False
) -> TrainResult:
    """Read and check every manifest first: a bad line trains nothing."""
    train_ds, test_ds = read_datasets(paths)
    normal, held, anomalous, types = plan(train_ds, test_ds, cfg.seed)
    return train(normal, anomalous, out, cfg, quiet, held_out=held, types=types)
