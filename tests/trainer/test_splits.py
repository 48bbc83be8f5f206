"""Group splits: stratified, seeded, never splitting a group; clear errors naming the class."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from tests.trainer.conftest import write_image
from trainer.errors import DataError, SplitError
from trainer.layouts import discover
from trainer.prepare import GroupingOptions, from_split_file, prepare
from trainer.run_files import write_split
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


def _two_classes(root: Path, wbc: list[np.ndarray], rbc: list[np.ndarray], n: int = 6) -> Path:
    for i in range(n):
        write_image(root / "WBC" / f"w{i}.png", wbc[i])
        write_image(root / "RBC" / f"r{i}.png", rbc[i])
    return root


def test_random_split_warns_and_records_what_leaks(
    tmp_path: Path,
    wbc_crops: list[np.ndarray],
    rbc_crops: list[np.ndarray],
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = _two_classes(tmp_path / "d", wbc_crops, rbc_crops)
    write_image(root / "WBC" / "w9.png", wbc_crops[0])  # an exact copy of w0: one group
    opts = GroupingOptions(run_block=0)
    with caplog.at_level("WARNING"):
        prepared = prepare(discover(root), "random", (0.5, 0.25, 0.25), 2, opts, False)
    assert "--split random splits by image" in caplog.text and "inflate" in caplog.text
    assert prepared.meta["strategy"] == "random"
    by_path = {r.path: r for r in prepared.records}
    assert by_path["WBC/w0.png"].group == by_path["WBC/w9.png"].group
    crossing = int(by_path["WBC/w0.png"].split != by_path["WBC/w9.png"].split)
    assert prepared.meta["groups_crossing_splits"] == crossing  # counted, not hidden
    caplog.clear()
    with caplog.at_level("WARNING"):
        group = prepare(discover(root), "group", (0.5, 0.25, 0.25), 2, opts, False)
    assert "--split random" not in caplog.text and group.meta["groups_crossing_splits"] == 0
    with pytest.raises(SplitError, match="--split 'image' is unknown"):
        prepare(discover(root), "image", progress=False)


def test_a_class_whose_images_are_all_unreadable_is_named(
    tmp_path: Path, wbc_crops: list[np.ndarray]
) -> None:
    for i in range(3):
        write_image(tmp_path / "WBC" / f"{i}.png", wbc_crops[i])
        (tmp_path / "Blast" / f"{i}.png").parent.mkdir(exist_ok=True)
        (tmp_path / "Blast" / f"{i}.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"class 'Blast' has no readable image"):
        prepare(discover(tmp_path), progress=False)


def test_a_reused_split_file_is_checked_against_the_data(
    tmp_path: Path, wbc_crops: list[np.ndarray], rbc_crops: list[np.ndarray]
) -> None:
    root = _two_classes(tmp_path / "d", wbc_crops, rbc_crops)
    dataset = discover(root)
    prepared = prepare(dataset, "group", (0.5, 0.25, 0.25), 0, GroupingOptions(run_block=0), False)
    split = tmp_path / "split.json"
    write_split(split, root, dataset.labels, prepared.records, prepared.meta)
    again = from_split_file(discover(root), split, same_data=True)
    assert again.records == prepared.records
    assert from_split_file(dataset, split).meta["split_reused_from"] == str(split)
    # Other classes: refused, naming both label lists.
    other = _two_classes(tmp_path / "o", wbc_crops, rbc_crops)
    (other / "RBC").rename(other / "Blast")
    with pytest.raises(SplitError, match=r"labels \['RBC', 'WBC'\] but .* has \['Blast', 'WBC'\]"):
        from_split_file(discover(other), split)
    # New files under the folder: fine for a reused split, not for resuming a run.
    write_image(root / "WBC" / "w100.png", wbc_crops[8])
    from_split_file(discover(root), split)
    with pytest.raises(SplitError, match=r"changed since .* was written"):
        from_split_file(discover(root), split, same_data=True)
    # A listed file that is gone is named.
    (root / "RBC" / "r3.png").unlink()
    with pytest.raises(SplitError, match=r"1 file\(s\) of .* are not under .*RBC/r3\.png"):
        from_split_file(discover(root), split)
    (root / "RBC" / "r3.png").write_bytes(b"")
    # A hand-edited group split that now leaks is refused by the leak check.
    data = json.loads(split.read_text())
    first = data["files"][0]
    moved = next(
        f for f in data["files"] if f["split"] != first["split"] and f["label"] == first["label"]
    )
    moved["group"] = first["group"]
    split.write_text(json.dumps(data))
    with pytest.raises(SplitError, match=f"group '{first['group']}' is in both"):
        from_split_file(discover(root), split)
