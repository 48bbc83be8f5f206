"""Golden images: the start-up check that the device preprocesses and infers like the export.

golden.npz holds ``images`` (K, h, w, 3) uint8 raw inputs (all one size, as captured),
``preprocessed`` (K, H, W, 3) float32 as the trainer's preprocessing produced them,
``raw_expected`` (K, D): the bundle's raw graph outputs at export, ``expected`` (K, C): the
float reference model's probabilities, the head at export that turns raw outputs into those
(``head_kind``, ``head_temperature``, and ``head_kernel``/``head_bias`` if dense) and
``labels`` (C,): the class of each column of ``expected``.

Two checks, both required, and neither uses the bundle's current head, so a new head version
or temperature never fails start-up:

- parity: the device's raw graph output vs ``raw_expected``, tight (catches a changed
  preprocessing, runtime or model file);
- sanity: the export head on the device's raw output vs the float model's probabilities,
  loose for int8 (catches a quantisation that broke the model, e.g. calibrated on black).

The current head is checked apart, at load (edge.model.heads). A schema-2 golden set
(``parity_on: probabilities``) holds ``bundle_expected`` probabilities instead of raw outputs
and is checked as schema 2 did, through the bundle's head: edge.model.heads refuses to change
a head such a check depends on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from edge.contracts.manifest import BundleError, HeadKind, sha256_file
from edge.errors import BlastscopeError
from edge.model.heads import Head
from edge.model.runtime import TensorInfo
from edge.vision.preprocessing import preprocess

if TYPE_CHECKING:
    from edge.model.bundle import Bundle

# Device vs the export's own raw outputs on the same inputs: only kernel differences between
# CPUs remain. A quantised output differs by about one quantum; 5 are allowed (schema 2's 0.02
# on a softmax output of step 1/256). A float output: relative to its largest value (logits run
# to tens), dynamic quantisation looser as its activation ranges are computed per run.
PARITY_QUANTA = 5
PARITY_RTOL: dict[str, float] = {"float32": 1e-3, "float16": 1e-3, "dynamic": 0.02, "int8": 0.02}


def parity_atol(quantization: str, output: TensorInfo, raw_expected: np.ndarray) -> float:
    """The parity tolerance in the raw output's units (GoldenInfo.parity_atol)."""
    if output.quantized:
        assert output.scale is not None
        return PARITY_QUANTA * output.scale
    return PARITY_RTOL[quantization] * max(1.0, float(np.abs(raw_expected).max()))


class GoldenMismatchError(BlastscopeError):
    """The device disagrees with the reference beyond tolerance on a golden image."""


@dataclass(frozen=True)
class GoldenReport:
    count: int
    preprocessing_identical: bool
    max_preprocess_diff: float
    max_abs_dp: float  # vs the float reference model, through the head at export
    top1_agreement: float
    atol: float
    parity_dp: float | None = None  # vs the export's own outputs (raw, or probabilities)
    parity_atol: float | None = None
    parity_on: str = "raw"
    labels: tuple[str, ...] | None = None  # what the golden outputs were computed for
    manifest_labels: tuple[str, ...] = ()
    labels_checked: bool = True  # False for a dense head: its file carries its labels

    @property
    def labels_match(self) -> bool:
        return not self.labels_checked or self.labels == self.manifest_labels

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
        what = "raw graph output, max |d|" if self.parity_on == "raw" else "max |dp|"
        tolerance = "none" if self.parity_atol is None else f"{self.parity_atol:.4g}"
        parity = (
            ""
            if self.parity_dp is None
            else f", parity with export ({what} {self.parity_dp:.4f}, tolerance {tolerance})"
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
    raw_expected: np.ndarray,
    head: Head,
    labels: Sequence[str],
) -> tuple[str, int]:
    """Write golden.npz, with `head` as the head at export; return (sha256, count)."""
    images = np.asarray(images, np.uint8)
    counts = {len(images), len(preprocessed), len(expected), len(raw_expected)}
    if len(counts) != 1 or len(images) == 0:
        raise BlastscopeError(
            "golden images, preprocessed inputs and outputs must be equal, non-zero counts"
        )
    arrays: dict[str, Any] = {
        "images": images,
        "preprocessed": np.asarray(preprocessed, np.float32),
        "expected": np.asarray(expected, np.float32),
        "raw_expected": np.asarray(raw_expected, np.float32),
        "labels": np.asarray(list(labels), dtype=np.str_),
        "head_kind": np.asarray(head.kind),
        "head_temperature": np.asarray(head.temperature, np.float64),
    }
    if head.kernel is not None and head.bias is not None:
        arrays["head_kernel"], arrays["head_bias"] = head.kernel, head.bias
    with path.open("wb") as f:
        np.savez_compressed(f, **arrays)
    return sha256_file(path), len(images)


def _export_head(data: dict[str, np.ndarray]) -> Head:
    return Head(
        cast(HeadKind, str(data["head_kind"])),
        float(data["head_temperature"]),
        data.get("head_kernel"),
        data.get("head_bias"),
    )


def check_golden(bundle: Bundle) -> GoldenReport | None:
    """Re-run the bundle's golden images through edge preprocessing and the bundle's graph."""
    info = bundle.manifest.golden
    if info is None:
        return None
    path = bundle.path / info.file
    with np.load(path) as npz:
        data = {k: npz[k] for k in npz.files}
    try:
        images, reference_inputs, expected = data["images"], data["preprocessed"], data["expected"]
        ours = np.stack([preprocess(img, bundle.spec) for img in images])
        labels = tuple(str(x) for x in data["labels"]) if "labels" in data else None
        if info.parity_on == "raw":
            raw = np.stack([bundle.raw(x) for x in ours])
            parity_dp: float | None = float(np.abs(raw - data["raw_expected"]).max())
            probs = _export_head(data).apply(raw)
        else:  # schema 2: probabilities, through the head (still the export's, see heads.py)
            probs = np.stack([bundle.probabilities(x) for x in ours])
            own = data.get("bundle_expected")
            parity_dp = None if own is None else float(np.abs(probs - own).max())
    except KeyError as exc:
        raise BundleError(
            f"{path}: no {exc} array for a parity check on {info.parity_on}; re-export the bundle"
        ) from None
    diff = float(np.abs(ours - reference_inputs).max())
    return GoldenReport(
        labels=labels,
        manifest_labels=tuple(bundle.labels),
        labels_checked=info.parity_on != "raw" or bundle.head.kind != "dense",
        parity_dp=parity_dp,
        parity_atol=info.parity_atol,
        parity_on=info.parity_on,
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
