"""Bundles: write, load, classify; and every refusal names what differs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.contracts.manifest import (
    BundleError,
    Verification,
    read_manifest,
    write_manifest,
)
from edge.contracts.preprocess_spec import PreprocessSpec
from edge.model.bundle import load_bundle
from edge.model.bundle_writer import write_bundle
from edge.model.golden import GoldenMismatchError, check_golden, require_golden
from edge.vision.preprocessing import preprocess
from tests.edge.model.manifest_edits import edit_manifest as _edit_manifest

SPEC = PreprocessSpec(height=32, width=32, contrast="clahe")
ROOT = Path(__file__).resolve().parents[3]


def _write(tmp_path: Path, model: bytes, **kw) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path / "bundle"
    kw.setdefault("labels", ["HEM", "ALL"])
    write_bundle(out, model, name="tiny", spec=SPEC, quantization="float32", **kw)
    return out


def test_write_then_load_and_classify_real_image(tmp_path, tiny_tflite, field_image) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, tiny_tflite)
    bundle = load_bundle(path)
    m = bundle.manifest
    assert m.input.shape == [1, 32, 32, 3] and m.output.shape == [1, 2]
    assert m.verification.status == "unverified" and not bundle.verified
    p = bundle.probabilities(preprocess(field_image, bundle.spec))
    assert p.shape == (2,) and abs(float(p.sum()) - 1.0) < 1e-5
    assert bundle.spec == SPEC


def test_golden_self_test_passes_and_catches_a_changed_preprocessing(
    tmp_path, tiny_tflite, field_paths
) -> None:  # type: ignore[no-untyped-def]
    from edge.vision.image_io import read_image

    images = np.stack([read_image(p) for p in field_paths])
    pre = np.stack([preprocess(i, SPEC) for i in images])
    probe = _write(tmp_path / "probe", tiny_tflite)
    expected = np.stack([load_bundle(probe).probabilities(x) for x in pre])
    path = _write(
        tmp_path, tiny_tflite, golden={"images": images, "preprocessed": pre, "expected": expected}
    )
    report = require_golden(load_bundle(path))
    assert report is not None and report.passed and report.count == len(images)
    assert report.preprocessing_identical and report.max_abs_dp < 1e-5
    # A device whose preprocessing drifted from training (CLAHE -> none) must refuse to start.
    _edit_manifest(path, preprocessing={"contrast": "none"})
    drifted = load_bundle(path)
    assert not check_golden(drifted).preprocessing_identical  # type: ignore[union-attr]
    with pytest.raises(GoldenMismatchError, match="start-up parity check failed"):
        require_golden(drifted)


def test_refuses_changed_model_bytes(tmp_path, tiny_tflite) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, tiny_tflite)
    with (path / "model.tflite").open("ab") as f:
        f.write(b"tampered")
    with pytest.raises(BundleError, match=r"sha256 .* differs from the manifest"):
        load_bundle(path)


def test_refuses_input_shape_mismatch(tmp_path, tiny_tflite) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, tiny_tflite)
    _edit_manifest(path, input={"shape": [1, 64, 64, 3]})
    with pytest.raises(
        BundleError,
        match=r"input shape \[1, 32, 32, 3\] differs from the manifest's \[1, 64, 64, 3\]",
    ):
        load_bundle(path)


def test_refuses_preprocessing_size_mismatch(tmp_path, tiny_tflite) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, tiny_tflite)
    _edit_manifest(path, preprocessing={"height": 48})
    with pytest.raises(BundleError, match="model input 32x32 differs from the preprocessing 48x32"):
        load_bundle(path)


def test_refuses_label_count_mismatch(tmp_path, tiny_tflite) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, tiny_tflite, labels=["HEM", "ALL"])
    _edit_manifest(path, labels=["Benign", "Early", "Pre", "Pro"])
    with pytest.raises(BundleError, match="4 labels but the model outputs 2 classes"):
        load_bundle(path)


def test_refuses_unknown_schema_version(tmp_path, tiny_tflite) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, tiny_tflite)
    _edit_manifest(path, schema_version=7)
    with pytest.raises(
        BundleError, match="schema_version 7 is unknown; this blastscope reads versions 2 and 3"
    ):
        load_bundle(path)


def test_refuses_double_scaling(tmp_path, tiny_tflite) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, tiny_tflite)
    _edit_manifest(path, preprocessing={"scaling": "unit"})  # the graph rescales already
    with pytest.raises(BundleError, match="scaled twice or never"):
        load_bundle(path)


def test_refuses_unknown_manifest_key_and_missing_files(tmp_path, tiny_tflite) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, tiny_tflite)
    _edit_manifest(path, lables=["a", "b"])
    with pytest.raises(BundleError, match="lables: Extra inputs are not permitted"):
        read_manifest(path)
    with pytest.raises(BundleError, match="not a bundle directory"):
        load_bundle(tmp_path / "nowhere")
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(path)


def test_refuses_a_model_that_is_not_tflite(tmp_path, tiny_tflite) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, tiny_tflite)
    (path / "model.tflite").write_bytes(b"\x00" * 64)
    import hashlib

    _edit_manifest(path, model_sha256=hashlib.sha256(b"\x00" * 64).hexdigest())
    with pytest.raises(Exception, match="not a loadable LiteRT model"):
        load_bundle(path)


def test_backbone_head_form_checks_head_shape(tmp_path, backbone_tflite, field_image) -> None:  # type: ignore[no-untyped-def]
    # The tiny backbone emits 16-d embeddings; put a 16 -> 3 head on them.
    model, _, _ = backbone_tflite
    kernel = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    path = _write(tmp_path, model, labels=["a", "b", "c"], head=(kernel, np.zeros(3, np.float32)))
    bundle = load_bundle(path)
    x = preprocess(field_image, SPEC)
    emb = bundle.embeddings(x)
    logits = emb.astype(np.float64) @ kernel
    np.testing.assert_allclose(
        bundle.probabilities(x), np.exp(logits) / np.exp(logits).sum(), rtol=1e-5
    )
    from edge.model.heads import write_head

    sha = write_head(path / "heads" / "v1.npz", np.zeros((5, 3)), np.zeros(3), ["a", "b", "c"])
    _edit_manifest(path, head={"sha256": sha})
    with pytest.raises(BundleError, match="the graph emits 16 features but the head takes 5"):
        load_bundle(path)


def test_edge_runs_with_tensorflow_blocked(tmp_path, tiny_tflite) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, tiny_tflite)
    runner = str(ROOT / "tests" / "without_tensorflow.py")
    help_out = subprocess.run(
        [sys.executable, runner, "edge.cli", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert help_out.returncode == 0, help_out.stderr
    assert "usage: edge" in help_out.stdout
    inspect = subprocess.run(
        [sys.executable, runner, "edge.cli", "inspect", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert inspect.returncode == 0, inspect.stderr
    assert "labels     HEM, ALL" in inspect.stdout
    # And the blocker really blocks.
    probe = subprocess.run(
        [sys.executable, runner, "tensorflow"], capture_output=True, text=True, cwd=ROOT
    )
    assert probe.returncode != 0 and "blocked" in probe.stderr


def test_edge_inspect_cli_reports_a_broken_bundle_in_one_line(
    tmp_path, tiny_tflite, capsys
) -> None:  # type: ignore[no-untyped-def]
    from edge.cli import main

    path = _write(tmp_path, tiny_tflite)
    assert main(["inspect", str(path)]) == 0
    _edit_manifest(path, labels=["a", "b", "c"])
    assert main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 labels but the model outputs 2 classes" in err[0]


def test_golden_parity_with_the_export_is_checked_tightly(
    tmp_path, tiny_tflite, field_paths
) -> None:  # type: ignore[no-untyped-def]
    from edge.vision.image_io import read_image

    images = np.stack([read_image(p) for p in field_paths])
    pre = np.stack([preprocess(i, SPEC) for i in images])
    probe = load_bundle(_write(tmp_path / "probe", tiny_tflite))
    own = np.stack([probe.probabilities(x) for x in pre])
    # A float reference that differs a little (as an int8 model would) passes the loose bound...
    ref = np.clip(own + 0.01, 0, 1)
    path = _write(
        tmp_path, tiny_tflite, golden={"images": images, "preprocessed": pre, "expected": ref}
    )
    bundle = load_bundle(path)
    # A float32 graph whose raw outputs (a softmax here) stay within 1: 1e-3 of that.
    assert bundle.manifest.golden.parity_atol == 1e-3  # type: ignore[union-attr]
    report = require_golden(bundle)
    assert report is not None and report.parity_dp is not None and report.parity_dp < 1e-6
    assert 0.009 < report.max_abs_dp < 0.011
    # ...but a device whose raw outputs drift from the export by more than parity_atol is refused.
    with np.load(path / "golden.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["raw_expected"] = arrays["raw_expected"] + 0.005
    np.savez_compressed(path / "golden.npz", **arrays)
    from edge.contracts.manifest import sha256_file

    _edit_manifest(path, golden={"sha256": sha256_file(path / "golden.npz")})
    drifted = check_golden(load_bundle(path))
    assert drifted is not None and not drifted.parity_ok and not drifted.passed
    assert "parity with export (raw graph output, max |d| 0.0050" in drifted.summary()


def _verified_golden_bundle(tmp_path: Path, model: bytes, field_paths: list[Path]) -> Path:
    """A bundle with a golden set and a passed verification record, as converters leaves it."""
    from edge.vision.image_io import read_image

    images = np.stack([read_image(p) for p in field_paths])
    pre = np.stack([preprocess(i, SPEC) for i in images])
    probe = load_bundle(_write(tmp_path / "probe", model))
    expected = np.stack([probe.probabilities(x) for x in pre])
    path = _write(
        tmp_path, model, golden={"images": images, "preprocessed": pre, "expected": expected}
    )
    manifest = read_manifest(path)
    manifest.verification = Verification(status="passed", digest=manifest.graph_digest())
    write_manifest(path, manifest)
    return path


@pytest.mark.parametrize(
    "change",
    [
        {"labels": ["ALL", "HEM"]},  # two labels swapped: every frame published as the other
        {"preprocessing": {"contrast": "none"}},
        {"head": {"version": 2}},
        {"output": {"scale": 0.5}},
        {"input_range": [0.0, 1.0]},
        {"golden": {"atol": 1.0}},
        {"verification": {"status": "failed"}},  # (the other way round is refused too)
    ],
    ids=["labels", "preprocessing", "head", "output", "input_range", "golden", "verdict"],
)
def test_a_hand_edit_of_anything_that_changes_an_answer_is_refused(
    tmp_path, tiny_tflite, field_paths, change
) -> None:  # type: ignore[no-untyped-def]
    path = _verified_golden_bundle(tmp_path, tiny_tflite, field_paths)
    assert load_bundle(path).verified
    _edit_manifest(path, reseal=False, **change)
    with pytest.raises(BundleError, match="does not match its contents"):
        load_bundle(path)


def test_descriptive_fields_are_not_digested(tmp_path, tiny_tflite, field_paths) -> None:  # type: ignore[no-untyped-def]
    path = _verified_golden_bundle(tmp_path, tiny_tflite, field_paths)
    _edit_manifest(path, reseal=False, name="renamed-by-the-lab")
    assert load_bundle(path).manifest.name == "renamed-by-the-lab"


def test_swapped_labels_with_a_recomputed_digest_fail_golden_and_verification(
    tmp_path, tiny_tflite, field_paths
) -> None:  # type: ignore[no-untyped-def]
    path = _verified_golden_bundle(tmp_path, tiny_tflite, field_paths)
    # Someone who recomputes the digest still cannot carry the verdict over...
    _edit_manifest(path, labels=["ALL", "HEM"])
    with pytest.raises(BundleError, match=r"verification record \(passed\) was made for another"):
        load_bundle(path)
    # ...and without a verdict, the golden outputs are tied to the labels they were made for.
    _edit_manifest(path, verification={"status": "unverified", "digest": None})
    report = check_golden(load_bundle(path))
    assert report is not None and not report.labels_match and not report.passed
    assert "computed for labels ['HEM', 'ALL'] but the manifest says ['ALL', 'HEM']" in (
        report.summary()
    )
    with pytest.raises(GoldenMismatchError):
        require_golden(load_bundle(path))
