"""Area under the ROC curve, one class against the rest, from scores (no thresholds needed)."""

from __future__ import annotations

import numpy as np


def auroc_ovr(y_true: np.ndarray, proba: np.ndarray) -> list[float | None]:
    """One-vs-rest ROC AUC per class (Mann-Whitney, ties averaged); None without both classes.

    AUC is the chance that a random positive scores above a random negative (a tie counts
    half): the Mann-Whitney U over n_pos * n_neg, computed from ranks in O(n log n).
    """
    y = np.asarray(y_true)
    scores = np.asarray(proba, float)
    out: list[float | None] = []
    for c in range(scores.shape[1]):
        pos = y == c
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos == 0 or n_neg == 0:
            out.append(None)
            continue
        # Average ranks (1-based) of tied scores: each distinct value gets its run's mean rank.
        _, inverse, counts = np.unique(scores[:, c], return_inverse=True, return_counts=True)
        ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
        out.append(float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)))
    return out
