"""An OpenCV capture device (USB camera) as a frame source, drained of stale frames."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field

from edge.pipeline.frames import Frame, SourceError
from edge.service.config_types import SourceBase
from edge.service.sources.registry import SourceKind
from edge.vision.quality import channel_warnings


class CameraSourceConfig(SourceBase):
    kind: Literal["camera"]
    index: int = Field(default=0, ge=0, le=63)
    width: int | None = Field(default=None, ge=16, le=8192)
    height: int | None = Field(default=None, ge=16, le=8192)
    drain_frames: int = Field(default=5, ge=0, le=60)  # buffered frames to skip before a read


class CameraSource:
    """An OpenCV capture device, draining stale buffered frames before each read."""

    live = True

    def __init__(self, cfg: CameraSourceConfig, once: bool) -> None:
        self.cfg = cfg
        self.once = once
        self.name = f"camera:{cfg.index}"
        self.settings: dict[str, Any] | None = {"device": cfg.index}
        self._cap: Any = None
        self._fresh_s = 0.01

    def open(self) -> None:
        cap = cv2.VideoCapture(self.cfg.index)
        if not cap.isOpened():
            raise SourceError(f"camera {self.cfg.index}: cannot be opened (is it connected?)")
        # Not every backend honours a 1-frame buffer, hence the drain in read().
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self.cfg.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
        if self.cfg.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        # A grab that returns faster than half a frame period came from the buffer.
        self._fresh_s = 0.5 / fps if fps > 0 else 0.01
        self.settings = {
            "device": self.cfg.index,
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "fps": fps,
        }
        self._cap = cap

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        n = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            rgb = read_fresh(self._cap, self.cfg.drain_frames, self._fresh_s)
            if rgb is None:
                raise SourceError(f"camera {self.cfg.index}: read failed (disconnected?)")
            n += 1
            ms = (time.perf_counter() - t0) * 1e3
            yield Frame(
                f"camera{self.cfg.index}-{n}",
                time.time(),
                self.name,
                image=rgb,
                read_ms=ms,
                warnings=channel_warnings(rgb),
            )
            if self.once:
                return

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def read_fresh(cap: Any, drain: int, fresh_s: float) -> np.ndarray | None:
    """grab() past buffered frames until one had to wait for the sensor; retrieve it as RGB.

    OpenCV's VideoCapture hands out frames queued in the driver, which can be seconds old
    when inference is slower than the camera.
    """
    for _ in range(max(1, drain)):
        t0 = time.perf_counter()
        if not cap.grab():
            return None
        if time.perf_counter() - t0 >= fresh_s:
            break
    ok, bgr = cap.retrieve()
    if not ok or bgr is None:
        return None
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _parse(rest: str) -> dict[str, Any] | None:
    return {"kind": "camera", "index": int(rest)} if rest.isdigit() else None


KIND = SourceKind(
    "camera",
    CameraSourceConfig,
    lambda cfg, ctx: CameraSource(cfg, ctx.once),
    _parse,
    "camera:N",
)
