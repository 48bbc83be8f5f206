"""Bad image files get one clear error naming the file; good ones decode as RGB."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.image_io import ImageReadError, decode_image, read_image


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
