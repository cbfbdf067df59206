"""Which candidates `vigil train` fits and which one it keeps (pure rules)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vigil_inference.backbones import BackboneError
from vigil_inference.selection import (
    TOLERANCE,
    Candidate,
    Outcome,
    candidates,
    choose,
    input_sides,
    pseudo_anomalies,
    table,
)


def test_input_side_follows_the_images_without_upscaling_far() -> None:
    assert input_sides([160] * 5) == [224]  # small images: the backbones' own side
    assert input_sides([256, 256, 250]) == [224, 256]
    assert input_sides([300, 310]) == [256, 320]  # 320 is within 15 % of 300
    assert input_sides([1024, 2048]) == [256, 320]  # never more than two sides
    with pytest.raises(ValueError, match="no images"):
        input_sides([])


def test_default_candidates_cross_backbones_and_sides() -> None:
    names = [c.name for c in candidates([256] * 4)]
    assert names == [
        "efficientnet_lite0@224",
        "efficientnet_lite0@256",
        "efficientnet_lite2@224",
        "efficientnet_lite2@256",
    ]


def test_pins_narrow_the_set_and_bad_pins_are_refused() -> None:
    assert [c.name for c in candidates([256], backbone="mobilenet_v2")] == [
        "mobilenet_v2@224",
        "mobilenet_v2@256",
    ]
    assert [c.name for c in candidates([256], input_size=320)] == [
        "efficientnet_lite0@320",
        "efficientnet_lite2@320",
    ]
    with pytest.raises(ValueError, match="multiple of 32"):
        candidates([256], input_size=250)
    with pytest.raises(BackboneError, match="unknown backbone 'resnet50'"):
        candidates([256], backbone="resnet50")


def _outcome(backbone: str, side: int, auroc: float, f1: float = math.nan) -> Outcome:
    return Outcome(Candidate(backbone, side), auroc, f1, 1.0, 2048, pseudo=math.isnan(f1))


def test_a_clearly_better_candidate_wins_even_when_it_costs_more() -> None:
    outs = [
        _outcome("efficientnet_lite0", 224, 0.90, 0.8),
        _outcome("efficientnet_lite2", 256, 0.90 + 2 * TOLERANCE, 0.8),
    ]
    win, why = choose(outs)
    assert win == 1 and "best held-out AUROC" in why


def test_a_cheaper_candidate_within_tolerance_is_kept_and_the_reason_says_so() -> None:
    outs = [
        _outcome("efficientnet_lite2", 224, 0.95, 0.9),
        _outcome("efficientnet_lite0", 224, 0.95 - TOLERANCE / 2, 0.85),
        _outcome("efficientnet_lite0", 320, 0.96, 0.9),
    ]
    win, why = choose(outs)
    assert win == 1
    assert "efficientnet_lite0@320" in why and "serving cost" in why


def test_f1_breaks_auroc_ties_and_a_lone_candidate_is_kept() -> None:
    outs = [
        _outcome("efficientnet_lite0", 224, 0.9, 0.7),
        _outcome("efficientnet_lite0", 224, 0.9, 0.8),
    ]
    assert choose(outs)[0] == 1
    assert choose(outs[:1]) == (0, "the only candidate (pinned by --backbone/--input-size)")
    with pytest.raises(ValueError):
        choose([])


def test_normal_only_selection_names_pseudo_anomalies() -> None:
    outs = [_outcome("efficientnet_lite0", 224, 0.8), _outcome("efficientnet_lite2", 224, 0.9)]
    win, why = choose(outs)
    assert win == 1 and "pseudo-anomaly AUROC" in why
    text = table(outs, win)
    assert "pseudo-AUROC" in text and text.splitlines()[0].split()[-1] == "cost"
    assert text.splitlines()[2].startswith("* efficientnet_lite2@224")


def test_pseudo_anomalies_change_one_small_rectangle_deterministically() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (3, 96, 128), dtype=np.uint8) for _ in range(6)]
    before = [im.copy() for im in images]
    fakes = pseudo_anomalies(images, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(images, before, strict=True))
    for img, fake in zip(images, fakes, strict=True):
        assert fake.shape == img.shape and fake.dtype == np.uint8
        changed = np.argwhere((fake != img).any(axis=0))
        assert len(changed) > 0
        (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0)
        box = (y1 - y0 + 1) * (x1 - x0 + 1)
        assert box <= 0.07 * 96 * 128  # one local rectangle, 2-6 % of the area
    again = pseudo_anomalies(images, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(fakes, again, strict=True))
