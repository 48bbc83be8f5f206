"""Per-class metrics and summaries against confusion matrices computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from edge.stats import (
    class_counts,
    class_recalls,
    confusion_matrix,
    per_class_from_cm,
    summary_from_cm,
)

THREE = np.array([[4, 1, 0], [2, 3, 1], [0, 0, 5]])  # rows true Early, Pre, Pro


def _column(metrics: dict[str, np.ndarray], c: int) -> dict[str, float]:
    return {k: float(v[c]) for k, v in metrics.items()}


def test_confusion_matrix_counts_rows_true_columns_predicted() -> None:
    cm = confusion_matrix([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 2, 0], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 0]]
    assert confusion_matrix([], [], 2).tolist() == [[0, 0], [0, 0]]


def test_confusion_matrix_rejects_out_of_range_classes_and_unequal_lengths() -> None:
    with pytest.raises(ValueError, match=r"0\.\.1"):
        confusion_matrix([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="y_true has 2 items but y_pred has 1"):
        confusion_matrix([0, 1], [0], 2)


def test_three_class_metrics_match_the_hand_computation() -> None:
    # Early: TP 4, FP 2, FN 1, TN 9.  Pre: TP 3, FP 1, FN 3, TN 9.  Pro: TP 5, FP 1, FN 0, TN 10.
    tp, fp, fn, tn = class_counts(THREE)
    assert (tp.tolist(), fp.tolist(), fn.tolist(), tn.tolist()) == (
        [4, 3, 5],
        [2, 1, 1],
        [1, 3, 0],
        [9, 9, 10],
    )
    pc = per_class_from_cm(THREE)
    assert _column(pc, 0) == pytest.approx(
        {
            "precision": 4 / 6,
            "recall": 4 / 5,
            "specificity": 9 / 11,
            "accuracy": 13 / 16,
            "dsc": 8 / 11,
        }
    )
    assert _column(pc, 1) == pytest.approx(
        {
            "precision": 3 / 4,
            "recall": 3 / 6,
            "specificity": 9 / 10,
            "accuracy": 12 / 16,
            "dsc": 6 / 10,
        }
    )
    assert _column(pc, 2) == pytest.approx(
        {
            "precision": 5 / 6,
            "recall": 1.0,
            "specificity": 10 / 11,
            "accuracy": 15 / 16,
            "dsc": 10 / 11,
        }
    )
    s = summary_from_cm(THREE)
    assert float(s["accuracy"]) == pytest.approx(12 / 16)
    assert float(s["balanced_accuracy"]) == pytest.approx((4 / 5 + 3 / 6 + 1) / 3)
    assert float(s["weighted_f1"]) == pytest.approx((5 * 8 / 11 + 6 * 6 / 10 + 5 * 10 / 11) / 16)
    assert float(s["average_dsc"]) == pytest.approx((8 / 11 + 6 / 10 + 10 / 11) / 3)
    assert float(s["average_precision"]) == pytest.approx(0.75)


def test_binary_metrics_mirror_each_other_as_in_the_seeds_tables() -> None:
    # ALL: TP 5, FN 1 (called HEM), FP 1 (a HEM called ALL), TN 3.
    pc = per_class_from_cm(np.array([[5, 1], [1, 3]]))
    assert _column(pc, 0) == pytest.approx(
        {"precision": 5 / 6, "recall": 5 / 6, "specificity": 3 / 4, "accuracy": 0.8, "dsc": 10 / 12}
    )
    # One class's specificity is the other's recall; per-class accuracy is the overall one.
    assert pc["specificity"][1] == pc["recall"][0] and pc["specificity"][0] == pc["recall"][1]
    assert pc["accuracy"][0] == pc["accuracy"][1] == pytest.approx(0.8)


def test_a_stack_of_matrices_gives_each_matrix_its_own_metrics() -> None:
    other = np.array([[5, 0, 0], [0, 6, 0], [1, 1, 3]])
    stacked = per_class_from_cm(np.stack([THREE, other]))
    for i, cm in enumerate((THREE, other)):
        for k, v in per_class_from_cm(cm).items():
            np.testing.assert_allclose(stacked[k][i], v)
    np.testing.assert_allclose(
        summary_from_cm(np.stack([THREE, other]))["accuracy"], [0.75, 14 / 16]
    )


def test_a_zero_denominator_is_zero_and_an_absent_class_has_no_recall() -> None:
    cm = np.array([[4, 0, 0], [3, 0, 0], [0, 0, 0]])  # B never predicted, C never present
    pc = per_class_from_cm(cm)
    assert pc["precision"][1] == 0.0 and pc["recall"][1] == 0.0 and pc["recall"][2] == 0.0
    assert class_recalls(cm) == [1.0, 0.0, None]
