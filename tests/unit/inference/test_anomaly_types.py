"""Naming anomalous regions: patch labels from masks, the smoothing, the
painted mask and the per-type evaluation (small arrays, no model)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vigil_inference.anomaly_types import (
    TypeHead,
    _label_halo,
    areas,
    classify,
    evaluate,
    paint,
    patch_labels,
    pixel_type_accuracy,
)
from vigil_inference.lookout import AnomalyType

TYPES = (AnomalyType("scratch", "#2CA02C"), AnomalyType("dent", "#1F77B4"))


def test_patch_labels_take_the_class_covering_enough_of_each_patch() -> None:
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[0:4, 0:4] = 1  # fills patch (0, 0)
    labels[4, 4] = 2  # 1 of 16 pixels of patch (1, 1): below the share
    labels[0:2, 4:8] = 2  # half of patch (0, 1)
    assert patch_labels(labels, (2, 2), 2).tolist() == [[1, 2], [0, 0]]


def test_type_head_names_each_patch_by_its_nearest_labelled_feature() -> None:
    head = TypeHead(torch.tensor([[0.0, 0.0], [10.0, 10.0]]), torch.tensor([1, 2]))
    feats = torch.tensor([[[[1.0, 9.0]], [[0.0, 11.0]]]])  # [1, 2, 1, 2]
    labels, dist = head(feats)
    assert labels.tolist() == [[[1, 2]]]
    assert dist[0, 0].tolist() == pytest.approx([1.0, 2**0.5])  # (1, 0) and (9, 11)


def test_region_smoothing_gives_a_region_its_majority_class() -> None:
    amap = np.zeros((8, 8), dtype=np.float32)
    amap[0:4, 0:6] = 1.0  # one region over three patches
    amap[6:8, 6:8] = 1.0  # another, apart
    # 2x2 pixels per patch: the first region covers 4 scratch and 2 dent patches.
    cells = np.array([[1, 1, 2, 1], [1, 1, 2, 1], [1, 1, 1, 1], [1, 1, 1, 2]])
    per_pixel, typed = classify(amap, 0.5, cells, smoothing="region")
    assert set(np.unique(typed[0:4, 0:6])) == {1}
    assert set(np.unique(typed[6:8, 6:8])) == {2}
    assert (typed[amap <= 0.5] == 0).all()
    assert per_pixel[0, 7] == 0  # outside every region: unnamed
    _, raw = classify(amap, 0.5, cells, smoothing="none")
    assert set(np.unique(raw[0:4, 0:6])) == {1, 2}
    assert areas(typed, 2) == [24 / 64, 4 / 64]


def test_paint_uses_the_class_and_background_colours() -> None:
    per_pixel = np.array([[1, 2], [0, 1]], dtype=np.uint8)
    anomalous = np.array([[True, True], [False, False]])
    png = paint(per_pixel, anomalous, TYPES, "#FFFFFF")
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert rgb[0, 0].tolist() == [0x2C, 0xA0, 0x2C]
    assert rgb[0, 1].tolist() == [0x1F, 0x77, 0xB4]
    assert rgb[1].tolist() == [[255, 255, 255]] * 2


def test_per_type_precision_and_recall_over_images() -> None:
    predicted = [{1}, {1, 2}, set(), {2}]
    truth = [{1}, {1}, {2}, set()]
    scratch, dent = evaluate(predicted, truth, TYPES)
    assert (scratch.precision, scratch.recall, scratch.images) == (1.0, 1.0, 2)
    assert (dent.precision, dent.recall, dent.images) == (0.0, 0.0, 1)


def test_pixel_type_accuracy_counts_only_found_defect_pixels() -> None:
    typed = np.array([[1, 2, 0, 1]])
    truth = np.array([[1, 1, 1, 0]])
    assert pixel_type_accuracy([(typed, truth)]) == 0.5


def test_fragment_smoothing_keeps_large_pieces_and_drops_stray_patches() -> None:
    amap = np.ones((6, 6), dtype=np.float32)  # one region: the whole grid
    cells = np.array(
        [
            [1, 1, 1, 1, 1, 2],  # a lone dent patch: noise
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
            [2, 2, 2, 1, 1, 1],  # a 4-patch dent: a second defect
            [2, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
        ]
    )
    _, typed = classify(amap, 0.5, cells)
    assert typed[0, 5] == 1
    assert typed[3, 0:3].tolist() == [2, 2, 2] and typed[4, 0] == 2
    assert (typed == 2).sum() == 4


def test_normal_looking_patches_take_their_regions_class() -> None:
    amap = np.ones((4, 4), dtype=np.float32)
    # Negative: nearer the normal bank than any defect (nearest class 2).
    cells = np.array([[1, 1, -2, -2], [1, 1, -2, -2], [1, 1, 1, 1], [1, 1, 1, 1]])
    _, typed = classify(amap, 0.5, cells)
    assert (typed == 1).all()
    _, raw = classify(amap, 0.5, cells, smoothing="none")
    assert (raw == 2).sum() == 4


def test_halo_patches_are_labelled_after_the_nearest_drawn_patch() -> None:
    cells = np.array([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 2], [0, 0, 0, 0]])
    hot = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]], dtype=bool)
    assert _label_halo(cells, hot).tolist() == [
        [1, 1, 0, 0],
        [1, 1, 1, 0],
        [0, 0, 2, 2],
        [0, 0, 0, 0],
    ]
