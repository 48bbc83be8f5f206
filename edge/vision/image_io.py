"""Reading images from disk or bytes as RGB uint8, with errors that name the file.

Before anything is decoded, the file must be a regular file (a FIFO or a device is never read
from: it would block or never end), within ``max_bytes``, and its header's width x height within
``max_pixels``: a small file can decode to gigabytes (a 2.6 MB PNG of 30000x30000 pixels takes
5.4 GB). File names in messages are escaped (`edge.vision.file_names.printable_name`).
"""

from __future__ import annotations

import io
import os
import stat
import threading
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from edge.errors import BlastscopeError
from edge.vision.file_names import printable_name

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

# A microscope frame above this is a mistake (or an attack), not an image.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
# 40 megapixels: above a 2x2 tile of a 20 MP slide-scanner field; decoded RGB is 120 MB.
MAX_IMAGE_PIXELS = 40_000_000

# Image.MAX_IMAGE_PIXELS is Pillow's process-wide bomb check: it is switched off only while
# this module reads a header (our own limit applies), under this lock.
_PILLOW_LIMIT_LOCK = threading.Lock()


class ImageReadError(BlastscopeError):
    """An image that is missing, empty, too large, truncated or not decodable."""


class IncompleteImageError(ImageReadError):
    """Empty, truncated or undecodable: possibly still being written (a watcher retries it)."""


def decode_image(
    data: bytes,
    name: str = "<bytes>",
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """Decode encoded image bytes into an HxWx3 RGB uint8 array (alpha dropped, grey expanded)."""
    if not data:
        raise IncompleteImageError(
            f"{name}: the file is empty (0 bytes); expected a JPEG/PNG/BMP image"
        )
    if len(data) > max_bytes:
        raise ImageReadError(_over_bytes(name, len(data), max_bytes))
    if _looks_truncated(data):
        raise IncompleteImageError(f"{name}: the JPEG is truncated (no end-of-image marker)")
    width, height = image_size(data, name)
    if width * height > max_pixels:
        raise ImageReadError(
            f"{name}: {width}x{height} pixels ({width * height}) is over the {max_pixels}-pixel "
            "limit; downscale the image or raise source.max_image_pixels in the daemon's config"
        )
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise IncompleteImageError(_undecodable(name))
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def image_size(data: bytes, name: str = "<bytes>") -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels (Pillow, lazily)."""
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.size
        except Exception:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
            raise IncompleteImageError(_undecodable(name)) from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def read_image(
    path: str | Path,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
    name: str | None = None,
) -> np.ndarray:
    """Read an image file as HxWx3 RGB uint8; raise ImageReadError naming the file otherwise.

    `name` is how messages show the file (default: the path, escaped).
    """
    shown = name if name is not None else printable_name(path)
    data = _read_regular_file(Path(path), max_bytes, shown)
    return decode_image(data, name=shown, max_bytes=max_bytes, max_pixels=max_pixels)


def is_greyscale(rgb: np.ndarray, samples: int = 4096) -> bool:
    """Whether an HxWx3 image's channels are equal, judged on about `samples` strided pixels.

    A grey JPEG or PNG decodes to three equal channels (OpenCV expands it); a stained smear's
    channels differ by tens of levels almost everywhere, so a sparse grid decides it cheaply.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        return True
    step = max(1, int((rgb.shape[0] * rgb.shape[1] / samples) ** 0.5))
    grid = rgb[::step, ::step]
    return bool(
        np.array_equal(grid[..., 0], grid[..., 1]) and np.array_equal(grid[..., 1], grid[..., 2])
    )


def file_kind(mode: int) -> str:
    """What a stat mode is, in words: "a regular file", "a FIFO (named pipe)", ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def _read_regular_file(path: Path, max_bytes: int, shown: str) -> bytes:
    # O_NONBLOCK: opening a FIFO to look at it must not wait for a writer; fstat on the open
    # descriptor then decides, so a file swapped for a FIFO or device after a listing is safe.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImageReadError(f"{shown}: no such file") from None
    except OSError as exc:
        raise ImageReadError(f"{shown}: cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageReadError(
                f"{shown}: {file_kind(st.st_mode)}, not a regular file; it is not read"
            )
        if st.st_size > max_bytes:
            raise ImageReadError(_over_bytes(shown, st.st_size, max_bytes))
        try:
            data = f.read(max_bytes + 1)  # bounded even if the file grows while read
        except OSError as exc:
            raise ImageReadError(f"{shown}: cannot be read ({exc.strerror})") from None
    if len(data) > max_bytes:
        raise ImageReadError(_over_bytes(shown, len(data), max_bytes))
    return data


def _over_bytes(name: str, size: int, max_bytes: int) -> str:
    return (
        f"{name}: {size} bytes is over the {max_bytes}-byte limit; downscale the image or "
        "raise source.max_image_bytes in the daemon's config"
    )


def _undecodable(name: str) -> str:
    return f"{name}: not a decodable image (corrupt or unsupported format)"


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
