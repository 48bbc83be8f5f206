"""Wilson intervals against published and hand-computed values; the stratified bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from edge.stats import bootstrap_cms, percentile_interval, wilson_interval


def test_wilson_interval_known_values() -> None:
    # Reference values (Wilson 1927; statsmodels proportion_confint(method="wilson")).
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(50, 50) == pytest.approx((0.9287, 1.0), abs=1e-4)
    assert wilson_interval(14, 20) == pytest.approx((0.4810, 0.8545), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_a_slides_blast_fraction_by_hand() -> None:
    # 12 blasts in 200 white cells: p = 0.06, z^2/n = 0.019207, centre 0.068293 and
    # half-width 1.923027 * sqrt(0.06 * 0.94 / 200 + z^2 / 160000) = 0.033640.
    lo, hi = wilson_interval(12, 200)
    assert (lo, hi) == pytest.approx((0.034652, 0.101932), abs=1e-6)
    assert lo < 12 / 200 < hi


def test_wilson_is_symmetric_and_rejects_impossible_counts() -> None:
    lo, hi = wilson_interval(3, 17)
    assert wilson_interval(14, 17) == pytest.approx((1 - hi, 1 - lo))
    with pytest.raises(ValueError, match=r"k=11 successes of n=10"):
        wilson_interval(11, 10)


def test_bootstrap_keeps_each_class_support_and_is_seeded() -> None:
    t = np.array([0] * 7 + [1] * 3)
    p = np.array([0] * 5 + [1] * 5)
    cms = bootstrap_cms(t, p, 2, n_boot=50, seed=0)
    assert cms.shape == (50, 2, 2)
    assert (cms.sum(axis=2) == [7, 3]).all()
    # Class 1's three images are all predicted 1, so every resample keeps that row exactly.
    assert (cms[:, 1] == [0, 3]).all()
    assert np.array_equal(cms, bootstrap_cms(t, p, 2, n_boot=50, seed=0))
    assert not np.array_equal(cms, bootstrap_cms(t, p, 2, n_boot=50, seed=1))
    with pytest.raises(ValueError, match="at least one image"):
        bootstrap_cms(np.array([], int), np.array([], int), 2, n_boot=5, seed=0)


def test_percentile_interval_by_hand() -> None:
    # 0..100: the 2.5th and 97.5th percentiles (linear interpolation) are 2.5 and 97.5.
    assert percentile_interval(np.arange(101)) == pytest.approx((2.5, 97.5))
    assert percentile_interval(np.arange(101), level=0.5) == pytest.approx((25.0, 75.0))
