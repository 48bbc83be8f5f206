"""Reading images from disk or bytes as RGB uint8, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.errors import BlastscopeError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

# A microscope frame above this is a mistake (or an attack), not an image.
MAX_IMAGE_BYTES = 64 * 1024 * 1024


class ImageReadError(BlastscopeError):
    """An image that is missing, empty, too large, truncated or not decodable."""


def decode_image(
    data: bytes, name: str = "<bytes>", max_bytes: int = MAX_IMAGE_BYTES
) -> np.ndarray:
    """Decode encoded image bytes into an HxWx3 RGB uint8 array (alpha dropped, grey expanded)."""
    if not data:
        raise ImageReadError(f"{name}: the file is empty (0 bytes); expected a JPEG/PNG/BMP image")
    if len(data) > max_bytes:
        raise ImageReadError(
            f"{name}: {len(data)} bytes is over the {max_bytes}-byte limit; "
            "downscale the image or raise the limit"
        )
    if _looks_truncated(data):
        raise ImageReadError(f"{name}: the JPEG is truncated (no end-of-image marker)")
    buf = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageReadError(f"{name}: not a decodable image (corrupt or unsupported format)")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def read_image(path: str | Path, max_bytes: int = MAX_IMAGE_BYTES) -> np.ndarray:
    """Read an image file as HxWx3 RGB uint8; raise ImageReadError naming the file otherwise."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise ImageReadError(f"{p}: no such file") from None
    except OSError as exc:
        raise ImageReadError(f"{p}: cannot be read ({exc.strerror})") from None
    if size > max_bytes:
        raise ImageReadError(
            f"{p}: {size} bytes is over the {max_bytes}-byte limit; downscale it or raise the limit"
        )
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{p}: cannot be read ({exc.strerror})") from None
    return decode_image(data, name=str(p), max_bytes=max_bytes)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside a folder, sorted by name (hidden files skipped)."""
    root = Path(folder)
    return sorted(
        p
        for p in root.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def list_subfolders(folder: str | Path) -> list[Path]:
    """Folders directly inside a folder (class folders, folds), sorted by name; hidden skipped."""
    root = Path(folder)
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _looks_truncated(data: bytes) -> bool:
    # OpenCV decodes a truncated JPEG with a grey bottom and only a warning; a JPEG must end
    # with the EOI marker (some writers add a few padding bytes after it).
    return data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]
