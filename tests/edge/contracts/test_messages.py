"""The MQTT payload contract: the JSON Schemas are valid and say what the builders emit."""

from __future__ import annotations

import json
import uuid

import jsonschema
import pytest

from edge.contracts.messages import (
    frame_ref,
    load_schema,
    result_message,
    status_payload,
    validate_payload,
    with_identity,
)
from edge.contracts.results import (
    CellResult,
    Decision,
    ErrorResult,
    FrameRef,
    FrameResult,
    Note,
    Scores,
)

MODEL = {
    "name": "tiny",
    "sha256": "a" * 64,
    "quantization": "int8",
    "verification": "passed",
    "preprocessing_sha256": "b" * 64,
}
REF = FrameRef("f1", "folder:/data/f1.jpg", 1_700_000_000.5, width=640, height=480)
FRAME = frame_ref(REF)
SCORES = Scores.of(["HEM", "ALL"], [0.1, 0.9])
TIMING = {"preprocess": 1.0, "inference": 2.0, "total": 3.5}


def _result(**changes):  # type: ignore[no-untyped-def]
    body = {
        "schema_version": 1,
        "kind": "frame",
        "device": "scope-01",
        "frame": FRAME,
        "classified_at": "2025-01-01T00:00:00.000Z",
        "label": "ALL",
        "score": 0.9,
        "probabilities": {"HEM": 0.1, "ALL": 0.9},
        "decision": {"outcome": "label", "reasons": []},
        "model": MODEL,
        "camera": None,
        "timing_ms": {"preprocess": 1.0, "inference": 2.0, "total": 3.5},
    }
    body.update(changes)
    return json.loads(with_identity(body, 7, str(uuid.uuid4())))


@pytest.mark.parametrize("kind", ["result", "status", "health"])
def test_schemas_are_valid_draft_2020_12(kind: str) -> None:
    jsonschema.Draft202012Validator.check_schema(load_schema(kind))  # type: ignore[arg-type]


def _message(result, seq: int = 8):  # type: ignore[no-untyped-def]
    body = result_message(result, device="scope-01", model=MODEL, camera=None)
    return validate_payload("result", with_identity(body, seq, str(uuid.uuid4())))


def test_typed_results_become_messages_that_validate() -> None:
    validate_payload("result", _result())
    frame = _message(FrameResult(REF, SCORES, Decision(), TIMING))
    assert frame["kind"] == "frame" and frame["label"] == "ALL" and frame["score"] == 0.9
    assert frame["probabilities"] == {"HEM": 0.1, "ALL": 0.9}
    assert frame["decision"] == {"outcome": "label", "reasons": []}
    assert frame["frame"] == {
        "id": "f1",
        "origin": "folder:/data/f1.jpg",
        "captured_at": "2023-11-14T22:13:20.500Z",
        "height": 480,
        "width": 640,
    }
    review = Decision("needs_review", ("low confidence: ALL 0.90 < 0.95",))
    cell = _message(CellResult(REF, 3, (10, 20, 64, 64), SCORES, review, True, TIMING))
    assert cell["kind"] == "cell" and cell["frame"]["id"] == "f1"
    assert cell["cell"] == {"index": 3, "bbox": [10, 20, 64, 64], "cut_by_edge": True}
    assert cell["decision"]["outcome"] == "needs_review"
    note = Note("channels_mismatch", "greyscale frame; the model was trained on colour")
    error = _message(ErrorResult(REF, "read", "f1.jpg: empty", (note,)))
    assert error["error"] == {"stage": "read", "reason": "f1.jpg: empty"}
    assert "decision" not in error and error["warnings"][0]["code"] == "channels_mismatch"


def test_scores_and_decisions_check_themselves() -> None:
    assert (SCORES.label, SCORES.score, SCORES.top) == ("ALL", 0.9, 1)
    assert Scores.of(["a", "b"], [0.5, 0.5]).label == "a"  # a tie: the first
    with pytest.raises(ValueError, match="2 labels for 3 probabilities"):
        Scores.of(["a", "b"], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="decision outcome 'maybe'"):
        Decision("maybe")  # type: ignore[arg-type]


def test_a_decision_is_required_beside_the_scores() -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate_payload("result", {k: v for k, v in _result().items() if k != "decision"})
    with pytest.raises(jsonschema.ValidationError):
        validate_payload("result", _result(decision={"outcome": "probably", "reasons": []}))


def test_cell_kind_is_distinct_from_frame() -> None:
    cell = _result(kind="cell", cell={"index": 0, "bbox": [10, 20, 64, 64]})
    validate_payload("result", cell)
    with pytest.raises(jsonschema.ValidationError):
        validate_payload("result", _result(kind="cell"))  # a cell without its box
    with pytest.raises(jsonschema.ValidationError):
        validate_payload("result", _result(cell={"index": 0, "bbox": [0, 0, 1, 1]}))


@pytest.mark.parametrize(
    "change",
    [
        {"probabilities": {"ALL": 1.0}},  # every class, not just the winner
        {"score": 1.5},
        {"message_id": "not-a-uuid"},
        {"seq": 0},
        {"kind": "guess"},
        {"classified_at": "yesterday"},
        {"model": {**MODEL, "sha256": "xyz"}},
    ],
)
def test_contract_violations_are_caught(change: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(jsonschema.ValidationError):
        validate_payload("result", _result(**change))


def test_status_payload_validates() -> None:
    payload = status_payload(
        device="scope-01",
        state="online",
        client_id="blastscope-scope-01",
        warnings=[{"code": "bundle_unverified", "message": "unverified"}],
        model=MODEL,
        software="blastscope 0.1.0",
    )
    assert validate_payload("status", payload)["state"] == "online"
    with pytest.raises(jsonschema.ValidationError):
        validate_payload("status", {**json.loads(payload), "state": "sleeping"})
