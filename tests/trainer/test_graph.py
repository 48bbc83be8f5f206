"""The Keras graph helpers on a real nested model: leaf order, nested containers, copies."""

from __future__ import annotations

import numpy as np

from trainer.graph import containers, copy_model, leaf_layers


def _nested():  # type: ignore[no-untyped-def]
    import keras

    keras.utils.set_random_seed(0)
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(3, name="d2")(inner_in), name="inner")
    x_in = keras.Input((5,))
    x = keras.layers.Dense(4, name="d1")(x_in)
    out = keras.layers.Dense(2, name="d3")(inner(x))
    return keras.Model(x_in, out, name="outer")


def test_leaf_layers_expand_nested_models_in_place_and_containers_list_them() -> None:
    model = _nested()
    names = [layer.name for layer in leaf_layers(model)]
    # Input layers are leaves too; the nested model's layers sit where the model sits.
    assert [n for n in names if n.startswith("d")] == ["d1", "d2", "d3"]
    assert "inner" not in names
    assert [c.name for c in containers(model)] == ["outer", "inner"]


def test_copy_model_has_the_same_function_and_independent_weights() -> None:
    model = _nested()
    clone = copy_model(model)
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    np.testing.assert_array_equal(clone.predict(x, verbose=0), model.predict(x, verbose=0))
    kernel = clone.get_layer("d1").get_weights()
    clone.get_layer("d1").set_weights([kernel[0] + 1.0, kernel[1]])
    assert not np.array_equal(model.get_layer("d1").get_weights()[0], kernel[0] + 1.0)
