"""The acceptance gate on hand-built predictions: an int8 export, and a new head on a guard set."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge.stats import ClassRecall, GateError, GateFailure, GateThresholds, acceptance_gate

INT8 = GateThresholds(min_agreement=0.99, max_recall_drop=0.01, max_accuracy_drop=None)

# A guard set of 10 HEM (0) and 10 ALL (1) cells. The current head gets 8 HEM and 6 ALL right;
# the new head, trained on corrections, 7 HEM and 9 ALL: it breaks image 7 and fixes 16-18.
Y = np.array([0] * 10 + [1] * 10)
CURRENT = np.array([0] * 8 + [1] * 2 + [1] * 6 + [0] * 4)
NEW = np.array([0] * 7 + [1] * 3 + [1] * 9 + [0] * 1)


def test_one_flip_in_100_is_exactly_at_the_margin_and_two_fail() -> None:
    y = np.array([0] * 100 + [1] * 100)
    candidate = y.copy()
    candidate[0] = 1  # one class-a image flips: agreement 199/200, recall of a down 1 point
    v = acceptance_gate(y, candidate, ["a", "b"], INT8, y_true=y)
    assert v.agreement == 0.995 and v.passed and v.failures == ()
    a, b = v.per_class
    assert a.delta == pytest.approx(-0.01) and b.delta == 0.0
    candidate[1] = 1
    v = acceptance_gate(y, candidate, ["a", "b"], INT8, y_true=y)
    assert v.agreement == 0.99  # exactly the minimum: passes
    assert v.failures == (GateFailure("recall", "recall of a down 2.0 points (> 1.0)", "a"),)
    assert not v.passed and v.messages() == ["recall of a down 2.0 points (> 1.0)"]


def test_a_new_head_on_the_guard_set_by_hand() -> None:
    margins = GateThresholds(min_agreement=None, max_recall_drop=0.05, max_accuracy_drop=0.0)
    v = acceptance_gate(CURRENT, NEW, ["HEM", "ALL"], margins, y_true=Y)
    # Agreement: 9 of the HEM and 7 of the ALL images get the same class from both heads.
    assert v.n == 20 and v.agreement == 0.8
    assert (v.accuracy, v.reference_accuracy) == (0.8, 0.7)
    assert v.accuracy_ci == pytest.approx((0.5840, 0.9193), abs=1e-4)  # Wilson, 16 of 20
    assert v.reference_accuracy_ci == pytest.approx((0.4810, 0.8545), abs=1e-4)  # 14 of 20
    assert v.per_class == (ClassRecall("HEM", 10, 0.7, 0.8), ClassRecall("ALL", 10, 0.9, 0.6))
    # Better overall, but HEM recall falls 10 points: the swap is refused, naming the class.
    assert [(f.check, f.label) for f in v.failures] == [("recall", "HEM")]
    assert v.messages() == ["recall of HEM down 10.0 points (> 5.0)"]
    wider = GateThresholds(min_agreement=None, max_recall_drop=0.1, max_accuracy_drop=0.0)
    assert acceptance_gate(CURRENT, NEW, ["HEM", "ALL"], wider, y_true=Y).passed


def test_a_worse_head_fails_on_accuracy_and_recall_and_agreement() -> None:
    margins = GateThresholds(min_agreement=0.9, max_recall_drop=0.05, max_accuracy_drop=0.05)
    v = acceptance_gate(NEW, CURRENT, ["HEM", "ALL"], margins, y_true=Y)
    assert v.messages() == [
        "top-1 agreement 80.0% < 90.0%",
        "recall of ALL down 30.0 points (> 5.0)",
        "accuracy down 10.0 points (> 5.0)",
    ]
    assert [f.check for f in v.failures] == ["agreement", "recall", "accuracy"]


def test_without_labels_only_agreement_is_judged_and_a_labelled_check_is_an_error() -> None:
    agree = GateThresholds(min_agreement=0.75, max_recall_drop=None, max_accuracy_drop=None)
    v = acceptance_gate(CURRENT, NEW, ["HEM", "ALL"], agree)
    assert v.passed and v.agreement == 0.8
    assert v.accuracy is None and v.accuracy_ci is None and v.per_class == ()
    strict = GateThresholds(min_agreement=0.85, max_recall_drop=None, max_accuracy_drop=None)
    assert acceptance_gate(CURRENT, NEW, ["HEM", "ALL"], strict).messages() == [
        "top-1 agreement 80.0% < 85.0%"
    ]
    with pytest.raises(GateError, match=r"needs the true labels \(y_true\)"):
        acceptance_gate(CURRENT, NEW, ["HEM", "ALL"], INT8)


def test_a_class_absent_from_the_set_has_no_recall_and_is_not_gated() -> None:
    y = np.zeros(10, int)
    candidate = np.array([0] * 8 + [2] * 2)
    v = acceptance_gate(y, candidate, ["a", "b", "c"], INT8, y_true=y)
    assert [(c.n, c.recall, c.reference_recall) for c in v.per_class] == [
        (10, 0.8, 1.0),
        (0, None, None),
        (0, None, None),
    ]
    assert v.messages() == [
        "top-1 agreement 80.0% < 99.0%",
        "recall of a down 20.0 points (> 1.0)",
    ]


def test_the_verdict_is_json_ready() -> None:
    margins = GateThresholds(min_agreement=None, max_recall_drop=0.05, max_accuracy_drop=0.0)
    d = acceptance_gate(CURRENT, NEW, ["HEM", "ALL"], margins, y_true=Y).to_dict()
    assert d["passed"] is False and d["n"] == 20 and d["agreement"] == 0.8
    assert d["failures"] == [
        {"check": "recall", "message": "recall of HEM down 10.0 points (> 5.0)", "label": "HEM"}
    ]
    assert d["per_class"][0] == {
        "label": "HEM",
        "n": 10,
        "recall": 0.7,
        "reference_recall": 0.8,
        "recall_delta": pytest.approx(-0.1),
    }
    assert d["thresholds"] == {"max_recall_drop": 0.05, "max_accuracy_drop": 0.0}
    assert d["accuracy_ci95"] == pytest.approx([0.5840, 0.9193], abs=1e-4)


@pytest.mark.parametrize(
    ("reference", "candidate", "y_true", "fragment"),
    [
        (np.zeros((4, 2)), [0, 0, 0, 0], None, "expected top-1 class indices (1-D integers)"),
        ([0, 1, 1], [0, 1], None, "candidate has 2 items but reference has 3"),
        ([0, 1], [0, 2], None, "candidate: class indices must be in 0..1 (2 labels)"),
        ([0, 1], [0, 1], [0, 1, 1], "y_true has 3 items but reference has 2"),
        ([], [], None, "at least one image"),
    ],
)
def test_predictions_that_cannot_be_judged_are_named(
    reference: Any, candidate: Any, y_true: Any, fragment: str
) -> None:
    agree = GateThresholds(min_agreement=0.5, max_recall_drop=None, max_accuracy_drop=None)
    with pytest.raises(GateError) as info:
        acceptance_gate(reference, candidate, ["a", "b"], agree, y_true=y_true)
    assert fragment in str(info.value)


@pytest.mark.parametrize("bad", [1.5, -0.1, True, "0.9", float("nan")])
def test_a_threshold_outside_0_to_1_is_refused(bad: Any) -> None:
    with pytest.raises(GateError, match=rf"gate threshold min_agreement={bad!r} is invalid"):
        GateThresholds(min_agreement=bad, max_recall_drop=None, max_accuracy_drop=None)
