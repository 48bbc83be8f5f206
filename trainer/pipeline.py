"""The tf.data input pipeline: edge's preprocessing, caching, shuffling, augmentation, prefetch.

Each image goes through `edge.vision.preprocessing.preprocess` (the one implementation the device
runs too) inside ``tf.numpy_function``; the result is cached (in memory or in a file) so the
slow OpenCV steps run once per run, not once per epoch. Augmentation runs after the cache on
the 0..255 float tensors, so every epoch sees new variants.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.contracts import PreprocessSpec
from edge.vision import preprocess, read_image

# Above this, an in-memory cache of float32 inputs would crowd a workstation's RAM.
MEMORY_CACHE_LIMIT = 2 * 1024**3


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (seeds 000 and 004: flips, rotations, zooms)."""

    flip: bool = True
    rotation: float = 0.1  # Keras RandomRotation factor: a fraction of a full turn (0.1 = ±36°)
    zoom: float = 0.1  # RandomZoom height factor: ±10 %
    color_jitter: float = 0.0  # 0 = off; else brightness/contrast strength for stain robustness

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def enabled(self) -> bool:
        return self.flip or self.rotation > 0 or self.zoom > 0 or self.color_jitter > 0


def build_augmenter(config: AugmentConfig, seed: int) -> Any:
    """A keras.Sequential of random layers for 0..255 float images (identity at inference)."""
    import keras

    layers: list[Any] = []
    if config.flip:
        layers.append(keras.layers.RandomFlip("horizontal_and_vertical", seed=seed))
    if config.rotation > 0:
        # "reflect" fills the corners with smear texture instead of black wedges.
        layers.append(keras.layers.RandomRotation(config.rotation, "reflect", seed=seed + 1))
    if config.zoom > 0:
        layers.append(keras.layers.RandomZoom(config.zoom, fill_mode="reflect", seed=seed + 2))
    if config.color_jitter > 0:
        s = config.color_jitter
        layers.append(
            keras.layers.RandomColorJitter(
                value_range=(0, 255),
                brightness_factor=s,
                contrast_factor=s,
                saturation_factor=(0.5 - s / 2, 0.5 + s / 2),  # 0.5 leaves saturation as is
                hue_factor=s / 5,  # stains vary in hue far less than in strength
                seed=seed + 3,
            )
        )
    return keras.Sequential(layers, name="augmentation")


def load_preprocessed(path: str | bytes, spec: PreprocessSpec) -> np.ndarray:
    """Read one file and run edge's preprocessing on it: the model's float32 input."""
    name = path.decode() if isinstance(path, bytes) else path
    return preprocess(read_image(name), spec)


def cache_target(n_images: int, spec: PreprocessSpec, mode: str, cache_dir: Path) -> str | None:
    """tf.data cache argument: "" (memory), a file prefix, or None (no cache)."""
    if mode == "none":
        return None
    if mode == "auto":
        mode = "memory" if n_images * spec.height * spec.width * 12 < MEMORY_CACHE_LIMIT else "disk"
    if mode == "memory":
        return ""
    cache_dir.mkdir(parents=True, exist_ok=True)
    return str(cache_dir / "cache")


def make_dataset(
    paths: Sequence[str | Path],
    labels: Sequence[int],
    spec: PreprocessSpec,
    batch_size: int,
    training: bool,
    seed: int = 0,
    augment: AugmentConfig | None = None,
    cache: str | None = "",
) -> Any:
    """A batched tf.data.Dataset of (image float32 HxWx3 in 0..255, int label)."""
    import tensorflow as tf

    def load(path: Any) -> Any:
        image = tf.numpy_function(lambda p: load_preprocessed(p, spec), [path], tf.float32)
        image.set_shape((spec.height, spec.width, 3))
        return image

    def load_pair(path: Any, label: Any) -> Any:
        return load(path), label

    ds = tf.data.Dataset.from_tensor_slices(
        ([str(p) for p in paths], np.asarray(labels, dtype=np.int32))
    )
    ds = ds.map(load_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache is not None:
        ds = ds.cache(cache)
    if training:
        ds = ds.shuffle(max(1, len(paths)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and augment is not None and augment.enabled:
        augmenter = build_augmenter(augment, seed)

        def augment_batch(images: Any, batch_labels: Any) -> Any:
            out = augmenter(images, training=True)
            return tf.clip_by_value(out, 0.0, 255.0), batch_labels

        ds = ds.map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Files are listed up front, so multi-worker training shards by element, not by file.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def class_weights(train_labels: Sequence[int], n_classes: int) -> dict[int, float]:
    """Inverse-frequency weights n / (K n_c), mean 1 over the training images."""
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=n_classes)
    n = counts.sum()
    return {c: float(n / (n_classes * counts[c])) if counts[c] else 0.0 for c in range(n_classes)}


def predict(model: Any, paths: Sequence[str | Path], spec: PreprocessSpec, batch_size: int) -> Any:
    """Class probabilities (N x K numpy) for image files, preprocessed as in training."""
    ds = make_dataset(paths, [0] * len(paths), spec, batch_size, training=False, cache=None)
    images = ds.map(lambda image, _label: image)
    return np.asarray(model.predict(images, verbose=1 if sys.stdout.isatty() else 0))
