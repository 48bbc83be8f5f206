"""A loaded bundle: the manifest's every claim checked against the files, the model open.

Loading refuses a mismatch with one line naming what differs: changed model, head or golden
bytes (sha256), tensors that differ from the manifest, a preprocessing size or value range the
model does not take, labels that do not match the outputs.
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
    sha256_file,
)
from edge.contracts.preprocess_spec import PreprocessSpec
from edge.model.heads import read_head
from edge.model.runtime import LiteRTModel, TensorInfo
from edge.model.softmax_regression import softmax
from edge.vision.preprocessing import preprocess, preprocess_uint8


@dataclass
class Bundle:
    """A validated bundle, with its interpreter open and ready to classify."""

    path: Path
    manifest: Manifest
    spec: PreprocessSpec
    model: LiteRTModel
    head_kernel: np.ndarray | None = None
    head_bias: np.ndarray | None = None

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

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """A preprocessed HxWx3 float image -> class probabilities (temperature applied)."""
        out = self.model.run_one(x)
        t = np.float32(self.manifest.temperature)
        if self.manifest.form == "backbone_head":
            assert self.head_kernel is not None and self.head_bias is not None
            return softmax((out @ self.head_kernel + self.head_bias) / t)
        if t == 1.0:
            return out.astype(np.float32)
        # Temperature on a softmax output: p ∝ exp(log p / T).
        return softmax(np.log(np.clip(out, 1e-12, 1.0)) / t).astype(np.float32)

    def embeddings(self, x: np.ndarray) -> np.ndarray:
        """The backbone's embedding of a preprocessed image (fine-tunable bundles only)."""
        if self.manifest.form != "backbone_head":
            raise BundleError(
                f"{self.path}: form {self.manifest.form!r} has no separate embeddings"
            )
        return self.model.run_one(x)


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


def _verify_file(root: Path, name: str, expected_sha: str, what: str) -> Path:
    path = root / name
    if not path.is_file():
        raise BundleError(f"{path}: missing; the manifest names it as the {what}")
    actual = sha256_file(path)
    if actual != expected_sha:
        raise BundleError(
            f"{path}: sha256 {actual[:12]}… differs from the manifest's {expected_sha[:12]}…; "
            "the file was changed or replaced: re-export the bundle"
        )
    return path


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
    model_path = _verify_file(root, manifest.model_file, manifest.model_sha256, "model")
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
    out_size = model.output.shape[-1]
    bundle = Bundle(path=root, manifest=manifest, spec=spec, model=model)
    if manifest.form == "classifier":
        if out_size != len(manifest.labels):
            raise BundleError(
                f"{root}: {len(manifest.labels)} labels but the model outputs {out_size} classes"
            )
    else:
        if manifest.head is None:
            raise BundleError(f"{root}: form 'backbone_head' needs a 'head' entry in the manifest")
        head_path = _verify_file(root, manifest.head.file, manifest.head.sha256, "head")
        kernel, bias = read_head(head_path)
        if out_size != manifest.head.embedding_dim or kernel.shape[0] != out_size:
            raise BundleError(
                f"{root}: backbone emits {out_size} features but the head takes {kernel.shape[0]} "
                f"(manifest embedding_dim {manifest.head.embedding_dim})"
            )
        if kernel.shape[1] != len(manifest.labels) or bias.shape != (kernel.shape[1],):
            raise BundleError(
                f"{root}: {len(manifest.labels)} labels but the head outputs {kernel.shape[1]} "
                "classes"
            )
        bundle.head_kernel, bundle.head_bias = kernel, bias
    if manifest.golden is not None:
        _verify_file(root, manifest.golden.file, manifest.golden.sha256, "golden set")
    return bundle
