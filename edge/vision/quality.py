"""Checks of a frame's optical quality that travel with its result as warnings."""

from __future__ import annotations

import numpy as np

from edge.vision.image_io import is_greyscale

GREYSCALE_WARNING = {
    "code": "channels_mismatch",
    "message": "greyscale frame; the model was trained on colour",
}


def channel_warnings(rgb: np.ndarray) -> tuple[dict[str, str], ...]:
    """A frame's warnings about its channels: every bundle is trained on colour (RGB) frames,
    and a greyscale one is classified with confident but meaningless scores."""
    return (dict(GREYSCALE_WARNING),) if is_greyscale(rgb) else ()
