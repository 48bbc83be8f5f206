"""Frame sources behind one small interface: a folder, a video file, a camera, a Pi camera.

A source yields `Frame`s. A file that cannot be read becomes a Frame with ``error`` set (the
daemon publishes an error event and carries on); a source that stops working altogether
raises `SourceError` (the daemon retries with backoff, then exits for systemd to restart).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edge.config import (
    CameraSourceConfig,
    FolderSourceConfig,
    PicameraSourceConfig,
    SourceConfig,
    VideoSourceConfig,
)
from edge.errors import BlastscopeError
from edge.image_io import ImageReadError, list_images, read_image

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


_run_counter = itertools.count(1)


class FolderSource:
    """Image files in a folder, by name: replayed once, or watched for new files."""

    live = False
    settings: dict[str, Any] | None = None

    def __init__(
        self,
        cfg: FolderSourceConfig,
        once: bool,
        is_seen: Callable[[str], bool] | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = f"folder:{cfg.path}"
        self.watch = cfg.watch and not once
        # Remembered across restarts only when watching: a scanner's folder is processed
        # exactly once; a replayed folder is replayed in full on every run.
        self.is_seen = is_seen if cfg.watch else None
        self._done: set[str] = set()  # this process: a retry after a failure resumes

    def open(self) -> None:
        if not self.cfg.path.is_dir():
            raise SourceError(f"{self.cfg.path}: no such folder")

    def _files(self) -> list[Path]:
        try:
            return list_images(self.cfg.path)
        except OSError as exc:
            raise SourceError(f"{self.cfg.path}: cannot list the folder ({exc.strerror})") from None

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        while not stop.is_set():
            for path in self._files():
                if stop.is_set():
                    return
                try:
                    st = path.stat()
                except OSError:
                    continue  # removed between listing and reading
                if self.watch and time.time() - st.st_mtime < self.cfg.settle_s:
                    continue  # still being written: next poll
                key = f"{path.name}:{st.st_size}:{st.st_mtime_ns}"
                if key in self._done:
                    continue
                self._done.add(key)
                if self.is_seen is not None and self.is_seen(key):
                    continue  # done by an earlier run
                yield self._read(path, key)
            if not self.cfg.path.is_dir():
                # Deleted or unmounted mid-run: the files left in the listing were skipped as
                # "removed", and returning now would pass for a finished replay (exit 0).
                raise SourceError(f"{self.cfg.path}: no such folder (gone mid-run)")
            if not self.watch:
                return
            stop.wait(self.cfg.poll_s)

    def _read(self, path: Path, key: str) -> Frame:
        t0 = time.perf_counter()
        frame_id = f"{path.name}@{next(_run_counter)}"
        origin = f"folder:{path}"
        try:
            image = read_image(path, max_bytes=self.cfg.max_image_bytes)
        except ImageReadError as exc:
            return Frame(frame_id, time.time(), origin, error=str(exc), seen_key=key)
        ms = (time.perf_counter() - t0) * 1e3
        return Frame(frame_id, time.time(), origin, image=image, seen_key=key, read_ms=ms)

    def close(self) -> None:
        pass


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
                yield Frame(f"{name}#{index}", time.time(), origin, image=rgb, read_ms=ms)
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
                f"camera{self.cfg.index}-{n}", time.time(), self.name, image=rgb, read_ms=ms
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
                f"picamera{self.cfg.camera_num}-{n}", time.time(), self.name, rgb, read_ms=ms
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
    cfg: SourceConfig, once: bool, is_seen: Callable[[str], bool] | None = None
) -> Source:
    """The Source for a validated source config (not yet opened)."""
    if isinstance(cfg, FolderSourceConfig):
        return FolderSource(cfg, once, is_seen)
    if isinstance(cfg, VideoSourceConfig):
        return VideoSource(cfg)
    if isinstance(cfg, CameraSourceConfig):
        return CameraSource(cfg, once)
    return PicameraSource(cfg, once)
