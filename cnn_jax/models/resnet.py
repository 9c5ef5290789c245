"""ResNets (He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition").

CIFAR family (sec. 4.2): depth 6n+2, three stages of n basic blocks with 16/32/64 channels,
identity shortcuts with zero-padded channels when the shape changes (option A): resnet8/20/32/44/56/110
(resnet8, one block per stage, is the small backbone of the image studies).
ImageNet family: torchvision's layout (v1.5: the bottleneck strides in its 3x3 convolution),
projection shortcuts (option B): resnet18/34/50, computing torchvision's function
(`models.from_torch_state_dict` loads its weights). Published parameter counts of both families are in
cnn_jax/report/published.py, and the tests check them.

Every 3x3 convolution pads 1 on every side (times the dilation of ConvSpec(dilation=...)), as
torchvision and the common PyTorch CIFAR implementations do; "SAME" would pad a stride-2 layer at an
even size 0 before and 1 after, shifting every window by one pixel. With symmetric padding a stride-2
window is centred on the input pixel the option A shortcut keeps (x[::2]).

`blur_size` (every ResNet; 0, the default, is the published network): anti-aliased downsampling as in
Zhang 2019's antialiased ResNets. Each strided convolution runs at stride 1, and its activation (after the
norm and ReLU) is blurred with a `blur_size`-tap binomial filter and subsampled (`nn.BlurPool`) before the
next convolution; the option A shortcut blurs instead of taking x[::2], option B blurs before its 1x1
convolution, and the ImageNet stem's max-pool becomes MaxBlurPool (2x2 max at stride 1, then BlurPool).
Parameters and output sizes are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_jax import nn as cnn
from cnn_jax.models.layers import Layers
from cnn_jax.models.registry import register


class _Block(nn.Module):
    features: int = 16
    stride: int = 1
    shortcut: str = "A"  # "A": zero-padded identity (CIFAR), "B": 1x1 projection (ImageNet)
    blur_size: int = 0  # > 0: anti-aliased downsampling (see ResNet)
    layers: Layers = Layers()

    def downsample(self, x: jax.Array) -> jax.Array:
        """Where a strided convolution would subsample: blurred subsampling, if this block is anti-aliased."""
        return cnn.BlurPool(self.blur_size, self.stride)(x) if self.blur_size and self.stride > 1 else x

    @property
    def conv_stride(self) -> int:
        return 1 if self.blur_size else self.stride


class BasicBlock(_Block):
    """Two 3x3 convolutions with a shortcut: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        layers, pad = self.layers, self.layers.centred_padding(3)
        y = layers.conv_layer(self.features, 3, strides=self.conv_stride, padding=pad, use_bias=False, name="conv1")(x)
        y = self.downsample(nn.relu(layers.norm_layer(train, "norm1")(y)))
        y = layers.conv_layer(self.features, 3, padding=pad, use_bias=False, name="conv2")(y)
        y = layers.norm_layer(train, "norm2")(y)
        return nn.relu(y + _shortcut(self, x, self.features, train))


class Bottleneck(_Block):
    """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand to 4x features, with a shortcut."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        layers = self.layers
        y = layers.conv_layer(self.features, 1, use_bias=False, name="conv1")(x)
        y = nn.relu(layers.norm_layer(train, "norm1")(y))
        y = layers.conv_layer(
            self.features, 3, strides=self.conv_stride, padding=layers.centred_padding(3), use_bias=False, name="conv2"
        )(y)
        y = self.downsample(nn.relu(layers.norm_layer(train, "norm2")(y)))
        y = layers.conv_layer(4 * self.features, 1, use_bias=False, name="conv3")(y)
        y = layers.norm_layer(train, "norm3")(y)
        return nn.relu(y + _shortcut(self, x, 4 * self.features, train))


def _shortcut(block, x: jax.Array, features: int, train: bool) -> jax.Array:
    if block.stride == 1 and x.shape[-1] == features:
        return x
    if block.shortcut == "A":  # parameter-free: subsample, then zero channels
        spatial = x.ndim - 2
        x = block.downsample(x) if block.blur_size else x[(slice(None),) + (slice(None, None, block.stride),) * spatial]
        extra = features - x.shape[-1]
        return jnp.pad(x, ((0, 0),) * (spatial + 1) + ((extra // 2, extra - extra // 2),))
    x = block.downsample(x)
    x = block.layers.conv_layer(features, 1, strides=block.conv_stride, use_bias=False, name="shortcut_conv")(x)
    return block.layers.norm_layer(train, "shortcut_norm")(x)


class ResNet(nn.Module):
    """ResNet with a CIFAR stem (3x3 conv, no pooling) or an ImageNet stem (7x7/2 conv, 3x3/2 max-pool)."""

    num_classes: int = 10
    stage_sizes: Sequence[int] = (3, 3, 3)
    widths: Sequence[int] = (16, 32, 64)
    block: str = "basic"
    stem: str = "cifar"
    shortcut: str = "A"
    blur_size: int = 0
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layers = self.layers
        if self.stem == "cifar":
            x = layers.conv_layer(
                self.widths[0], 3, padding=layers.centred_padding(3), use_bias=False, name="stem_conv"
            )(x)
            x = nn.relu(layers.norm_layer(train, "stem_norm")(x))
        else:
            x = layers.conv_layer(
                self.widths[0], 7, strides=2, padding=layers.centred_padding(7), use_bias=False, name="stem_conv"
            )(x)
            x = nn.relu(layers.norm_layer(train, "stem_norm")(x))
            if self.blur_size:  # MaxBlurPool
                x = cnn.BlurPool(self.blur_size)(cnn.MaxPool(2, 1)(x))
            else:
                x = cnn.MaxPool(3, 2, padding=1)(x)
        block_type = BasicBlock if self.block == "basic" else Bottleneck
        for stage, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for b in range(blocks):
                stride = 2 if stage > 0 and b == 0 else 1
                x = block_type(
                    features=width,
                    stride=stride,
                    shortcut=self.shortcut,
                    blur_size=self.blur_size,
                    layers=layers,
                    name=f"stage{stage + 1}_block{b + 1}",
                )(x, train)
        x = cnn.GlobalAvgPool()(x)
        return layers.dense(self.num_classes, name="fc")(x)


for _depth in (8, 20, 32, 44, 56, 110):  # resnet8: one block per stage, the small images backbone
    register(f"resnet{_depth}", norm="batch", stage_sizes=((_depth - 2) // 6,) * 3)(ResNet)

register("resnet18", norm="batch", stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512), stem="imagenet", shortcut="B")(
    ResNet
)
register("resnet34", norm="batch", stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512), stem="imagenet", shortcut="B")(
    ResNet
)
register(
    "resnet50",
    norm="batch",
    stage_sizes=(3, 4, 6, 3),
    widths=(64, 128, 256, 512),
    stem="imagenet",
    shortcut="B",
    block="bottleneck",
)(ResNet)
