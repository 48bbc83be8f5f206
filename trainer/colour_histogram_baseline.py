"""The stain-colour floor: a linear classifier on colour histograms alone.

Taleqani's classes differ in stain colour (data/README.md), so a model must clearly beat
what colour alone achieves before anyone may say it learned cells. Features: 16-bin
histograms of R, G, B and hue (64 values, each histogram summing to 1) of the whole image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from edge.contracts import ColourNormalisation
from edge.model import LinearHead, balanced_class_weights, fit_softmax_regression
from edge.vision import normalise_colour, read_image

BINS = 16


def colour_histogram(image: np.ndarray) -> np.ndarray:
    """64 colour features of an RGB uint8 image: R, G, B and hue histograms, 16 bins each."""
    feats = [np.bincount(image[:, :, c].ravel() // (256 // BINS), minlength=BINS) for c in range(3)]
    hue = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[:, :, 0]  # OpenCV hue is 0..179
    feats.append(np.bincount((hue.ravel().astype(np.int64) * BINS) // 180, minlength=BINS))
    return np.concatenate([f / f.sum() for f in feats]).astype(np.float32)


def colour_features(
    paths: Sequence[Path], colour_normalisation: ColourNormalisation = "none"
) -> np.ndarray:
    """Colour histograms of image files, optionally after edge's colour normalisation."""
    return np.stack(
        [colour_histogram(normalise_colour(read_image(p), colour_normalisation)) for p in paths]
    )


def fit_colour_baseline(x: np.ndarray, y: np.ndarray, num_classes: int) -> LinearHead:
    """Class-balanced softmax regression on colour histograms."""
    return fit_softmax_regression(
        x,
        y,
        num_classes,
        l2=1e-3,
        iterations=800,
        class_weight=balanced_class_weights(y, num_classes),
    )
