"""The tf.data pipeline: edge's preprocessing (not a TF copy), caching, augmentation, balancing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge.vision.preprocessing
from edge.contracts.preprocess_spec import PreprocessSpec
from edge.vision.image_io import list_images, read_image
from trainer import pipeline
from trainer.pipeline import AugmentConfig, build_augmenter, cache_target, class_weights

SPEC = PreprocessSpec(height=32, width=32, contrast="hist_eq")


@pytest.fixture
def files(cells_dir: Path) -> tuple[list[Path], list[int]]:
    wbc, rbc = list_images(cells_dir / "WBC")[:3], list_images(cells_dir / "RBC")[:3]
    return [*wbc, *rbc], [1, 1, 1, 0, 0, 0]


def _epoch(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def test_images_are_edges_preprocessing_bit_for_bit(
    files: tuple[list[Path], list[int]], tmp_path: Path
) -> None:
    assert pipeline.preprocess is edge.vision.preprocessing.preprocess  # the one implementation
    paths, labels = files
    want = np.stack([edge.vision.preprocessing.preprocess(read_image(p), SPEC) for p in paths])
    for cache in ("", str(tmp_path / "cache"), None):
        ds = pipeline.make_dataset(paths, labels, SPEC, 4, training=False, cache=cache)
        assert "Prefetch" in type(ds).__name__
        x, y = _epoch(ds)
        np.testing.assert_array_equal(x, want)  # validation/test: no augmentation, same order
        assert y.tolist() == labels and x.dtype == np.float32
    assert list(tmp_path.glob("cache*")), "the disk cache was not written"


@pytest.mark.parametrize(("cache", "reads"), [("", 1), (None, 2)])
def test_the_cache_runs_preprocessing_once_per_image(
    files: tuple[list[Path], list[int]],
    monkeypatch: pytest.MonkeyPatch,
    cache: str | None,
    reads: int,
) -> None:
    calls: list[str] = []
    real = pipeline.load_preprocessed

    def counting(path: Any, spec: PreprocessSpec) -> np.ndarray:
        calls.append(path)
        return real(path, spec)

    monkeypatch.setattr(pipeline, "load_preprocessed", counting)
    paths, labels = files
    ds = pipeline.make_dataset(paths, labels, SPEC, 4, training=True, augment=None, cache=cache)
    first, second = _epoch(ds), _epoch(ds)
    assert len(calls) == reads * len(paths)
    assert sorted(first[1].tolist()) == sorted(second[1].tolist()) == sorted(labels)


def test_training_batches_are_augmented_in_range(files: tuple[list[Path], list[int]]) -> None:
    paths, labels = files
    plain = np.stack([edge.vision.preprocessing.preprocess(read_image(p), SPEC) for p in paths])
    aug = AugmentConfig(flip=True, rotation=0.1, zoom=0.1, color_jitter=0.2)
    ds = pipeline.make_dataset(paths, labels, SPEC, 6, training=True, seed=1, augment=aug)
    x, y = _epoch(ds)
    assert x.shape == plain.shape and sorted(y.tolist()) == sorted(labels)
    assert x.min() >= 0.0 and x.max() <= 255.0
    # No augmented image equals any plain one (every epoch sees new variants).
    assert not any(np.array_equal(a, b) for a in x for b in plain)


def test_augmenter_has_the_seeds_layers_and_is_identity_at_inference() -> None:
    def kinds(cfg: AugmentConfig) -> list[str]:
        return [type(layer).__name__ for layer in build_augmenter(cfg, 0).layers]

    assert kinds(AugmentConfig()) == ["RandomFlip", "RandomRotation", "RandomZoom"]
    jitter = AugmentConfig(color_jitter=0.3)
    assert kinds(jitter)[-1] == "RandomColorJitter"
    assert kinds(AugmentConfig(flip=False, rotation=0, zoom=0)) == []
    assert not AugmentConfig(flip=False, rotation=0, zoom=0).enabled
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    out = np.asarray(build_augmenter(jitter, 0)(x, training=False))
    np.testing.assert_array_equal(out, x)


def test_class_weights_are_inverse_frequency_with_mean_one() -> None:
    w = class_weights([0, 0, 0, 1], 2)  # n / (K n_c): 4/(2*3) and 4/(2*1)
    assert w == pytest.approx({0: 2 / 3, 1: 2.0})
    counts = np.array([3, 1])
    assert float(sum(w[c] * counts[c] for c in w) / counts.sum()) == pytest.approx(1.0)
    assert class_weights([0, 0], 3) == {0: pytest.approx(1 / 3), 1: 0.0, 2: 0.0}  # 2/(3*2)


def test_cache_target_modes(tmp_path: Path) -> None:
    spec = PreprocessSpec(height=300, width=300)
    assert cache_target(100, spec, "none", tmp_path / "c") is None
    assert cache_target(100, spec, "memory", tmp_path / "c") == ""
    assert cache_target(100, spec, "auto", tmp_path / "c") == ""  # 100 x 300^2 x 12 B: small
    big = cache_target(10_000, spec, "auto", tmp_path / "c")  # ~10 GiB of float32: to disk
    assert big == str(tmp_path / "c" / "cache") and (tmp_path / "c").is_dir()
    assert cache_target(1, spec, "disk", tmp_path / "d") == str(tmp_path / "d" / "cache")
