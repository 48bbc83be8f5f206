"""The gate's arithmetic on known probabilities (no models needed)."""

from __future__ import annotations

import numpy as np
import pytest

from converters.verify import Thresholds, summarise


def _onehot(classes: list[int], n: int = 2, p: float = 0.9) -> np.ndarray:
    out = np.full((len(classes), n), (1 - p) / (n - 1), np.float32)
    out[np.arange(len(classes)), classes] = p
    return out


def test_identical_models_pass() -> None:
    y = np.array([0] * 50 + [1] * 50)
    r = summarise(["a", "b"], y, _onehot(list(y)), _onehot(list(y)), Thresholds())
    assert r["failures"] == [] and r["agreement"] == 1.0 and r["max_abs_dp"] == 0.0
    assert r["accuracy"] == 1.0 and r["accuracy_ci"][1] == 1.0


def test_one_flip_in_100_is_exactly_at_the_thresholds() -> None:
    y = np.array([0] * 100 + [1] * 100)
    ref = list(y)
    ours = [*ref]
    ours[0] = 1  # one class-a image flips: agreement 199/200, recall of a down 1 point
    r = summarise(["a", "b"], y, _onehot(ours), _onehot(ref), Thresholds())
    assert r["agreement"] == 0.995
    [a, b] = r["per_class"]
    assert a.delta == pytest.approx(-0.01) and b.delta == 0.0
    assert r["failures"] == []  # "down by more than 1 point" fails, exactly 1 does not
    ours[1] = 1
    r = summarise(["a", "b"], y, _onehot(ours), _onehot(ref), Thresholds())
    assert r["failures"] == ["recall of a down 2.0 points (> 1.0)"]
    assert r["max_abs_dp"] == pytest.approx(0.8) and r["agreement"] == 0.99


def test_low_agreement_and_dp_bound_fail_and_absent_class_is_not_gated() -> None:
    y = np.array([0] * 10)
    ref = [0] * 10
    ours = [0] * 8 + [2] * 2
    r = summarise(["a", "b", "c"], y, _onehot(ours, 3), _onehot(ref, 3), Thresholds(0.9, 1.0, 0.5))
    assert r["agreement"] == 0.8
    assert r["failures"] == ["top-1 agreement 80.0% < 90.0%", "max |dp| 0.8500 > 0.5"]
    assert [c.recall for c in r["per_class"]] == [0.8, None, None]
