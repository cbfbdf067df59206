"""Threshold choice and the Lookout-style evaluation figures (pure numpy).

Labels: 1 anomalous, 0 normal. An image is anomalous when score > threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from vigil_inference.options import DEFAULT_TARGET_FPR


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


EULER_GAMMA = 0.5772156649015329
MIN_FIT = 5  # fewer held-out scores than this: no fit, the highest one


def normal_only_threshold(
    normal_scores: ArrayLike, target_fpr: float = DEFAULT_TARGET_FPR
) -> float:
    """Without anomalous examples: the (1 - target_fpr) quantile of a Gumbel
    distribution fitted to the held-out normal scores by moments.

    An image score is the maximum of many patch distances, and maxima follow
    an extreme-value (Gumbel) law, so a fit extrapolates the tail better than
    an empirical quantile of a few dozen scores, and states the expected false
    positive rate rather than leaving it implied. Never below the median
    normal score; with fewer than MIN_FIT scores, just above the highest.
    """
    if not 0 < target_fpr < 1:
        raise ValueError(f"target false-positive rate must be in (0, 1), got {target_fpr}")
    s = np.asarray(normal_scores, dtype=np.float64)
    top = float(s.max() * (1 + 1e-6))
    std = float(s.std(ddof=1)) if len(s) > 1 else 0.0
    if len(s) < MIN_FIT or std <= 0:
        return top
    beta = std * np.sqrt(6) / np.pi
    mu = float(s.mean()) - EULER_GAMMA * beta
    t = mu - beta * np.log(-np.log1p(-target_fpr))
    return float(max(t, np.median(s)))


def gumbel_exceedance(normal_scores: ArrayLike, threshold: float) -> float:
    """Share of normal images expected above `threshold` under the same fit."""
    s = np.asarray(normal_scores, dtype=np.float64)
    std = float(s.std(ddof=1)) if len(s) > 1 else 0.0
    if len(s) < MIN_FIT or std <= 0:
        return float(np.mean(s > threshold))
    beta = std * np.sqrt(6) / np.pi
    mu = float(s.mean()) - EULER_GAMMA * beta
    return float(-np.expm1(-np.exp(-(threshold - mu) / beta)))
