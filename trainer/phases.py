"""The two training phases: head on a frozen base, then fine-tuning of the base's top layers.

Phase ``head`` trains the head on a frozen base (seed 004); phase ``fine_tune`` unfreezes the
top fraction of the base's layers (all of them for a base with random weights) and trains on at
a lower learning rate. Changing ``trainable`` needs a recompile in Keras 3, so each phase is
its own compile + fit, with DWELL (or the fixed LR), the history file and a per-epoch
checkpoint as callbacks. A phase an interruption cut short continues from its checkpoint.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.config import FitConfig
from trainer.graph import leaf_layers

log = logging.getLogger(__name__)


def set_trainable(base: Any, phase: str, fraction: float, pretrained: bool) -> int:
    """Freeze for the head phase, or open the top ``fraction`` of layers; returns #trainable."""
    import keras

    if phase == "head":
        base.trainable = False
        return 0
    base.trainable = True
    leaves = [layer for layer in leaf_layers(base) if layer.weights]
    if pretrained:
        keep_frozen = len(leaves) - round(fraction * len(leaves))
        for layer in leaves[:keep_frozen]:
            layer.trainable = False
        # Pretrained BatchNorm statistics are worth more than a small batch's (Keras'
        # fine-tuning guide): frozen BN layers run in inference mode.
        for layer in leaves:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return sum(1 for layer in leaves if layer.trainable)


def compile_classifier(model: Any, lr: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def train_phases(
    cfg: FitConfig,
    model: Any,
    base_name: str,
    strategy: Any,
    state: dict[str, Any] | None,
    ckpt: Path,
    history_path: Path,
    data: tuple[Any, Any],
    class_weight: dict[int, float] | None,
    extra_callbacks: Sequence[Any],
) -> list[dict[str, Any]]:
    """Run (or finish, after an interruption) each phase; returns what each phase did."""
    from trainer.callbacks import (
        DwellCallback,
        HistoryCsv,
        LrLogger,
        RunCheckpoint,
        truncate_history,
    )

    base = model.get_layer(base_name)
    finished: dict[str, int] = dict(state["finished_phases"]) if state else {}
    offset = sum(finished.values())
    phase_log = []
    verbose = 1 if sys.stdout.isatty() else 2
    for name, epochs, lr in cfg.phases():
        if name in finished:
            phase_log.append(
                {"phase": name, "epochs_planned": epochs, "epochs_run": finished[name], "lr": lr}
            )
            continue
        done_before = initial = 0
        dwell = None
        if state is not None and state["phase"] == name:
            done_before = int(state["epochs_done"])
            # A phase DWELL stopped runs no more epochs; fit() still loads its best weights.
            initial = epochs if state["stopped"] else done_before
            truncate_history(history_path, offset + done_before)
            if cfg.lr_schedule == "dwell":
                dwell = DwellCallback.load(ckpt)
            log.info("resuming phase %s after epoch %d", name, done_before)
        else:
            with strategy.scope():
                n_trainable = set_trainable(
                    base, name, cfg.fine_tune_fraction, cfg.weights != "none"
                )
                compile_classifier(model, lr)
            log.info("phase %s: %d trainable base layers, LR %g", name, n_trainable, lr)
            if cfg.lr_schedule == "dwell":
                dwell = DwellCallback(cfg.dwell)
        extra = {"base": base_name, "finished_phases": finished}
        callbacks = [
            dwell if dwell is not None else LrLogger(),
            HistoryCsv(history_path, name, offset, dwell),
            RunCheckpoint(ckpt, name, dwell, extra),
            *extra_callbacks,
        ]
        history = model.fit(
            data[0],
            validation_data=data[1],
            epochs=epochs,
            initial_epoch=initial,
            class_weight=class_weight,
            shuffle=False,  # the tf.data pipeline shuffles (Keras ignores it and warns)
            callbacks=callbacks,
            verbose=verbose,
        )
        ran = done_before + len(history.epoch)
        finished[name] = ran
        offset += ran
        phase_log.append({"phase": name, "epochs_planned": epochs, "epochs_run": ran, "lr": lr})
        # The phase's final weights (DWELL loaded the lowest-val-loss ones at train end).
        RunCheckpoint(ckpt, name, None, extra).save(model, epochs_done=ran, complete=True)
    return phase_log
