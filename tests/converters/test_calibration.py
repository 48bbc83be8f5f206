"""Calibration sampling, folder scanning, split reading and intervals (no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from converters.calibration import from_folder, from_training_run, input_coverage
from converters.errors import CalibrationError
from converters.image_sets import LabelledFile, class_mixed, per_class, scan_folder
from converters.run_files import read_training_run
from edge.model.runtime import TensorInfo
from tests.converters.conftest import write_run


def _files(counts: dict[str, int]) -> list[LabelledFile]:
    return [LabelledFile(Path(f"{c}/{i}.png"), c) for c, n in counts.items() for i in range(n)]


def test_class_mixed_is_seeded_balanced_and_mixed_in_every_prefix() -> None:
    files = _files({"ALL": 500, "HEM": 40, "blast": 10})
    a = class_mixed(files, 300, seed=0)
    assert len(a) == 300 and len(set(a)) == 300
    assert a == class_mixed(files, 300, seed=0) and a != class_mixed(files, 300, seed=1)
    # Rare classes are all taken; the common one fills the rest. Folder order is irrelevant.
    assert per_class(a) == {"ALL": 250, "HEM": 40, "blast": 10}
    assert per_class(a[:30]) == {"ALL": 10, "HEM": 10, "blast": 10}
    assert class_mixed(files, 10_000, seed=0).__len__() == 550


def test_scan_folder_class_folders_flat_and_errors(cells_dir: Path, tmp_path: Path) -> None:
    files = scan_folder(cells_dir, require_labels=True)
    assert per_class(files) == {"RBC": 12, "WBC": 12}
    with pytest.raises(CalibrationError, match="no images found"):
        scan_folder(tmp_path, require_labels=False)
    with pytest.raises(CalibrationError, match="no such folder"):
        scan_folder(tmp_path / "x", require_labels=False)
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in list((cells_dir / "WBC").glob("*.png"))[:3]:
        (flat / p.name).write_bytes(p.read_bytes())
    assert per_class(from_folder(flat, 2, seed=0).files) == {"(unlabelled)": 2}
    (flat / "WBC").mkdir()
    (flat / "WBC" / "a.png").write_bytes(next(flat.glob("*.png")).read_bytes())
    with pytest.raises(CalibrationError, match="both images and class folders"):
        scan_folder(flat, require_labels=False)


def test_training_run_split_gives_the_train_split(cells_dir: Path, tmp_path: Path) -> None:
    write_run(tmp_path, cells_dir)
    run = read_training_run(tmp_path / "model.keras")
    assert run is not None and run.labels == ["RBC", "WBC"]
    assert run.split_counts() == {"train": 16, "val": 4, "test": 4}
    cal = from_training_run(run, 10, seed=3)
    assert per_class(cal.files) == {"RBC": 5, "WBC": 5}
    train = {e.path for e in run.files("train")}
    assert all(f.path in train and f.path.is_file() for f in cal.files)
    assert cal.describe()["source"].endswith("split.json (train split)")
    # Moved data: a clear error rather than a silent smaller calibration set.
    data = json.loads((tmp_path / "split.json").read_text())
    data["data_root"] = str(tmp_path / "moved")
    (tmp_path / "split.json").write_text(json.dumps(data))
    moved = read_training_run(tmp_path / "model.keras")
    assert moved is not None
    with pytest.raises(CalibrationError, match="calibration images are missing"):
        from_training_run(moved, 10, seed=3)
    assert read_training_run(tmp_path / "elsewhere" / "model.keras") is None


def test_input_coverage_flags_a_collapsed_input_range() -> None:
    good = TensorInfo((1, 32, 32, 3), "uint8", scale=250 / 255, zero_point=0)
    black = TensorInfo((1, 32, 32, 3), "uint8", scale=7.8e-9, zero_point=128)
    assert input_coverage(good, (0.0, 255.0)) == pytest.approx(250 / 255)
    assert input_coverage(black, (0.0, 255.0)) < 1e-6
    assert input_coverage(TensorInfo((1, 2), "float32"), (0.0, 1.0)) == 1.0


def test_representative_dataset_is_edges_preprocessing_of_each_file(cells_dir: Path) -> None:
    import numpy as np

    from converters import calibration
    from edge.contracts.preprocess_spec import PreprocessSpec
    from edge.vision.image_io import read_image
    from edge.vision.preprocessing import preprocess

    assert calibration.preprocess is preprocess  # the device's code, not a copy
    spec = PreprocessSpec(height=32, width=32, contrast="clahe")
    cal = from_folder(cells_dir, 4, seed=0)
    batches = list(calibration.representative_dataset(cal, spec)())
    assert len(batches) == 4 and all(len(b) == 1 for b in batches)
    for [x], f in zip(batches, cal.files, strict=True):
        assert x.shape == (1, 32, 32, 3) and x.dtype == np.float32
        np.testing.assert_array_equal(x[0], preprocess(read_image(f.path), spec))
    assert per_class(cal.files) == {"RBC": 2, "WBC": 2}  # class-mixed, not folder order
