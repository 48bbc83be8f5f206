"""Image sets on disk: class folders (or a flat folder), and a seeded class-mixed sample of them.

Frigate calibrates on the first 300 files in folder order, i.e. mostly one class: here every
sample is shuffled with a seed and interleaved class by class, so any prefix is class-mixed.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from converters.errors import CalibrationError
from edge.vision import list_images, list_subfolders

UNLABELLED = "(unlabelled)"


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    label: str  # UNLABELLED for a flat folder


def scan_folder(folder: str | Path, *, require_labels: bool) -> list[LabelledFile]:
    """Images in class sub-folders of `folder`, or directly in it when flat (if allowed)."""
    root = Path(folder)
    if not root.is_dir():
        raise CalibrationError(f"{root}: no such folder; expected a folder of class folders")
    files = [LabelledFile(p, sub.name) for sub in list_subfolders(root) for p in list_images(sub)]
    flat = [LabelledFile(p, UNLABELLED) for p in list_images(root)]
    if files and flat:
        raise CalibrationError(
            f"{root}: has both images and class folders; put every image in a class folder"
        )
    if not files and not flat:
        raise CalibrationError(
            f"{root}: no images found (looked for .png/.jpg/.bmp/.tif files in it and in its "
            "class folders); point it at real images from the training data"
        )
    if flat and require_labels:
        raise CalibrationError(
            f"{root}: images must be in class folders named after the labels "
            "(e.g. DIR/WBC/*.png) so each one's true class is known"
        )
    return files or flat


def class_mixed(files: Sequence[LabelledFile], count: int, seed: int) -> list[LabelledFile]:
    """Up to `count` files: each class shuffled, then taken in turn, so classes stay balanced."""
    rng = random.Random(seed)
    by_class: dict[str, list[LabelledFile]] = {}
    for f in files:
        by_class.setdefault(f.label, []).append(f)
    queues = []
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda f: str(f.path))
        rng.shuffle(members)
        queues.append(members)
    picked: list[LabelledFile] = []
    depth = 0
    while len(picked) < count and any(depth < len(q) for q in queues):
        order = [q[depth] for q in queues if depth < len(q)]
        rng.shuffle(order)  # no fixed class order within a round
        picked.extend(order)
        depth += 1
    return picked[:count]


def per_class(files: Sequence[LabelledFile]) -> dict[str, int]:
    return dict(sorted(Counter(f.label for f in files).items()))
