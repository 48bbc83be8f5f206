"""Metrics against confusion matrices computed by hand, and their confidence intervals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer.metrics import (
    auroc_ovr,
    bootstrap_cms,
    classification_report,
    confusion_matrix,
    headline,
    wilson_interval,
)


def _from_cm(cm: list[list[int]]) -> tuple[list[int], list[int]]:
    """Label vectors that produce exactly ``cm`` (rows true, columns predicted)."""
    t, p = [], []
    for i, row in enumerate(cm):
        for j, n in enumerate(row):
            t += [i] * n
            p += [j] * n
    return t, p


def _values(rep: dict, label: str) -> dict[str, float]:
    return {
        m: rep["per_class"][label][m]["value"] for m in rep["per_class"][label] if m != "support"
    }


def test_binary_metrics_match_the_hand_computation() -> None:
    # ALL: TP 5, FN 1 (called HEM), FP 1 (a HEM called ALL), TN 3.
    t, p = _from_cm([[5, 1], [1, 3]])
    rep = classification_report(t, p, ["ALL", "HEM"], n_boot=200)
    assert rep["confusion_matrix"] == [[5, 1], [1, 3]]
    assert _values(rep, "ALL") == pytest.approx(
        {"precision": 5 / 6, "recall": 5 / 6, "specificity": 3 / 4, "accuracy": 0.8, "dsc": 10 / 12}
    )
    assert _values(rep, "HEM") == pytest.approx(
        {"precision": 3 / 4, "recall": 3 / 4, "specificity": 5 / 6, "accuracy": 0.8, "dsc": 6 / 8}
    )
    # As in seed 000's tables: one class's specificity is the other's recall, and the per-class
    # accuracy of a binary problem is the overall accuracy.
    assert rep["accuracy"]["value"] == pytest.approx(0.8)
    assert rep["average"]["precision"]["value"] == pytest.approx((5 / 6 + 3 / 4) / 2)
    assert rep["weighted_f1"]["value"] == pytest.approx((6 * 10 / 12 + 4 * 6 / 8) / 10)
    assert rep["n"] == 10 and rep["n_per_class"] == {"ALL": 6, "HEM": 4}


def test_three_class_metrics_match_the_hand_computation() -> None:
    cm = [[4, 1, 0], [2, 3, 1], [0, 0, 5]]
    t, p = _from_cm(cm)
    rep = classification_report(t, p, ["Early", "Pre", "Pro"], n_boot=200)
    # Early: TP 4, FP 2, FN 1, TN 9.  Pre: TP 3, FP 1, FN 3, TN 9.  Pro: TP 5, FP 1, FN 0, TN 10.
    assert _values(rep, "Early") == pytest.approx(
        {
            "precision": 4 / 6,
            "recall": 4 / 5,
            "specificity": 9 / 11,
            "accuracy": 13 / 16,
            "dsc": 8 / 11,
        }
    )
    assert _values(rep, "Pre") == pytest.approx(
        {
            "precision": 3 / 4,
            "recall": 3 / 6,
            "specificity": 9 / 10,
            "accuracy": 12 / 16,
            "dsc": 6 / 10,
        }
    )
    assert _values(rep, "Pro") == pytest.approx(
        {
            "precision": 5 / 6,
            "recall": 1.0,
            "specificity": 10 / 11,
            "accuracy": 15 / 16,
            "dsc": 10 / 11,
        }
    )
    assert rep["accuracy"]["value"] == pytest.approx(12 / 16)
    assert rep["balanced_accuracy"]["value"] == pytest.approx((4 / 5 + 3 / 6 + 1) / 3)
    assert rep["weighted_f1"]["value"] == pytest.approx(
        (5 * 8 / 11 + 6 * 6 / 10 + 5 * 10 / 11) / 16
    )
    assert rep["average"]["dsc"]["value"] == pytest.approx((8 / 11 + 6 / 10 + 10 / 11) / 3)
    h = headline(rep)
    assert h["n_test"] == 16 and h["average_precision"] == pytest.approx(0.75)


def test_a_class_never_predicted_has_precision_zero_and_an_uninformative_interval() -> None:
    t, p = _from_cm([[4, 0], [3, 0]])
    rep = classification_report(t, p, ["A", "B"], n_boot=100)
    b = rep["per_class"]["B"]
    assert b["precision"]["value"] == 0.0 and b["precision"]["ci95"] == [0.0, 1.0]
    assert b["recall"]["value"] == 0.0


def test_wilson_interval_known_values() -> None:
    # Reference values (Wilson 1927; statsmodels proportion_confint(method="wilson")).
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(50, 50) == pytest.approx((0.9287, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_intervals_contain_the_estimate_and_shrink_with_n() -> None:
    small_t, small_p = _from_cm([[8, 2], [3, 7]])
    big_t, big_p = _from_cm([[80, 20], [30, 70]])
    small = classification_report(small_t, small_p, ["A", "B"], n_boot=500, seed=1)
    big = classification_report(big_t, big_p, ["A", "B"], n_boot=500, seed=1)
    for rep in (small, big):
        for key in ("weighted_f1", "balanced_accuracy", "accuracy"):
            lo, hi = rep[key]["ci95"]
            assert 0 <= lo <= rep[key]["value"] <= hi <= 1, key
    width = {k: r["per_class"]["A"]["dsc"]["ci95"] for k, r in (("s", small), ("b", big))}
    assert width["b"][1] - width["b"][0] < width["s"][1] - width["s"][0]
    # Same seed, same intervals.
    again = classification_report(small_t, small_p, ["A", "B"], n_boot=500, seed=1)
    assert again["weighted_f1"]["ci95"] == small["weighted_f1"]["ci95"]


def test_bootstrap_keeps_each_class_support() -> None:
    t = np.array([0] * 7 + [1] * 3)
    p = np.array([0] * 5 + [1] * 5)
    cms = bootstrap_cms(t, p, 2, n_boot=50, seed=0)
    assert cms.shape == (50, 2, 2)
    assert (cms.sum(axis=2) == [7, 3]).all()


def test_auroc_against_a_hand_count() -> None:
    # Positives score 0.35 and 0.8; negatives 0.1 and 0.4: 3 of the 4 pairs ordered right.
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    auc = auroc_ovr(y, np.stack([1 - p1, p1], axis=1))
    assert auc == pytest.approx([0.75, 0.75])
    tied = auroc_ovr(np.array([0, 1]), np.array([[0.5, 0.5], [0.5, 0.5]]))
    assert tied == pytest.approx([0.5, 0.5])
    assert auroc_ovr(np.array([0, 0]), np.array([[0.9, 0.1], [0.8, 0.2]])) == [None, None]


def test_confusion_matrix_rejects_out_of_range_classes() -> None:
    with pytest.raises(ValueError, match=r"0\.\.1"):
        confusion_matrix([0, 2], [0, 1], 2)


def test_metrics_and_run_files_import_without_tensorflow() -> None:
    """Converters and reports use these on machines (and in processes) without TensorFlow."""
    modules = "metrics, run_files, dwell, splits, layouts, neardup, prepare, report, compare, cli"
    code = "import tests.without_tensorflow\n" + "".join(
        f"import trainer.{m}\n" for m in modules.split(", ")
    )
    root = Path(__file__).parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
