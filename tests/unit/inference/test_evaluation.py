"""Threshold choice and evaluation figures against hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vigil_inference import evaluation as ev


def test_auroc_perfect_inverse_ties_and_one_class() -> None:
    assert ev.auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert ev.auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert ev.auroc([0.5, 0.5], [0, 1]) == 0.5
    # one of four positive/negative pairs misordered
    assert ev.auroc([0.1, 0.6, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert math.isnan(ev.auroc([0.1, 0.2], [0, 0]))


def test_precision_recall_f1_at_threshold() -> None:
    s = ev.precision_recall_f1([0.1, 0.6, 0.5, 0.9], [0, 0, 1, 1], threshold=0.55)
    assert (s.precision, s.recall) == (0.5, 0.5)
    assert s.f1 == pytest.approx(0.5)
    none = ev.precision_recall_f1([0.1, 0.2], [0, 1], threshold=1.0)
    assert (none.precision, none.recall, none.f1) == (0.0, 0.0, 0.0)


def test_f1_optimal_threshold_separates_and_sits_between_scores() -> None:
    scores, labels = [0.1, 0.2, 0.3, 0.7, 0.8], [0, 0, 0, 1, 1]
    t = ev.f1_optimal_threshold(scores, labels)
    assert 0.3 < t < 0.7
    assert ev.precision_recall_f1(scores, labels, t).f1 == 1.0


def test_f1_optimal_threshold_with_overlap_picks_best_f1() -> None:
    scores, labels = [0.1, 0.4, 0.35, 0.6, 0.9], [0, 0, 1, 1, 1]
    t = ev.f1_optimal_threshold(scores, labels)
    best = max(ev.precision_recall_f1(scores, labels, c).f1 for c in [0.0, 0.2, 0.37, 0.5, 0.7])
    assert ev.precision_recall_f1(scores, labels, t).f1 == pytest.approx(best)


def test_normal_only_threshold_passes_every_known_normal() -> None:
    scores = [1.0, 2.5, 2.0]
    t = ev.normal_only_threshold(scores)
    assert all(s <= t for s in scores) and t < 2.51


def test_normal_only_threshold_keeps_the_old_rule_when_too_few_to_fit() -> None:
    scores = [1.0, 2.5, 2.0, 1.5]  # fewer than MIN_FIT
    assert ev.normal_only_threshold(scores, 0.05) == pytest.approx(2.5, rel=1e-5)
    assert ev.gumbel_exceedance(scores, ev.normal_only_threshold(scores)) == 0.0


def test_gumbel_threshold_flags_about_the_target_share_of_fresh_normals() -> None:
    rng = np.random.default_rng(0)
    held_out = rng.gumbel(10.0, 1.5, 60)  # image scores are maxima: Gumbel-like
    fresh = rng.gumbel(10.0, 1.5, 20_000)
    for target in (0.01, 0.05, 0.1):
        t = ev.normal_only_threshold(held_out, target)
        assert abs(float(np.mean(fresh > t)) - target) < 0.6 * target + 0.01
        assert ev.gumbel_exceedance(held_out, t) == pytest.approx(target, rel=1e-6)
    # A lower target is a higher threshold; 5 % sits below the highest normal.
    assert ev.normal_only_threshold(held_out, 0.01) > ev.normal_only_threshold(held_out, 0.05)
    assert ev.normal_only_threshold(held_out, 0.05) < held_out.max()


def test_normal_only_threshold_refuses_a_meaningless_target() -> None:
    with pytest.raises(ValueError, match="false-positive rate"):
        ev.normal_only_threshold([1.0] * 10, 1.5)
