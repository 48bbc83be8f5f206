"""Shared fixtures: real images, a real broker, real tiny models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.image_io import list_images, read_image
from tests.mosquitto import Mosquitto, mosquitto_binary

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def field_paths() -> list[Path]:
    """Whole BCCD smear fields, 640x480 JPEG (MIT)."""
    return list_images(FIXTURES / "fields")


@pytest.fixture(scope="session")
def field_image(field_paths: list[Path]) -> np.ndarray:
    return read_image(field_paths[0])


@pytest.fixture(scope="session")
def cells_dir() -> Path:
    """Real 64x64 BCCD cell crops in class folders WBC/ and RBC/ (12 each)."""
    return FIXTURES / "cells"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free 127.0.0.1 port, stopped after the test."""
    if mosquitto_binary() is None:
        pytest.fail(
            "mosquitto is not installed; the test command installs it (apt-get install mosquitto)"
        )
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


def _tiny_keras(input_size: int = 32, classes: int = 2):  # type: ignore[no-untyped-def]
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((input_size, input_size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="session")
def tiny_tflite() -> bytes:
    """A real (untrained) tiny Keras classifier at 32x32 converted to float32 LiteRT."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(_tiny_keras())
    return bytes(converter.convert())
