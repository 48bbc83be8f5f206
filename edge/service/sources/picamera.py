"""A Raspberry Pi camera (picamera2) as a frame source, with fixed colour gains and exposure.

picamera2 exists only on a Pi: it is imported when the camera is opened, never before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import Field, Strict, model_validator

from edge.pipeline.frames import Frame, SourceError
from edge.service.config_types import SourceBase
from edge.service.sources.registry import SourceKind
from edge.vision.quality import channel_warnings

log = logging.getLogger(__name__)


class PicameraSourceConfig(SourceBase):
    kind: Literal["picamera"]
    camera_num: int = Field(default=0, ge=0, le=7)
    main_size: Annotated[
        tuple[Annotated[int, Field(ge=64, le=9152)], Annotated[int, Field(ge=64, le=6944)]],
        Strict(False),
    ] = (2028, 1520)
    lores_size: Annotated[
        tuple[Annotated[int, Field(ge=32, le=4096)], Annotated[int, Field(ge=32, le=4096)]],
        Strict(False),
    ] = (640, 480)
    inference_stream: Literal["lores", "main"] = "lores"
    # Fixed (red, blue) white-balance gains, exposure and gain: auto white balance drifts with
    # the lamp and the stain, and the model was trained on one colour rendering.
    colour_gains: Annotated[
        tuple[Annotated[float, Field(gt=0, le=32)], Annotated[float, Field(gt=0, le=32)]],
        Strict(False),
    ] = (1.8, 1.6)
    exposure_time_us: int = Field(default=10000, ge=1, le=10_000_000)
    analogue_gain: float = Field(default=1.0, ge=1.0, le=64.0)
    # capture_array can hang (picamera2 #950, #794): a frame not there in time is a failure.
    frame_timeout_s: float = Field(default=5.0, ge=0.1, le=120)

    @model_validator(mode="after")
    def _lores_fits(self) -> PicameraSourceConfig:
        if self.lores_size[0] > self.main_size[0] or self.lores_size[1] > self.main_size[1]:
            raise ValueError(
                f"lores_size {list(self.lores_size)} must not exceed main_size "
                f"{list(self.main_size)}"
            )
        return self


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


def _parse(rest: str | None) -> dict[str, Any] | None:
    if rest is None or rest == "":
        return {"kind": "picamera"}
    return {"kind": "picamera", "camera_num": int(rest)} if rest.isdigit() else None


KIND = SourceKind(
    "picamera",
    PicameraSourceConfig,
    lambda cfg, ctx: PicameraSource(cfg, ctx.once),
    _parse,
    "picamera[:N]",
)
