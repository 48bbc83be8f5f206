"""Each layout is recognised and read with its labels and groups, from real crops on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.trainer.conftest import write_image
from trainer.errors import DataError
from trainer.layouts import TALEQANI_FOLDERS, detect_layout, discover, malaria_group


def test_generic_layout_has_one_class_per_folder(cells_dir: Path) -> None:
    ds = discover(cells_dir)
    assert (ds.layout, ds.task, ds.labels) == ("generic", "classes", ["RBC", "WBC"])
    assert ds.counts() == {"RBC": 12, "WBC": 12}
    assert ds.samples[0].rel == "RBC/BloodImage_00000_00.png"
    assert ds.group_source is None and all(s.group is None for s in ds.samples)


def _taleqani(root: Path, crops: list[np.ndarray]) -> Path:
    names = {"Benign": "WBC-Benign", "Early": "WBC-Malignant-Early"}
    names |= {"Pre": "WBC-Malignant-Pre", "Pro": "WBC-Malignant-Pro"}
    for k, folder in enumerate(TALEQANI_FOLDERS):
        for i in range(3):
            write_image(root / folder / f"{names[folder]}-{i + 1:03d}.jpg", crops[3 * k + i])
    return root


def test_taleqani_subtypes_and_binary_tasks(tmp_path: Path, wbc_crops: list[np.ndarray]) -> None:
    root = _taleqani(tmp_path / "taleqani", wbc_crops)
    assert detect_layout(root) == "taleqani"
    ds = discover(root)
    assert (ds.layout, ds.task, ds.labels) == ("taleqani", "subtypes", list(TALEQANI_FOLDERS))
    assert ds.counts() == dict.fromkeys(TALEQANI_FOLDERS, 3)
    binary = discover(root, task="binary")
    assert binary.labels == ["ALL", "HEM"]
    assert binary.counts() == {"ALL": 9, "HEM": 3}
    assert {s.rel.split("/")[0] for s in binary.samples if s.label == "HEM"} == {"Benign"}
    assert binary.group_source is None  # no patient ids: near-duplicate grouping takes over


def test_taleqani_layout_names_a_missing_folder(
    tmp_path: Path, wbc_crops: list[np.ndarray]
) -> None:
    root = _taleqani(tmp_path / "t", wbc_crops)
    for p in (root / "Pre").iterdir():
        p.unlink()
    (root / "Pre").rmdir()
    with pytest.raises(DataError, match=r"Pre: missing"):
        discover(root, layout="taleqani")


def test_cnmc_subjects_are_parsed_from_file_names(
    tmp_path: Path, wbc_crops: list[np.ndarray]
) -> None:
    root = tmp_path / "C-NMC_training_data"
    files = [
        "fold_0/all/UID_11_10_1_all.bmp",
        "fold_0/all/UID_11_10_2_all.bmp",
        "fold_0/hem/UID_H10_43_1_hem.bmp",
        "fold_1/all/UID_12_3_1_all.bmp",
        "fold_1/hem/UID_H10_44_2_hem.bmp",
        "fold_1/hem/UID_H7_1_1_hem.bmp",
    ]
    for name, crop in zip(files, wbc_crops, strict=False):
        write_image(root / name, crop)
    ds = discover(root)
    assert (ds.layout, ds.task, ds.labels, ds.group_source) == (
        "cnmc",
        "binary",
        ["ALL", "HEM"],
        "subject",
    )
    got = {s.rel: (s.label, s.group) for s in ds.samples}
    assert got == {
        "fold_0/all/UID_11_10_1_all.bmp": ("ALL", "subject:11"),
        "fold_0/all/UID_11_10_2_all.bmp": ("ALL", "subject:11"),
        "fold_0/hem/UID_H10_43_1_hem.bmp": ("HEM", "subject:H10"),
        "fold_1/all/UID_12_3_1_all.bmp": ("ALL", "subject:12"),
        "fold_1/hem/UID_H10_44_2_hem.bmp": ("HEM", "subject:H10"),
        "fold_1/hem/UID_H7_1_1_hem.bmp": ("HEM", "subject:H7"),
    }


def test_cnmc_file_in_the_wrong_folder_is_an_error(
    tmp_path: Path, wbc_crops: list[np.ndarray]
) -> None:
    root = tmp_path / "cnmc"
    write_image(root / "fold_0/all/UID_11_10_1_all.bmp", wbc_crops[0])
    write_image(root / "fold_0/all/UID_H3_1_1_hem.bmp", wbc_crops[1])  # a hem cell under all/
    write_image(root / "fold_0/hem/UID_H3_1_2_hem.bmp", wbc_crops[2])
    with pytest.raises(DataError, match=r"UID_H3_1_1_hem\.bmp"):
        discover(root)


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("C100P61ThinF_IMG_20150918_144104_cell_162.png", "patient:P61"),
        ("50x50C37BP2_thinF_IMG_20150620_131423a_cell_92.png", "patient:P2"),
        ("50x50C51AP12thinF_IMG_20150724_155507_cell_9.png", "patient:P12"),
        ("50x50C12NThinF_IMG_20150614_124212_cell_111.png", "slide:C12"),
        ("C3thin_original_IMG_20150608_163002_cell_5.png", "slide:C3"),
        ("50x50C201ThinF_IMG_20151029_143700_cell_4.png", "slide:C201"),
        ("cell_7.png", None),
    ],
)
def test_malaria_group_from_file_name(name: str, group: str | None) -> None:
    assert malaria_group(name) == group


def test_malaria_layout_groups_by_patient_across_classes(
    tmp_path: Path, rbc_crops: list[np.ndarray]
) -> None:
    root = tmp_path / "malaria"
    names = {
        "Parasitized": ["C33P1thinF_IMG_1_cell_1.png", "C33P1thinF_IMG_1_cell_2.png"],
        "Uninfected": ["C33P1thinF_IMG_1_cell_3.png", "C12NThinF_IMG_2_cell_1.png"],
    }
    k = 0
    for folder, files in names.items():
        for f in files:
            write_image(root / folder / f, rbc_crops[k])
            k += 1
    ds = discover(root)
    assert (ds.layout, ds.labels) == ("malaria", ["Parasitized", "Uninfected"])
    groups = {s.rel: s.group for s in ds.samples}
    assert groups["Uninfected/C33P1thinF_IMG_1_cell_3.png"] == "patient:P1"
    assert groups["Parasitized/C33P1thinF_IMG_1_cell_1.png"] == "patient:P1"
    assert groups["Uninfected/C12NThinF_IMG_2_cell_1.png"] == "slide:C12"


def test_an_empty_class_folder_is_an_error_naming_it(
    tmp_path: Path, wbc_crops: list[np.ndarray]
) -> None:
    write_image(tmp_path / "WBC" / "a.png", wbc_crops[0])
    (tmp_path / "Blast").mkdir()
    with pytest.raises(DataError, match=r"class folder .*Blast has no images"):
        discover(tmp_path)


def test_one_class_folder_is_not_a_classification_problem(
    tmp_path: Path, wbc_crops: list[np.ndarray]
) -> None:
    write_image(tmp_path / "WBC" / "a.png", wbc_crops[0])
    with pytest.raises(DataError, match="at least two"):
        discover(tmp_path)


def test_task_that_does_not_fit_the_layout_is_an_error(cells_dir: Path) -> None:
    with pytest.raises(DataError, match="--task binary"):
        discover(cells_dir, task="binary")


def test_malaria_file_without_slide_or_patient_id_is_named(
    tmp_path: Path, rbc_crops: list[np.ndarray]
) -> None:
    root = tmp_path / "malaria"
    write_image(root / "Parasitized" / "C33P1thinF_IMG_1_cell_1.png", rbc_crops[0])
    write_image(root / "Uninfected" / "cell_7.png", rbc_crops[1])
    assert detect_layout(root) == "malaria"
    with pytest.raises(DataError, match=r"1 malaria file name\(s\) .*Uninfected/cell_7\.png"):
        discover(root)
    with pytest.raises(DataError, match="--task subtypes does not apply to the malaria layout"):
        discover(root, task="subtypes")


def test_cnmc_is_binary_only_and_is_detected_by_its_folds(
    tmp_path: Path, wbc_crops: list[np.ndarray]
) -> None:
    root = tmp_path / "cnmc"
    write_image(root / "fold_2/all/UID_5_1_1_all.bmp", wbc_crops[0])
    write_image(root / "fold_2/hem/UID_H5_1_1_hem.bmp", wbc_crops[1])
    assert detect_layout(root) == "cnmc"
    assert discover(root, task="binary").samples[1].group == "subject:H5"
    with pytest.raises(DataError, match="--task subtypes does not apply to C-NMC"):
        discover(root, task="subtypes")
    (root / "fold_2/hem/UID_H5_1_1_hem.bmp").unlink()
    with pytest.raises(DataError, match=r"class folder .*fold_2/hem has no images"):
        discover(root)


def test_unknown_layout_or_task_and_missing_folder_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        discover(tmp_path / "absent")
    with pytest.raises(DataError, match="--layout 'kaggle' is unknown"):
        discover(tmp_path, layout="kaggle")
    with pytest.raises(DataError, match="--task 'ternary' is unknown"):
        discover(tmp_path, task="ternary")
    with pytest.raises(DataError, match="has no class folders"):
        discover(tmp_path)
