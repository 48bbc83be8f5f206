"""Walking and copying Keras model graphs; nothing of the training configuration.

Kept apart so that converters.int8_prep (and anything else that only edits a saved model) can
use them without loading the trainer's config, callbacks and data pipeline. The functions call
only the model's own methods, so importing this module imports neither Keras nor TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["containers", "copy_model", "leaf_layers"]


def leaf_layers(layer: Any) -> list[Any]:
    """Every non-container layer in topological order, nested models expanded in place."""
    subs = getattr(layer, "layers", None)
    if not subs:
        return [layer]
    return [leaf for sub in subs for leaf in leaf_layers(sub)]


def containers(model: Any) -> Iterator[Any]:
    """`model` and every functional model nested in it, outermost first."""
    yield model
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from containers(layer)


def copy_model(model: Any, config: dict[str, Any] | None = None) -> Any:
    """An independent model with the same weights, built from `config` (default: the model's)."""
    clone = model.__class__.from_config(config if config is not None else model.get_config())
    clone.set_weights(model.get_weights())
    return clone
