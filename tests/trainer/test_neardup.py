"""Near-duplicates made from real crops (re-encoded, shifted) are grouped, and stay in one split."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.trainer.conftest import reencoded, shifted, write_image
from trainer.layouts import discover
from trainer.neardup import near_duplicate_groups, run_keys, signature, similar_pairs
from trainer.prepare import prepare
from trainer.splits import check_no_leak


def _crop_resized(rgb: np.ndarray, k: int) -> np.ndarray:
    """A slightly tighter framing of the same cell (k px cut from the top-left), resized back."""
    h, w = rgb.shape[:2]
    return cv2.resize(rgb[k:, k:], (w, h), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def originals(wbc_crops: list[np.ndarray], rbc_crops: list[np.ndarray]) -> list[np.ndarray]:
    return wbc_crops + rbc_crops


COPIES = {  # copy name -> (index of the original, how it was made)
    "jpeg70": (0, lambda im: reencoded(im, 70)),
    "shift2x1": (3, lambda im: shifted(im, 2, 1)),
    "shift1x1": (14, lambda im: shifted(im, 1, 1)),
    "tighter3": (5, lambda im: _crop_resized(im, 3)),
    "jpeg50_shift2": (20, lambda im: reencoded(shifted(im, 0, 2), 50)),
}


def test_copies_join_their_originals_and_distinct_cells_stay_apart(
    originals: list[np.ndarray],
) -> None:
    images = originals + [make(originals[i]) for i, make in COPIES.values()]
    names = [f"orig_{i}" for i in range(len(originals))] + list(COPIES)
    thumbs = np.stack([signature(im) for im in images])
    g = near_duplicate_groups(names, thumbs, run_block=0)
    for k, (i, _) in enumerate(COPIES.values()):
        assert g.groups[len(originals) + k] == g.groups[i], f"{names[len(originals) + k]}"
    # 24 different real cells (12 of them cut from one field) are 24 groups.
    assert len(set(g.groups[: len(originals)])) == len(originals)
    assert g.n_groups == len(originals) and g.largest == 2
    assert len(g.pairs) == len(COPIES)


def test_shift_search_is_what_catches_a_shifted_copy(originals: list[np.ndarray]) -> None:
    thumbs = np.stack([signature(originals[3]), signature(shifted(originals[3], 2, 1))])
    assert similar_pairs(thumbs, 0.95, max_shift=0) == []
    ((a, b, sim),) = similar_pairs(thumbs, 0.95, max_shift=1)
    assert (a, b) == (0, 1) and sim > 0.97


def test_runs_of_consecutive_file_numbers_share_a_key() -> None:
    rels = [
        "Pro/WBC-Malignant-Pro-001.jpg",
        "Pro/WBC-Malignant-Pro-009.jpg",
        "Pro/WBC-Malignant-Pro-010.jpg",
        "Pre/WBC-Malignant-Pre-001.jpg",
        "Pro/notes.png",
    ]
    keys = run_keys(rels, 10)
    assert keys[0] == keys[1] == "Pro/WBC-Malignant-Pro-#0"
    assert keys[2] == "Pro/WBC-Malignant-Pro-#1"
    assert keys[3] == "Pre/WBC-Malignant-Pre-#0"
    assert keys[4] is None
    assert run_keys(rels, 0) == [None] * 5


def test_a_file_run_is_one_group(originals: list[np.ndarray]) -> None:
    rels = [f"WBC/cell-{i:03d}.png" for i in range(1, 13)]
    thumbs = np.stack([signature(im) for im in originals[:12]])
    g = near_duplicate_groups(rels, thumbs, run_block=5)
    # 1-4 | 5-9 | 10-12: blocks of five consecutive numbers.
    assert g.groups == ["nd-0001"] * 4 + ["nd-0002"] * 5 + ["nd-0003"] * 3


def _folder_with_copies(root: Path, originals: list[np.ndarray]) -> dict[str, str]:
    """Real crops in WBC/ and RBC/ (names without file numbers) plus near-copies; copy->orig."""
    pairs = {}
    for i, im in enumerate(originals):
        cls = "WBC" if i < 12 else "RBC"
        write_image(root / cls / f"{chr(97 + i % 12)}_cell.png", im)
    for name, (i, make) in COPIES.items():
        cls = "WBC" if i < 12 else "RBC"
        write_image(root / cls / f"{name}_copy.png", make(originals[i]))
        pairs[f"{cls}/{name}_copy.png"] = f"{cls}/{chr(97 + i % 12)}_cell.png"
    return pairs


def test_near_duplicates_land_in_one_split_and_a_random_split_leaks_them(
    tmp_path: Path, originals: list[np.ndarray]
) -> None:
    pairs = _folder_with_copies(tmp_path, originals)
    dataset = discover(tmp_path)
    random_leaks = 0
    for seed in range(4):
        prepared = prepare(dataset, "group", (0.5, 0.25, 0.25), seed, progress=False)
        check_no_leak(prepared.records)
        split = {r.path: r.split for r in prepared.records}
        for copy, original in pairs.items():
            assert split[copy] == split[original], (seed, copy)
        assert prepared.meta["near_duplicates"]["pairs"] == len(COPIES)
        assert prepared.meta["groups_crossing_splits"] == 0
        rnd = prepare(dataset, "random", (0.5, 0.25, 0.25), seed, progress=False)
        random_leaks += rnd.meta["groups_crossing_splits"]
    # The image-level split the papers used puts some copy and its original apart.
    assert random_leaks > 0
