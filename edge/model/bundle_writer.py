"""Writing a bundle: the model bytes, a manifest read from the model itself, the golden set."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edge.contracts.manifest import (
    GOLDEN_FILE,
    MODEL_FILE,
    SCHEMA_VERSION,
    GoldenInfo,
    HeadInfo,
    Manifest,
    Provenance,
    Quantization,
    TensorSpecModel,
    head_file,
    sha256_file,
    write_manifest,
)
from edge.contracts.preprocess_spec import PreprocessSpec
from edge.model.bundle import Bundle, load_bundle
from edge.model.golden import parity_atol, write_golden
from edge.model.heads import write_head
from edge.model.runtime import LiteRTModel


def _head_info(
    root: Path, probe: LiteRTModel, head: tuple[np.ndarray, np.ndarray] | None, labels: list[str]
) -> HeadInfo:
    """Version 1 of the head, its kind read off the graph: a dense head if weights are given,
    else softmax_in_graph if the graph ends in a softmax (legacy), else logits."""
    if head is not None:
        kernel, bias = head
        sha = write_head(root / head_file(1), kernel, bias, labels)
        return HeadInfo(kind="dense", file=head_file(1), sha256=sha)
    return HeadInfo(kind="softmax_in_graph" if probe.output_op() == "SOFTMAX" else "logits")


def write_bundle(
    out_dir: str | Path,
    model_bytes: bytes,
    *,
    name: str,
    labels: Iterable[str],
    spec: PreprocessSpec,
    quantization: Quantization,
    input_range: tuple[float, float] = (0.0, 255.0),
    head: tuple[np.ndarray, np.ndarray] | None = None,
    golden: dict[str, np.ndarray] | None = None,
    golden_atol: float = 0.05,
    provenance: Provenance | None = None,
) -> Bundle:
    """Write a bundle whose tensors and head kind are read from the model, then load it back.

    `head` = (kernel, bias): a dense head on the graph's embeddings. `golden` = {images,
    preprocessed, expected}: `expected` is the float model's probabilities; the bundle's raw
    outputs and its head (the head at export) are added here. The temperature starts at 1:
    edge.model.heads.set_temperature changes it later without a re-export.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / MODEL_FILE).write_bytes(model_bytes)
    probe = LiteRTModel(model_bytes, num_threads=1)
    labels = list(labels)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name=name,
        labels=labels,
        form="backbone_head" if head is not None else "classifier",
        model_sha256=sha256_file(root / MODEL_FILE),
        quantization=quantization,
        input=TensorSpecModel(**probe.input.to_dict()),
        output=TensorSpecModel(**probe.output.to_dict()),
        input_range=input_range,
        preprocessing=spec.to_dict(),
        head=_head_info(root, probe, head, labels),
        provenance=provenance or Provenance(),
    )
    write_manifest(root, manifest)
    bundle = load_bundle(root)
    if golden is None:
        return bundle
    # The bundle's own raw outputs on the golden inputs, so the device can check that it
    # reproduces this export's graph exactly (preprocessing and runtime), whatever head it has.
    raw = np.stack([bundle.raw(x) for x in golden["preprocessed"]])
    sha, count = write_golden(
        root / GOLDEN_FILE, **golden, raw_expected=raw, head=bundle.head, labels=labels
    )
    manifest.golden = GoldenInfo(
        sha256=sha,
        count=count,
        atol=golden_atol,
        parity_atol=parity_atol(quantization, bundle.model.output, raw),
    )
    write_manifest(root, manifest)
    return load_bundle(root)
