"""Frame sources behind one small interface: a folder, a video file, a camera, a Pi camera.

A source yields `Frame`s. A file that cannot be read becomes a Frame with ``error`` set (the
daemon publishes an error event and carries on); a source that stops working altogether
raises `SourceError` (the daemon retries with backoff, then exits for systemd to restart).
The folder source lives in edge.service.sources.folder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from edge.errors import BlastscopeError
from edge.service.config import (
    CameraSourceConfig,
    FolderSourceConfig,
    PicameraSourceConfig,
    SourceConfig,
    VideoSourceConfig,
)
from edge.vision.image_io import is_greyscale

if TYPE_CHECKING:
    from edge.service.sources.folder import SeenRecords

log = logging.getLogger(__name__)


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


GREYSCALE_WARNING = {
    "code": "channels_mismatch",
    "message": "greyscale frame; the model was trained on colour",
}


def channel_warnings(rgb: np.ndarray) -> tuple[dict[str, str], ...]:
    """A frame's warnings about its channels: every bundle is trained on colour (RGB) frames,
    and a greyscale one is classified with confident but meaningless scores."""
    return (dict(GREYSCALE_WARNING),) if is_greyscale(rgb) else ()


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


class PicameraSource:
    """A Raspberry Pi camera via picamera2 with fixed colour gains, exposure and gain."""

    live = True

    def __init__(self, cfg: PicameraSourceConfig, once: bool) -> None:
        self.cfg = cfg
        self.once = once
        self.name = f"picamera:{cfg.camera_num}"
        self._cam: Any = None
        self.settings: dict[str, Any] | None = self._settings()

    def _settings(self) -> dict[str, Any]:
        c = self.cfg
        size = c.lores_size if c.inference_stream == "lores" else c.main_size
        return {
            "camera_num": c.camera_num,
            "awb": False,
            "auto_exposure": False,
            "colour_gains": list(c.colour_gains),
            "exposure_time_us": c.exposure_time_us,
            "analogue_gain": c.analogue_gain,
            "stream": c.inference_stream,
            "size": list(size),
        }

    def controls(self) -> dict[str, Any]:
        """libcamera controls: auto white balance and exposure off, the lab's values fixed."""
        c = self.cfg
        return {
            "AwbEnable": False,
            "AeEnable": False,
            "ColourGains": tuple(c.colour_gains),
            "ExposureTime": c.exposure_time_us,
            "AnalogueGain": c.analogue_gain,
        }

    def open(self) -> None:
        try:
            from picamera2 import Picamera2  # imported lazily: only a Pi has it
        except ImportError:
            raise SourceError(
                "picamera2 is not installed: on Raspberry Pi OS run "
                "`sudo apt install python3-picamera2` (and create the venv with "
                "--system-site-packages)"
            ) from None
        c = self.cfg
        try:
            cam = Picamera2(c.camera_num)
            # The lores stream is YUV420 on every Pi model (Pi 4's ISP cannot give RGB there);
            # main is RGB888, which picamera2 lays out as B, G, R.
            config = cam.create_video_configuration(
                main={"size": tuple(c.main_size), "format": "RGB888"},
                lores={"size": tuple(c.lores_size), "format": "YUV420"},
                controls=self.controls(),
            )
            cam.configure(config)
            cam.set_controls(self.controls())
            cam.start()
        except Exception as exc:  # libcamera raises RuntimeError, IndexError, OSError...
            raise SourceError(f"picamera {c.camera_num}: cannot start ({exc})") from None
        self._cam = cam

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        n = 0
        stream = self.cfg.inference_stream
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                # Never a bare blocking capture_array: it can hang (picamera2 #950, #794).
                job = self._cam.capture_array(stream, wait=False)
                array = self._cam.wait(job, timeout=self.cfg.frame_timeout_s)
            except TimeoutError:
                raise SourceError(
                    f"picamera {self.cfg.camera_num}: no frame within {self.cfg.frame_timeout_s}s"
                ) from None
            except Exception as exc:
                raise SourceError(
                    f"picamera {self.cfg.camera_num}: capture failed ({exc})"
                ) from None
            rgb = _picamera_to_rgb(array, stream)
            n += 1
            ms = (time.perf_counter() - t0) * 1e3
            yield Frame(
                f"picamera{self.cfg.camera_num}-{n}",
                time.time(),
                self.name,
                rgb,
                read_ms=ms,
                warnings=channel_warnings(rgb),
            )
            if self.once:
                return

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            except Exception as exc:  # closing a failed camera must not mask the first error
                log.debug("picamera close failed: %s", exc)
            self._cam = None


def _picamera_to_rgb(array: np.ndarray, stream: str) -> np.ndarray:
    if stream == "lores":  # planar I420: (h * 3 / 2, w); keep the colour (never the Y plane)
        return np.ascontiguousarray(cv2.cvtColor(array, cv2.COLOR_YUV2RGB_I420))
    return np.ascontiguousarray(array[:, :, 2::-1])  # picamera2 "RGB888" is B, G, R in memory


def open_source(
    cfg: SourceConfig,
    once: bool,
    seen: SeenRecords | None = None,
    retention_s: float | None = None,
) -> Source:
    """The Source for a validated source config (not yet opened).

    `seen` keeps the folder source's records of processed files (the outbox); records older
    than `retention_s` are pruned, never those of files still in the folder.
    """
    if isinstance(cfg, FolderSourceConfig):
        from edge.service.sources.folder import FolderSource  # it imports Frame from this module

        return FolderSource(cfg, once, seen, retention_s)
    if isinstance(cfg, VideoSourceConfig):
        return VideoSource(cfg)
    if isinstance(cfg, CameraSourceConfig):
        return CameraSource(cfg, once)
    return PicameraSource(cfg, once)
