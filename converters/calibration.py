"""The calibration set for int8: real training images, shuffled, class-mixed, preprocessed by edge.

Never random noise (ANCHORS: quantisation ranges come from what the calibration images produce,
so they must look like what the device will see).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import CalibrationError
from converters.image_sets import LabelledFile, class_mixed, per_class, scan_folder
from converters.progress import progress
from converters.run_files import TrainingRun
from edge.contracts import PreprocessSpec
from edge.model import TensorInfo
from edge.vision import preprocess, read_image

log = logging.getLogger(__name__)

DEFAULT_COUNT = 300
DEFAULT_SEED = 0


@dataclass(frozen=True)
class CalibrationSet:
    files: list[LabelledFile]
    source: str  # the folder, or "<split.json> (train split)"
    seed: int

    def describe(self) -> dict[str, Any]:
        """What the manifest records about calibration."""
        return {
            "source": self.source,
            "count": len(self.files),
            "per_class": per_class(self.files),
            "seed": self.seed,
            "order": "shuffled, class-interleaved",
        }


def from_folder(folder: str | Path, count: int, seed: int) -> CalibrationSet:
    """A folder of class folders (or of images): up to `count` of them, class-mixed."""
    files = scan_folder(folder, require_labels=False)
    return CalibrationSet(class_mixed(files, count, seed), str(Path(folder)), seed)


def from_training_run(run: TrainingRun, count: int, seed: int) -> CalibrationSet:
    """The TRAIN split listed in the run's split.json, class-mixed; every file must exist."""
    if run.split_file is None:
        raise CalibrationError(
            f"{run.training_file.parent}: no split.json beside the model to take training "
            "images from; pass --calibration DIR (a folder of real training images)"
        )
    train = run.files("train")
    if not train:
        raise CalibrationError(
            f"{run.split_file}: lists no files in the 'train' split; pass --calibration DIR"
        )
    picked = class_mixed(train, count, seed)
    missing = [f.path for f in picked if not f.path.is_file()]
    if missing:
        raise CalibrationError(
            f"{run.split_file}: {len(missing)} of {len(picked)} calibration images are missing "
            f"(first: {missing[0]}); was the data moved? pass --calibration DIR"
        )
    return CalibrationSet(picked, f"{run.split_file} (train split)", seed)


def representative_dataset(
    cal: CalibrationSet, spec: PreprocessSpec
) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The converter's representative_dataset: one preprocessed [1, H, W, 3] float32 per image."""

    def generate() -> Iterator[list[np.ndarray]]:
        for f in progress(cal.files, len(cal.files), "calibrating"):
            yield [_model_input(f, spec)[None, ...]]

    return generate


def load_images(cal: CalibrationSet, spec: PreprocessSpec, limit: int) -> np.ndarray:
    """The first `limit` calibration images (class-mixed order) preprocessed as the device does,
    [N, H, W, 3] float32."""
    files = cal.files[:limit]
    return np.stack(
        [_model_input(f, spec) for f in progress(files, len(files), "reading calibration images")]
    )


def _model_input(f: LabelledFile, spec: PreprocessSpec) -> np.ndarray:
    """One calibration image as the model receives it: edge's preprocessing, float32 HWC."""
    return preprocess(read_image(f.path), spec).astype(np.float32)


def input_coverage(info: TensorInfo, expected: tuple[float, float]) -> float:
    """Fraction of the expected float input range the quantised input tensor can represent."""
    if not info.quantized:
        return 1.0
    assert info.scale is not None and info.zero_point is not None
    lo_q, hi_q = (0, 255) if info.dtype == "uint8" else (-128, 127)
    lo = (lo_q - info.zero_point) * info.scale
    hi = (hi_q - info.zero_point) * info.scale
    lo_e, hi_e = expected
    overlap = max(0.0, min(hi, hi_e) - max(lo, lo_e))
    return overlap / (hi_e - lo_e)


def check_input_quantization(info: TensorInfo, expected: tuple[float, float]) -> str | None:
    """A warning if the int8 input cannot represent most of the range preprocessing emits."""
    coverage = input_coverage(info, expected)
    # Real stained cells rarely reach pure white, so ~0.9 of 0..255 is normal; far less means
    # the calibration images did not look like real inputs (black, blank or mis-scaled).
    if coverage < 0.5:
        return (
            f"the quantised input (scale {info.scale:.3g}, zero point {info.zero_point}) covers "
            f"only {coverage:.1%} of the preprocessed range {expected}: the calibration images "
            "do not look like real inputs (all black? wrong scaling?); `converters verify` "
            "will most likely refuse this bundle"
        )
    return None
