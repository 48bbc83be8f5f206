"""DWELL's state machine, driven epoch by epoch from scripted logs; then on a real Keras model."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from trainer.dwell import DwellConfig, DwellDecision, DwellState


def _run(
    state: DwellState, script: list[dict[str, float]], lr: float = 1e-3
) -> list[DwellDecision]:
    """Feed epochs in order, carrying the LR each decision sets into the next epoch."""
    out = []
    for epoch, logs in enumerate(script):
        d = state.step(epoch, logs, lr)
        lr = d.lr_next
        out.append(d)
    return out


def _summary(d: DwellDecision) -> tuple[Any, ...]:
    return (d.monitor, d.action, d.improved, d.restored, d.restored_epoch, d.stop, d.lr_next)


def test_table1_cuts_when_validation_loss_rose_and_restores_the_best() -> None:
    losses = [1.0, 0.8, 0.9, 0.85, 0.7, 0.7]
    got = _run(DwellState(DwellConfig(form="table1")), [{"val_loss": v} for v in losses])
    assert [_summary(d) for d in got] == [
        ("val_loss", "improved", True, False, None, False, 1e-3),  # first epoch: the baseline
        ("val_loss", "improved", True, False, None, False, 1e-3),
        ("val_loss", "cut", False, True, 1, False, 5e-4),  # 0.9 > 0.8: halve, back to epoch 1
        # Epoch 4 starts from epoch 1's weights (loss 0.8): 0.85 is a rise from there.
        ("val_loss", "cut", False, True, 1, False, 2.5e-4),
        ("val_loss", "improved", True, False, None, False, 2.5e-4),
        ("val_loss", "none", False, False, None, False, 2.5e-4),  # equal: not a rise
    ]
    assert [d.reference for d in got] == [None, 1.0, 0.8, 0.8, 0.8, 0.7]
    assert [d.lowest_val_loss for d in got] == [True, True, False, False, True, False]


def test_table1_without_dwell_compares_with_the_previous_epoch() -> None:
    state = DwellState(DwellConfig(form="table1", dwell=False))
    got = _run(state, [{"val_loss": v} for v in (1.0, 0.8, 0.9, 0.85)])
    assert [(d.action, d.restored, d.lr_next) for d in got] == [
        ("improved", False, 1e-3),
        ("improved", False, 1e-3),
        ("cut", False, 5e-4),
        ("none", False, 5e-4),  # 0.85 < 0.9, the previous epoch's loss
    ]


def test_table1_learning_rate_never_goes_below_the_floor() -> None:
    state = DwellState(DwellConfig(form="table1", min_lr=1e-6))
    got = _run(state, [{"val_loss": v} for v in (1.0, 1.1, 1.2)], lr=1.5e-6)
    assert [d.lr_next for d in got] == [1.5e-6, 1e-6, 1e-6]


LRA_SCRIPT = [
    {"accuracy": 0.50, "val_loss": 1.00},  # 0: acc improves (from 0)
    {"accuracy": 0.60, "val_loss": 1.20},  # 1: acc improves
    {"accuracy": 0.55, "val_loss": 0.90},  # 2: miss 1 of 2
    {"accuracy": 0.58, "val_loss": 0.90},  # 3: miss 2 -> cut, back to epoch 1
    {"accuracy": 0.95, "val_loss": 0.95},  # 4: above threshold: val_loss 0.95 < 1.0 improves
    {"accuracy": 0.96, "val_loss": 0.97},  # 5: miss 1
    {"accuracy": 0.97, "val_loss": 0.96},  # 6: miss 2 -> cut, back to epoch 4
    {"accuracy": 0.97, "val_loss": 0.99},  # 7: miss 1
    {"accuracy": 0.97, "val_loss": 0.98},  # 8: miss 2 -> cut; 2 cuts without improvement: stop
]


def test_lra_walks_every_transition_to_an_early_stop() -> None:
    cfg = DwellConfig(form="lra", threshold=0.9, patience=2, stop_patience=2, factor=0.5)
    state = DwellState(cfg)
    got = _run(state, LRA_SCRIPT)
    assert [_summary(d) for d in got] == [
        ("accuracy", "improved", True, False, None, False, 1e-3),
        ("accuracy", "improved", True, False, None, False, 1e-3),
        ("accuracy", "wait", False, False, None, False, 1e-3),
        ("accuracy", "cut", False, True, 1, False, 5e-4),
        ("val_loss", "improved", True, False, None, False, 5e-4),
        ("val_loss", "wait", False, False, None, False, 5e-4),
        ("val_loss", "cut", False, True, 4, False, 2.5e-4),
        ("val_loss", "wait", False, False, None, False, 2.5e-4),
        ("val_loss", "cut", False, True, 4, True, 1.25e-4),
    ]
    assert [(d.misses, d.cuts) for d in got] == [
        (0, 0), (0, 0), (1, 0), (0, 1), (0, 0), (1, 0), (0, 1), (1, 1), (0, 2),
    ]  # fmt: skip
    # The accuracy phase compares with the best accuracy; the val_loss phase with the lowest
    # validation loss seen at an accuracy improvement (epoch 0: 1.0; epoch 1's was 1.2), not
    # the lower 0.9 of epoch 2, which was no improvement and was rolled back.
    assert [d.reference for d in got[:5]] == [0.0, 0.5, 0.6, 0.6, 1.0]
    assert [d.best_epoch for d in got] == [0, 1, 1, 1, 4, 4, 4, 4, 4]
    # The final weights are those of the lowest validation loss (epoch 2, 0.90), not the
    # snapshot chosen by training accuracy: the public code's defect, fixed.
    lowest = [d.epoch for d in got if d.lowest_val_loss]
    assert lowest[-1] == 2


def test_lra_without_dwell_cuts_but_keeps_the_current_weights() -> None:
    cfg = DwellConfig(form="lra", threshold=0.0, patience=1, stop_patience=3, dwell=False)
    got = _run(
        DwellState(cfg),
        [{"accuracy": 0.9, "val_loss": v} for v in (0.5, 0.6, 0.55, 0.58)],
    )
    assert [(d.action, d.restored, d.reference) for d in got] == [
        ("improved", False, None),
        ("cut", False, 0.5),
        ("cut", False, 0.5),
        ("cut", False, 0.5),
    ]
    assert got[-1].stop and got[-2].stop is False


def test_lra_improvement_resets_the_cut_count() -> None:
    cfg = DwellConfig(form="lra", threshold=0.0, patience=1, stop_patience=2)
    got = _run(DwellState(cfg), [{"accuracy": 1.0, "val_loss": v} for v in (1.0, 1.1, 0.9, 1.0)])
    assert [(d.action, d.cuts, d.stop) for d in got] == [
        ("improved", 0, False),
        ("cut", 1, False),
        ("improved", 0, False),
        ("cut", 1, False),
    ]


def test_state_survives_a_json_round_trip_mid_run() -> None:
    cfg = DwellConfig(form="lra", threshold=0.9, patience=2, stop_patience=2)
    whole = _run(DwellState(cfg), LRA_SCRIPT)
    first = DwellState(cfg)
    head = _run(first, LRA_SCRIPT[:5])
    restored = DwellState.from_dict(json.loads(json.dumps(first.to_dict())))
    lr = head[-1].lr_next
    tail = []
    for epoch, logs in enumerate(LRA_SCRIPT[5:], start=5):
        d = restored.step(epoch, logs, lr)
        lr = d.lr_next
        tail.append(d)
    assert head + tail == whole
    assert restored.decisions == whole


def test_missing_logs_are_named() -> None:
    with pytest.raises(ValueError, match="'val_loss'"):
        DwellState(DwellConfig(form="table1")).step(0, {"loss": 1.0}, 1e-3)
    with pytest.raises(ValueError, match="'accuracy'"):
        DwellState(DwellConfig(form="lra")).step(0, {"val_loss": 1.0}, 1e-3)


@pytest.mark.parametrize(
    "kw", [{"form": "cosine"}, {"factor": 1.5}, {"patience": 0}, {"min_lr": -1.0}]
)
def test_bad_configuration_is_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="DWELL"):
        DwellConfig(**kw)


def test_callback_applies_decisions_to_a_real_model(tmp_path: Any) -> None:
    """Snapshot, roll back, LR cut, stop and the final load act on a real Keras model."""
    import keras

    from trainer.callbacks import DwellCallback, get_lr
    from trainer.models import create_model

    keras.utils.set_random_seed(0)
    model = create_model("tiny", 2).model
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    cb = DwellCallback(DwellConfig(form="lra", threshold=0.9, patience=2, stop_patience=2))
    cb.set_model(model)
    cb.on_train_begin()
    rng = np.random.default_rng(0)
    weights_at: dict[int, list[np.ndarray]] = {}
    for epoch, logs in enumerate(LRA_SCRIPT):
        # Stand-in for an epoch of training: new weights, as an optimizer step would leave.
        model.set_weights(
            [w + rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in model.get_weights()]
        )
        weights_at[epoch] = model.get_weights()
        logs = dict(logs)
        cb.on_epoch_end(epoch, logs)
        d = cb.last_decision
        assert d is not None
        assert logs["lr"] == pytest.approx(d.lr) and logs["dwell_restored"] == float(d.restored)
        now = model.get_weights()
        expected = weights_at[d.restored_epoch] if d.restored else weights_at[epoch]
        assert all(np.array_equal(a, b) for a, b in zip(now, expected, strict=True)), epoch
        assert get_lr(model.optimizer) == pytest.approx(d.lr_next)
        assert bool(model.stop_training) == d.stop
    cb.save(tmp_path)
    cb.on_train_end()
    final = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(final, weights_at[2], strict=True))
    # Reloaded from disk, the callback holds the same state and the same weights.
    again = DwellCallback.load(tmp_path)
    assert again.state.decisions == cb.state.decisions
    assert again.final is not None and all(
        np.array_equal(a, b) for a, b in zip(again.final, weights_at[2], strict=True)
    )
    assert again.snapshot is not None and all(
        np.array_equal(a, b) for a, b in zip(again.snapshot, weights_at[4], strict=True)
    )


def test_history_csv_rows_carry_metrics_lr_and_each_dwell_decision(tmp_path: Any) -> None:
    import keras

    from trainer.callbacks import (
        HISTORY_FIELDS,
        DwellCallback,
        HistoryCsv,
        LrLogger,
        read_history,
        truncate_history,
    )
    from trainer.models import create_model

    model = create_model("tiny", 2).model
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    path = tmp_path / "history.csv"
    dwell = DwellCallback(DwellConfig(form="table1"))
    callbacks = [dwell, HistoryCsv(path, "fine_tune", 2, dwell)]  # after a 2-epoch head phase
    for cb in callbacks:
        cb.set_model(model)
    dwell.on_train_begin()
    for epoch, val_loss in enumerate((1.0, 1.2)):
        logs = {"loss": 0.5, "accuracy": 0.8, "val_loss": val_loss, "val_accuracy": 0.7}
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs)
    rows = read_history(path)
    assert path.read_text().splitlines()[0] == ",".join(HISTORY_FIELDS)
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "action", "restored"} <= set(
        HISTORY_FIELDS
    )
    assert [(r["epoch"], r["phase"], r["action"], r["restored"]) for r in rows] == [
        ("3", "fine_tune", "improved", "0"),
        ("4", "fine_tune", "cut", "1"),
    ]
    assert rows[1]["restored_to_epoch"] == "3" and float(rows[1]["lr_next"]) == pytest.approx(5e-4)
    assert rows[1]["monitor"] == "val_loss" and float(rows[1]["reference"]) == 1.0
    # Resuming drops rows past the checkpoint.
    truncate_history(path, 3)
    assert [r["epoch"] for r in read_history(path)] == ["3"]
    # The fixed schedule logs its LR (DWELL's cut left 5e-4) and says so.
    logs = {"loss": 0.4, "accuracy": 0.9, "val_loss": 0.3}
    for cb in (LrLogger(), HistoryCsv(tmp_path / "fixed.csv", "head", 0, None)):
        cb.set_model(model)
        cb.on_epoch_end(0, logs)
    [row] = read_history(tmp_path / "fixed.csv")
    assert (row["epoch"], row["action"], row["lr_next"]) == ("1", "fixed", row["lr"])
    assert float(row["lr"]) == pytest.approx(5e-4) and logs["lr"] == pytest.approx(5e-4)
