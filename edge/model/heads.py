"""Heads: the float post-processing after the LiteRT graph (a dense layer on embeddings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.contracts.manifest import BundleError, sha256_file


def read_head(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A head file's (kernel (D, N), bias (N,)) as float32."""
    try:
        with np.load(path) as data:
            kernel = np.asarray(data["kernel"], dtype=np.float32)
            bias = np.asarray(data["bias"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(
            f"{path}: not a head file with 'kernel' and 'bias' arrays ({exc})"
        ) from None
    if kernel.ndim != 2:
        raise BundleError(f"{path}: head kernel has shape {kernel.shape}; expected (D, N)")
    return kernel, bias


def write_head(path: Path, kernel: np.ndarray, bias: np.ndarray) -> str:
    """Write a head file; return its sha256."""
    with path.open("wb") as f:
        np.savez(f, kernel=np.asarray(kernel, np.float32), bias=np.asarray(bias, np.float32))
    return sha256_file(path)
