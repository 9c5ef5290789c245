"""ResNets (He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition").

CIFAR family (sec. 4.2): depth 6n+2, three stages of n basic blocks with 16/32/64 channels,
identity shortcuts with zero-padded channels when the shape changes (option A):
resnet20/32/44/56/110 have 0.27M/0.46M/0.66M/0.85M/1.7M parameters.
ImageNet family: torchvision's layout (v1.5: the bottleneck strides in its 3x3 convolution),
projection shortcuts (option B): resnet18/34/50 have 11,689,512/21,797,672/25,557,032.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_jax import nn as cnn
from cnn_jax.models.common import make_norm
from cnn_jax.models.registry import register


class _Norms(nn.Module):
    """Holds the normalisation options a network passes to each of its blocks."""
    norm: str = "batch"
    bn_axis_name: str | None = None
    virtual_batch_size: int | None = None
    dtype: Any = None

    def norm_layer(self, train: bool, name: str):
        return make_norm(self.norm, train, axis_name=self.bn_axis_name,
                         virtual_batch_size=self.virtual_batch_size, dtype=self.dtype, name=name)


class _Block(_Norms):
    features: int = 16
    stride: int = 1
    shortcut: str = "A"  # "A": zero-padded identity (CIFAR), "B": 1x1 projection (ImageNet)
    conv: cnn.ConvSpec = cnn.ConvSpec()


class BasicBlock(_Block):
    """Two 3x3 convolutions with a shortcut: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = self.conv.make(self.features, 3, strides=self.stride, padding="SAME", use_bias=False, dtype=self.dtype,
                           name="conv1")(x)
        y = nn.relu(self.norm_layer(train, "norm1")(y))
        y = self.conv.make(self.features, 3, padding="SAME", use_bias=False, dtype=self.dtype, name="conv2")(y)
        y = self.norm_layer(train, "norm2")(y)
        return nn.relu(y + _shortcut(self, x, self.features, train))


class Bottleneck(_Block):
    """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand to 4x features, with a shortcut."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = self.conv.make(self.features, 1, use_bias=False, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(self.norm_layer(train, "norm1")(y))
        y = self.conv.make(self.features, 3, strides=self.stride, padding="SAME", use_bias=False, dtype=self.dtype,
                           name="conv2")(y)
        y = nn.relu(self.norm_layer(train, "norm2")(y))
        y = self.conv.make(4 * self.features, 1, use_bias=False, dtype=self.dtype, name="conv3")(y)
        y = self.norm_layer(train, "norm3")(y)
        return nn.relu(y + _shortcut(self, x, 4 * self.features, train))


def _shortcut(block, x: jax.Array, features: int, train: bool) -> jax.Array:
    if block.stride == 1 and x.shape[-1] == features:
        return x
    if block.shortcut == "A":  # parameter-free: subsample, then zero channels
        spatial = x.ndim - 2
        x = x[(slice(None),) + (slice(None, None, block.stride),) * spatial]
        extra = features - x.shape[-1]
        return jnp.pad(x, ((0, 0),) * (spatial + 1) + ((extra // 2, extra - extra // 2),))
    x = block.conv.make(features, 1, strides=block.stride, use_bias=False, dtype=block.dtype,
                        name="shortcut_conv")(x)
    return block.norm_layer(train, "shortcut_norm")(x)


class ResNet(_Norms):
    """ResNet with a CIFAR stem (3x3 conv, no pooling) or an ImageNet stem (7x7/2 conv, 3x3/2 max-pool)."""
    num_classes: int = 10
    stage_sizes: Sequence[int] = (3, 3, 3)
    widths: Sequence[int] = (16, 32, 64)
    block: str = "basic"
    stem: str = "cifar"
    shortcut: str = "A"
    conv: cnn.ConvSpec = cnn.ConvSpec()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norms = dict(norm=self.norm, bn_axis_name=self.bn_axis_name, virtual_batch_size=self.virtual_batch_size,
                     dtype=self.dtype)
        if self.stem == "cifar":
            x = self.conv.make(self.widths[0], 3, padding="SAME", use_bias=False, dtype=self.dtype, name="stem_conv")(x)
            x = nn.relu(self.norm_layer(train, "stem_norm")(x))
        else:
            x = self.conv.make(self.widths[0], 7, strides=2, padding=3, use_bias=False, dtype=self.dtype,
                               name="stem_conv")(x)
            x = nn.relu(self.norm_layer(train, "stem_norm")(x))
            x = cnn.MaxPool(3, 2, padding=1)(x)
        block_type = BasicBlock if self.block == "basic" else Bottleneck
        for stage, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for b in range(blocks):
                stride = 2 if stage > 0 and b == 0 else 1
                x = block_type(features=width, stride=stride, shortcut=self.shortcut, conv=self.conv, **norms,
                               name=f"stage{stage + 1}_block{b + 1}")(x, train)
        x = cnn.GlobalAvgPool()(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)


for _depth in (20, 32, 44, 56, 110):
    register(f"resnet{_depth}", stage_sizes=((_depth - 2) // 6,) * 3)(ResNet)

register("resnet18", stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512), stem="imagenet", shortcut="B")(ResNet)
register("resnet34", stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512), stem="imagenet", shortcut="B")(ResNet)
register("resnet50", stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512), stem="imagenet", shortcut="B",
         block="bottleneck")(ResNet)
