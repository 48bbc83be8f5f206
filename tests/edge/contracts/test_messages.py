"""The MQTT payload contract: the JSON Schemas are valid and say what the builders emit."""

from __future__ import annotations

import json
import uuid

import jsonschema
import pytest

from edge.contracts.messages import (
    error_body,
    frame_info,
    load_schema,
    status_payload,
    validate_payload,
    with_identity,
)

MODEL = {
    "name": "tiny",
    "sha256": "a" * 64,
    "quantization": "int8",
    "verification": "passed",
    "preprocessing_sha256": "b" * 64,
}
FRAME = frame_info("f1", "folder:/data/f1.jpg", 1_700_000_000.5, (480, 640))


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
        "model": MODEL,
        "camera": None,
        "timing_ms": {"preprocess": 1.0, "inference": 2.0, "total": 3.5},
    }
    body.update(changes)
    return json.loads(with_identity(body, 7, str(uuid.uuid4())))


@pytest.mark.parametrize("kind", ["result", "status", "health"])
def test_schemas_are_valid_draft_2020_12(kind: str) -> None:
    jsonschema.Draft202012Validator.check_schema(load_schema(kind))  # type: ignore[arg-type]


def test_frame_result_and_error_event_validate() -> None:
    validate_payload("result", _result())
    error = error_body(
        device="scope-01", frame=FRAME, stage="read", reason="f1.jpg: empty", model=MODEL
    )
    validate_payload("result", json.loads(with_identity(error, 8, str(uuid.uuid4()))))


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
