"""VGG (Simonyan & Zisserman 2015, configurations A/B/D/E = vgg11/13/16/19), torchvision's layout.

ImageNet: 3x3 convolutions (padding 1, with bias), 2x2 max-pools, adaptive average pooling to
7x7, then 4096-4096-classes dense layers with dropout: vgg11/13/16/19 have 132,863,336 /
133,047,848 / 138,357,544 / 143,667,240 parameters (the _bn variants add BatchNorm after every
convolution). CIFAR variants (`vgg16_cifar`): the same convolutional stack with BatchNorm, global
average pooling and one dense layer, as commonly trained on 32x32 images.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from cnn_jax import nn as cnn
from cnn_jax.models.common import flatten, make_norm
from cnn_jax.models.registry import register

CONFIGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
    num_classes: int
    layers: Sequence[int | str] = CONFIGS[16]
    batch_norm: bool = False
    head: str = "imagenet"
    dropout: float = 0.5
    bn_axis_name: str | None = None
    conv: cnn.ConvSpec = cnn.ConvSpec()
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i, layer in enumerate(self.layers):
            if layer == "M":
                x = cnn.MaxPool(2)(x)
                continue
            x = self.conv.make(layer, 3, padding="SAME", dtype=self.dtype, name=f"conv{i}")(x)
            if self.batch_norm:
                x = make_norm("batch", train, axis_name=self.bn_axis_name, dtype=self.dtype, name=f"norm{i}")(x)
            x = nn.relu(x)
        if self.head == "cifar":
            return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(cnn.GlobalAvgPool()(x))
        x = flatten(cnn.AdaptiveAvgPool(7)(x))
        for j in range(2):
            x = nn.relu(nn.Dense(4096, dtype=self.dtype, name=f"fc{j + 1}")(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc3")(x)


for _depth, _layers in CONFIGS.items():
    register(f"vgg{_depth}", layers=_layers)(VGG)
    register(f"vgg{_depth}_bn", layers=_layers, batch_norm=True)(VGG)
    register(f"vgg{_depth}_cifar", layers=_layers, batch_norm=True, head="cifar")(VGG)
