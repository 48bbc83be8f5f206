"""`trainer evaluate`: the test report of a trained model on any labelled folder (cross-dataset)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trainer.errors import DataError
from trainer.layouts import discover
from trainer.metrics import classification_report
from trainer.pipeline import predict
from trainer.report import build_report, write_report
from trainer.run_files import (
    MODEL_FILE,
    data_fingerprint,
    preprocess_spec,
    read_split_file,
    read_training_json,
)
from trainer.scan import scan

log = logging.getLogger(__name__)

SUBSETS = ("train", "val", "test", "all")


def _items_from_split(
    split_file: Path, data: str | None, subset: str
) -> tuple[list[tuple[Path, str]], str, str]:
    sf = read_split_file(split_file)
    root = Path(data).resolve() if data else sf.data_root
    records = [r for r in sf.records if subset == "all" or r.split == subset]
    missing = [r.path for r in records if not (root / r.path).is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} file(s) of {split_file} are not under {root}, e.g. {missing[0]}; "
            "pass --data with the folder the split was made from"
        )
    what = f"the {subset} split of {split_file}" if subset != "all" else f"all of {split_file}"
    return [(root / r.path, r.label) for r in records], what, str(root)


def run_evaluate(
    model_path: str | Path,
    data: str | None,
    out: str | Path,
    layout: str = "auto",
    task: str = "auto",
    batch_size: int = 32,
    split_file: str | Path | None = None,
    subset: str = "test",
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model_path`` (a model.keras or its run directory) and write the report."""
    model_file = Path(model_path)
    if model_file.is_dir():
        model_file = model_file / MODEL_FILE
    if not model_file.is_file():
        raise DataError(f"{model_file}: no such model; pass a model.keras or its run directory")
    training = read_training_json(model_file)
    labels: list[str] = training["labels"]
    spec = preprocess_spec(training)
    warnings: list[str] = []
    if split_file is not None:
        if subset not in SUBSETS:
            raise DataError(f"--subset {subset!r}: expected one of {', '.join(SUBSETS)}")
        items, what, root = _items_from_split(Path(split_file), data, subset)
        skipped = 0
    else:
        if data is None:
            raise DataError("pass --data DIR (a labelled folder) or --split-file SPLIT_JSON")
        dataset = discover(data, layout, task)
        result = scan(dataset, progress=progress)
        items = [(dataset.root / s.rel, s.label) for s in result.samples]
        what, root, skipped = "every readable image", str(dataset.root), len(result.skipped)
        fp = data_fingerprint(dataset.root, [s.rel for s in dataset.samples])
        if fp == training["data_fingerprint"]:
            warnings.append(
                "this is the data the model was trained on, training images included; pass "
                "--split-file RUN_DIR/split.json --subset test for its held-out test split"
            )
    unknown = sorted({label for _, label in items} - set(labels))
    if unknown:
        raise DataError(
            f"class(es) {unknown} of the data are not among the model's labels {labels}; "
            "pick --task so the data's classes match the model's (e.g. --task binary)"
        )
    if not items:
        raise DataError(f"no images to evaluate in {what}")
    absent = [label for label in labels if label not in {lab for _, lab in items}]
    if absent:
        warnings.append(
            f"model classes {absent} have no image here: their recall is 0/0 (reported as 0) "
            "and pulls the averages down"
        )

    import keras

    model = keras.models.load_model(model_file)
    index = {label: i for i, label in enumerate(labels)}
    y = [index[label] for _, label in items]
    proba = predict(model, [p for p, _ in items], spec, batch_size)
    metrics = classification_report(y, proba.argmax(axis=1), labels, proba, n_boot, seed)
    report = build_report(
        metrics,
        {
            "model_name": training["model_name"],
            "model_file": str(model_file),
            "data": root,
            "evaluated_on": what,
            "split_strategy": "none: a whole folder, unseen in training"
            if split_file is None
            else f"as recorded in {split_file}",
            "skipped_images": skipped,
            "warnings": warnings,
        },
    )
    out = Path(out)
    write_report(out, report)
    from trainer.plots import plot_confusion

    plot_confusion(metrics["confusion_matrix"], labels, out / "confusion.png", f"{what}")
    for w in warnings:
        log.warning("%s", w)
    return report
