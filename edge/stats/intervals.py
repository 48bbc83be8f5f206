"""95 % confidence intervals: Wilson for proportions, a stratified bootstrap for the rest.

A proportion (a recall, an accuracy, a slide's blast fraction) gets the Wilson score interval,
which stays inside [0, 1] and behaves at small n, unlike the normal approximation. Statistics
that are not simple proportions (DSC, weighted F1, class averages) get a seeded percentile
bootstrap over the test images, resampled within each true class.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson_interval(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when n is 0."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval: k={k} successes of n={n}: k must be within 0..n")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At k = 0 or k = n the exact bound is 0 or 1; pin it so rounding cannot exclude the estimate.
    lo = 0.0 if k <= 0 else max(0.0, centre - half)
    hi = 1.0 if k >= n else min(1.0, centre + half)
    return (lo, hi)


def bootstrap_cms(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, n_boot: int, seed: int
) -> np.ndarray:
    """Confusion matrices (n_boot, K, K) of resamples of the images, stratified by true class.

    Resampling within each true class keeps every class's support fixed, so no resample loses
    a class and turns its recall into 0/0. Same seed, same matrices.
    """
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    rng = np.random.default_rng(seed)
    parts = []
    for c in range(n_classes):
        members = np.flatnonzero(t == c)
        if members.size:
            parts.append(members[rng.integers(0, members.size, size=(n_boot, members.size))])
    if not parts:
        raise ValueError("bootstrap_cms needs at least one image")
    idx = np.concatenate(parts, axis=1)
    cells = t[idx] * n_classes + p[idx]
    # One bincount for all resamples: resample b's cells are offset by b * K * K.
    offsets = np.arange(n_boot)[:, None] * n_classes * n_classes
    flat = np.bincount((cells + offsets).ravel(), minlength=n_boot * n_classes * n_classes)
    return flat.reshape(n_boot, n_classes, n_classes)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap samples (2.5th, 97.5th at 95 %)."""
    tail = 50.0 * (1.0 - level)
    lo, hi = np.percentile(np.asarray(samples, float), [tail, 100.0 - tail])
    return (float(lo), float(hi))
