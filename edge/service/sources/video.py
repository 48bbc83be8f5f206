"""A video file as a frame source, frame by frame (every ``stride``-th), to its end."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import cv2
from pydantic import Field

from edge.pipeline.frames import Frame, SourceError
from edge.service.config_types import FilePath, SourceBase
from edge.service.sources.registry import SourceKind
from edge.vision.quality import channel_warnings


class VideoSourceConfig(SourceBase):
    kind: Literal["video"]
    path: FilePath
    stride: int = Field(default=1, ge=1, le=10000)  # classify every n-th frame


class VideoSource:
    """A video file, frame by frame (every ``stride``-th), to its end."""

    live = False
    settings: dict[str, Any] | None = None

    def __init__(self, cfg: VideoSourceConfig) -> None:
        self.cfg = cfg
        self.name = f"video:{cfg.path}"
        self._cap: Any = None
        self._next_index = 0  # resume here after a retry

    def open(self) -> None:
        if not self.cfg.path.is_file():
            raise SourceError(f"{self.cfg.path}: no such video file")
        self._cap = cv2.VideoCapture(str(self.cfg.path))
        if not self._cap.isOpened():
            raise SourceError(f"{self.cfg.path}: OpenCV cannot open this video")
        if self._next_index:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, self._next_index)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        index = self._next_index
        while not stop.is_set():
            t0 = time.perf_counter()
            ok, bgr = self._cap.read()
            if not ok:
                return
            self._next_index = index + 1
            if index % self.cfg.stride == 0:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                ms = (time.perf_counter() - t0) * 1e3
                name = self.cfg.path.name
                origin = f"video:{self.cfg.path}#{index}"
                yield Frame(
                    f"{name}#{index}",
                    time.time(),
                    origin,
                    image=rgb,
                    read_ms=ms,
                    warnings=channel_warnings(rgb),
                )
            index += 1

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _parse(rest: str) -> dict[str, Any] | None:
    return {"kind": "video", "path": rest} if rest else None


KIND = SourceKind(
    "video",
    VideoSourceConfig,
    lambda cfg, ctx: VideoSource(cfg),
    _parse,
    "video:PATH",
)
