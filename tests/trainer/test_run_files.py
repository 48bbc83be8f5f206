"""The readers converters use: training.json and split.json beside a model, strictly checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.contracts.preprocess_spec import PreprocessSpec
from trainer.errors import RunFileError
from trainer.run_files import (
    TRAINING_KEYS,
    data_fingerprint,
    preprocess_spec,
    read_split,
    read_split_file,
    read_training_json,
    write_split,
)
from trainer.splits import SplitRecord


def test_split_round_trip_resolves_paths_against_its_data_root(
    tmp_path: Path, cells_dir: Path
) -> None:
    records = [
        SplitRecord("WBC/BloodImage_00000_00.png", "WBC", "nd-0001", "train"),
        SplitRecord("RBC/BloodImage_00000_00.png", "RBC", "nd-0002", "test"),
    ]
    path = tmp_path / "split.json"
    write_split(path, cells_dir, ["RBC", "WBC"], records, {"strategy": "group", "seed": 4})
    assert read_split(path) == records
    sf = read_split_file(path)
    assert sf.meta["seed"] == 4 and sf.labels == ["RBC", "WBC"]
    assert sf.paths("train") == [(cells_dir / "WBC/BloodImage_00000_00.png", "WBC")]
    assert all(p.is_file() for p, _ in sf.paths("test"))


def test_a_record_with_an_unknown_split_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    write_split(path, tmp_path, ["A"], [SplitRecord("a.png", "A", "g", "holdout")], {})
    with pytest.raises(RunFileError, match="'holdout'"):
        read_split(path)


def test_training_json_is_read_beside_the_model_and_checked(tmp_path: Path) -> None:
    spec = PreprocessSpec(height=32, width=32)
    data = {k: None for k in TRAINING_KEYS} | {"preprocessing": spec.to_dict(), "labels": ["A"]}
    (tmp_path / "training.json").write_text(json.dumps(data))
    for where in (tmp_path / "model.keras", tmp_path):
        assert read_training_json(where)["labels"] == ["A"]
    assert preprocess_spec(read_training_json(tmp_path)) == spec
    del data["data_fingerprint"]
    (tmp_path / "training.json").write_text(json.dumps(data))
    with pytest.raises(RunFileError, match=r"missing key\(s\) \['data_fingerprint'\]"):
        read_training_json(tmp_path / "model.keras")
    with pytest.raises(RunFileError, match="no such file"):
        read_training_json(tmp_path / "elsewhere" / "model.keras")


def test_fingerprint_follows_the_files(tmp_path: Path, cells_dir: Path) -> None:
    (tmp_path / "a.png").write_bytes((cells_dir / "WBC/BloodImage_00000_00.png").read_bytes())
    before = data_fingerprint(tmp_path, ["a.png"])
    assert before == data_fingerprint(tmp_path, ["a.png"])
    (tmp_path / "a.png").write_bytes(b"x")
    assert data_fingerprint(tmp_path, ["a.png"]) != before
