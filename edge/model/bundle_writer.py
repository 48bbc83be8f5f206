"""Writing a bundle: the model bytes, a manifest read from the model itself, the golden set."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edge.contracts.manifest import (
    GOLDEN_FILE,
    HEAD_FILE,
    MODEL_FILE,
    PARITY_ATOL,
    SCHEMA_VERSION,
    GoldenInfo,
    HeadInfo,
    Manifest,
    Provenance,
    Quantization,
    TensorSpecModel,
    sha256_file,
    write_manifest,
)
from edge.contracts.preprocess_spec import PreprocessSpec
from edge.model.bundle import Bundle, load_bundle
from edge.model.golden import write_golden
from edge.model.heads import write_head
from edge.model.runtime import LiteRTModel


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
    temperature: float = 1.0,
) -> Bundle:
    """Write a bundle whose tensors are read from the model itself, then load it back."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / MODEL_FILE).write_bytes(model_bytes)
    probe = LiteRTModel(model_bytes, num_threads=1)
    head_info = None
    if head is not None:
        kernel, bias = head
        head_info = HeadInfo(
            sha256=write_head(root / HEAD_FILE, kernel, bias),
            version=1,
            embedding_dim=int(kernel.shape[0]),
        )
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name=name,
        labels=list(labels),
        form="backbone_head" if head is not None else "classifier",
        model_sha256=sha256_file(root / MODEL_FILE),
        quantization=quantization,
        input=TensorSpecModel(**probe.input.to_dict()),
        output=TensorSpecModel(**probe.output.to_dict()),
        input_range=input_range,
        preprocessing=spec.to_dict(),
        temperature=temperature,
        head=head_info,
        provenance=provenance or Provenance(),
    )
    write_manifest(root, manifest)
    bundle = load_bundle(root)
    if golden is None:
        return bundle
    # The bundle's own outputs on the golden inputs, so the device can check it reproduces
    # this export exactly (preprocessing and runtime), not just roughly the float model.
    own = np.stack([bundle.probabilities(x) for x in golden["preprocessed"]])
    sha, count = write_golden(
        root / GOLDEN_FILE, **golden, bundle_expected=own, labels=manifest.labels
    )
    manifest.golden = GoldenInfo(
        sha256=sha, count=count, atol=golden_atol, parity_atol=PARITY_ATOL[quantization]
    )
    write_manifest(root, manifest)
    return load_bundle(root)
