"""Prepare a float Keras model so full-int8 conversion loses less: input folding, bias correction.

Measured on EfficientNet-Lite0 (Taleqani, 649 test images): with weights alone rounded to the
int8 grid the model already disagrees with itself on 1.4 % of images, and the error is mostly a
per-channel *shift*, not noise: rounding a channel's weights changes its mean output on real
(non-negative, ReLU6) inputs. Empirical bias correction (Nagel et al., "Data-free quantization
through weight equalization and bias correction", 2019, section 4.2 with data) measures that
shift layer by layer on calibration images and moves the following BatchNormalization's mean by
it, so the converter's int8 model is centred where the float model is. Input folding removes a
rounding step: a Rescaling(2^-k, offset) in front of the first convolution is quantised to a
grid coarser than one grey level, so `x * s + o` becomes `x + o / s` (exact integers, a scale-1
tensor) and `s` moves into the convolution's kernel.

Both return a new model; the caller's model, the float reference, is never changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from converters.progress import progress
from converters.tf_env import keras
from trainer.graph import containers, copy_model, leaf_layers

BATCH = 50


@dataclass(frozen=True)
class Int8Prep:
    """What was done, for the manifest."""

    folded_input: str | None  # "normalize -> stem_conv" or None
    corrected_layers: int
    images: int

    def describe(self) -> dict[str, Any]:
        return {
            "input_folding": self.folded_input,
            "bias_correction": {"layers": self.corrected_layers, "images": self.images}
            if self.corrected_layers
            else None,
        }


def _producer(layer: Any) -> Any:
    """The layer whose output feeds `layer` (single-input layers only), else None."""
    try:
        return layer.input._keras_history[0]
    except (AttributeError, ValueError, TypeError, IndexError):
        return None


def _consumers(container: Any) -> dict[int, list[Any]]:
    found: dict[int, list[Any]] = {}
    for layer in container.layers:
        producer = _producer(layer)
        if producer is not None:
            found.setdefault(id(producer), []).append(layer)
    return found


def _scalar(value: Any) -> float | None:
    arr = np.asarray(value, np.float64)
    return float(arr) if arr.ndim == 0 else None


def _foldable(container: Any) -> tuple[Any, Any] | None:
    """(Rescaling, Conv2D) when a scalar Rescaling feeds one convolution through padding only."""
    k = keras()
    consumers = _consumers(container)
    for layer in container.layers:
        if not isinstance(layer, k.layers.Rescaling):
            continue
        scale, offset = _scalar(layer.scale), _scalar(layer.offset)
        if scale is None or offset is None or scale in (0.0, 1.0):
            continue
        node = layer
        while True:
            after = consumers.get(id(node), [])
            if len(after) != 1:
                break
            node = after[0]
            if isinstance(node, k.layers.Conv2D):  # DepthwiseConv2D is not a Conv2D subclass
                return layer, node
            if not isinstance(node, k.layers.ZeroPadding2D):
                break
    return None


def fold_input_scaling(model: Any) -> tuple[Any, str | None]:
    """(model with `x*s + o -> conv` rewritten as `x + o/s -> conv(kernel*s)`, what was folded).

    Zero padding between the two stays exact: a zero of `x + o/s` is a zero of `s*x + o`.
    """
    for container in containers(model):
        pair = _foldable(container)
        if pair is None:
            continue
        rescale, conv = pair
        s, o = _scalar(rescale.scale), _scalar(rescale.offset)
        assert s is not None and o is not None
        config = model.get_config()
        _edit_layer_config(config, rescale.name, {"scale": 1.0, "offset": o / s})
        folded = copy_model(model, config)
        target = _find(folded, conv.name)
        weights = target.get_weights()
        target.set_weights([weights[0] * np.float32(s), *weights[1:]])
        return folded, f"{rescale.name} -> {conv.name}"
    return model, None


def _edit_layer_config(config: Any, name: str, values: dict[str, float]) -> None:
    if isinstance(config, dict):
        if config.get("class_name") == "Rescaling" and config.get("config", {}).get("name") == name:
            config["config"].update(values)
        for value in config.values():
            _edit_layer_config(value, name, values)
    elif isinstance(config, list):
        for value in config:
            _edit_layer_config(value, name, values)


def _find(model: Any, name: str) -> Any:
    for layer in leaf_layers(model):
        if layer.name == name:
            return layer
    raise KeyError(name)


def snap_weights(model: Any) -> int:
    """Round every convolution kernel to LiteRT's per-channel symmetric int8 grid, in place.

    Scale = max|w| / 127 per output channel (per channel for depthwise), exactly as the
    converter computes it; BatchNormalization folding multiplies each channel by a constant,
    which leaves the rounded values on the grid, so the converter reproduces them losslessly.
    """
    k = keras()
    count = 0
    for layer in leaf_layers(model):
        if not isinstance(layer, (k.layers.Conv2D, k.layers.DepthwiseConv2D)):
            continue
        weights = layer.get_weights()
        kernel = weights[0]
        axes = (0, 1, 3) if isinstance(layer, k.layers.DepthwiseConv2D) else (0, 1, 2)
        scale = np.abs(kernel).max(axis=axes, keepdims=True) / 127.0
        scale = np.where(scale == 0, 1.0, scale)
        layer.set_weights([(np.round(kernel / scale) * scale).astype(kernel.dtype), *weights[1:]])
        count += 1
    return count


def _conv_bn_pairs(container: Any) -> list[Any]:
    """BatchNormalization layers fed directly by a convolution, in order."""
    k = keras()
    convs = (k.layers.Conv2D, k.layers.DepthwiseConv2D)
    return [
        layer
        for layer in container.layers
        if isinstance(layer, k.layers.BatchNormalization) and isinstance(_producer(layer), convs)
    ]


def _channel_means(probe: Any, images: np.ndarray) -> list[np.ndarray]:
    """Per-channel means of each probe output over all images and positions."""
    sums: list[np.ndarray] | None = None
    counts: list[int] = []
    for start in range(0, len(images), BATCH):
        outs = probe(images[start : start + BATCH], training=False)
        arrays = [
            np.asarray(o, np.float64) for o in (outs if isinstance(outs, (list, tuple)) else [outs])
        ]
        batch = [a.sum(axis=(0, 1, 2)) for a in arrays]
        sums = batch if sums is None else [a + b for a, b in zip(sums, batch, strict=True)]
        # Each output has its own spatial size: count positions per output.
        sizes = [int(np.prod(a.shape[:3])) for a in arrays]
        counts = sizes if not counts else [c + n for c, n in zip(counts, sizes, strict=True)]
    assert sums is not None
    return [s / n for s, n in zip(sums, counts, strict=True)]


def _input_feeds(model: Any, container: Any) -> bool:
    """True when `container` sees the model's own input (itself, or its first nested model)."""
    return container is model or any(layer is container for layer in model.layers[:2])


