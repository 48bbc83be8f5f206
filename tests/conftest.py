"""Shared fixtures: real images, a real broker, real tiny models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.vision.image_io import list_images, read_image
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


@pytest.fixture(scope="session")
def tiny_tflite() -> bytes:
    """A real (untrained) tiny Keras classifier at 32x32 converted to float32 LiteRT the way
    converters exports a classifier: the graph ends at the logits (the softmax is the head's)."""
    import keras

    from converters.conversion import convert, logits_model
    from trainer.models import create_model

    keras.utils.set_random_seed(0)
    return convert(logits_model(create_model("tiny", 2).model), "float32")


@pytest.fixture(scope="session")
def softmax_tflite() -> bytes:
    """The same classifier converted whole, ending in its softmax: a legacy (schema 2) graph."""
    import keras
    import tensorflow as tf

    from trainer.models import create_model

    keras.utils.set_random_seed(0)
    converter = tf.lite.TFLiteConverter.from_keras_model(create_model("tiny", 2).model)
    return bytes(converter.convert())
