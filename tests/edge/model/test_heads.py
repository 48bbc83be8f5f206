"""Heads as versioned float post-processing: a new temperature or head needs no re-export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edge.contracts.manifest import (
    BundleError,
    Verification,
    read_manifest,
    write_manifest,
)
from edge.demo import DEMO_BUNDLE
from edge.model.bundle import Bundle, load_bundle
from edge.model.bundle_writer import write_bundle
from edge.model.golden import GoldenMismatchError, check_golden, require_golden
from edge.model.heads import set_temperature, write_head_version
from edge.service.startup import open_checked_bundle
from edge.vision.preprocessing import preprocess
from tests.edge.model.conftest import SPEC
from tests.edge.model.manifest_edits import edit_manifest as _edit_manifest

LABELS = ["RBC", "WBC"]


def _write(path: Path, model: bytes, **kw: Any) -> Path:
    kw.setdefault("quantization", "float32")
    write_bundle(path, model, name="tiny", labels=kw.pop("labels", LABELS), spec=SPEC, **kw)
    return path


def _verified(path: Path) -> Path:
    """Mark the bundle passed, as `converters verify` records it (graph digest)."""
    manifest = read_manifest(path)
    manifest.verification = Verification(status="passed", digest=manifest.graph_digest())
    write_manifest(path, manifest)
    return path


def _start(path: Path) -> Bundle:
    """What the daemon does at start-up: load, refuse a failed verdict, golden self-test."""
    bundle, has_golden = open_checked_bundle(SimpleNamespace(bundle=path, threads=1))  # type: ignore[arg-type]
    assert has_golden
    return bundle


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_probabilities_are_softmax_of_logits_over_t(tmp_path, logits_tflite, field_paths) -> None:  # type: ignore[no-untyped-def]
    from edge.vision.image_io import read_image

    path = _write(tmp_path / "b", logits_tflite)
    x = np.stack([preprocess(read_image(p), SPEC) for p in field_paths])
    before = load_bundle(path)
    assert before.manifest.head.kind == "logits" and before.manifest.head.temperature == 1.0
    info = set_temperature(path, 1.5)
    assert (info.version, info.temperature, info.parent_version) == (2, 1.5, 1)
    bundle = load_bundle(path)
    raw = np.stack([bundle.raw(xi) for xi in x])
    np.testing.assert_array_equal(raw, np.stack([before.raw(xi) for xi in x]))  # same graph
    by_hand = _softmax(raw.astype(np.float64) / 1.5)
    probs = np.stack([bundle.probabilities(xi) for xi in x])
    np.testing.assert_allclose(probs, by_hand, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bundle.apply_head(raw), by_hand, rtol=1e-6, atol=1e-7)
    # T > 1 softens: the top probability of every image falls.
    at_1 = np.stack([before.probabilities(xi) for xi in x])
    assert np.all(probs.max(axis=1) < at_1.max(axis=1))


def test_a_temperature_after_export_keeps_golden_parity_and_startup(
    tmp_path, int8_logits_tflite, golden_of
) -> None:  # type: ignore[no-untyped-def]
    path = _write(
        tmp_path / "b", int8_logits_tflite, quantization="int8", golden=golden_of(), golden_atol=0.5
    )
    _verified(path)
    bundle = load_bundle(path)
    assert bundle.model.input.dtype == "uint8" and "SOFTMAX" not in bundle.model.op_counts()
    before = require_golden(bundle)
    assert before is not None and before.parity_dp == 0.0
    set_temperature(path, 1.5)
    started = _start(path)
    assert started.manifest.head.temperature == 1.5 and started.verified
    after = check_golden(started)
    assert after is not None and after.passed and after.parity_on == "raw"
    # Both checks are independent of the current head: the same numbers as before.
    assert after.parity_dp == 0.0 and after.max_abs_dp == before.max_abs_dp


def test_a_changed_graph_still_fails_golden_parity(
    tmp_path, logits_tflite, other_logits_tflite, golden_of
) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    path = _verified(_write(tmp_path / "b", logits_tflite, golden=golden_of()))
    set_temperature(path, 1.5)
    (path / "model.tflite").write_bytes(other_logits_tflite)
    with pytest.raises(BundleError, match=r"model\.tflite: sha256 .* differs from the manifest"):
        load_bundle(path)
    # Even with the model sha re-sealed into the manifest, the verdict does not carry over...
    _edit_manifest(path, model_sha256=hashlib.sha256(other_logits_tflite).hexdigest())
    with pytest.raises(BundleError, match=r"verification record \(passed\) was made for another"):
        load_bundle(path)
    # ...and without one, the golden self-test refuses the other graph at start-up.
    _edit_manifest(path, verification={"status": "unverified", "digest": None})
    report = check_golden(load_bundle(path))
    assert report is not None and not report.parity_ok and not report.passed
    with pytest.raises(GoldenMismatchError, match="raw graph output"):
        _start(path)


def test_a_new_dense_head_version_keeps_golden_and_startup(
    tmp_path, backbone_tflite, golden_of, field_image
) -> None:  # type: ignore[no-untyped-def]
    model, kernel, bias = backbone_tflite
    path = _verified(_write(tmp_path / "b", model, head=(kernel, bias), golden=golden_of()))
    v1 = read_manifest(path).head
    assert (v1.kind, v1.file, v1.version) == ("dense", "heads/v1.npz", 1)
    before = check_golden(load_bundle(path))
    assert before is not None and before.passed
    new_kernel, new_bias = -kernel, bias + 1.0  # as fine-tuning on the device would write
    v2 = write_head_version(path, dense=(new_kernel, new_bias), temperature=0.8)
    assert (v2.file, v2.version, v2.parent_version) == ("heads/v2.npz", 2, 1)
    assert v2.parent_sha256 == v1.record_digest() and v2.sha256 != v1.sha256
    assert (path / "heads" / "v1.npz").is_file()  # kept, for a roll-back
    bundle = _start(path)
    assert bundle.verified and bundle.manifest.head == v2
    x = preprocess(field_image, SPEC)
    by_hand = _softmax((bundle.embeddings(x).astype(np.float64) @ new_kernel + new_bias) / 0.8)
    np.testing.assert_allclose(bundle.probabilities(x), by_hand, rtol=1e-5, atol=1e-7)
    after = check_golden(bundle)
    assert after is not None and after.passed
    assert after.parity_dp == 0.0 and after.max_abs_dp == before.max_abs_dp
    # A head of 3 classes must come with its 3 labels; then the verdict (per class) is void.
    k3, b3 = np.ones((kernel.shape[0], 3), np.float32), np.zeros(3, np.float32)
    with pytest.raises(BundleError, match="new head v3: 2 labels but the head outputs 3 classes"):
        write_head_version(path, dense=(k3, b3))
    write_head_version(path, dense=(k3, b3), labels=["RBC", "WBC", "Blast"])
    three = _start(path)
    assert three.labels == ["RBC", "WBC", "Blast"] and three.manifest.head.version == 3
    assert three.manifest.verification.status == "unverified"


def test_a_head_file_edited_by_hand_is_refused(tmp_path, backbone_tflite) -> None:  # type: ignore[no-untyped-def]
    model, kernel, bias = backbone_tflite
    path = _write(tmp_path / "b", model, head=(kernel, bias))
    np.savez(path / "heads" / "v1.npz", kernel=kernel * 2, bias=bias, labels=np.array(LABELS))
    with pytest.raises(BundleError, match=r"heads/v1\.npz: sha256 .* differs from the manifest"):
        load_bundle(path)
    with pytest.raises(BundleError, match=r"heads/v1\.npz: sha256"):
        set_temperature(path, 1.5)  # a new version is never derived from a tampered head


def test_swapped_labels_resealed_do_not_match_the_dense_head(tmp_path, backbone_tflite) -> None:  # type: ignore[no-untyped-def]
    model, kernel, bias = backbone_tflite
    path = _write(tmp_path / "b", model, head=(kernel, bias))
    _edit_manifest(path, labels=["WBC", "RBC"])
    with pytest.raises(BundleError, match=r"trained for labels \['RBC', 'WBC'\] but the manifest"):
        load_bundle(path)


@pytest.mark.parametrize(
    "change",
    [{"temperature": 1.5}, {"thresholds": {"min_confidence": 0.9}}, {"version": 7}],
    ids=["temperature", "thresholds", "version"],
)
def test_a_head_edited_by_hand_in_the_manifest_is_refused(tmp_path, logits_tflite, change) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path / "b", logits_tflite)
    _edit_manifest(path, reseal=False, head=change)
    with pytest.raises(BundleError, match="does not match its contents"):
        load_bundle(path)


def test_verification_survives_a_temperature_change_but_not_a_label_change(
    tmp_path, logits_tflite, golden_of
) -> None:  # type: ignore[no-untyped-def]
    path = _verified(_write(tmp_path / "b", logits_tflite, golden=golden_of()))
    digest = read_manifest(path).verification.digest
    set_temperature(path, 2.0)
    write_head_version(path, thresholds={"min_confidence": 0.7})
    m = load_bundle(path).manifest
    assert m.verification.status == "passed" and m.verification.digest == digest
    assert m.head.version == 3 and m.head.thresholds.min_confidence == 0.7
    assert m.head.temperature == 2.0  # carried over by the thresholds version
    _edit_manifest(path, labels=["WBC", "RBC"])  # re-sealed: only the verdict can object
    with pytest.raises(BundleError, match=r"verification record \(passed\) was made for another"):
        load_bundle(path)


def test_head_values_are_range_checked_and_a_refusal_changes_nothing(
    tmp_path, logits_tflite, backbone_tflite
) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path / "b", logits_tflite)
    before = (path / "manifest.json").read_text()
    with pytest.raises(BundleError, match=r"head\.temperature: Input should be greater than"):
        set_temperature(path, 0.0)
    with pytest.raises(BundleError, match=r"head\.temperature: Input should be less than"):
        set_temperature(path, 50.0)
    with pytest.raises(BundleError, match=r"thresholds\.min_confidence: Input should be less"):
        write_head_version(path, thresholds={"min_confidence": 1.5})
    with pytest.raises(BundleError, match=r"thresholds\.max_entropy: Extra inputs"):
        write_head_version(path, thresholds={"max_entropy": 1.0})
    with pytest.raises(BundleError, match="nothing to change"):
        write_head_version(path)
    with pytest.raises(BundleError, match="a 'logits' head has no weights to replace"):
        write_head_version(path, dense=backbone_tflite[1:])
    with pytest.raises(BundleError, match="labels change only with new dense weights"):
        write_head_version(path, temperature=1.2, labels=["a", "b"])
    assert (path / "manifest.json").read_text() == before
    _edit_manifest(path, head={"thresholds": {"min_confidence": 2.0}})  # re-sealed by hand
    with pytest.raises(BundleError, match=r"head\.thresholds\.min_confidence: Input should be"):
        load_bundle(path)


def test_the_head_kind_is_checked_against_the_graph(
    tmp_path, softmax_tflite, logits_tflite
) -> None:  # type: ignore[no-untyped-def]
    softmax_graph = _write(tmp_path / "s", softmax_tflite)  # a Keras model converted as it is
    assert read_manifest(softmax_graph).head.kind == "softmax_in_graph"
    with pytest.raises(BundleError, match="softmax_in_graph head: its graph ends in a quantised"):
        set_temperature(softmax_graph, 1.5)
    _edit_manifest(softmax_graph, head={"kind": "logits"})
    with pytest.raises(BundleError, match=r"the graph ends in a softmax but its head \('logits'\)"):
        load_bundle(softmax_graph)
    logits = _write(tmp_path / "l", logits_tflite)
    _edit_manifest(logits, head={"kind": "softmax_in_graph"})
    with pytest.raises(BundleError, match="graph does not end in a softmax"):
        load_bundle(logits)


def test_the_legacy_demo_bundle_loads_self_tests_and_refuses_a_temperature(tmp_path) -> None:  # type: ignore[no-untyped-def]
    on_disk = json.loads((DEMO_BUNDLE / "manifest.json").read_text())
    assert on_disk["schema_version"] == 2 and on_disk["form"] == "classifier"
    bundle = _start(DEMO_BUNDLE)
    m = bundle.manifest
    assert m.schema_version == 3 and bundle.verified  # upgraded in memory, verdict kept
    assert (m.head.kind, m.head.temperature, m.head.version) == ("softmax_in_graph", 1.0, 1)
    report = check_golden(bundle)
    assert report is not None and report.passed and report.parity_on == "probabilities"
    copy = tmp_path / "demo"
    shutil.copytree(DEMO_BUNDLE, copy)
    with pytest.raises(BundleError, match=r"temperature 1\.5 on a softmax_in_graph head"):
        set_temperature(copy, 1.5)
    assert json.loads((copy / "manifest.json").read_text()) == on_disk  # untouched
    # Thresholds are fine on a legacy head; the next write is schema 3, still verified.
    write_head_version(copy, thresholds={"min_confidence": 0.6})
    assert json.loads((copy / "manifest.json").read_text())["schema_version"] == 3
    upgraded = _start(copy)
    assert upgraded.verified and upgraded.manifest.head.version == 2
    np.testing.assert_array_equal(
        upgraded.probabilities(bundle.prepare(np.zeros((64, 64, 3), np.uint8))),
        bundle.probabilities(bundle.prepare(np.zeros((64, 64, 3), np.uint8))),
    )


def test_a_legacy_manifest_edited_by_hand_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    copy = tmp_path / "demo"
    shutil.copytree(DEMO_BUNDLE, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["labels"] = ["Early", "Benign", "Pre", "Pro"]
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="does not match its contents"):
        load_bundle(copy)


def test_new_labels_void_a_pass_but_never_a_failure(tmp_path, backbone_tflite) -> None:  # type: ignore[no-untyped-def]
    model, kernel, _ = backbone_tflite
    path = _write(tmp_path / "b", model, head=(kernel, np.zeros(2, np.float32)))
    manifest = read_manifest(path)
    manifest.verification = Verification(status="failed", digest=manifest.graph_digest())
    write_manifest(path, manifest)
    k3, b3 = np.ones((kernel.shape[0], 3), np.float32), np.zeros(3, np.float32)
    write_head_version(path, dense=(k3, b3), labels=["RBC", "WBC", "Blast"])
    assert load_bundle(path).manifest.verification.status == "failed"  # the graph failed
    with pytest.raises(BundleError, match="failed its verification"):
        open_checked_bundle(SimpleNamespace(bundle=path, threads=1))  # type: ignore[arg-type]
