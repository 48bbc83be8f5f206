"""A loaded bundle: the manifest's every claim checked against the files, the model open.

Loading refuses a mismatch with one line naming what differs: changed model, head or golden
bytes (sha256), tensors that differ from the manifest, a preprocessing size or value range the
model does not take, a head that does not fit the graph's output or the labels, a head kind
the graph contradicts (a softmax at the end of a graph whose head applies one).

Classifying is two steps, `raw` (the graph, dequantised) then `apply_head` (float numpy), so
the head can change without the graph; `probabilities` does both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.contracts.manifest import (
    BundleError,
    Manifest,
    TensorSpecModel,
    read_manifest,
    verified_file,
)
from edge.contracts.preprocess_spec import PreprocessSpec
from edge.model.heads import Head, load_head
from edge.model.runtime import LiteRTModel, TensorInfo
from edge.vision.preprocessing import preprocess, preprocess_uint8


@dataclass
class Bundle:
    """A validated bundle, with its interpreter open and its head loaded."""

    path: Path
    manifest: Manifest
    spec: PreprocessSpec
    model: LiteRTModel
    head: Head

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def verified(self) -> bool:
        return self.manifest.verification.status == "passed"

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """A raw RGB uint8 frame -> the model's input: the bundle's preprocessing, kept in uint8
        when the model takes raw pixels (identical values, one float pass less per frame)."""
        if self.spec.scaling == "none" and self.model.input.takes_raw_pixels:
            return preprocess_uint8(image, self.spec)
        return preprocess(image, self.spec)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """A preprocessed image -> the graph's dequantised output: logits, embeddings, or (a
        softmax_in_graph bundle) probabilities. What the golden parity check compares."""
        return self.model.run_one(x)

    def apply_head(self, raw: np.ndarray) -> np.ndarray:
        """Raw graph output(s) (..., D) -> class probabilities (..., C), temperature applied."""
        return self.head.apply(raw)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """A preprocessed image -> class probabilities: the graph, then the head."""
        return self.apply_head(self.raw(x))

    def embeddings(self, x: np.ndarray) -> np.ndarray:
        """The backbone's embedding of a preprocessed image (dense-head bundles only)."""
        if self.head.kind != "dense":
            raise BundleError(
                f"{self.path}: form {self.manifest.form!r} has no separate embeddings"
            )
        return self.raw(x)


def _check_tensor(root: Path, which: str, declared: TensorSpecModel, actual: TensorInfo) -> None:
    if list(actual.shape) != declared.shape:
        raise BundleError(
            f"{root}: model {which} shape {list(actual.shape)} differs from the manifest's "
            f"{declared.shape}"
        )
    if actual.dtype != declared.dtype:
        raise BundleError(
            f"{root}: model {which} dtype {actual.dtype} differs from the manifest's "
            f"{declared.dtype}"
        )


def graph_kind_problem(model: LiteRTModel, kind: str) -> str | None:
    """Why a graph cannot take a head of `kind`: only softmax_in_graph heads follow a SOFTMAX."""
    ends_in_softmax = model.output_op() == "SOFTMAX"
    if ends_in_softmax == (kind == "softmax_in_graph"):
        return None
    if ends_in_softmax:
        return (
            f"the graph ends in a softmax but its head ({kind!r}) applies one too: re-export "
            "it (converters export strips the final softmax)"
        )
    return "the head is 'softmax_in_graph' but the graph does not end in a softmax"


def input_shape_problem(shape: Sequence[int | None], spec: PreprocessSpec) -> str | None:
    """Why a model with this input shape cannot take `spec`'s images; None if it can.

    The batch dimension is not checked: a Keras model has None there, a LiteRT model 1.
    """
    if len(shape) != 4 or shape[3] != 3:
        return f"model input shape {list(shape)} is not [batch, H, W, 3]"
    if (shape[1], shape[2]) != spec.size:
        return (
            f"model input {shape[1]}x{shape[2]} differs from the preprocessing "
            f"{spec.height}x{spec.width}; use the spec the model was trained with"
        )
    return None


def load_bundle(bundle_dir: str | Path, num_threads: int = 2) -> Bundle:
    """Load and validate a bundle; raise BundleError naming the first disagreement."""
    root = Path(bundle_dir)
    manifest = read_manifest(root)
    model_path = verified_file(root, manifest.model_file, manifest.model_sha256, "model")
    model = LiteRTModel(model_path, num_threads=num_threads)
    _check_tensor(root, "input", manifest.input, model.input)
    _check_tensor(root, "output", manifest.output, model.output)
    spec = manifest.spec()
    problem = input_shape_problem(model.input.shape, spec)
    if problem:
        raise BundleError(f"{root}: {problem}")
    if tuple(spec.output_range) != tuple(manifest.input_range):
        raise BundleError(
            f"{root}: preprocessing scaling {spec.scaling!r} emits {spec.output_range} but the "
            f"model expects {tuple(manifest.input_range)}: values would be scaled twice or never"
        )
    head = load_head(root, manifest.head, manifest.labels)
    width = model.output.shape[-1]
    problem = head.problem(width, len(manifest.labels)) or graph_kind_problem(model, head.kind)
    if problem:
        raise BundleError(f"{root}: {problem}")
    if manifest.golden is not None:
        verified_file(root, manifest.golden.file, manifest.golden.sha256, "golden set")
    return Bundle(path=root, manifest=manifest, spec=spec, model=model, head=head)
