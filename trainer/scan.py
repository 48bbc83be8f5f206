"""Reading every image once before training: unreadable files are listed and skipped."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edge.vision import ImageReadError, read_image
from trainer.layouts import Dataset, Sample

log = logging.getLogger(__name__)


@dataclass
class ScanResult:
    samples: list[Sample]  # the readable ones, in dataset order
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "error"}
    thumbnails: np.ndarray | None = None  # one signature per readable sample, if asked for


def scan(
    dataset: Dataset,
    signature: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: bool = True,
) -> ScanResult:
    """Decode every image of ``dataset``; skip (and list) those that cannot be read.

    With ``signature``, also compute it on each decoded image (near-duplicate thumbnails) so
    the images are read only once.
    """
    from tqdm import tqdm  # lazily: `trainer --help` needs only the base install

    kept: list[Sample] = []
    skipped: list[dict[str, str]] = []
    sigs: list[np.ndarray] = []
    for s in tqdm(dataset.samples, desc="reading images", unit="img", disable=not progress):
        try:
            image = read_image(dataset.root / s.rel)
        except ImageReadError as exc:
            skipped.append({"path": s.rel, "error": str(exc)})
            continue
        kept.append(s)
        if signature is not None:
            sigs.append(signature(image))
    if skipped:
        log.warning(
            "skipped %d unreadable image(s) of %d, e.g. %s",
            len(skipped),
            len(dataset.samples),
            skipped[0]["error"],
        )
    thumbs = np.stack(sigs) if signature is not None and sigs else None
    return ScanResult(kept, skipped, thumbs)
