"""The context module of Yu & Koltun 2016, "Multi-scale context aggregation by dilated convolutions".

Basic module (Table 1): seven 3x3 convolutions with dilations 1, 1, 2, 4, 8, 16, 1 and a final
1x1 convolution, all with C channels and ReLUs, resolution preserved; the receptive field grows
3, 5, 9, 17, 33, 65, 67. Here the first layer maps the input channels to `features`, the last
1x1 layer to `num_classes`: per-pixel logits (N, H, W, classes), or with `global_pool=True`
their spatial mean, for image-level labels.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from cnn_jax import nn as cnn
from cnn_jax.models.registry import register


@register("context_net")
class ContextNet(nn.Module):
    num_classes: int
    features: int = 32
    dilations: Sequence[int] = (1, 1, 2, 4, 8, 16, 1)
    global_pool: bool = False
    conv: cnn.ConvSpec = cnn.ConvSpec()
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i, dilation in enumerate(self.dilations):
            x = nn.relu(self.conv.make(self.features, 3, padding="SAME", kernel_dilation=dilation,
                                       dtype=self.dtype, name=f"conv{i + 1}")(x))
        x = self.conv.make(self.num_classes, 1, padding="VALID", dtype=self.dtype, name="output")(x)
        return cnn.GlobalAvgPool()(x) if self.global_pool else x
