"""Keras Applications backbones: EfficientNet B0-B7, InceptionResNetV2, DenseNet121."""

from __future__ import annotations

from typing import Any

from trainer.models.registry import register_model

# Native input sizes from the EfficientNet paper (Tan & Le 2019, Table 1).
_EFFICIENTNET_SIZES = {0: 224, 1: 240, 2: 260, 3: 300, 4: 380, 5: 456, 6: 528, 7: 600}


def _efficientnet(variant: int) -> None:
    def build(shape: tuple[int, int, int], weights: str | None) -> Any:
        import keras

        cls = getattr(keras.applications, f"EfficientNetB{variant}")
        # Keras EfficientNet rescales 0..255 inside its own graph (include_preprocessing).
        return cls(include_top=False, weights=weights, input_shape=shape)

    register_model(f"efficientnet-b{variant}", _EFFICIENTNET_SIZES[variant], "efficientnet")(build)


for _v in range(8):
    _efficientnet(_v)


@register_model("inceptionresnetv2", 299, "inception")
def _inception_resnet_v2(shape: tuple[int, int, int], weights: str | None) -> Any:
    import keras

    inner = keras.applications.InceptionResNetV2(
        include_top=False, weights=weights, input_shape=shape
    )
    inputs = keras.Input(shape)
    # InceptionResNetV2 expects [-1, 1] ("tf" mode); scale inside the graph.
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    return keras.Model(inputs, inner(x), name="inceptionresnetv2_base")


@register_model("densenet121", 224, "densenet")
def _densenet121(shape: tuple[int, int, int], weights: str | None) -> Any:
    import keras

    inner = keras.applications.DenseNet121(include_top=False, weights=weights, input_shape=shape)
    inputs = keras.Input(shape)
    # DenseNet expects "torch" mode: [0,1] then ImageNet mean/std per channel.
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Normalization(
        mean=[0.485, 0.456, 0.406], variance=[0.229**2, 0.224**2, 0.225**2]
    )(x)
    return keras.Model(inputs, inner(x), name="densenet121_base")
