"""Trainer test helpers: real BCCD crops written out under each layout's file names."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.vision.image_io import list_images, read_image


def write_image(path: Path, rgb: np.ndarray, quality: int = 95) -> Path:
    """Encode a real RGB image in the format the file name asks for (.jpg, .png, .bmp)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() == ".jpg" else []
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    return path


def shifted(rgb: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The same field moved by (dx, dy) pixels, as a second photograph of it would be."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(rgb, m, (rgb.shape[1], rgb.shape[0]), borderMode=cv2.BORDER_REFLECT)


def reencoded(rgb: np.ndarray, quality: int = 70) -> np.ndarray:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="session")
def wbc_crops(cells_dir: Path) -> list[np.ndarray]:
    """12 real white-cell crops, each from a different BCCD field."""
    return [read_image(p) for p in list_images(cells_dir / "WBC")]


@pytest.fixture(scope="session")
def rbc_crops(cells_dir: Path) -> list[np.ndarray]:
    """12 real red-cell crops."""
    return [read_image(p) for p in list_images(cells_dir / "RBC")]
