"""The report of one evaluation: the seeds' metrics with their intervals, laid out as JSON.

The arithmetic (confusion matrices, Wilson, the bootstrap, AUROC) is edge.stats and is tested
in tests/edge/stats; here, that the report carries it, per class and overall.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.stats import wilson_interval
from trainer.metrics import classification_report, headline


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


def test_the_report_carries_wilson_intervals_auroc_and_the_headline() -> None:
    t, p = _from_cm([[5, 1], [1, 3]])
    proba = np.array([[0.9, 0.1]] * 5 + [[0.4, 0.6]] + [[0.6, 0.4]] + [[0.2, 0.8]] * 3)
    rep = classification_report(t, p, ["ALL", "HEM"], proba, n_boot=200)
    assert rep["per_class"]["ALL"]["recall"]["ci95"] == list(wilson_interval(5, 6))
    assert rep["per_class"]["HEM"]["specificity"]["ci95"] == list(wilson_interval(5, 6))
    assert rep["accuracy"]["ci95"] == list(wilson_interval(8, 10))
    # Every ALL image outscores every HEM image on P(ALL) but the 0.6 vs 0.4 pair: 23 of 24.
    assert rep["auroc"] == pytest.approx({"ALL": 23 / 24, "HEM": 23 / 24})
    h = headline(rep)
    assert h["n_test"] == 10 and h["accuracy"] == pytest.approx(0.8)
    assert h["average_precision"] == pytest.approx((5 / 6 + 3 / 4) / 2)


def test_a_class_never_predicted_has_precision_zero_and_an_uninformative_interval() -> None:
    t, p = _from_cm([[4, 0], [3, 0]])
    rep = classification_report(t, p, ["A", "B"], n_boot=100)
    b = rep["per_class"]["B"]
    assert b["precision"]["value"] == 0.0 and b["precision"]["ci95"] == [0.0, 1.0]
    assert b["recall"]["value"] == 0.0


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
