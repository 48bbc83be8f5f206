"""Real tiny Keras classifiers cut the way converters export them, converted for real."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.contracts.preprocess_spec import PreprocessSpec
from edge.vision.image_io import list_images, read_image
from edge.vision.preprocessing import preprocess

SPEC = PreprocessSpec(height=32, width=32)


def _classifier(seed: int) -> Any:
    """An untrained tiny classifier whose head is scaled up, so its logits span a few units
    (a temperature then visibly changes the probabilities)."""
    import keras

    from trainer.models import create_model

    keras.utils.set_random_seed(seed)
    built = create_model("tiny", 2, image_size=32)
    kernel, bias = built.head.get_weights()
    built.head.set_weights([kernel * 20, bias + np.array([0.5, -0.5], np.float32)])
    return built.model


@pytest.fixture(scope="session")
def tiny_classifier() -> Any:
    return _classifier(1)


@pytest.fixture(scope="session")
def logits_tflite(tiny_classifier: Any) -> bytes:
    """The classifier's graph as converters exports it: float32, ending at the logits."""
    from converters.conversion import convert, logits_model

    return convert(logits_model(tiny_classifier), "float32")


@pytest.fixture(scope="session")
def other_logits_tflite() -> bytes:
    """Another graph with the same tensors (other weights): a changed model file."""
    from converters.conversion import convert, logits_model

    return convert(logits_model(_classifier(2)), "float32")


@pytest.fixture(scope="session")
def int8_logits_tflite(tiny_classifier: Any, cells_dir: Path) -> bytes:
    """The classifier's graph in full int8 (uint8 I/O), calibrated on the real cell crops."""
    from converters.conversion import convert, logits_model

    files = [p for label in ("RBC", "WBC") for p in list_images(cells_dir / label)]
    crops = [preprocess(read_image(p), SPEC) for p in files]

    def representative() -> Iterator[list[np.ndarray]]:
        for x in crops:
            yield [x[None, ...]]

    return convert(logits_model(tiny_classifier), "int8", representative)


@pytest.fixture(scope="session")
def backbone_tflite(tiny_classifier: Any) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(the backbone graph ending at 16-d embeddings, the Keras head's kernel, bias)."""
    from converters.conversion import convert, split_backbone_head

    backbone, kernel, bias = split_backbone_head(tiny_classifier)
    return convert(backbone, "float32"), kernel, bias


@pytest.fixture(scope="session")
def golden_of(field_paths: list[Path], tiny_classifier: Any) -> Callable[[], dict[str, np.ndarray]]:
    """write_bundle's golden argument: real smear fields and the float Keras probabilities."""
    from converters.tf_env import keras_predict

    images = np.stack([read_image(p) for p in field_paths])
    pre = np.stack([preprocess(i, SPEC) for i in images])
    expected = keras_predict(tiny_classifier, pre)
    return lambda: {"images": images, "preprocessed": pre, "expected": expected}
