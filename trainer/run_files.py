"""What a training run leaves on disk, and public readers for it (no TensorFlow needed).

``RUN_DIR/`` holds ``model.keras``, ``training.json`` (labels, preprocessing, provenance,
headline metrics), ``split.json`` (every file with its label, group and split), ``history.csv``,
``report.json``/``report.md`` and plots. Converters read these through this module.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge.contracts import PreprocessSpec
from trainer.errors import RunFileError
from trainer.splits import SPLITS, SplitRecord

MODEL_FILE = "model.keras"
TRAINING_FILE = "training.json"
SPLIT_FILE = "split.json"
HISTORY_FILE = "history.csv"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
SPLIT_SCHEMA = 1

TRAINING_KEYS = (
    "labels",
    "preprocessing",
    "model_name",
    "image_size",
    "task",
    "data",
    "data_fingerprint",
    "split_file",
    "weights",
    "metrics",
)


def data_fingerprint(root: Path, rel_paths: Iterable[str]) -> str:
    """sha256 over the sorted relative paths and byte sizes: changes when the data does."""
    h = hashlib.sha256()
    for rel in sorted(rel_paths):
        h.update(f"{rel}\t{(root / rel).stat().st_size}\n".encode())
    return h.hexdigest()


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so an interruption never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunFileError(f"{path}: no such file; expected the run's {what}") from None
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path}: not valid JSON ({exc})") from None


def run_dir_of(model_or_dir: str | Path) -> Path:
    """A run directory from either the directory or the model.keras inside it."""
    p = Path(model_or_dir)
    return p if p.is_dir() else p.parent


def read_training_json(model_path: str | Path) -> dict[str, Any]:
    """The training.json beside ``model_path`` (a model.keras or its run directory)."""
    path = run_dir_of(model_path) / TRAINING_FILE
    data = read_json(path, "training.json (written by `trainer fit`)")
    missing = [k for k in TRAINING_KEYS if k not in data]
    if missing:
        raise RunFileError(f"{path}: missing key(s) {missing}; re-run `trainer fit` to rewrite it")
    return data


def preprocess_spec(training: dict[str, Any]) -> PreprocessSpec:
    """The PreprocessSpec recorded in a training.json."""
    return PreprocessSpec.from_dict(training["preprocessing"])


@dataclass
class SplitFile:
    data_root: Path
    labels: list[str]
    records: list[SplitRecord]
    meta: dict[str, Any]  # strategy, seed, fractions, group_source, counts, skipped...

    def paths(self, split: str) -> list[tuple[Path, str]]:
        """(absolute path, label) of every file in ``split``, in split.json order."""
        return [(self.data_root / r.path, r.label) for r in self.records if r.split == split]


def write_split(
    path: Path,
    data_root: Path,
    labels: Sequence[str],
    records: Sequence[SplitRecord],
    meta: dict[str, Any],
) -> None:
    write_json(
        path,
        {
            "schema": SPLIT_SCHEMA,
            "data_root": str(data_root),
            "labels": list(labels),
            **meta,
            "files": [asdict(r) for r in records],
        },
    )


def read_split_file(path: str | Path) -> SplitFile:
    """A split.json with its records checked: known splits, known labels."""
    path = Path(path)
    data = read_json(path, "split.json")
    try:
        labels = list(data["labels"])
        records = [SplitRecord(**f) for f in data["files"]]
        root = Path(data["data_root"])
    except (KeyError, TypeError) as exc:
        raise RunFileError(f"{path}: not a blastscope split.json ({exc})") from None
    for r in records:
        if r.split not in SPLITS or r.label not in labels:
            raise RunFileError(
                f"{path}: record {r.path} has split {r.split!r} / label {r.label!r}; "
                f"expected a split in {SPLITS} and a label in {labels}"
            )
    meta = {k: v for k, v in data.items() if k not in ("files", "labels", "data_root")}
    return SplitFile(root, labels, records, meta)


def read_split(path: str | Path) -> list[SplitRecord]:
    """Every record of a split.json (path relative to its data_root, label, group, split)."""
    return read_split_file(path).records
