"""A really trained tiny classifier (WBC vs RBC, 32x32) and bundles exported from it, once."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.contracts.preprocess_spec import PreprocessSpec
from edge.vision.image_io import list_images, read_image
from edge.vision.preprocessing import preprocess

SPEC = PreprocessSpec(height=32, width=32)
LABELS = ["RBC", "WBC"]


def _split_of(index: int) -> str:
    return "train" if index < 8 else "val" if index < 10 else "test"


def write_run(run_dir: Path, cells_dir: Path) -> list[tuple[Path, str, str]]:
    """split.json and training.json as the trainer writes them; returns (path, label, split)."""
    from trainer.run_files import write_split
    from trainer.splits import SplitRecord

    files = [
        (p, label, _split_of(i))
        for label in LABELS
        for i, p in enumerate(list_images(cells_dir / label))
    ]
    records = [SplitRecord(f"{label}/{p.name}", label, p.stem[:15], s) for p, label, s in files]
    write_split(run_dir / "split.json", cells_dir, LABELS, records, {"strategy": "test"})
    training = {
        "labels": LABELS,
        "preprocessing": SPEC.to_dict(),
        "model_name": "tiny",
        "image_size": 32,
        "task": "bccd-wbc-rbc",
        "data": str(cells_dir),
        "data_fingerprint": "sha256:test-fingerprint",
        "split_file": "split.json",
        "weights": "none",
        "metrics": {"test": {"accuracy": 1.0}},
    }
    (run_dir / "training.json").write_text(json.dumps(training))
    return files


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, cells_dir: Path) -> Path:
    """A trainer-style run dir: model.keras trained for real on the TRAIN split, json files."""
    import keras

    from trainer.models import create_model

    run_dir = tmp_path_factory.mktemp("run")
    files = write_run(run_dir, cells_dir)
    train = [(p, label) for p, label, s in files if s == "train"]
    x = np.stack([preprocess(read_image(p), SPEC) for p, _ in train])
    y = np.array([LABELS.index(label) for _, label in train])
    keras.utils.set_random_seed(0)
    built = create_model("tiny", len(LABELS), image_size=32)
    # 16 images give only ~4 steps an epoch: a faster BatchNorm average lets the moving
    # statistics catch up, so inference-mode accuracy matches training accuracy.
    for layer in built.base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.8
    built.model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy"
    )
    built.model.fit(x, y, epochs=20, batch_size=4, verbose=0, shuffle=True)
    built.model.save(run_dir / "model.keras")
    return run_dir


@pytest.fixture(scope="session")
def real_images(cells_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """All 24 real crops preprocessed (x) and their class indices (y)."""
    pairs = [(p, LABELS.index(label)) for label in LABELS for p in list_images(cells_dir / label)]
    x = np.stack([preprocess(read_image(p), SPEC) for p, _ in pairs])
    return x, np.array([c for _, c in pairs])


@pytest.fixture(scope="session")
def keras_probs(trained_run: Path, real_images: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    from converters.tf_env import keras_predict, load_keras_model

    return keras_predict(load_keras_model(trained_run / "model.keras"), real_images[0])


@pytest.fixture(scope="session")
def black_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class folders of all-black images: the classic wrong calibration set."""
    root = tmp_path_factory.mktemp("black")
    for label in LABELS:
        (root / label).mkdir()
        for i in range(4):
            cv2.imwrite(str(root / label / f"{i}.png"), np.zeros((64, 64, 3), np.uint8))
    return root


VARIANTS = {
    "float32": ("float32", "classifier"),
    "float16": ("float16", "classifier"),
    "dynamic": ("dynamic", "classifier"),
    "int8": ("int8", "classifier"),
    "int8-finetunable": ("int8", "backbone_head"),
}


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory, trained_run: Path) -> dict[str, Path]:
    """Every export path, converted for real from the trained model (calibration: TRAIN split)."""
    from converters.export import ExportOptions, export

    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for key, (quant, form) in VARIANTS.items():
        export(
            ExportOptions(
                model=trained_run / "model.keras",
                out=root / key,
                quantization=quant,
                form=form,  # type: ignore[arg-type]
            )
        )
        out[key] = root / key
    return out


@pytest.fixture(scope="session")
def black_int8(
    tmp_path_factory: pytest.TempPathFactory, trained_run: Path, black_dir: Path
) -> Path:
    """A deliberately broken int8 bundle: calibrated on black images."""
    from converters.export import ExportOptions, export

    out = tmp_path_factory.mktemp("broken") / "int8-black"
    export(
        ExportOptions(
            model=trained_run / "model.keras", out=out, quantization="int8", calibration=black_dir
        )
    )
    return out
