"""Threshold choice and the Lookout-style evaluation figures (pure numpy).

Labels: 1 anomalous, 0 normal. An image is anomalous when score > threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve via the rank-sum (Mann-Whitney U), ties halved."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def precision_recall_f1(scores: ArrayLike, labels: ArrayLike, threshold: float) -> Scores:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pred = s > threshold
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(precision, recall, f1)


def f1_optimal_threshold(scores: ArrayLike, labels: ArrayLike) -> float:
    """The threshold with the best F1, placed midway between neighbouring scores
    so that it does not sit on a training example; ties prefer the higher."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    uniq = np.unique(s)
    candidates = np.concatenate([[uniq[0] - 1e-6], (uniq[:-1] + uniq[1:]) / 2])
    best_t, best_f1 = float(candidates[-1]), -1.0
    for t in candidates:
        f1 = precision_recall_f1(s, y, float(t)).f1
        if f1 >= best_f1:
            best_t, best_f1 = float(t), f1
    return best_t


def normal_only_threshold(normal_scores: ArrayLike) -> float:
    """Without anomalous examples: just above the highest held-out normal score,
    so every known normal image passes."""
    s = np.asarray(normal_scores, dtype=np.float64)
    return float(s.max() * (1 + 1e-6))
