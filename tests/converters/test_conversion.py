"""Where the exported graph ends: at the logits, the final softmax left to the float head."""

from __future__ import annotations

import numpy as np
import pytest

from converters.conversion import convert, logits_model
from converters.errors import ModelFileError
from edge.model.runtime import LiteRTModel


def _inputs():  # type: ignore[no-untyped-def]
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    return inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))


def test_a_softmax_dense_becomes_a_linear_one_with_the_same_weights() -> None:
    import keras

    inputs, x = _inputs()
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(x))
    cut = logits_model(model)
    lite = LiteRTModel(convert(cut, "float32"))
    assert "SOFTMAX" not in lite.op_counts() and lite.output_op() == "FULLY_CONNECTED"
    image = np.random.default_rng(0).uniform(0, 255, (1, 8, 8, 3)).astype(np.float32)
    logits = lite.run(image)
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(p, model.predict(image, verbose=0), rtol=1e-5, atol=1e-6)


def test_a_softmax_layer_is_cut_off_and_anything_else_refused() -> None:
    import keras

    inputs, x = _inputs()
    logits = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, keras.layers.Softmax()(logits))
    assert logits_model(model).output.shape == logits.shape
    relu = keras.Model(inputs, keras.layers.Dense(3, activation="relu", name="scores")(x))
    with pytest.raises(ModelFileError, match="ends in Dense 'scores', not a softmax"):
        logits_model(relu)
