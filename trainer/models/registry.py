"""Registry machinery: a decorator to register a backbone, a factory to build a classifier.

Every model takes 0..255 RGB float input (edge preprocessing with scaling "none") and does
its own value scaling inside the graph, so scaling happens exactly once. Every classifier is
``inputs -> base -> GlobalAveragePooling -> Dropout -> Dense(softmax, name="head")``, so the
backbone (embeddings) and the head can be exported apart for on-device fine-tuning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import BlastscopeError

# builder(input_shape, weights) -> keras.Model mapping 0..255 input to a 4-D feature map.
BaseBuilder = Callable[[tuple[int, int, int], str | None], Any]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    native_size: int
    builder: BaseBuilder
    family: str
    imagenet_available: bool = True  # False where Keras has no downloadable ImageNet weights


@dataclass
class BuiltModel:
    """A classifier and the parts fine-tuning and export need."""

    info: ModelInfo
    model: Any  # keras.Model: image -> class probabilities
    backbone: Any  # keras.Model: image -> embedding (pooled features)
    base: Any  # the convolutional base inside, for freezing and top-block fine-tuning
    head: Any  # the Dense softmax layer named "head"
    image_size: int


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str, native_size: int, family: str, imagenet_available: bool = True
) -> Callable[[BaseBuilder], BaseBuilder]:
    def wrap(builder: BaseBuilder) -> BaseBuilder:
        _REGISTRY[name] = ModelInfo(name, native_size, builder, family, imagenet_available)
        return builder

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BlastscopeError(
            f"unknown model {name!r}; choose one of: {', '.join(list_models())}"
        ) from None


def _resolve_weights(info: ModelInfo, weights: str) -> tuple[str | None, Path | None]:
    """--weights imagenet|none|PATH -> (keras weights argument, local file to load after)."""
    if weights == "none":
        return None, None
    if weights == "imagenet":
        if not info.imagenet_available:
            # Only the EfficientNet-Lite family has an importer (trainer.lite_weights).
            fix = (
                f"run `trainer import-weights {info.name}` and pass the file it writes with "
                "--weights PATH"
                if info.family == "efficientnet-lite"
                else "pass --weights none (train from scratch) or --weights PATH"
            )
            raise BlastscopeError(f"--weights imagenet: {info.name} has no ImageNet weights; {fix}")
        return "imagenet", None
    path = Path(weights)
    if not path.is_file():
        raise BlastscopeError(
            f"--weights {weights}: no such file; expected imagenet, none or a path"
        )
    return None, path


def _first_line(exc: Exception) -> str:
    """Keras' loading errors run to many lines; the CLI prints one."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def check_weights(name: str, weights: str) -> None:
    """Refuse a --weights value that cannot work for ``name`` (no TensorFlow needed)."""
    _resolve_weights(model_info(name), weights)


def create_model(
    name: str,
    num_classes: int,
    image_size: int | None = None,
    weights: str = "none",
    dropout: float = 0.2,
) -> BuiltModel:
    """Build `name` as a classifier for `num_classes` classes at `image_size` (default native)."""
    import keras

    info = model_info(name)
    size = image_size or info.native_size
    keras_weights, local = _resolve_weights(info, weights)
    try:
        base = info.builder((size, size, 3), keras_weights)
    except Exception as exc:  # a failed download surfaces as many exception types
        if keras_weights == "imagenet":
            raise BlastscopeError(
                f"could not load ImageNet weights for {name} ({_first_line(exc)}); without "
                "internet, pass --weights PATH or --weights none"
            ) from None
        raise
    if local is not None:
        try:
            base.load_weights(str(local))
        except Exception as exc:
            raise BlastscopeError(
                f"--weights {local}: does not fit {name}'s base ({_first_line(exc)}); expected "
                f"weights saved from a {name} base"
            ) from None
    inputs = keras.Input((size, size, 3), name="image")
    features = base(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="embedding")(features)
    x = keras.layers.Dropout(dropout, name="head_dropout")(pooled)
    head = keras.layers.Dense(num_classes, activation="softmax", name="head")
    outputs = head(x)
    model = keras.Model(inputs, outputs, name=f"{name.replace('-', '_')}_classifier")
    backbone = keras.Model(inputs, pooled, name=f"{name.replace('-', '_')}_backbone")
    return BuiltModel(info, model, backbone, base, head, size)
