"""An independent pure-PyTorch EfficientNet-Lite forward pass, the reference for the Keras port.

It reads the efficientnet_pytorch state dict directly and follows that package's semantics
(TF "SAME" padding as in Conv2dStaticSamePadding, BatchNorm eps 1e-3, ReLU6, identity skip
when stride is 1 and channels agree). The structure comes from the tensors themselves, not
from the Keras builder: the expand conv exists or not, the kernel size is the depthwise
weight's, and a new stage (with its stride) starts wherever the output channels change.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Strides of the seven B0/Lite stages (outputs 16, 24, 40, 80, 112, 192, 320 for Lite0).
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
MEAN, STD, BN_EPS = 127.0, 128.0, 1e-3


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad takes the last axis (width) first
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class LiteReference:
    """EfficientNet-Lite from a state dict: `logits` and pooled `features` of NCHW input."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.s = {k: v.float() for k, v in state.items()}
        n = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
        self.blocks = []
        stage, prev_out = -1, None
        for i in range(n):
            out = self.s[f"_blocks.{i}._project_conv.weight"].shape[0]
            first = out != prev_out
            stage += first
            stride = STAGE_STRIDES[stage] if first else 1
            self.blocks.append((f"_blocks.{i}.", stride))
            prev_out = out

    def _conv(
        self, x: torch.Tensor, key: str, stride: int = 1, depthwise: bool = False
    ) -> torch.Tensor:
        w = self.s[key + ".weight"]
        groups = x.shape[1] if depthwise else 1
        return F.conv2d(_same_pad(x, w.shape[-1], stride), w, stride=stride, groups=groups)

    def _bn(self, x: torch.Tensor, key: str) -> torch.Tensor:
        s = self.s
        return F.batch_norm(
            x,
            s[key + ".running_mean"],
            s[key + ".running_var"],
            s[key + ".weight"],
            s[key + ".bias"],
            training=False,
            eps=BN_EPS,
        )

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled 1280-d features of 0..255 RGB images (N, 3, H, W)."""
        x = (images - MEAN) / STD
        x = F.relu6(self._bn(self._conv(x, "_conv_stem", 2), "_bn0"))
        for p, stride in self.blocks:
            inputs = x
            if p + "_expand_conv.weight" in self.s:
                x = F.relu6(self._bn(self._conv(x, p + "_expand_conv"), p + "_bn0"))
            x = F.relu6(
                self._bn(self._conv(x, p + "_depthwise_conv", stride, depthwise=True), p + "_bn1")
            )
            x = self._bn(self._conv(x, p + "_project_conv"), p + "_bn2")
            if stride == 1 and x.shape == inputs.shape:
                x = x + inputs
        x = F.relu6(self._bn(self._conv(x, "_conv_head"), "_bn1"))
        return x.mean(dim=(2, 3))

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return F.linear(self.features(images), self.s["_fc.weight"], self.s["_fc.bias"])
