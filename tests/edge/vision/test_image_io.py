"""Bad image files get one clear error naming the file; good ones decode as RGB; files that
are not regular, or whose header promises too many pixels, are never decoded."""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from edge.vision.image_io import ImageReadError, decode_image, is_greyscale, read_image
from tests.edge.image_files import flat_png


def test_reads_real_jpeg_as_rgb(field_paths) -> None:  # type: ignore[no-untyped-def]
    img = read_image(field_paths[0])
    assert img.shape == (480, 640, 3) and img.dtype == np.uint8
    bgr = cv2.imread(str(field_paths[0]))
    assert np.array_equal(img[:, :, ::-1], bgr)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda data: b"", "the file is empty"),
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: b"GIF89a" + bytes(range(256)) * 4, "not a decodable image"),
        (lambda data: b"\xff\xd8" + b"\x00" * 500 + b"\xff\xd9", "not a decodable image"),
    ],
)
def test_bad_files_name_the_file(tmp_path, field_paths, make, message) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "frame.jpg"
    bad.write_bytes(make(field_paths[0].read_bytes()))
    with pytest.raises(ImageReadError, match=message) as info:
        read_image(bad)
    assert str(bad) in str(info.value)


def test_missing_and_oversized(tmp_path, field_paths) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="over the 1000-byte limit"):
        read_image(field_paths[0], max_bytes=1000)
    with pytest.raises(ImageReadError, match="over the 10-byte limit"):
        decode_image(b"x" * 11, max_bytes=10)


def test_pixel_limit_is_read_from_the_header_before_decoding(tmp_path: Path) -> None:
    small = flat_png(tmp_path / "small.png", 100, 100, (10, 200, 30))
    assert read_image(small, max_pixels=10_000)[0, 0].tolist() == [10, 200, 30]
    with pytest.raises(ImageReadError, match=r"100x100 pixels \(10000\) is over the 9999-pixel"):
        read_image(small, max_pixels=9_999)
    bomb = flat_png(tmp_path / "bomb.png", 30000, 30000, (200, 40, 120))  # 110 KB on disk
    pillow_limit = Image.MAX_IMAGE_PIXELS
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageReadError) as info:
        read_image(bomb)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert str(info.value) == (
        f"{bomb}: 30000x30000 pixels (900000000) is over the 40000000-pixel limit; downscale "
        "the image or raise source.max_image_pixels in the daemon's config"
    )
    assert grown_kb < 200_000, f"the peak grew by {grown_kb} kB: the pixels were decoded"
    assert pillow_limit == Image.MAX_IMAGE_PIXELS  # Pillow's own check is back for others


def test_fifos_and_devices_are_refused_without_blocking_or_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.jpg"
    os.symlink("/dev/zero", zero)
    errors: dict[str, str] = {}

    def read_all() -> None:
        for p in (fifo, zero):
            with pytest.raises(ImageReadError) as info:
                read_image(p)
            errors[p.name] = str(info.value)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # blocked opening the FIFO: let it go, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("read_image blocked on a FIFO")
    assert errors == {
        "pipe.jpg": f"{fifo}: a FIFO (named pipe), not a regular file; it is not read",
        "zero.jpg": f"{zero}: a character device, not a regular file; it is not read",
    }


def test_greyscale_check_on_decoded_frames(field_paths) -> None:  # type: ignore[no-untyped-def]
    colour = read_image(field_paths[0])
    assert not is_greyscale(colour)
    grey = np.repeat(colour[..., 1:2], 3, axis=2)
    assert is_greyscale(grey)
    grey[::2, ::2, 0] += 1  # a colour image whose colour is everywhere (a strided look sees it)
    assert not is_greyscale(grey)
