"""Keras -> LiteRT flatbuffer for each quantisation, and where the graph ends.

The graph never ends in a softmax: the bundle's float head applies it (with a temperature
that can change after export), so the classifier form is cut at the logits (`logits_model`)
and the fine-tunable form at the embeddings (`split_backbone_head`).

float32: plain conversion. float16: weights stored as float16, dequantised at load.
dynamic: int8 weights, float activations quantised on the fly (no calibration; on x86 often the
slowest, see ANCHORS). int8: full-integer with uint8 (or int8) input and output, calibrated on
real images; anything that cannot be quantised is an error, not a silent float fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal, get_args

import numpy as np

from converters.errors import ConverterError, ModelFileError
from converters.tf_env import keras, silenced, tensorflow
from edge.contracts import Quantization
from edge.errors import BlastscopeError

QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)
IoType = Literal["uint8", "int8"]
Representative = Callable[[], Iterator[list[np.ndarray]]]

EMBEDDING_LAYER = "embedding"
HEAD_LAYER = "head"


def convert(
    model: Any,
    quantization: str,
    representative: Representative | None = None,
    io_type: IoType = "uint8",
) -> bytes:
    """Convert a Keras model; int8 needs `representative` (real calibration images)."""
    tf = tensorflow()
    if quantization not in QUANTIZATIONS:
        raise ConverterError(
            f"unknown quantisation {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}"
        )
    converter = tf.lite.TFLiteConverter.from_keras_model(with_batch_of_one(model))
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        if representative is None:
            raise ConverterError("int8 conversion needs calibration images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = tf.uint8 if io_type == "uint8" else tf.int8
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
    try:
        with silenced():
            return bytes(converter.convert())
    except BlastscopeError:  # e.g. an unreadable calibration image, raised inside convert()
        raise
    except Exception as exc:  # the MLIR converter raises ConverterError, RuntimeError, ...
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        hint = (
            " (an op without an int8 kernel: try --quantize dynamic or float16)"
            if quantization == "int8"
            else ""
        )
        raise ConverterError(
            f"LiteRT conversion to {quantization} failed: {first[:300]}{hint}"
        ) from None


def with_batch_of_one(model: Any) -> Any:
    """The same model (same weights) re-traced with a static batch of 1.

    With a dynamic batch, Keras' squeeze-excite reshapes become SHAPE / STRIDED_SLICE / PACK
    ops that XNNPACK cannot take, so the graph is cut into dozens of delegate partitions (B3:
    27); with batch 1 they fold to constants and the whole model is one XNNPACK partition.
    The device runs one frame at a time anyway.
    """
    k = keras()
    inputs = k.Input(batch_shape=(1, *model.input_shape[1:]), name="image")
    return k.Model(inputs, model(inputs), name=model.name)


def _activation(layer: Any) -> str:
    return str(getattr(layer.activation, "__name__", layer.activation))


def logits_model(model: Any) -> Any:
    """The same classifier (same weights) ending at its logits: the final softmax stripped.

    A trainer classifier ends in Dense(softmax) "head": it is rebuilt as a linear Dense
    "logits" with the same kernel and bias, on the same input. A model ending in a Softmax
    (or Activation("softmax")) layer is cut before it.
    """
    k = keras()
    last = model.layers[-1]
    if isinstance(last, k.layers.Dense) and _activation(last) == "softmax":
        dense = k.layers.Dense(last.units, use_bias=last.use_bias, name="logits")
        outputs = dense(last.input)
        dense.set_weights(last.get_weights())
        return k.Model(model.input, outputs, name=f"{model.name}_logits")
    if isinstance(last, k.layers.Softmax) or (
        isinstance(last, k.layers.Activation) and _activation(last) == "softmax"
    ):
        return k.Model(model.input, last.input, name=f"{model.name}_logits")
    raise ModelFileError(
        f"model {model.name!r} ends in {type(last).__name__} {last.name!r}, not a softmax; "
        "--form classifier exports the logits before it (the bundle's head applies the "
        "softmax): end the model in a softmax Dense or a Softmax layer"
    )


def split_backbone_head(model: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """(backbone image -> embedding, head kernel (D, N), head bias (N,)) of a trainer classifier.

    The head must be the softmax Dense layer named "head" fed (through dropout only) by the
    pooled "embedding" layer, so softmax(embedding @ kernel + bias) is the model's output.
    """
    k = keras()
    try:
        embedding = model.get_layer(EMBEDDING_LAYER)
        head = model.get_layer(HEAD_LAYER)
    except ValueError:
        names = ", ".join(layer.name for layer in model.layers[-4:])
        raise ModelFileError(
            f"model {model.name!r} has no '{EMBEDDING_LAYER}' and '{HEAD_LAYER}' layers (its last "
            f"layers: {names}); the fine-tunable form needs a classifier built by the trainer's "
            "model registry; export --form classifier instead"
        ) from None
    if not isinstance(head, k.layers.Dense):
        raise ModelFileError(f"layer '{HEAD_LAYER}' is a {type(head).__name__}, not Dense")
    activation = _activation(head)
    if activation != "softmax":
        raise ModelFileError(
            f"layer '{HEAD_LAYER}' has activation {activation!r}; the bundle applies softmax to "
            "the head's logits, so the head must be a softmax Dense layer"
        )
    weights = head.get_weights()
    if len(weights) != 2:
        raise ModelFileError(f"layer '{HEAD_LAYER}' has no bias; expected kernel and bias")
    kernel, bias = (np.asarray(w, np.float32) for w in weights)
    backbone = k.Model(model.input, embedding.output, name=f"{model.name}_backbone")
    if tuple(backbone.output_shape[1:]) != (kernel.shape[0],):
        raise ModelFileError(
            f"embedding shape {backbone.output_shape[1:]} does not feed a head of "
            f"{kernel.shape[0]} inputs"
        )
    return backbone, kernel, bias
