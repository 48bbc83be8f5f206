"""The golden set a bundle carries: a few real images and the FLOAT model's probabilities.

The device re-runs them at start-up (edge.model.golden) and refuses to start if its
preprocessing or runtime disagrees with training: its raw graph outputs against the export's
(added by edge.model.bundle_writer), and the export's head on them against these
probabilities. The tolerance is per quantisation: a correct bundle must pass and a broken one
fail (measured on the tiny model on BCCD crops, graph ending at logits: float32 1e-7, float16
2.9e-4, dynamic 5.2e-4, int8 1.5e-3 max |dp|; int8 calibrated on black images: 0.996).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from converters.image_sets import LabelledFile
from converters.tf_env import keras_predict
from edge.contracts import PreprocessSpec
from edge.vision import preprocess, read_image, resize

DEFAULT_COUNT = 6
# Max |dp| per image allowed between the device and the float Keras model: a sanity bound that
# a broken quantisation fails (black-image calibration: 0.996), while exact parity with the
# export is checked separately (edge.model.golden.parity_atol). For int8 it must clear
# the worst image of a healthy model: EfficientNet-Lite0 int8 on 649 Taleqani test images had
# mean |dp| 0.017 but max 0.43 (one image near a decision boundary), and 0.17 on BCCD demo
# frames.
DEFAULT_ATOL: dict[str, float] = {"float32": 1e-3, "float16": 0.01, "dynamic": 0.05, "int8": 0.5}
# Raw golden images are stored as captured when they share one size up to this; otherwise each is
# resized to the model input first (the npz stacks them into one array).
_MAX_RAW_SIDE = 512


def _common_size(raws: Sequence[np.ndarray], spec: PreprocessSpec) -> list[np.ndarray]:
    shapes = {r.shape for r in raws}
    if len(shapes) == 1 and max(next(iter(shapes))[:2]) <= _MAX_RAW_SIDE:
        return list(raws)
    return [
        resize(r, spec.size, spec.resize_policy, spec.interpolation, spec.pad_value) for r in raws
    ]


def build_golden(
    files: Sequence[LabelledFile], spec: PreprocessSpec, keras_model: Any
) -> dict[str, np.ndarray]:
    """{images, preprocessed, expected} for `write_bundle(golden=...)`."""
    raws = _common_size([read_image(f.path) for f in files], spec)
    images = np.stack(raws).astype(np.uint8)
    # Preprocess what is stored (not the originals), so the device recomputes the same thing.
    preprocessed = np.stack([preprocess(r, spec) for r in images])
    expected = keras_predict(keras_model, preprocessed)
    return {"images": images, "preprocessed": preprocessed, "expected": expected}
