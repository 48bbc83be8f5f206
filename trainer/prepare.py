"""From a data folder to a checked split: discover, read every image, group, split, verify."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import neardup
from trainer.errors import DataError, SplitError
from trainer.layouts import Dataset
from trainer.run_files import data_fingerprint, read_split_file
from trainer.scan import scan
from trainer.splits import (
    SplitRecord,
    assign_splits,
    check_classes_present,
    check_fractions,
    check_no_leak,
    leaking_groups,
    split_counts,
)

log = logging.getLogger(__name__)

SPLIT_STRATEGIES = ("group", "random")


@dataclass(frozen=True)
class GroupingOptions:
    """Near-duplicate grouping, used where the layout knows no subject or patient."""

    threshold: float = neardup.DEFAULT_THRESHOLD
    max_shift: int = neardup.DEFAULT_MAX_SHIFT
    run_block: int = neardup.DEFAULT_RUN_BLOCK


@dataclass
class Prepared:
    dataset: Dataset
    records: list[SplitRecord]
    meta: dict[str, Any] = field(default_factory=dict)  # what split.json records besides files


def check_counts(dataset: Dataset, samples_per_class: dict[str, int]) -> None:
    """Every class needs an image in each of the three splits."""
    for label in dataset.labels:
        n = samples_per_class.get(label, 0)
        if n == 0:
            raise DataError(
                f"class {label!r} has no readable image in {dataset.root}; add images or "
                "remove the class"
            )
        if n < 3:
            raise DataError(
                f"class {label!r} has {n} readable image(s); a train/val/test split needs at "
                "least 3 per class (and many more to learn anything)"
            )


def group_samples(
    dataset: Dataset, rels: list[str], known: list[str | None], thumbs: Any, opts: GroupingOptions
) -> tuple[list[str], dict[str, Any]]:
    """Known groups where the layout has them, else near-duplicate clusters and file runs."""
    if dataset.group_source is not None:
        groups = [g if g is not None else f"file:{r}" for g, r in zip(known, rels, strict=True)]
        return groups, {"group_source": dataset.group_source}
    start = time.perf_counter()
    g = neardup.near_duplicate_groups(rels, thumbs, opts.threshold, opts.max_shift, opts.run_block)
    info: dict[str, Any] = {
        "group_source": "near-duplicates + file-number runs",
        "near_duplicates": {
            "method": (
                f"{neardup.THUMB_SIZE}x{neardup.THUMB_SIZE} grey thumbnails blurred "
                f"{neardup.BLUR_SIGMA} px; correlation > {opts.threshold} at a shift of up to "
                f"{opts.max_shift} px; same folder and name prefix with file numbers in one "
                f"block of {opts.run_block}"
            ),
            "pairs": len(g.pairs),
            "groups": g.n_groups,
            "largest_group": g.largest,
            "seconds": round(time.perf_counter() - start, 2),
            "pair_list": [[rels[a], rels[b], round(v, 4)] for a, b, v in g.pairs],
        },
    }
    log.info(
        "near-duplicate grouping: %d pairs, %d groups (largest %d images) in %.1f s",
        len(g.pairs),
        g.n_groups,
        g.largest,
        info["near_duplicates"]["seconds"],
    )
    return g.groups, info


def prepare(
    dataset: Dataset,
    split: str = "group",
    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05),
    seed: int = 0,
    grouping: GroupingOptions | None = None,
    progress: bool = True,
) -> Prepared:
    """Read every image, group, split and check the split; unreadable files are skipped."""
    if split not in SPLIT_STRATEGIES:
        raise SplitError(f"--split {split!r} is unknown; choose group or random")
    fractions = check_fractions(fractions)
    opts = grouping or GroupingOptions()
    need_thumbs = dataset.group_source is None
    result = scan(dataset, neardup.signature if need_thumbs else None, progress)
    samples = result.samples
    per_class = {lab: 0 for lab in dataset.labels}
    for s in samples:
        per_class[s.label] += 1
    check_counts(dataset, per_class)
    rels = [s.rel for s in samples]
    labels = [s.label for s in samples]
    groups, info = group_samples(dataset, rels, [s.group for s in samples], result.thumbnails, opts)
    if split == "group":
        assigned = assign_splits(labels, groups, fractions, seed)
    else:
        log.warning(
            "--split random splits by image, as the seeds did: near-duplicates and images of "
            "one subject land on both sides and inflate the test metrics; use it only to "
            "reproduce a paper"
        )
        assigned = assign_splits(labels, rels, fractions, seed)
    records = [SplitRecord(*row) for row in zip(rels, labels, groups, assigned, strict=True)]
    check_classes_present(records, dataset.labels)
    leaks = leaking_groups(records)
    if split == "group":
        check_no_leak(records)  # by construction; a check, not a hope
    meta = {
        "layout": dataset.layout,
        "task": dataset.task,
        "strategy": split,
        "seed": seed,
        "fractions": list(fractions),
        **info,
        "groups_crossing_splits": len(leaks),
        "counts": split_counts(records, dataset.labels),
        "data_fingerprint": data_fingerprint(dataset.root, [s.rel for s in dataset.samples]),
        "skipped": result.skipped,
    }
    return Prepared(dataset, records, meta)


def from_split_file(dataset: Dataset, path: Path, same_data: bool = False) -> Prepared:
    """Reuse a split.json on ``dataset``: same labels, every file present.

    With ``same_data`` (resuming a run), the folder must also hold exactly the files it held
    when the split was made (same data fingerprint).
    """
    sf = read_split_file(path)
    if sf.labels != dataset.labels:
        raise SplitError(
            f"{path} has labels {sf.labels} but {dataset.root} has {dataset.labels}; "
            "use a split made for this data and task"
        )
    missing = [r.path for r in sf.records if not (dataset.root / r.path).is_file()]
    if missing:
        raise SplitError(
            f"{len(missing)} file(s) of {path} are not under {dataset.root}, e.g. {missing[0]}"
        )
    check_classes_present(sf.records, sf.labels)
    meta = dict(sf.meta)
    meta.pop("schema", None)
    fingerprint = data_fingerprint(dataset.root, [s.rel for s in dataset.samples])
    if same_data and fingerprint != meta.get("data_fingerprint"):
        raise SplitError(
            f"the files under {dataset.root} changed since {path} was written (the data "
            "fingerprint differs); start a new run with a new --out"
        )
    if not same_data:
        meta["split_reused_from"] = str(path)
    meta["data_fingerprint"] = fingerprint
    if meta.get("strategy") == "group":
        check_no_leak(sf.records)
    return Prepared(dataset, sf.records, meta)
