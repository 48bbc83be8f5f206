"""`trainer fit`: split, train in two phases with DWELL, evaluate on the test split, save the run.

Every epoch is checkpointed (model with optimizer, DWELL's state, then progress.json), so
``--resume`` continues an interrupted run where it stopped; a finished run keeps only its
outputs (trainer.run_files describes them).
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.contracts import PreprocessSpec
from trainer.config import CHECKPOINT_DIR, RUN_CONFIG, FitConfig, FitError
from trainer.layouts import discover
from trainer.metrics import classification_report, headline
from trainer.phases import train_phases
from trainer.pipeline import cache_target, class_weights, make_dataset, predict
from trainer.prepare import Prepared, from_split_file, prepare
from trainer.report import build_report, split_description, write_report
from trainer.run_files import (
    HISTORY_FILE,
    MODEL_FILE,
    SPLIT_FILE,
    TRAINING_FILE,
    read_json,
    write_json,
    write_split,
)

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    run_dir: Path
    report: dict[str, Any]
    training: dict[str, Any]


def _check_fresh(out: Path) -> None:
    for marker in (TRAINING_FILE, f"{CHECKPOINT_DIR}/progress.json", RUN_CONFIG):
        if (out / marker).exists():
            raise FitError(
                f"--out {out} already holds a run ({marker}); pass --resume to continue it, "
                "or choose a new --out"
            )


def _prepare_data(cfg: FitConfig, out: Path, resume: bool, progress: bool) -> Prepared:
    dataset = discover(cfg.data, cfg.layout, cfg.task)
    if resume:
        return from_split_file(dataset, out / SPLIT_FILE, same_data=True)
    if cfg.split_file:
        return from_split_file(dataset, Path(cfg.split_file))
    return prepare(dataset, cfg.split, cfg.fractions, cfg.seed, cfg.grouping, progress)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("tensorflow", "keras", "blastscope"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def _split_data(prepared: Prepared) -> dict[str, tuple[list[Path], list[int]]]:
    """Per split: absolute image paths and class indices, in split.json order."""
    index = {label: i for i, label in enumerate(prepared.dataset.labels)}
    root = prepared.dataset.root
    return {
        s: (
            [root / r.path for r in prepared.records if r.split == s],
            [index[r.label] for r in prepared.records if r.split == s],
        )
        for s in ("train", "val", "test")
    }


def _datasets(
    cfg: FitConfig,
    spec: PreprocessSpec,
    split_data: dict[str, tuple[list[Path], list[int]]],
    cache_root: Path,
) -> tuple[Any, Any]:
    """The training (shuffled, augmented) and validation tf.data pipelines."""
    shutil.rmtree(cache_root, ignore_errors=True)  # an interrupted run leaves tf.data locks
    (train_paths, train_y), (val_paths, val_y) = split_data["train"], split_data["val"]
    train_ds = make_dataset(
        train_paths,
        train_y,
        spec,
        cfg.batch_size,
        training=True,
        seed=cfg.seed,
        augment=cfg.augment,
        cache=cache_target(len(train_paths), spec, cfg.cache, cache_root / "train"),
    )
    val_ds = make_dataset(
        val_paths,
        val_y,
        spec,
        cfg.batch_size,
        training=False,
        cache=cache_target(len(val_paths), spec, cfg.cache, cache_root / "val"),
    )
    return train_ds, val_ds


def run_fit(
    cfg: FitConfig,
    resume: bool = False,
    extra_callbacks: Sequence[Any] = (),
    progress: bool = True,
) -> FitResult:
    """Train and evaluate as ``cfg`` says; write the run directory ``cfg.out``."""
    out = Path(cfg.out)
    if resume:
        if (out / TRAINING_FILE).is_file():
            raise FitError(f"--resume: the run in {out} is complete (training.json exists)")
        if not (out / RUN_CONFIG).is_file():
            raise FitError(f"--resume: {out / RUN_CONFIG} not found; nothing to resume there")
        cfg = FitConfig.from_dict(read_json(out / RUN_CONFIG, "run configuration"))
    else:
        _check_fresh(out)
        if cfg.data:  # absolute, so --resume works from any directory
            cfg.data = str(Path(cfg.data).resolve())
    cfg.check()
    cfg.phases()  # refuses a run with nothing to train before any work

    from trainer.models import check_weights, create_model, model_info

    if not resume:  # a resumed run loads its checkpoint, not --weights
        check_weights(cfg.model, cfg.weights)  # before minutes of reading images
    size = cfg.image_size or model_info(cfg.model).native_size
    spec = PreprocessSpec(**{**cfg.preprocess, "height": size, "width": size, "scaling": "none"})
    # Data problems surface before TensorFlow starts (numpy and OpenCV only up to here).
    prepared = _prepare_data(cfg, out, resume, progress)

    import keras

    from trainer.distribute import make_strategy, worker_id

    strategy = make_strategy(cfg.strategy)  # before any other TensorFlow work
    chief, task_id = worker_id(strategy)
    # Non-chief workers of a multi-worker run save to a private folder (all must save).
    work = out if chief else out / f".worker-{task_id}"
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        import tensorflow as tf

        # Same seed, same data -> the same run, bit for bit (at some speed cost on GPUs).
        tf.config.experimental.enable_op_determinism()
    dataset = prepared.dataset
    labels = dataset.labels
    ckpt = work / CHECKPOINT_DIR
    history_path = work / HISTORY_FILE
    # Interrupted before the first checkpoint: resuming starts training over (same split).
    has_progress = resume and (ckpt / "progress.json").is_file()
    state = read_json(ckpt / "progress.json", "progress") if has_progress else None
    with strategy.scope():  # first, so a model that cannot be built leaves no run behind
        if state is not None:
            model = keras.models.load_model(ckpt / "last.keras")
            base_name = state["base"]
        else:
            built = create_model(cfg.model, len(labels), size, cfg.weights, cfg.dropout)
            model, base_name = built.model, built.base.name
    work.mkdir(parents=True, exist_ok=True)
    if state is None:
        history_path.unlink(missing_ok=True)
    if not resume and chief:
        write_split(out / SPLIT_FILE, dataset.root, labels, prepared.records, prepared.meta)
        write_json(out / RUN_CONFIG, cfg.to_dict())

    cache_root = work / "cache"
    split_data = _split_data(prepared)
    train_ds, val_ds = _datasets(cfg, spec, split_data, cache_root)
    train_y = split_data["train"][1]
    weights = class_weights(train_y, len(labels)) if cfg.balance == "class-weights" else None
    phase_log = train_phases(
        cfg,
        model,
        base_name,
        strategy,
        state,
        ckpt,
        history_path,
        (train_ds, val_ds),
        weights,
        extra_callbacks,
    )

    test_paths, test_y = split_data["test"]
    proba = predict(model, test_paths, spec, cfg.batch_size)
    metrics = classification_report(
        test_y, proba.argmax(axis=1), labels, proba, n_boot=cfg.n_boot, seed=cfg.seed
    )
    meta = prepared.meta
    warnings = []
    if meta.get("strategy") == "random":
        warnings.append(
            "image-level random split: images of one group are in train and test, so these "
            "numbers are optimistic (as in the papers)"
        )
    report = build_report(
        metrics,
        {
            "model_name": cfg.model,
            "data": str(dataset.root),
            "evaluated_on": "the test split",
            "split_strategy": split_description(meta),
            "split": {k: meta.get(k) for k in ("strategy", "group_source", "seed", "fractions")}
            | {"groups_crossing_splits": meta.get("groups_crossing_splits")},
            "split_counts": meta.get("counts"),
            "skipped_images": len(meta.get("skipped", [])),
            "warnings": warnings,
        },
    )
    training = {
        "schema": 1,
        "labels": labels,
        "preprocessing": spec.to_dict(),
        "model_name": cfg.model,
        "image_size": size,
        "task": dataset.task,
        "layout": dataset.layout,
        "data": str(dataset.root),
        "data_fingerprint": meta["data_fingerprint"],
        "split_file": SPLIT_FILE,
        "weights": cfg.weights,
        "metrics": headline(report),
        "split": report["split"],
        "training": {
            "phases": phase_log,
            "lr_schedule": cfg.lr_schedule,
            "dwell": asdict(cfg.dwell) if cfg.lr_schedule == "dwell" else None,
            "batch_size": cfg.batch_size,
            "balance": cfg.balance,
            "class_weights": {labels[c]: w for c, w in weights.items()} if weights else None,
            "augmentation": cfg.augment.to_dict(),
            "fine_tune_fraction": cfg.fine_tune_fraction,
            "dropout": cfg.dropout,
            "seed": cfg.seed,
            "strategy": cfg.strategy,
            "replicas": int(strategy.num_replicas_in_sync),
        },
        "versions": _versions(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if chief:
        _write_outputs(out, model, report, training, history_path)
    # Only an unfinished run needs its cache and checkpoint (a B3 checkpoint is ~150 MB).
    shutil.rmtree(cache_root, ignore_errors=True)
    shutil.rmtree(ckpt, ignore_errors=True)
    return FitResult(out, report, training)


def _write_outputs(
    out: Path, model: Any, report: dict[str, Any], training: dict[str, Any], history: Path
) -> None:
    from trainer.callbacks import read_history
    from trainer.plots import plot_confusion, plot_history

    write_report(out, report)
    plot_confusion(np.array(report["confusion_matrix"]), report["labels"], out / "confusion.png")
    rows = read_history(history)
    if rows:
        plot_history(
            rows, out / "curves.png", title=f"{training['model_name']} ({training['task']})"
        )
    model.save(out / MODEL_FILE)
    write_json(out / TRAINING_FILE, training)  # last: its presence marks a complete run
