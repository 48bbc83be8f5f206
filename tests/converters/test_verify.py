"""The int8-vs-float gate: fails a broken int8 model, passes a properly calibrated one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from converters.cli import main
from edge.contracts.manifest import read_manifest, write_manifest
from edge.model.bundle import load_bundle
from edge.model.golden import GoldenMismatchError, require_golden

pytestmark = pytest.mark.slow  # uses the trained model and real conversions (session fixtures)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / bundle.name
    shutil.copytree(bundle, dst)
    return dst


def test_gate_passes_a_properly_calibrated_int8_and_records_it(
    bundles: dict[str, Path], cells_dir: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    bundle = _copy(bundles["int8"], tmp_path)
    assert read_manifest(bundle).verification.status == "unverified"
    assert main(["verify", str(bundle), "--data", str(cells_dir)]) == 0
    out = capsys.readouterr().out
    assert "result     PASSED" in out and "95% Wilson CI" in out
    v = read_manifest(bundle).verification
    assert v.status == "passed" and v.n_images == 24 and v.agreement == 1.0
    assert v.thresholds == {"min_agreement": 0.99, "max_recall_drop": 0.01}
    assert v.reference is not None and v.reference.endswith("model.keras")
    d = v.details
    assert d["model_sha256"] == read_manifest(bundle).model_sha256
    assert [c["label"] for c in d["per_class"]] == ["RBC", "WBC"]
    assert all(c["recall_delta"] == 0.0 for c in d["per_class"])
    assert d["max_abs_dp"] < 0.02 and d["mean_abs_dp"] <= d["max_abs_dp"]
    lo, hi = d["accuracy_ci95"]  # 95% Wilson interval of 24/24
    assert lo == pytest.approx(0.862, abs=1e-3) and hi == pytest.approx(1.0)
    # Recording the verdict keeps the bundle loadable (the manifest is not hashed).
    assert load_bundle(bundle).verified


def test_gate_fails_an_int8_calibrated_on_black_images(
    black_int8: Path, cells_dir: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    bundle = _copy(black_int8, tmp_path)
    assert main(["verify", str(bundle), "--data", str(cells_dir)]) == 1
    captured = capsys.readouterr()
    assert "result     FAILED" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "verification FAILED" in err[0] and "top-1 agreement" in err[0]
    v = read_manifest(bundle).verification
    assert v.status == "failed" and v.agreement is not None and v.agreement < 0.99
    assert any("recall of" in f for f in v.details["failures"])
    # The device's start-up self-test refuses it too.
    with pytest.raises(GoldenMismatchError):
        require_golden(load_bundle(bundle))


def test_broken_calibration_is_flagged_at_export(
    trained_run: Path, black_dir: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "b"
    args = ["export", str(trained_run / "model.keras"), "--out", str(out)]
    assert main([*args, "--calibration", str(black_dir)]) == 0  # export writes; verify refuses
    err = capsys.readouterr().err
    assert "covers only 0.0% of the preprocessed range" in err
    assert "fails its own golden self-test" in err
    assert read_manifest(out).verification.status == "unverified"


def test_finetunable_bundle_verified_against_a_float_bundle(
    bundles: dict[str, Path], cells_dir: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    bundle = _copy(bundles["int8-finetunable"], tmp_path)
    args = ["verify", str(bundle), "--data", str(cells_dir), "--json"]
    assert main([*args, "--reference", str(bundles["float32"])]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["form"] == "backbone_head"
    assert report["reference_kind"] == "bundle" and report["agreement"] == 1.0
    assert read_manifest(bundle).verification.status == "passed"


def test_thresholds_are_flags_and_no_record_leaves_the_manifest(
    bundles: dict[str, Path], cells_dir: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    bundle = _copy(bundles["int8"], tmp_path)
    base = ["verify", str(bundle), "--data", str(cells_dir)]
    assert main([*base, "--max-abs-dp", "1e-6", "--no-record"]) == 1
    assert "max |dp|" in capsys.readouterr().err
    assert read_manifest(bundle).verification.status == "unverified"
    assert main([*base, "--min-agreement", "100", "--max-recall-drop", "0"]) == 0
    assert read_manifest(bundle).verification.thresholds == {
        "min_agreement": 1.0,
        "max_recall_drop": 0.0,
    }
    with pytest.raises(SystemExit) as usage:
        main([*base, "--min-agreement", "101"])
    assert usage.value.code == 2
    assert "expected a percentage from 0 to 100" in capsys.readouterr().err


def test_reference_must_be_a_matching_float_model(
    bundles: dict[str, Path], cells_dir: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    bundle = _copy(bundles["int8"], tmp_path)
    base = ["verify", str(bundle), "--data", str(cells_dir), "--reference"]
    assert main([*base, str(bundles["dynamic"])]) == 1
    assert "the reference must be float" in capsys.readouterr().err
    # Without --reference the source model recorded at export is used; if it is gone, say so.
    manifest = read_manifest(bundle)
    assert manifest.provenance.source_model is not None
    manifest.provenance.source_model = str(tmp_path / "gone.keras")  # moved away
    write_manifest(bundle, manifest)
    assert main(["verify", str(bundle), "--data", str(cells_dir)]) == 1
    assert "pass --reference" in capsys.readouterr().err


def test_verify_data_must_be_labelled_class_folders(
    bundles: dict[str, Path], cells_dir: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(next((cells_dir / "WBC").glob("*.png")), flat / "a.png")
    assert main(["verify", str(bundles["int8"]), "--data", str(flat)]) == 1
    assert "must be in class folders" in capsys.readouterr().err
    odd = tmp_path / "odd" / "Blast"
    odd.mkdir(parents=True)
    shutil.copy(next((cells_dir / "WBC").glob("*.png")), odd / "a.png")
    assert main(["verify", str(bundles["int8"]), "--data", str(odd.parent)]) == 1
    assert "['Blast'] are not labels of the bundle" in capsys.readouterr().err


def test_verify_on_the_test_subset_of_a_split_file(
    bundles: dict[str, Path], trained_run: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    bundle = _copy(bundles["int8"], tmp_path)
    split = trained_run / "split.json"
    assert main(["verify", str(bundle), "--split-file", str(split), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # The run's split puts 2 images per class in test (see conftest._split_of).
    assert report["n_images"] == 4 and report["data"].endswith("(test split)")
    v = read_manifest(bundle).verification
    assert v.status == "passed" and v.n_images == 4
    assert main(["verify", str(bundle), "--split-file", str(split), "--subset", "train",
                 "--no-record", "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["n_images"] == 16
    assert main(["verify", str(bundle)]) == 1
    assert "exactly one of --data DIR and --split-file" in capsys.readouterr().err


def test_a_passed_verification_survives_a_temperature_change_but_not_a_label_change(
    bundles: dict[str, Path], cells_dir: Path, tmp_path: Path
) -> None:
    from edge.contracts.manifest import BundleError
    from edge.model.heads import set_temperature

    bundle = _copy(bundles["int8"], tmp_path)
    assert main(["verify", str(bundle), "--data", str(cells_dir)]) == 0
    set_temperature(bundle, 1.5)  # a calibration fitted after the gate: no re-verification
    loaded = load_bundle(bundle)
    assert loaded.verified and loaded.manifest.head.temperature == 1.5
    assert require_golden(loaded) is not None
    manifest = read_manifest(bundle)
    manifest.labels = ["WBC", "RBC"]  # re-sealed by a program: the verdict must not carry over
    write_manifest(bundle, manifest)
    with pytest.raises(BundleError, match=r"verification record \(passed\) was made for another"):
        load_bundle(bundle)
