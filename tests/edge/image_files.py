"""Real image files for the source tests: huge flat PNGs written row by row, greyscale JPEGs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def flat_png(path: Path, width: int, height: int, rgb: tuple[int, int, int]) -> Path:
    """A valid PNG of one colour (1-bit palette), streamed: 30000x30000 is about 110 KB on disk
    and written without holding the image in memory, yet decodes to 2.7 GB of BGR pixels."""
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte 0, then every pixel = palette entry 0
    z = zlib.compressobj(9)
    parts = []
    block = row * 256
    full, rest = divmod(height, 256)
    for _ in range(full):
        parts.append(z.compress(block))
    parts.append(z.compress(row * rest))
    parts.append(z.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0)  # 1 bit, palette
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"PLTE", bytes(rgb))
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )
    return path


def grey_jpeg(path: Path, source: Path) -> Path:
    """A real smear frame converted to a one-channel greyscale JPEG."""
    grey = cv2.cvtColor(cv2.imread(str(source)), cv2.COLOR_BGR2GRAY)
    assert cv2.imwrite(str(path), grey)
    return path


def tiled_jpeg(path: Path, source: Path, width: int, height: int) -> Path:
    """A large colour JPEG of real smear content: `source` tiled to width x height."""
    tile = cv2.imread(str(source))
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
    assert cv2.imwrite(str(path), np.tile(tile, reps)[:height, :width])
    return path
