"""Frame sources: folder replay and watch, video files, OpenCV buffer draining, picamera2."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest

from edge.service.config import validate
from edge.service.sources import SourceError, open_source
from edge.service.sources.camera import read_fresh
from edge.service.sources.picamera import PicameraSource
from edge.vision.image_io import read_image
from tests.edge.daemon_helpers import frame_folder


def _source(spec: dict[str, Any], once: bool = True, is_seen=None):  # type: ignore[no-untyped-def]
    cfg = validate({"bundle": "b", "source": spec}).source
    return open_source(cfg, once, is_seen)


def _take(source, n: int | None = None, stop: threading.Event | None = None) -> list:  # type: ignore[no-untyped-def, type-arg]
    stop = stop or threading.Event()
    source.open()
    out = []
    for frame in source.frames(stop):
        out.append(frame)
        if n is not None and len(out) >= n:
            stop.set()
    source.close()
    return out


def test_folder_replays_every_image_in_name_order(tmp_path: Path, field_paths) -> None:  # type: ignore[no-untyped-def]
    folder = frame_folder(tmp_path / "f", field_paths, 5)
    (folder / "notes.txt").write_text("not an image")
    frames = _take(_source({"kind": "folder", "path": str(folder)}))
    assert [Path(f.origin.removeprefix("folder:")).name for f in frames] == [
        f"frame_{i:03d}.jpg" for i in range(5)
    ]
    assert all(f.image is not None and f.image.shape == (480, 640, 3) for f in frames)
    assert np.array_equal(frames[0].image, read_image(field_paths[0]))  # RGB, as everywhere


def test_bad_files_become_error_frames_not_failures(tmp_path: Path, field_paths) -> None:  # type: ignore[no-untyped-def]
    folder = frame_folder(tmp_path / "f", field_paths, 1)
    good = (folder / "frame_000.jpg").read_bytes()
    (folder / "a_empty.jpg").write_bytes(b"")
    (folder / "b_truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "c_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    (folder / "d_oversized.jpg").write_bytes(good + b"\0" * 5000)
    limit = len(good) + 100
    frames = _take(_source({"kind": "folder", "path": str(folder), "max_image_bytes": limit}))
    errors = {Path(f.origin).name: f.error for f in frames if f.image is None}
    assert set(errors) == {"a_empty.jpg", "b_truncated.jpg", "c_corrupt.png", "d_oversized.jpg"}
    assert "empty" in errors["a_empty.jpg"] and "truncated" in errors["b_truncated.jpg"]
    assert "not a decodable image" in errors["c_corrupt.png"]
    assert "over the" in errors["d_oversized.jpg"]
    assert sum(f.image is not None for f in frames) == 1


def test_missing_folder_is_a_source_failure(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such folder"):
        _source({"kind": "folder", "path": str(tmp_path / "nope")}).open()


def test_folder_gone_mid_replay_is_a_source_failure_not_the_end(
    tmp_path: Path,
    field_paths: list[Path],
) -> None:
    folder = frame_folder(tmp_path / "f", field_paths, 4)
    source = _source({"kind": "folder", "path": str(folder)})
    source.open()
    frames = source.frames(threading.Event())
    assert next(frames).image is not None
    shutil.rmtree(folder)  # unmounted mid-run: the rest of the listing cannot be read
    with pytest.raises(SourceError, match="no such folder"):
        list(frames)


def test_video_file_frames_with_stride(tmp_path: Path, field_paths) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "slide.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (640, 480))
    for p in field_paths * 2:
        writer.write(cv2.imread(str(p)))
    writer.release()
    frames = _take(_source({"kind": "video", "path": str(path), "stride": 3}))
    assert [f.origin.rsplit("#", 1)[1] for f in frames] == ["0", "3", "6"]
    first = frames[0].image
    expected = read_image(field_paths[0])
    assert first.shape == expected.shape
    # MJPG is lossy; the colours must still be RGB like the file (not BGR).
    assert np.abs(first.astype(int) - expected.astype(int)).mean() < 8
    with pytest.raises(SourceError, match="no such video"):
        _source({"kind": "video", "path": str(tmp_path / "none.avi")}).open()


class _BufferedCamera:
    """A capture device with `buffered` stale frames queued; fresh frames take 30 ms."""

    def __init__(self, buffered: int) -> None:
        self.buffered = buffered
        self.grabs = 0
        self.current = -1

    def grab(self) -> bool:
        self.grabs += 1
        if self.buffered:
            self.buffered -= 1  # instant: it was already in the driver's queue
        else:
            time.sleep(0.03)
        self.current += 1
        return True

    def retrieve(self) -> tuple[bool, np.ndarray]:
        return True, np.full((4, 4, 3), self.current, np.uint8)


def test_read_fresh_drains_stale_buffered_frames() -> None:
    cam = _BufferedCamera(buffered=3)
    frame = read_fresh(cam, drain=5, fresh_s=0.015)
    assert cam.grabs == 4  # three stale frames skipped, the fourth waited for the sensor
    assert frame is not None and frame[0, 0, 0] == 3
    cam = _BufferedCamera(buffered=0)
    read_fresh(cam, drain=5, fresh_s=0.015)
    assert cam.grabs == 1  # nothing buffered: no extra wait


class _FakePicamera2:
    instances: ClassVar[list[_FakePicamera2]] = []

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.config_kwargs: dict[str, Any] = {}
        self.controls: dict[str, Any] = {}
        self.started = self.closed = False
        self.hang = False
        _FakePicamera2.instances.append(self)

    def create_video_configuration(self, **kwargs: Any) -> dict[str, Any]:
        self.config_kwargs = kwargs
        return kwargs

    def configure(self, config: dict[str, Any]) -> None:
        pass

    def set_controls(self, controls: dict[str, Any]) -> None:
        self.controls.update(controls)

    def start(self) -> None:
        self.started = True

    def capture_array(self, name: str, wait: Any = None) -> str:
        assert wait is False  # never a blocking capture (picamera2 #950)
        return name

    def wait(self, job: str, timeout: float | None = None) -> np.ndarray:
        if self.hang:
            raise TimeoutError
        w, h = self.config_kwargs[job]["size"]
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0] = 200  # a red field
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_picamera2(monkeypatch):  # type: ignore[no-untyped-def]
    module = types.ModuleType("picamera2")
    module.Picamera2 = _FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    _FakePicamera2.instances.clear()
    return _FakePicamera2


def test_picamera_fixes_colour_and_reads_the_lores_stream_in_colour(fake_picamera2) -> None:  # type: ignore[no-untyped-def]
    source = _source(
        {
            "kind": "picamera",
            "colour_gains": [1.9, 1.4],
            "exposure_time_us": 7000,
            "analogue_gain": 1.5,
            "lores_size": [320, 240],
        }
    )
    frames = _take(source)
    cam = fake_picamera2.instances[0]
    expected = {
        "AwbEnable": False,
        "AeEnable": False,
        "ColourGains": (1.9, 1.4),
        "ExposureTime": 7000,
        "AnalogueGain": 1.5,
    }
    assert cam.controls == expected and cam.config_kwargs["controls"] == expected
    assert cam.config_kwargs["lores"] == {"size": (320, 240), "format": "YUV420"}
    assert cam.closed
    image = frames[0].image
    assert image.shape == (240, 320, 3)
    assert image[..., 0].mean() > 150 and image[..., 2].mean() < 50  # red stays red: RGB kept
    assert source.settings["colour_gains"] == [1.9, 1.4]


def test_picamera_hang_is_a_source_failure_not_a_hang(fake_picamera2) -> None:  # type: ignore[no-untyped-def]
    source = PicameraSource(
        validate({"bundle": "b", "source": {"kind": "picamera"}}).source,  # type: ignore[arg-type]
        once=True,
    )
    source.open()
    fake_picamera2.instances[0].hang = True
    with pytest.raises(SourceError, match=r"no frame within 5\.0s"):
        next(iter(source.frames(threading.Event())))


def test_picamera_missing_names_the_install(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails
    with pytest.raises(SourceError, match="apt install python3-picamera2"):
        _source({"kind": "picamera"}).open()
