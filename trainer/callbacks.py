"""Keras 3 callbacks of a training run: DWELL, the per-epoch history file, resumable checkpoints.

Order matters: DWELL first (it may roll the weights back and change the LR), then the history
row (which records DWELL's decision), then the checkpoint (which saves what the next epoch
will start from).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from trainer.dwell import DwellConfig, DwellDecision, DwellState
from trainer.run_files import read_json, write_json

HISTORY_FIELDS = (
    "epoch",
    "phase",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "lr_next",
    "monitor",
    "monitored_value",
    "reference",
    "improved",
    "action",
    "restored",
    "restored_to_epoch",
    "stop",
    "misses",
    "cuts",
)


def get_lr(optimizer: Any) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def set_lr(optimizer: Any, value: float) -> None:
    # Keras 3: `learning_rate` (not `lr`); the setter assigns into the optimizer's variable.
    optimizer.learning_rate = value


def _save_weights(path: Path, weights: list[np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, *weights)
    os.replace(tmp, path)


def _load_weights(path: Path) -> list[np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


class DwellCallback(keras.callbacks.Callback):
    """Applies `DwellState` decisions to a model: snapshot, roll back, cut the LR, stop.

    The snapshot starts as the weights training begins with (as in the public LRA code);
    the weights of the lowest validation loss are loaded when training ends.
    """

    def __init__(self, config: DwellConfig, state: DwellState | None = None) -> None:
        super().__init__()  # Keras 3 sets self.model later, through set_model()
        self.state = state if state is not None else DwellState(config)
        self.snapshot: list[np.ndarray] | None = None
        self.final: list[np.ndarray] | None = None
        self._dirty = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.snapshot is None:
            self.snapshot = self.model.get_weights()
            self._dirty = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        d = self.state.step(epoch, logs, get_lr(self.model.optimizer))
        if d.improved or d.lowest_val_loss:
            current = self.model.get_weights()
            if d.improved:
                self.snapshot = current
            if d.lowest_val_loss:
                self.final = current
            self._dirty = True
        if d.restored and self.snapshot is not None:
            self.model.set_weights(self.snapshot)
        if d.lr_next != d.lr:
            set_lr(self.model.optimizer, d.lr_next)
        if d.stop:
            self.model.stop_training = True
        logs.update(
            lr=d.lr,
            dwell_improved=float(d.improved),
            dwell_cut=float(d.action == "cut"),
            dwell_restored=float(d.restored),
            dwell_stop=float(d.stop),
        )

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.final is not None:
            self.model.set_weights(self.final)

    @property
    def last_decision(self) -> DwellDecision | None:
        return self.state.decisions[-1] if self.state.decisions else None

    def save(self, folder: Path) -> None:
        """Persist the state and, when they changed, the snapshot and final weights."""
        if self._dirty:
            if self.snapshot is not None:
                _save_weights(folder / "dwell_snapshot.npz", self.snapshot)
            if self.final is not None:
                _save_weights(folder / "dwell_final.npz", self.final)
            self._dirty = False
        write_json(folder / "dwell_state.json", self.state.to_dict())

    @classmethod
    def load(cls, folder: Path) -> DwellCallback:
        state = DwellState.from_dict(read_json(folder / "dwell_state.json", "DWELL state"))
        cb = cls(state.config, state)
        cb.snapshot = _load_weights(folder / "dwell_snapshot.npz")
        cb.final = _load_weights(folder / "dwell_final.npz")
        return cb


class LrLogger(keras.callbacks.Callback):
    """Puts the epoch's learning rate into the logs (the fixed schedule has no DWELL to do it)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["lr"] = get_lr(self.model.optimizer)


class HistoryCsv(keras.callbacks.Callback):
    """Appends one row per epoch to history.csv: metrics, LR and DWELL's decision."""

    def __init__(
        self, path: Path, phase: str, epoch_offset: int, dwell: DwellCallback | None
    ) -> None:
        super().__init__()
        self.path = path
        self.phase = phase
        self.epoch_offset = epoch_offset  # epochs run by earlier phases
        self.dwell = dwell

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        row: dict[str, Any] = {
            "epoch": self.epoch_offset + epoch + 1,
            "phase": self.phase,
            **{k: logs.get(k, "") for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
            "lr": logs.get("lr", ""),
        }
        d = self.dwell.last_decision if self.dwell is not None else None
        if d is not None and d.epoch == epoch:
            row.update(
                lr_next=d.lr_next,
                monitor=d.monitor,
                monitored_value=d.value,
                reference="" if d.reference is None else d.reference,
                improved=int(d.improved),
                action=d.action,
                restored=int(d.restored),
                restored_to_epoch=(
                    "" if d.restored_epoch is None else self.epoch_offset + d.restored_epoch + 1
                ),
                stop=int(d.stop),
                misses=d.misses,
                cuts=d.cuts,
            )
        else:
            row.update(lr_next=row["lr"], action="fixed")
        append_history(self.path, [row])


def append_history(path: Path, rows: list[dict[str, Any]]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, restval="")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def read_history(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def truncate_history(path: Path, epochs: int) -> None:
    """Drop rows past ``epochs`` (written before an interruption the checkpoint missed)."""
    rows = [r for r in read_history(path) if int(r["epoch"]) <= epochs]
    path.unlink(missing_ok=True)
    if rows:
        append_history(path, rows)


class RunCheckpoint(keras.callbacks.Callback):
    """After each epoch: the model with its optimizer, DWELL's state, then progress.json.

    progress.json is written last, so a run interrupted mid-save resumes from the previous
    complete epoch. ``extra`` (the base layer's name, finished phases) goes into it too.
    """

    def __init__(
        self, folder: Path, phase: str, dwell: DwellCallback | None, extra: dict[str, Any]
    ) -> None:
        super().__init__()
        self.folder = folder
        self.phase = phase
        self.dwell = dwell
        self.extra = extra

    def save(self, model: Any, epochs_done: int, complete: bool = False) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "last.tmp.keras"
        model.save(tmp)
        os.replace(tmp, self.folder / "last.keras")
        if self.dwell is not None:
            self.dwell.save(self.folder)
        write_json(
            self.folder / "progress.json",
            {
                **self.extra,
                "phase": self.phase,
                "epochs_done": epochs_done,
                "stopped": bool(getattr(model, "stop_training", False)),
                "complete": complete,
            },
        )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.save(self.model, epoch + 1)
