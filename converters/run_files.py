"""What export and verify need from a trainer run dir (training.json, split.json beside the model).

Parsing is the trainer's (`trainer.run_files`, numpy only, no TensorFlow); this module only
turns it into the converters' view and says "no run" when there is no training.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SplitEntry:
    path: Path  # absolute: the split's data root joined with the recorded relative path
    label: str
    split: str
    group: str | None = None


@dataclass
class TrainingRun:
    """The parts of a trainer run directory that export and verify use."""

    training_file: Path
    info: dict[str, Any]
    split_file: Path | None = None
    entries: list[SplitEntry] = field(default_factory=list)

    @property
    def labels(self) -> list[str] | None:
        labels = self.info.get("labels")
        return [str(x) for x in labels] if isinstance(labels, list) else None

    @property
    def preprocessing(self) -> dict[str, Any] | None:
        spec = self.info.get("preprocessing")
        return spec if isinstance(spec, dict) else None

    def files(self, split: str) -> list[SplitEntry]:
        return [e for e in self.entries if e.split == split]

    def split_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e.split] = counts.get(e.split, 0) + 1
        return counts


def read_training_run(model_path: Path) -> TrainingRun | None:
    """training.json (and the split.json it names) beside a model file; None if there is none."""
    from trainer import run_files

    training_file = model_path.parent / run_files.TRAINING_FILE
    if not training_file.is_file():
        return None
    info = run_files.read_training_json(model_path)
    run = TrainingRun(training_file=training_file, info=info)
    split_name = info.get("split_file")
    if isinstance(split_name, str):
        split_file = model_path.parent / split_name
        if split_file.is_file():
            split = run_files.read_split_file(split_file)
            run.split_file = split_file
            run.entries = [
                SplitEntry(split.data_root / r.path, r.label, r.split, r.group)
                for r in split.records
            ]
    return run
