"""A tiny CNN so tests and CI train, convert and run a real model in seconds."""

from __future__ import annotations

from typing import Any

from trainer.models.registry import register_model


@register_model("tiny", 32, "tiny", imagenet_available=False)
def _tiny(shape: tuple[int, int, int], weights: str | None) -> Any:
    import keras

    inputs = keras.Input(shape)
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    # momentum 0.9 (Keras: 0.99): a from-scratch run of a few dozen steps must leave usable
    # moving statistics, or inference-mode validation sits at chance while training learns.
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn2")(x)
    x = keras.layers.ReLU(6.0)(x)
    return keras.Model(inputs, x, name="tiny_base")
