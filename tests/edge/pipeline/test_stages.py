"""The stages of one frame, each on real inputs: a real frame, a real tiny bundle, a real
outbox; the daemon is only their order (tests/edge/service covers it end to end)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.contracts.results import CellResult, ErrorResult, FrameResult
from edge.model.bundle import load_bundle
from edge.pipeline.commit import Committer
from edge.pipeline.decide import Decider
from edge.pipeline.frames import Frame
from edge.pipeline.infer import infer
from edge.pipeline.prepare import ModelInput, Prepared, Region, frame_ref, prepare_frame
from edge.service.outbox import Outbox
from edge.vision.image_io import read_image
from edge.vision.preprocessing import preprocess

MODEL = {"name": "tiny", "sha256": "a" * 64, "quantization": "float32",
         "verification": "unverified", "preprocessing_sha256": "b" * 64}  # fmt: skip


def _frame(image: np.ndarray | None, error: str | None = None) -> Frame:
    return Frame("f1", time.time(), "folder:/d/f1.jpg", image=image, error=error, seen_key="k1")


def test_a_frame_goes_through_prepare_infer_and_decide(
    bundle: Path, field_paths: list[Path]
) -> None:
    b = load_bundle(bundle)
    image = read_image(field_paths[0])
    prepared = prepare_frame(_frame(image), b)
    assert prepared.failed is None and len(prepared.inputs) == 1
    assert prepared.ref.width == 640 and prepared.ref.height == 480
    # The one preprocessing: the same input the trainer's pipeline would have built.
    np.testing.assert_array_equal(prepared.inputs[0].x, preprocess(image, b.spec))
    inferred = infer(prepared, b)
    assert inferred.error is None and inferred.inference_ms > 0
    expected = b.probabilities(preprocess(image, b.spec))
    np.testing.assert_allclose(inferred.scores[0].probabilities, expected, rtol=1e-6)
    [result] = Decider().results(inferred)
    assert isinstance(result, FrameResult) and result.decision.outcome == "label"
    assert result.scores.label == b.labels[int(np.argmax(expected))]
    assert set(result.timing_ms) == {"read", "preprocess", "inference", "total"}


def test_a_low_confidence_answer_is_sent_for_review_with_its_reason(
    bundle: Path, field_paths: list[Path]
) -> None:
    b = load_bundle(bundle)
    inferred = infer(prepare_frame(_frame(read_image(field_paths[0])), b), b)
    top = inferred.scores[0].score
    [kept] = Decider(min_confidence=top - 0.01).results(inferred)
    [flagged] = Decider(min_confidence=top + 0.01).results(inferred)
    assert kept.decision.outcome == "label"  # type: ignore[union-attr]
    assert flagged.decision.outcome == "needs_review"  # type: ignore[union-attr]
    assert flagged.decision.reasons == (  # type: ignore[union-attr]
        f"low confidence: {inferred.scores[0].label} {top:.2f} < {top + 0.01:.2f}",
    )


def test_unreadable_and_unpreparable_frames_become_error_results(bundle: Path) -> None:
    b = load_bundle(bundle)
    unread = Decider().results(infer(prepare_frame(_frame(None, "f1.jpg: empty"), b), b))
    assert unread == [ErrorResult(unread[0].frame, "read", "f1.jpg: empty")]
    tiny = np.zeros((1, 1, 3), np.uint8)  # too small for any preprocessing
    [failed] = Decider().results(infer(prepare_frame(_frame(tiny), b), b))
    assert isinstance(failed, ErrorResult) and failed.stage == "preprocess"
    assert "too small" in failed.reason


def test_cells_of_a_frame_keep_their_place(bundle: Path, field_paths: list[Path]) -> None:
    """Everything after prepare takes a list: one result per cell, tied by the frame's id."""
    b = load_bundle(bundle)
    image = read_image(field_paths[0])
    frame = _frame(image)
    crops = [(0, (10, 20, 64, 64), False), (1, (600, 400, 40, 80), True)]
    inputs = tuple(
        ModelInput(preprocess(image[y : y + h, x : x + w], b.spec), Region(i, (x, y, w, h), cut))
        for i, (x, y, w, h), cut in crops
    )
    results = Decider().results(infer(Prepared(frame, frame_ref(frame), inputs), b))
    assert [type(r) for r in results] == [CellResult, CellResult]
    cells = [r for r in results if isinstance(r, CellResult)]
    assert [(c.index, c.bbox, c.cut_by_edge) for c in cells] == crops
    assert {c.frame.id for c in cells} == {"f1"}


def test_commit_stores_a_frames_results_and_its_key_in_one_transaction(
    tmp_path: Path, bundle: Path, field_paths: list[Path]
) -> None:
    b = load_bundle(bundle)
    box = Outbox(tmp_path / "o.sqlite3", 100, "block")
    committer = Committer(box, "t/result", device="scope-01", model=MODEL, stop=threading.Event())
    image = read_image(field_paths[0])
    frame = _frame(image)
    inputs = tuple(ModelInput(preprocess(image, b.spec), Region(i, (0, 0, 8, 8))) for i in range(3))
    results = Decider().results(infer(Prepared(frame, frame_ref(frame), inputs), b))
    # A result that cannot be encoded (NaN) fails the whole frame: nothing half-published.
    bad = [results[0], dataclasses.replace(results[1], timing_ms={"total": float("nan")})]
    with pytest.raises(ValueError):
        committer.commit(bad, "frame-key", camera=None)
    assert box.pending == 0 and not box.is_seen("frame-key")
    assert committer.commit(results, "frame-key", camera={"device": 0}) == 3
    assert box.pending == 3 and box.is_seen("frame-key")
    stored = [json.loads(m.payload) for m in box.peek(0, 10)]
    assert [m["cell"]["index"] for m in stored] == [0, 1, 2]
    assert [m["seq"] for m in stored] == [1, 2, 3] and stored[0]["camera"] == {"device": 0}
    box.close()
