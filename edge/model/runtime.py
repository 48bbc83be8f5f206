"""A thin adapter over the LiteRT interpreter: quantise in, dequantise out, nothing else.

ai-edge-litert is the maintained runtime; tflite-runtime (frozen at 2.14) is accepted where a
device only has that. Neither is imported until a model is opened, so `edge --help` works
without them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import BlastscopeError
from edge.optional_dependencies import MissingDependencyError

_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8, "int8": np.int8}
_INT_LIMITS = {"uint8": (0, 255), "int8": (-128, 127)}


class RuntimeUnavailableError(MissingDependencyError):
    """No LiteRT interpreter can be imported (neither ai-edge-litert nor tflite-runtime)."""


class ModelLoadError(BlastscopeError):
    """The runtime rejected a model file."""


@dataclass(frozen=True)
class TensorInfo:
    """What a model's input or output tensor is: shape, dtype and affine quantisation."""

    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.dtype in ("uint8", "int8") and bool(self.scale)

    @property
    def takes_raw_pixels(self) -> bool:
        """uint8 with scale 1 and zero point 0: quantising 0..255 pixels is the identity, so
        uint8 pixels can be fed as they are (bit-identical, and no float pass per frame)."""
        return self.dtype == "uint8" and self.scale == 1.0 and self.zero_point == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


def interpreter_class() -> Any:
    """The Interpreter class of whichever LiteRT runtime is installed."""
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(module).Interpreter
        except ImportError:
            continue
    raise RuntimeUnavailableError("ai_edge_litert", "LiteRT inference")


def _tensor_info(detail: dict[str, Any]) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    dtype = np.dtype(detail["dtype"]).name
    return TensorInfo(
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=dtype,
        scale=float(scale) if scale else None,
        zero_point=int(zero_point) if scale else None,
    )


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Float values to the tensor's dtype using its scale and zero point (round half to even).

    uint8 pixels for a `takes_raw_pixels` tensor pass through untouched (the same values).
    """
    target = _DTYPES[info.dtype]
    if x.dtype == np.uint8 and info.takes_raw_pixels:
        return x
    if not info.quantized:
        return x.astype(target, copy=False)
    assert info.scale is not None and info.zero_point is not None
    lo, hi = _INT_LIMITS[info.dtype]
    q = np.rint(x / np.float32(info.scale) + np.float32(info.zero_point))
    return np.clip(q, lo, hi).astype(target)


def dequantize(q: np.ndarray, info: TensorInfo) -> np.ndarray:
    """The tensor's values as float32."""
    if not info.quantized:
        return q.astype(np.float32, copy=False)
    assert info.scale is not None and info.zero_point is not None
    return (q.astype(np.float32) - np.float32(info.zero_point)) * np.float32(info.scale)


class LiteRTModel:
    """One interpreter, built once and reused for every frame (never per frame)."""

    def __init__(self, model: str | Path | bytes, num_threads: int = 2) -> None:
        cls = interpreter_class()
        try:
            if isinstance(model, bytes):
                self._interp = cls(model_content=model, num_threads=num_threads)
            else:
                self._interp = cls(model_path=str(model), num_threads=num_threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            name = "<bytes>" if isinstance(model, bytes) else str(model)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{name}: not a loadable LiteRT model ({first})") from None
        inputs = self._interp.get_input_details()
        outputs = self._interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(
                f"model has {len(inputs)} inputs and {len(outputs)} outputs; expected 1 and 1"
            )
        self._in_index = inputs[0]["index"]
        self._out_index = outputs[0]["index"]
        self.input = _tensor_info(inputs[0])
        self.output = _tensor_info(outputs[0])
        self.num_threads = num_threads

    def op_counts(self) -> dict[str, int]:
        """Operator name -> how many times the graph uses it."""
        counts: dict[str, int] = {}
        for op in self._interp._get_ops_details():
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
        return counts

    def output_op(self) -> str | None:
        """The operator that computes the output, looking through (de)quantisation.

        An int8 graph ends e.g. SOFTMAX -> QUANTIZE (int8 -> uint8 output), so the QUANTIZE is
        skipped. DELEGATE nodes are skipped too: the ops they took over are still listed.
        """
        producers: dict[int, dict[str, Any]] = {}
        for op in self._interp._get_ops_details():
            if op["op_name"] != "DELEGATE":
                for t in op["outputs"]:
                    producers[int(t)] = op
        op = producers.get(int(self._out_index))
        while op is not None and op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            op = producers.get(int(op["inputs"][0]))
        return None if op is None else str(op["op_name"])

    def invoke_raw(self, x: np.ndarray) -> np.ndarray:
        """Run on an already quantised input of the exact input shape; return the raw output."""
        self._interp.set_tensor(self._in_index, x)
        self._interp.invoke()
        return np.array(self._interp.get_tensor(self._out_index))

    def run(self, x: np.ndarray) -> np.ndarray:
        """Float input of the model's input shape (batch included) -> float32 output."""
        expected = self.input.shape
        if tuple(x.shape) != expected:
            raise BlastscopeError(
                f"input of shape {tuple(x.shape)} given; the model takes {expected}"
            )
        return dequantize(self.invoke_raw(quantize(x, self.input)), self.output)

    def run_one(self, x: np.ndarray) -> np.ndarray:
        """One preprocessed HxWx3 float image -> the output row as float32."""
        return self.run(x[None, ...])[0]