def correct_biases(model: Any, images: np.ndarray) -> tuple[Any, int]:
    """(copy of `model` with int8-rounded kernels and bias-corrected BatchNorms, layers corrected).

    Layer by layer in order, each correction measured with every earlier one already applied,
    so a layer corrects only its own error (correcting all layers from one pass over-corrects
    and, on Lite0, collapsed agreement to 30 %).
    """
    k = keras()
    corrected = copy_model(model)
    snap_weights(corrected)
    pairs = [
        (cf, cc, bn)
        for cf, cc in zip(containers(model), containers(corrected), strict=True)
        if _input_feeds(model, cf)
        for bn in _conv_bn_pairs(cf)
    ]
    reference: dict[str, np.ndarray] = {}
    for cf in {id(c): c for c, _, _ in pairs}.values():
        bns = [bn for c, _, bn in pairs if c is cf]
        probe = k.Model(cf.input, [bn.input for bn in bns])
        for bn, mean in zip(bns, _channel_means(probe, images), strict=True):
            reference[bn.name] = mean
    for _, cc, bn in progress(pairs, len(pairs), "bias correction"):
        target = cc.get_layer(bn.name)
        probe = k.Model(cc.input, target.input)
        shift = _channel_means(probe, images)[0] - reference[bn.name]
        weights = target.get_weights()
        index = _moving_mean_index(target)
        weights[index] = (weights[index] + shift).astype(np.float32)
        target.set_weights(weights)
    return corrected, len(pairs)


def _moving_mean_index(bn: Any) -> int:
    """Position of moving_mean in get_weights() (gamma/beta are absent when scale/center=False)."""
    return int(bool(bn.scale)) + int(bool(bn.center))


def prepare_for_int8(model: Any, images: np.ndarray) -> tuple[Any, Int8Prep]:
    """Fold the input scaling, then bias-correct on `images` (preprocessed, float32, NHWC)."""
    folded, what = fold_input_scaling(model)
    corrected, layers = correct_biases(folded, images)
    return corrected, Int8Prep(what, layers, len(images))
