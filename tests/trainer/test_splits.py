"""Group splits: stratified, seeded, never splitting a group; clear errors naming the class."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from tests.trainer.conftest import write_image
from trainer.errors import DataError, SplitError
from trainer.layouts import discover
from trainer.prepare import prepare
from trainer.splits import (
    SplitRecord,
    assign_splits,
    check_classes_present,
    check_fractions,
    check_no_leak,
    leaking_groups,
)


def _grouped_labels(seed: int = 0) -> tuple[list[str], list[str]]:
    """Class A: 60 subjects, class B: 30 subjects, 1 to 8 images each."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for cls, n_groups in (("A", 60), ("B", 30)):
        for g in range(n_groups):
            for _ in range(int(rng.integers(1, 9))):
                labels.append(cls)
                groups.append(f"{cls}{g}")
    return labels, groups


def test_group_split_keeps_groups_whole_and_follows_the_fractions() -> None:
    labels, groups = _grouped_labels()
    splits = assign_splits(labels, groups, (0.7, 0.15, 0.15), seed=1)
    where: dict[str, set[str]] = defaultdict(set)
    for g, s in zip(groups, splits, strict=True):
        where[g].add(s)
    assert all(len(s) == 1 for s in where.values())
    for cls in ("A", "B"):
        n = sum(lab == cls for lab in labels)
        share = {
            s: sum(lab == cls and sp == s for lab, sp in zip(labels, splits, strict=True)) / n
            for s in ("train", "val", "test")
        }
        assert share["train"] == pytest.approx(0.7, abs=0.08), (cls, share)
        assert share["val"] == pytest.approx(0.15, abs=0.08), (cls, share)
        assert share["test"] == pytest.approx(0.15, abs=0.08), (cls, share)
    rows = zip(labels, groups, splits, strict=True)
    records = [SplitRecord(f"f{i}", *row) for i, row in enumerate(rows)]
    check_no_leak(records)
    check_classes_present(records, ["A", "B"])


def test_split_is_reproducible_by_seed() -> None:
    labels, groups = _grouped_labels()
    assert assign_splits(labels, groups, seed=5) == assign_splits(labels, groups, seed=5)
    assert assign_splits(labels, groups, seed=5) != assign_splits(labels, groups, seed=6)


def test_three_groups_give_one_group_per_split_even_at_90_5_5() -> None:
    labels = ["A"] * 30 + ["B"] * 3
    groups = [f"a{i % 10}" for i in range(30)] + ["b0", "b1", "b2"]
    splits = assign_splits(labels, groups, (0.9, 0.05, 0.05), seed=0)
    assert sorted(splits[30:]) == ["test", "train", "val"]


def test_too_few_groups_is_an_error_naming_the_class() -> None:
    labels = ["A"] * 6 + ["B"] * 4
    groups = [f"a{i}" for i in range(6)] + ["b0", "b0", "b1", "b1"]
    with pytest.raises(SplitError, match=r"class 'B' has 2 group\(s\)"):
        assign_splits(labels, groups)


def test_leak_check_names_the_group_in_two_splits() -> None:
    records = [
        SplitRecord("x/1.png", "A", "subject:7", "train"),
        SplitRecord("x/2.png", "A", "subject:8", "val"),
        SplitRecord("x/3.png", "A", "subject:7", "test"),
    ]
    with pytest.raises(SplitError, match=r"'subject:7' is in both train and test"):
        check_no_leak(records)
    assert leaking_groups(records) == ["subject:7"]


def test_a_class_missing_from_a_split_is_named() -> None:
    records = [
        SplitRecord("1", "A", "g1", "train"),
        SplitRecord("2", "A", "g2", "val"),
        SplitRecord("3", "A", "g3", "test"),
        SplitRecord("4", "B", "g4", "train"),
        SplitRecord("5", "B", "g5", "test"),
    ]
    with pytest.raises(SplitError, match=r"class 'B' has no image in the val split"):
        check_classes_present(records, ["A", "B"])


@pytest.mark.parametrize("bad", [(0.9, 0.1), (0.8, 0.1, 0.2), (1.0, 0.0, 0.0)])
def test_fractions_must_be_three_positive_shares(bad: tuple[float, ...]) -> None:
    with pytest.raises(SplitError, match="three positive numbers"):
        check_fractions(bad)


def test_unreadable_images_are_listed_and_skipped(
    tmp_path: Path, wbc_crops: list[np.ndarray], rbc_crops: list[np.ndarray]
) -> None:
    for i in range(6):
        write_image(tmp_path / "WBC" / f"{chr(97 + i)}.png", wbc_crops[i])
        write_image(tmp_path / "RBC" / f"{chr(97 + i)}.png", rbc_crops[i])
    (tmp_path / "WBC" / "empty.png").write_bytes(b"")
    jpeg = write_image(tmp_path / "RBC" / "cut.jpg", rbc_crops[7]).read_bytes()
    (tmp_path / "RBC" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # truncated transfer
    prepared = prepare(discover(tmp_path), fractions=(0.5, 0.25, 0.25), progress=False)
    skipped = {s["path"]: s["error"] for s in prepared.meta["skipped"]}
    assert set(skipped) == {"WBC/empty.png", "RBC/cut.jpg"}
    assert "empty" in skipped["WBC/empty.png"] and "truncated" in skipped["RBC/cut.jpg"]
    assert len(prepared.records) == 12
    assert not {r.path for r in prepared.records} & set(skipped)


def test_a_class_with_too_few_readable_images_is_named(
    tmp_path: Path, wbc_crops: list[np.ndarray]
) -> None:
    for i in range(5):
        write_image(tmp_path / "WBC" / f"{chr(97 + i)}.png", wbc_crops[i])
    write_image(tmp_path / "Blast" / "a.png", wbc_crops[6])
    write_image(tmp_path / "Blast" / "b.png", wbc_crops[7])
    (tmp_path / "Blast" / "c.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"class 'Blast' has 2 readable image"):
        prepare(discover(tmp_path), progress=False)
