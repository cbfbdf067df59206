"""Threshold choice and evaluation figures against hand-worked examples."""

from __future__ import annotations

import math

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
