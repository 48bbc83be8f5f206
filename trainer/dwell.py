"""DWELL, the seeds' dynamic learning rate, as a pure state machine (no TensorFlow here).

Two forms (shared/ANCHORS.md, "DWELL"):

- ``table1`` (seed 000, Table 1 and section 3.2.3): when the validation loss rose since the
  previous epoch, LR = max(LR x factor, min_lr) and, with ``dwell``, the weights go back to the
  epoch of lowest validation loss. The comparison is with the validation loss of the weights
  the next epoch starts from: after a restore, that is the restored epoch's loss.
- ``lra`` (the public LRA callback the seeds' DWELL comes from): while training accuracy is
  below ``threshold`` the monitored quantity is training accuracy, at or above it validation
  loss. A strict improvement snapshots the weights and resets both counters. After ``patience``
  consecutive misses: LR = max(LR x factor, min_lr), and with ``dwell`` the weights roll back
  to the snapshot. Training stops after ``stop_patience`` cuts with no improvement between.

In both forms the weights of the lowest validation loss are loaded when training ends (the
public code loads its snapshot, which in the accuracy phase is the best *training* accuracy:
a defect ANCHORS.md lists). Each epoch yields a `DwellDecision`; the Keras callback in
``trainer.callbacks`` applies it (snapshot, restore, LR, stop) and writes it into the history.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from trainer.errors import RunFileError

Form = Literal["table1", "lra"]
FORMS: tuple[str, ...] = ("table1", "lra")


@dataclass(frozen=True)
class DwellConfig:
    form: Form = "lra"
    factor: float = 0.5
    min_lr: float = 1e-6
    dwell: bool = True  # roll the weights back to the snapshot when the LR is cut
    threshold: float = 0.9  # lra: training accuracy at which monitoring switches to val_loss
    patience: int = 1  # lra: consecutive misses before a cut
    stop_patience: int = 3  # lra: cuts without improvement before training stops

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"DWELL form {self.form!r}: expected one of {FORMS}")
        if not 0 < self.factor < 1:
            raise ValueError(f"DWELL factor {self.factor}: expected 0 < factor < 1")
        if self.min_lr < 0:
            raise ValueError(f"DWELL min_lr {self.min_lr}: expected >= 0")
        if self.patience < 1 or self.stop_patience < 1:
            raise ValueError(
                f"DWELL patience {self.patience} / stop_patience {self.stop_patience}: "
                "expected integers >= 1"
            )


@dataclass(frozen=True)
class DwellDecision:
    """What DWELL saw and did at the end of one epoch."""

    epoch: int  # the Keras epoch index (0-based within the fit call)
    monitor: str  # "accuracy" or "val_loss"
    value: float  # the monitored value this epoch
    reference: float | None  # what it was compared with (None on the first epoch of table1)
    improved: bool  # strictly better than the best so far: weights snapshotted
    action: str  # "improved", "wait" (a miss under patience), "cut", or "none"
    lr: float  # the learning rate used during this epoch
    lr_next: float  # the learning rate for the next epoch
    restored: bool  # weights rolled back to the snapshot of `restored_epoch`
    restored_epoch: int | None
    stop: bool  # training stops after this epoch
    misses: int  # consecutive misses after this epoch
    cuts: int  # cuts since the last improvement after this epoch
    best_epoch: int | None  # the epoch of the current snapshot
    lowest_val_loss: bool  # lowest validation loss so far: kept as the final weights


@dataclass
class DwellState:
    """The counters and bests DWELL carries from epoch to epoch; serialisable for resume."""

    config: DwellConfig = field(default_factory=DwellConfig)
    misses: int = 0
    cuts: int = 0
    best_accuracy: float = 0.0  # highest training accuracy (lra)
    best_val_loss: float = math.inf  # the validation loss of the snapshot's weights
    lowest_val_loss: float = math.inf  # over the whole run: which weights are loaded at the end
    best_epoch: int | None = None
    previous_val_loss: float | None = None  # table1: val loss of the weights epoch t+1 starts from
    decisions: list[DwellDecision] = field(default_factory=list)

    def step(self, epoch: int, logs: dict[str, Any], lr: float) -> DwellDecision:
        """Consume one epoch's logs and the LR it used; return (and record) the decision."""
        val_loss = _required(logs, "val_loss")
        lowest = val_loss < self.lowest_val_loss
        if lowest:
            self.lowest_val_loss = val_loss
        if self.config.form == "table1":
            decision = self._table1(epoch, val_loss, lr, lowest)
        else:
            decision = self._lra(epoch, _required(logs, "accuracy"), val_loss, lr, lowest)
        self.decisions.append(decision)
        return decision

    def _cut(self, lr: float) -> float:
        return max(lr * self.config.factor, self.config.min_lr)

    def _table1(self, epoch: int, val_loss: float, lr: float, lowest: bool) -> DwellDecision:
        reference = self.previous_val_loss
        improved = val_loss < self.best_val_loss
        if improved:
            self.best_val_loss = val_loss
            self.best_epoch = epoch
        rose = reference is not None and val_loss > reference
        restored = rose and self.config.dwell  # a rise is never an improvement
        lr_next = self._cut(lr) if rose else lr
        if rose:
            self.cuts += 1
        elif improved:
            self.cuts = 0
        # After a restore the next epoch starts from the snapshot's weights and loss.
        self.previous_val_loss = self.best_val_loss if restored else val_loss
        return DwellDecision(
            epoch=epoch,
            monitor="val_loss",
            value=val_loss,
            reference=reference,
            improved=improved,
            action="cut" if rose else ("improved" if improved else "none"),
            lr=lr,
            lr_next=lr_next,
            restored=restored,
            restored_epoch=self.best_epoch if restored else None,
            stop=False,  # the seed trains for its fixed number of epochs
            misses=0,
            cuts=self.cuts,
            best_epoch=self.best_epoch,
            lowest_val_loss=lowest,
        )

    def _lra(
        self, epoch: int, accuracy: float, val_loss: float, lr: float, lowest: bool
    ) -> DwellDecision:
        cfg = self.config
        if accuracy < cfg.threshold:
            monitor, value, reference = "accuracy", accuracy, self.best_accuracy
            improved = accuracy > self.best_accuracy
            if improved:
                self.best_accuracy = accuracy
                # The lowest validation loss seen at an accuracy improvement (the public
                # code's lowest_vloss): the bar the val_loss phase must then beat.
                self.best_val_loss = min(self.best_val_loss, val_loss)
        else:
            monitor, value, reference = "val_loss", val_loss, self.best_val_loss
            improved = val_loss < self.best_val_loss
            if improved:
                self.best_val_loss = val_loss
            self.best_accuracy = max(self.best_accuracy, accuracy)

        restored, action, lr_next = False, "improved", lr
        if improved:
            self.misses = self.cuts = 0
            self.best_epoch = epoch
        else:
            self.misses += 1
            action = "wait"
            if self.misses >= cfg.patience:
                action, lr_next = "cut", self._cut(lr)
                self.misses = 0
                self.cuts += 1
                restored = cfg.dwell
                if not cfg.dwell:
                    # Without a rollback the current weights stay: their loss is the reference.
                    self.best_val_loss = min(self.best_val_loss, val_loss)
        stop = self.cuts >= cfg.stop_patience
        return DwellDecision(
            epoch=epoch,
            monitor=monitor,
            value=value,
            reference=None if math.isinf(reference) else reference,
            improved=improved,
            action=action,
            lr=lr,
            lr_next=lr_next,
            restored=restored,
            restored_epoch=self.best_epoch if restored else None,
            stop=stop,
            misses=self.misses,
            cuts=self.cuts,
            best_epoch=self.best_epoch,
            lowest_val_loss=lowest,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("best_val_loss", "lowest_val_loss"):
            d[key] = None if math.isinf(d[key]) else d[key]  # JSON has no Infinity
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DwellState:
        try:
            state = cls(
                config=DwellConfig(**data["config"]),
                misses=int(data["misses"]),
                cuts=int(data["cuts"]),
                best_accuracy=float(data["best_accuracy"]),
                best_val_loss=_inf(data["best_val_loss"]),
                lowest_val_loss=_inf(data["lowest_val_loss"]),
                best_epoch=data["best_epoch"],
                previous_val_loss=data["previous_val_loss"],
                decisions=[DwellDecision(**d) for d in data["decisions"]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RunFileError(f"saved DWELL state is malformed ({exc}); start a new run") from None
        return state


def _inf(value: float | None) -> float:
    return math.inf if value is None else float(value)


def _required(logs: dict[str, Any], key: str) -> float:
    if key not in logs or logs[key] is None:
        raise ValueError(
            f"DWELL needs {key!r} in the epoch logs (got {sorted(logs)}): compile with "
            "metrics=['accuracy'] and pass validation data"
        )
    return float(logs[key])
