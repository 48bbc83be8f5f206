"""Groups for data without subject ids: near-duplicate clusters merged with runs of file numbers.

A public dataset without patient ids (Taleqani ALL) still holds the same field photographed
twice, re-encoded or shifted by a few pixels, and files numbered in acquisition order. An image
split then puts near-copies on both sides. Two images are near-duplicates when their 32x32
grey thumbnails, blurred by 1 px, correlate above ``threshold`` at some shift of up to
``max_shift`` thumbnail pixels (about 3 % of the side per pixel): the blur and the shift search
make the measure tolerate re-encoding and small translations, which plain thumbnail
correlation does not (a 2-pixel shift of a 64x64 crop drops it to ~0.84). Files in one folder
whose names end in numbers from the same block of ``run_block`` consecutive numbers are also
put together, since neighbours in acquisition order share a slide and a session.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import cv2
import numpy as np

THUMB_SIZE = 32
BLUR_SIGMA = 1.0
DEFAULT_THRESHOLD = 0.95
DEFAULT_MAX_SHIFT = 1
DEFAULT_RUN_BLOCK = 10

_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$")


def signature(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 image -> its blurred 32x32 grey thumbnail (float32)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    thumb = cv2.resize(grey, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(thumb.astype(np.float32), (0, 0), BLUR_SIGMA)


def _windows(thumbs: np.ndarray, r: int, dx: int, dy: int) -> np.ndarray:
    """The (size-2r)^2 window shifted by (dx, dy), flattened, zero-mean and unit-norm."""
    s = thumbs.shape[1]
    w = thumbs[:, r + dy : s - r + dy, r + dx : s - r + dx].reshape(len(thumbs), -1)
    w = w - w.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(w, axis=1, keepdims=True)
    # A flat thumbnail has no structure to compare: norm 0 -> similarity 0 with everything.
    return np.divide(w, norm, out=np.zeros_like(w), where=norm > 1e-6)


def similar_pairs(
    thumbs: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    max_shift: int = DEFAULT_MAX_SHIFT,
    block: int = 1024,
) -> list[tuple[int, int, float]]:
    """Index pairs (i < j, similarity) above ``threshold``, in blocks to bound memory."""
    from tqdm import tqdm  # lazily: `trainer --help` needs only the base install

    n = len(thumbs)
    r = max_shift
    shifts = [(dx, dy) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    centre = _windows(thumbs, r, 0, 0)
    best: dict[tuple[int, int], float] = {}
    starts = range(0, n, block)
    for start in tqdm(starts, desc="near-duplicates", unit="block", disable=len(starts) < 4):
        stop = min(n, start + block)
        sim = np.full((stop - start, n), -1.0, np.float32)
        for dx, dy in shifts:
            np.maximum(sim, _windows(thumbs[start:stop], r, dx, dy) @ centre.T, out=sim)
        sim[np.arange(stop - start), np.arange(start, stop)] = -1.0  # not with itself
        for i, j in zip(*np.nonzero(sim > threshold), strict=True):
            a, b = sorted((start + int(i), int(j)))
            best[(a, b)] = max(best.get((a, b), -1.0), float(sim[i, j]))
    return [(a, b, v) for (a, b), v in sorted(best.items())]


def run_keys(rel_paths: list[str], run_block: int) -> list[str | None]:
    """``folder/prefix#block`` for names ending in a number, else None (no run)."""
    keys: list[str | None] = []
    for rel in rel_paths:
        p = PurePosixPath(rel)
        m = _TRAILING_NUMBER.match(p.stem)
        if run_block <= 0 or not m:
            keys.append(None)
            continue
        keys.append(f"{p.parent}/{m.group(1)}#{int(m.group(2)) // run_block}")
    return keys


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class Grouping:
    groups: list[str]  # one group id per input, "nd-0001"...
    pairs: list[tuple[int, int, float]]  # the near-duplicate pairs found
    largest: int  # images in the largest group

    @property
    def n_groups(self) -> int:
        return len(set(self.groups))


def near_duplicate_groups(
    rel_paths: list[str],
    thumbs: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    max_shift: int = DEFAULT_MAX_SHIFT,
    run_block: int = DEFAULT_RUN_BLOCK,
) -> Grouping:
    """Connected components of near-duplicate pairs and same-run files; ids follow input order."""
    n = len(rel_paths)
    uf = _UnionFind(n)
    pairs = similar_pairs(thumbs, threshold, max_shift) if n > 1 else []
    for a, b, _ in pairs:
        uf.union(a, b)
    first_of_run: dict[str, int] = {}
    for i, key in enumerate(run_keys(rel_paths, run_block)):
        if key is not None:
            uf.union(first_of_run.setdefault(key, i), i)
    names: dict[int, str] = {}
    groups = [names.setdefault(uf.find(i), f"nd-{len(names) + 1:04d}") for i in range(n)]
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    return Grouping(groups, pairs, max(sizes.values(), default=0))
