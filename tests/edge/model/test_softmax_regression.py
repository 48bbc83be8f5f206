"""The numpy softmax head: fits real features, folds standardisation, warm-starts."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import BlastscopeError
from edge.model.softmax_regression import balanced_class_weights, fit_softmax_regression
from edge.vision.image_io import list_images
from trainer.colour_histogram_baseline import colour_features


@pytest.fixture(scope="module")
def cell_features(cells_dir):  # type: ignore[no-untyped-def]
    wbc, rbc = list_images(cells_dir / "WBC"), list_images(cells_dir / "RBC")
    x = colour_features(wbc + rbc)
    y = np.array([0] * len(wbc) + [1] * len(rbc))
    return x, y


def test_separates_real_white_and_red_cells_by_colour(cell_features) -> None:  # type: ignore[no-untyped-def]
    x, y = cell_features
    # Hold out every third image: white cells (purple nucleus) vs red cells differ in colour.
    test = np.arange(len(y)) % 3 == 0
    head = fit_softmax_regression(x[~test], y[~test], 2, iterations=300)
    p = head.probabilities(x[test])
    assert (p.argmax(1) == y[test]).mean() >= 0.85
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)


def test_head_is_a_plain_linear_map_on_raw_features(cell_features) -> None:  # type: ignore[no-untyped-def]
    x, y = cell_features
    head = fit_softmax_regression(x, y, 2, iterations=50)
    logits = x.astype(np.float64) @ head.kernel + head.bias
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(head.probabilities(x), e / e.sum(1, keepdims=True), rtol=1e-5)
    assert head.kernel.shape == (x.shape[1], 2) and head.kernel.dtype == np.float32


def test_warm_start_continues_from_a_head(cell_features) -> None:  # type: ignore[no-untyped-def]
    from edge.model.softmax_regression import LinearHead

    x, y = cell_features
    good = fit_softmax_regression(x, y, 2, iterations=50)
    resumed = fit_softmax_regression(x, y, 2, iterations=0, init=good)
    np.testing.assert_allclose(resumed.kernel, good.kernel, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(resumed.bias, good.bias, rtol=1e-4, atol=1e-5)
    # A head that predicts everything backwards is corrected by continued training.
    wrong = LinearHead(-good.kernel, -good.bias)
    assert (wrong.probabilities(x).argmax(1) == y).mean() < 0.2
    fixed = fit_softmax_regression(x, y, 2, iterations=100, init=wrong)
    assert (fixed.probabilities(x).argmax(1) == y).mean() > 0.9


def test_balanced_weights_and_bad_input() -> None:
    w = balanced_class_weights(np.array([0, 0, 0, 1]), 2)
    np.testing.assert_allclose(w, [4 / 6, 2.0])
    with pytest.raises(BlastscopeError, match=r"class index\(es\) \[2\]"):
        balanced_class_weights(np.array([0, 1]), 3)
    with pytest.raises(BlastscopeError, match="do not match"):
        fit_softmax_regression(np.zeros((3, 2)), np.zeros(2, int), 2)
