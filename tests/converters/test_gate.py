"""converters verify's gate on known probabilities (no models needed).

The gate's arithmetic (agreement, recall drops at the margin) is edge.stats.gate, tested in
tests/edge/stats/test_gate.py; here, what verify adds: probabilities in, the |dp| bound, and
the numbers its report and manifest record.
"""

from __future__ import annotations

import numpy as np
import pytest

from converters.verify import Thresholds, summarise
from edge.stats import GateError


def _onehot(classes: list[int], n: int = 2, p: float = 0.9) -> np.ndarray:
    out = np.full((len(classes), n), (1 - p) / (n - 1), np.float32)
    out[np.arange(len(classes)), classes] = p
    return out


def test_identical_models_pass() -> None:
    y = np.array([0] * 50 + [1] * 50)
    r = summarise(["a", "b"], y, _onehot(list(y)), _onehot(list(y)), Thresholds())
    assert r["failures"] == [] and r["agreement"] == 1.0 and r["max_abs_dp"] == 0.0
    assert r["accuracy"] == 1.0 and r["accuracy_ci"][1] == 1.0
    assert r["n_images"] == 100 and [c.label for c in r["per_class"]] == ["a", "b"]


def test_a_recall_drop_is_named_and_dp_is_the_largest_probability_change() -> None:
    y = np.array([0] * 100 + [1] * 100)
    ours = list(y)
    ours[0] = ours[1] = 1  # two class-a images flip: recall of a down 2 points
    r = summarise(["a", "b"], y, _onehot(ours), _onehot(list(y)), Thresholds())
    assert r["failures"] == ["recall of a down 2.0 points (> 1.0)"]
    assert r["agreement"] == 0.99 and r["accuracy"] == 0.99 and r["reference_accuracy"] == 1.0
    # A flipped image goes from (0.9, 0.1) to (0.1, 0.9): |dp| 0.8 on 2 of 200 images.
    assert r["max_abs_dp"] == pytest.approx(0.8) and r["mean_abs_dp"] == pytest.approx(0.008)


def test_low_agreement_and_dp_bound_fail_and_absent_class_is_not_gated() -> None:
    y = np.array([0] * 10)
    ref = [0] * 10
    ours = [0] * 8 + [2] * 2
    r = summarise(["a", "b", "c"], y, _onehot(ours, 3), _onehot(ref, 3), Thresholds(0.9, 1.0, 0.5))
    assert r["agreement"] == 0.8
    assert r["failures"] == ["top-1 agreement 80.0% < 90.0%", "max |dp| 0.8500 > 0.5"]
    assert [c.recall for c in r["per_class"]] == [0.8, None, None]


def test_a_threshold_outside_0_to_1_fails_before_any_image_is_read() -> None:
    with pytest.raises(GateError, match=r"min_agreement=1\.5 is invalid"):
        Thresholds(min_agreement=1.5)
