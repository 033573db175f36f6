"""Ranking metrics: the one-vs-rest AUC of class probabilities against true labels.

Pure functions of arrays (no model, no data folder), so that training can score its
validation split without importing :mod:`cxrlib.evaluate`, which imports training.
:mod:`cxrlib.evaluate` builds its reported metrics and intervals on these.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def _binary_auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC per row of ``scores`` ``(r, n)`` with the same ``positive`` mask
    ``(n,)``: the Mann-Whitney statistic from average ranks (ties count one half)."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    ranks = rankdata(scores, axis=-1)
    return (ranks[..., positive].sum(axis=-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def macro_auc(probs: np.ndarray, labels: np.ndarray, present: list[int] | None = None) -> float:
    """Mean one-vs-rest AUC over the classes present (``nan`` with fewer than two)."""
    present = present if present is not None else sorted(int(c) for c in np.unique(labels))
    if len(present) < 2:
        return float("nan")
    return float(np.mean([roc_auc_score(labels == c, probs[:, c]) for c in present]))
