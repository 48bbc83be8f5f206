"""One-vs-rest AUROC against hand counts of correctly ordered pairs."""

from __future__ import annotations

import numpy as np
import pytest

from edge.stats import auroc_ovr


def test_auroc_against_a_hand_count() -> None:
    # Positives score 0.35 and 0.8; negatives 0.1 and 0.4: 3 of the 4 pairs ordered right.
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    assert auroc_ovr(y, np.stack([1 - p1, p1], axis=1)) == pytest.approx([0.75, 0.75])


def test_ties_count_half_and_a_missing_class_has_no_auroc() -> None:
    tied = auroc_ovr(np.array([0, 1]), np.array([[0.5, 0.5], [0.5, 0.5]]))
    assert tied == pytest.approx([0.5, 0.5])
    assert auroc_ovr(np.array([0, 0]), np.array([[0.9, 0.1], [0.8, 0.2]])) == [None, None]


def test_three_classes_by_hand() -> None:
    y = np.array([0, 1, 2, 2])
    proba = np.array(
        [
            [0.6, 0.3, 0.1],
            [0.2, 0.5, 0.3],
            [0.3, 0.2, 0.5],
            [0.7, 0.1, 0.2],
        ]
    )
    # Class 0: positive 0.6 vs negatives 0.2, 0.3, 0.7: 2 of 3.  Class 1: 0.5 beats all three.
    # Class 2: positives 0.5, 0.2 vs negatives 0.1, 0.3: (2 + 1) of 4.
    assert auroc_ovr(y, proba) == pytest.approx([2 / 3, 1.0, 3 / 4])
