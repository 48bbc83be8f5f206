"""The MQTT contract: topic names and the JSON payloads a lab dashboard codes against.

Topics, under a configurable prefix and the device id:

- ``<prefix>/<device>/result`` — one message per classified frame (kind ``frame``), per cell
  (kind ``cell``, field mode) or per frame that could not be classified (kind ``error``);
  QoS 1, from the durable outbox, ``seq`` strictly increasing per device, ``message_id``
  stable across replays.
- ``<prefix>/<device>/status`` — retained device state: ``online`` / ``offline`` (last will) /
  ``stopped`` (a clean exit) / ``failed`` (a fatal error, with its reason), with the current
  warnings (unverified bundle, source retrying, outbox full, disk full, refused results...).
- ``<prefix>/<device>/health`` — periodic counters, queue depths and latency percentiles.
- ``<prefix>/<device>/slide`` — retained: the open slide's counts and blast fraction.
- ``<prefix>/<device>/correction``, ``.../command`` — from the lab (the dashboard, the only
  user the shipped ACL lets write them): a reviewer's corrected label, a command (open or
  close a slide, fine-tune); ``.../reply`` — the device's answer to each.

The JSON Schemas in edge/contracts/schemas/ are the reference; tests validate real messages
against them.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import cache
from importlib import resources
from typing import Any, Literal

from edge.contracts.results import CellResult, ErrorResult, FrameRef, FrameResult, Result

SCHEMA_VERSION = 1
KINDS = ("result", "status", "health", "slide", "reply", "correction", "command")
# result, status, health, slide, reply: device -> lab; correction, command: lab -> device.
Kind = Literal["result", "status", "health", "slide", "reply", "correction", "command"]


def topic(prefix: str, device: str, kind: Kind) -> str:
    return f"{prefix}/{device}/{kind}"


def utc_iso(ts: float | None = None) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2025-01-31T12:00:00.123Z."""
    when = dt.datetime.now(dt.UTC) if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def model_info(manifest: Any, preprocessing_sha256: str) -> dict[str, Any]:
    """Provenance carried by every result: which model and head version, which preprocessing,
    verified or not."""
    return {
        "name": manifest.name,
        "sha256": manifest.model_sha256,
        "quantization": manifest.quantization,
        "verification": manifest.verification.status,
        "preprocessing_sha256": preprocessing_sha256,
        "head_version": manifest.head.version,
    }


def frame_ref(frame: FrameRef) -> dict[str, Any]:
    info: dict[str, Any] = {
        "id": frame.id,
        "origin": frame.origin,
        "captured_at": utc_iso(frame.captured_at),
    }
    if frame.width is not None and frame.height is not None:
        info["height"], info["width"] = frame.height, frame.width
    return info


def result_message(
    result: Result,
    *,
    device: str,
    model: dict[str, Any],
    camera: dict[str, Any] | None,
) -> dict[str, Any]:
    """A typed result as the JSON body a dashboard receives, without seq and message_id (the
    outbox assigns them inside the transaction that stores the message)."""
    body: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": _KIND[type(result)],
        "device": device,
        "frame": frame_ref(result.frame),
        "classified_at": utc_iso(),
    }
    if isinstance(result, ErrorResult):
        body["error"] = {"stage": result.stage, "reason": result.reason}
        body["model"] = model
    else:
        if isinstance(result, CellResult):
            body["cell"] = {
                "index": result.index,
                "bbox": list(result.bbox),
                "cut_by_edge": result.cut_by_edge,
            }
        scores = result.scores
        body.update(
            label=scores.label,
            score=round(scores.score, 6),
            probabilities={
                k: round(p, 6) for k, p in zip(scores.labels, scores.probabilities, strict=True)
            },
            decision={
                "outcome": result.decision.outcome,
                "reasons": list(result.decision.reasons),
            },
            model=model,
            camera=camera,
            timing_ms={k: round(v, 3) for k, v in result.timing_ms.items()},
        )
    if result.notes:
        body["warnings"] = [{"code": n.code, "message": n.message} for n in result.notes]
    return body


_KIND: dict[type, str] = {FrameResult: "frame", CellResult: "cell", ErrorResult: "error"}


def with_identity(body: dict[str, Any], seq: int, message_id: str) -> bytes:
    """The final result payload: the body plus the outbox's seq and message id."""
    return encode({"message_id": message_id, "seq": seq, **body})


def status_payload(
    *,
    device: str,
    state: Literal["online", "offline", "stopped", "failed"],
    client_id: str,
    reason: str | None = None,
    warnings: list[dict[str, Any]] | None = None,
    model: dict[str, Any] | None = None,
    software: str = "",
) -> bytes:
    payload: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "device": device,
        "state": state,
        "at": utc_iso(),
        "client_id": client_id,
        "warnings": warnings or [],
    }
    if reason:
        payload["reason"] = reason
    if model is not None:
        payload["model"] = model
    if software:
        payload["software"] = software
    return encode(payload)


@cache
def load_schema(kind: Kind) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one message kind, shipped as package data."""
    text = resources.files("edge.contracts").joinpath("schemas", f"{kind}.schema.json").read_text()
    return dict(json.loads(text))


def validate_payload(kind: Kind, payload: bytes | dict[str, Any]) -> dict[str, Any]:
    """Parse and validate a payload; raise jsonschema.ValidationError if it breaks the contract."""
    import jsonschema

    data = json.loads(payload) if isinstance(payload, bytes | str) else payload
    jsonschema.Draft202012Validator(
        load_schema(kind), format_checker=jsonschema.FormatChecker()
    ).validate(data)
    return dict(data)
