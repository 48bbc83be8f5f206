"""Which base layers each training phase opens, on the registry's real tiny model."""

from __future__ import annotations

from typing import Any

import pytest

from trainer.phases import set_trainable


@pytest.fixture
def tiny() -> Any:
    from trainer.models import create_model

    return create_model("tiny", 2, 32)


def _trainable(base: Any) -> list[str]:
    return [layer.name for layer in base.layers if layer.weights and layer.trainable]


def test_head_phase_freezes_the_whole_base(tiny: Any) -> None:
    assert set_trainable(tiny.base, "head", 0.3, pretrained=True) == 0
    assert _trainable(tiny.base) == []
    # Only the head's kernel and bias are left to learn.
    assert [w.path for w in tiny.model.trainable_weights] == ["head/kernel", "head/bias"]


def test_fine_tuning_a_pretrained_base_opens_its_top_and_keeps_batchnorm_frozen(
    tiny: Any,
) -> None:
    # Leaves with weights: conv1, bn1, conv2, bn2; the top half is conv2 and bn2, and BN stays
    # frozen so pretrained statistics are not overwritten by small batches.
    assert set_trainable(tiny.base, "fine_tune", 0.5, pretrained=True) == 1
    assert _trainable(tiny.base) == ["conv2"]


def test_fine_tuning_a_base_with_random_weights_trains_everything(tiny: Any) -> None:
    set_trainable(tiny.base, "head", 0.3, pretrained=False)
    assert set_trainable(tiny.base, "fine_tune", 0.3, pretrained=False) == 4
    assert _trainable(tiny.base) == ["conv1", "bn1", "conv2", "bn2"]
