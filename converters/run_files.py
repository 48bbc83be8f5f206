"""What export and verify need from a trainer run dir (training.json, split.json beside the model).

Parsing is the trainer's (`trainer.run_files`, numpy only, no TensorFlow); this module only
turns it into the converters' view and says "no run" when there is no training.json.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.image_sets import LabelledFile

if TYPE_CHECKING:
    from trainer.run_files import SplitFile


@dataclass
class TrainingRun:
    """The parts of a trainer run directory that export and verify use."""

    training_file: Path
    info: dict[str, Any]
    split_file: Path | None = None
    split: SplitFile | None = None  # split_file as read, when there is one

    @property
    def labels(self) -> list[str] | None:
        labels = self.info.get("labels")
        return [str(x) for x in labels] if isinstance(labels, list) else None

    @property
    def preprocessing(self) -> dict[str, Any] | None:
        spec = self.info.get("preprocessing")
        return spec if isinstance(spec, dict) else None

    def files(self, split: str) -> list[LabelledFile]:
        """The files of one split (absolute paths), in split.json order."""
        if self.split is None:
            return []
        return [LabelledFile(path, label) for path, label in self.split.paths(split)]

    def split_counts(self) -> dict[str, int]:
        """Files per split, in order of first appearance in split.json."""
        records = self.split.records if self.split is not None else []
        return dict(Counter(r.split for r in records))


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
            run.split = run_files.read_split_file(split_file)
            run.split_file = split_file
    return run
