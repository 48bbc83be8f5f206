"""`trainer fit`'s options: the two phases, checks naming the flag, the run_config round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trainer.config import FitConfig, FitError
from trainer.dwell import DwellConfig
from trainer.pipeline import AugmentConfig
from trainer.prepare import GroupingOptions


def _cfg(**kw: Any) -> FitConfig:
    return FitConfig(data="d", out="o", **kw)


def test_two_phases_head_then_fine_tune_with_their_own_rates() -> None:
    assert _cfg().phases() == [("head", 5, 1e-3), ("fine_tune", 45, 1e-4)]  # pretrained default
    assert _cfg(head_epochs=2, fine_tune_epochs=3, lr=0.01, fine_tune_lr=0.002).phases() == [
        ("head", 2, 0.01),
        ("fine_tune", 3, 0.002),
    ]
    # From scratch there is no pretrained base to keep: one phase, all layers, at --lr.
    assert _cfg(weights="none").phases() == [("fine_tune", 45, 1e-3)]
    assert _cfg(head_epochs=4, fine_tune_epochs=0).phases() == [("head", 4, 1e-3)]
    with pytest.raises(FitError, match="both 0: nothing to train"):
        _cfg(head_epochs=0, fine_tune_epochs=0).phases()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"lr_schedule": "cosine"}, "--lr-schedule 'cosine' is invalid: expected dwell or fixed"),
        ({"balance": "oversample"}, "--balance 'oversample' is invalid"),
        ({"cache": "gpu"}, "--cache 'gpu' is invalid"),
        ({"batch_size": 0}, "--batch-size 0 is invalid"),
        ({"fine_tune_fraction": 1.5}, "--fine-tune-fraction 1.5 is invalid"),
        ({"preprocess": {"scaling": "unit"}}, "scaling 'unit' is invalid"),
        ({"fine_tune_epochs": -1}, "--fine-tune-epochs must be >= 0"),
    ],
)
def test_check_names_the_bad_value(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(FitError, match=message.replace("(", r"\(")):
        _cfg(**kw).check()


def test_run_config_round_trips_through_json_for_resume() -> None:
    cfg = _cfg(
        model="tiny",
        dwell=DwellConfig(form="table1", factor=0.3),
        grouping=GroupingOptions(0.9, 2, 5),
        augment=AugmentConfig(flip=False, color_jitter=0.2),
        fractions=(0.7, 0.1, 0.2),
        preprocess={"contrast": "clahe"},
    )
    again = FitConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    # A run_config.json written by a newer version with an extra key still loads.
    assert FitConfig.from_dict({**cfg.to_dict(), "future_option": 1}) == cfg
