"""Golden images: the start-up check that the device preprocesses and infers like training did.

golden.npz holds ``images`` (K, h, w, 3) uint8 raw inputs (all one size, as captured),
``preprocessed`` (K, H, W, 3) float32 as the trainer's preprocessing produced them,
``expected`` (K, N) float32 probabilities of the float reference model, ``bundle_expected``
(K, N): the bundle's own outputs at export, and ``labels`` (N,): the class of each column, so
outputs cannot pass under labels they were not computed for.

Two checks, both required: parity (device vs ``bundle_expected``, tight: catches a changed
preprocessing, runtime or model file) and a sanity bound (device vs the float model, loose
for int8: catches a quantisation that broke the model, e.g. calibrated on black images).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.errors import BlastscopeError
from edge.vision.preprocessing import preprocess

if TYPE_CHECKING:
    from edge.model.bundle import Bundle


class GoldenMismatchError(BlastscopeError):
    """The device disagrees with the reference beyond tolerance on a golden image."""


@dataclass(frozen=True)
class GoldenReport:
    count: int
    preprocessing_identical: bool
    max_preprocess_diff: float
    max_abs_dp: float  # vs the float reference model
    top1_agreement: float
    atol: float
    parity_dp: float | None = None  # vs the bundle's own outputs at export
    parity_atol: float | None = None
    labels: tuple[str, ...] | None = None  # what the golden outputs were computed for
    manifest_labels: tuple[str, ...] = ()

    @property
    def labels_match(self) -> bool:
        return self.labels == self.manifest_labels

    @property
    def parity_ok(self) -> bool:
        if self.parity_dp is None or self.parity_atol is None:
            return True
        return self.parity_dp <= self.parity_atol

    @property
    def passed(self) -> bool:
        return (
            self.labels_match
            and self.preprocessing_identical
            and self.parity_ok
            and self.max_abs_dp <= self.atol
        )

    def summary(self) -> str:
        parity = (
            ""
            if self.parity_dp is None
            else f", parity with export max |dp| {self.parity_dp:.4f} (tolerance "
            f"{self.parity_atol})"
        )
        labels = (
            ""
            if self.labels_match
            else f", outputs computed for labels {list(self.labels or ())} but the manifest "
            f"says {list(self.manifest_labels)}"
        )
        return (
            f"golden set: {self.count} images{labels}, preprocessing "
            f"{'identical' if self.preprocessing_identical else 'DIFFERS'} "
            f"(max diff {self.max_preprocess_diff:.3g}){parity}, vs float max |dp| "
            f"{self.max_abs_dp:.4f} (tolerance {self.atol}), top-1 agreement "
            f"{self.top1_agreement:.0%}"
        )


def write_golden(
    path: Path,
    images: np.ndarray,
    preprocessed: np.ndarray,
    expected: np.ndarray,
    bundle_expected: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
) -> tuple[str, int]:
    """Write golden.npz; return (sha256, count)."""
    from edge.contracts.manifest import sha256_file

    images = np.asarray(images, np.uint8)
    if not (len(images) == len(preprocessed) == len(expected)) or len(images) == 0:
        raise BlastscopeError(
            "golden images, preprocessed inputs and outputs must be equal, non-zero counts"
        )
    arrays: dict[str, Any] = {
        "images": images,
        "preprocessed": np.asarray(preprocessed, np.float32),
        "expected": np.asarray(expected, np.float32),
    }
    if bundle_expected is not None:
        arrays["bundle_expected"] = np.asarray(bundle_expected, np.float32)
    if labels is not None:
        arrays["labels"] = np.asarray(list(labels), dtype=np.str_)
    with path.open("wb") as f:
        np.savez_compressed(f, **arrays)
    return sha256_file(path), len(images)


def check_golden(bundle: Bundle) -> GoldenReport | None:
    """Re-run the bundle's golden images through edge preprocessing and the bundle's model."""
    info = bundle.manifest.golden
    if info is None:
        return None
    with np.load(bundle.path / info.file) as data:
        images, reference_inputs, expected = data["images"], data["preprocessed"], data["expected"]
        own = data["bundle_expected"] if "bundle_expected" in data.files else None
        labels = tuple(str(x) for x in data["labels"]) if "labels" in data.files else None
    ours = np.stack([preprocess(img, bundle.spec) for img in images])
    diff = float(np.abs(ours - reference_inputs).max())
    probs = np.stack([bundle.probabilities(x) for x in ours])
    return GoldenReport(
        labels=labels,
        manifest_labels=tuple(bundle.labels),
        parity_dp=None if own is None else float(np.abs(probs - own).max()),
        parity_atol=info.parity_atol,
        count=len(images),
        preprocessing_identical=diff == 0.0,
        max_preprocess_diff=diff,
        max_abs_dp=float(np.abs(probs - expected).max()),
        top1_agreement=float(np.mean(probs.argmax(1) == expected.argmax(1))),
        atol=info.atol,
    )


def require_golden(bundle: Bundle) -> GoldenReport | None:
    """check_golden, raising GoldenMismatchError if the bundle fails its own golden set."""
    report = check_golden(bundle)
    if report is not None and not report.passed:
        raise GoldenMismatchError(
            f"{bundle.path}: start-up parity check failed: {report.summary()}"
        )
    return report
