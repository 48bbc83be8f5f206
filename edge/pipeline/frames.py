"""A captured frame and what a frame source is (the start of the data path).

A source yields `Frame`s. A file that cannot be read becomes a Frame with ``error`` set (the
daemon publishes an error event and carries on); a source that stops working altogether
raises `SourceError` (the daemon retries with backoff, then exits for systemd to restart).
The sources themselves live in edge.service.sources.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge.errors import BlastscopeError


class SourceError(BlastscopeError):
    """The source as a whole failed (camera gone, folder missing), not a single frame."""


@dataclass(frozen=True)
class Frame:
    """One captured frame (RGB uint8), or the record of one that could not be read."""

    frame_id: str
    captured_at: float  # unix time
    origin: str  # where it came from: folder:FILE, video:FILE#N, camera:N, picamera:N
    image: np.ndarray | None = None
    error: str | None = None  # why the frame could not be read (image is None)
    seen_key: str | None = None  # marks a folder file done, atomically with its result
    read_ms: float = 0.0
    # Conditions published with the frame's result, each {"code": ..., "message": ...}
    # (codes: edge/schemas/result.schema.json), e.g. a greyscale frame for a colour model.
    warnings: tuple[dict[str, str], ...] = ()


class Source(Protocol):
    """What the daemon needs from a source."""

    name: str
    live: bool  # frames come from a sensor: when inference lags, keep the newest, skip stale
    settings: dict[str, Any] | None  # capture settings reported in every result

    def open(self) -> None: ...

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Frames until the source is exhausted (a replayed folder, a video's end) or stop."""
        ...

    def close(self) -> None: ...
