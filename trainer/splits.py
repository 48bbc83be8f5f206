"""Stratified, seeded train/validation/test splits by group, and the check that none leaks.

Every group (a subject, a patient, a near-duplicate cluster) goes whole to one split. Per
class, the groups whose majority label is that class are shuffled with the seed and each goes
to the split furthest below its target share of that class's images; a split still empty of
the class gets one of the last groups, so each class appears in every split whenever it has at
least one group per split.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trainer.errors import SplitError

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.9, 0.05, 0.05)  # seed 000


@dataclass(frozen=True)
class SplitRecord:
    """One file of a split.json: its path relative to the data root, label, group and split."""

    path: str
    label: str
    group: str
    split: str


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise SplitError(
            f"split fractions {list(fractions)} are invalid: expected three positive numbers "
            "(train, validation, test) summing to 1, e.g. 0.9 0.05 0.05"
        )
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def assign_splits(
    labels: Sequence[str],
    groups: Sequence[str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> list[str]:
    """The split ("train"/"val"/"test") of each item; all items of a group share one split."""
    fr = np.array(check_fractions(fractions))
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    # A group belongs to the class most of its images have (ties: the first label sorted).
    by_class: dict[str, list[str]] = defaultdict(list)
    for g, idx in members.items():
        counts = Counter(labels[i] for i in idx)
        top = max(counts.values())
        by_class[min(lab for lab, c in counts.items() if c == top)].append(g)

    rng = np.random.default_rng(seed)
    split_of_group: dict[str, int] = {}
    for label in sorted(by_class):
        class_groups = sorted(by_class[label])
        if len(class_groups) < len(SPLITS):
            raise SplitError(
                f"class {label!r} has {len(class_groups)} group(s) of images; a train/val/test "
                f"split by group needs at least {len(SPLITS)}: add images from more "
                "subjects/slides for it, or use --split random to reproduce an image-level "
                "split (leaks)"
            )
        order = [class_groups[k] for k in rng.permutation(len(class_groups))]
        sizes = np.array([len(members[g]) for g in order], float)
        target = fr * sizes.sum()
        have = np.zeros(len(SPLITS))
        n_groups = np.zeros(len(SPLITS), int)
        for k, g in enumerate(order):
            left = len(order) - k
            empty = np.flatnonzero(n_groups == 0)
            deficit = target - have
            if len(empty) and len(empty) >= left:
                choice = int(empty[np.argmax(deficit[empty])])
            else:
                choice = int(np.argmax(deficit))
            split_of_group[g] = choice
            have[choice] += sizes[k]
            n_groups[choice] += 1
    return [SPLITS[split_of_group[g]] for g in groups]


def check_no_leak(records: Sequence[SplitRecord]) -> None:
    """Raise SplitError naming the first group found in more than one split."""
    seen: dict[str, str] = {}
    for r in records:
        first = seen.setdefault(r.group, r.split)
        if first != r.split:
            raise SplitError(
                f"group {r.group!r} is in both {first} and {r.split} (e.g. {r.path}): "
                "the split leaks; regenerate it with --split group"
            )


def leaking_groups(records: Sequence[SplitRecord]) -> list[str]:
    """Groups present in more than one split (what a random split leaks)."""
    splits: dict[str, set[str]] = defaultdict(set)
    for r in records:
        splits[r.group].add(r.split)
    return sorted(g for g, s in splits.items() if len(s) > 1)


def check_classes_present(records: Sequence[SplitRecord], labels: Sequence[str]) -> None:
    """Raise SplitError naming a class that has no image in some split."""
    present = {(r.label, r.split) for r in records}
    for label in labels:
        for split in SPLITS:
            if (label, split) not in present:
                raise SplitError(
                    f"class {label!r} has no image in the {split} split: add images (or "
                    f"groups) of {label!r}, change --seed, or widen the {split} fraction"
                )


def split_counts(records: Sequence[SplitRecord], labels: Sequence[str]) -> dict[str, dict]:
    """{split: {"images": {label: n}, "groups": n}}."""
    out: dict[str, dict] = {}
    for split in SPLITS:
        rs = [r for r in records if r.split == split]
        out[split] = {
            "images": {lab: sum(r.label == lab for r in rs) for lab in labels},
            "groups": len({r.group for r in rs}),
        }
    return out
