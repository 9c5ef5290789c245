"""cnn_jax's lenet5, resnet20 and resnet50 written directly in flax.linen, as flax's own examples write them.

These are the "plain flax" baselines of benchmarks/train_step.py and of the lowering tests: the same
architecture, padding and parameter count as `cnn_jax.models.create(name, num_classes=...)`, built from
`nn.Conv`, `nn.BatchNorm`, `nn.max_pool` and `nn.Dense` only. `dtype` is the compute dtype; parameters
stay float32 (flax's default `param_dtype`), as under `config.train.dtype="bfloat16"`.

    FlaxLeNet5(num_classes=10)                              # 61,706 parameters
    FlaxResNet20(num_classes=10)                            # 269,722
    FlaxResNet50(num_classes=1000, dtype=jnp.bfloat16)      # torchvision's count (cnn_jax/report/published.py)
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any
PAD1 = ((1, 1), (1, 1))  # cnn_jax's (and torchvision's) 3x3 padding, strided or not


class FlaxLeNet5(nn.Module):
    """conv 6@5x5 SAME - max-pool 2 - conv 16@5x5 VALID - max-pool 2 - dense 120 - 84 - classes (ReLU)."""

    num_classes: int = 10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.max_pool(nn.relu(nn.Conv(6, (5, 5), padding="SAME", dtype=self.dtype)(x)), (2, 2), (2, 2))
        x = nn.max_pool(nn.relu(nn.Conv(16, (5, 5), padding="VALID", dtype=self.dtype)(x)), (2, 2), (2, 2))
        x = nn.relu(nn.Dense(120, dtype=self.dtype)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes, dtype=self.dtype)(nn.relu(nn.Dense(84, dtype=self.dtype)(x)))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; the CIFAR shortcut (option A) subsamples and zero-pads the channels."""

    features: int
    stride: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.relu(self.norm()(self.conv(self.features, (3, 3), self.stride, padding=PAD1)(x)))
        y = self.norm()(self.conv(self.features, (3, 3), padding=PAD1)(y))
        if x.shape[-1] != self.features:
            x = x[:, :: self.stride, :: self.stride]
            extra = self.features - x.shape[-1]
            x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
        return nn.relu(y + x)


class BottleneckBlock(nn.Module):
    """1x1 reduce, 3x3 (strided: torchvision's v1.5), 1x1 expand to 4x; a 1x1 projection when the shape changes."""

    features: int
    stride: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.relu(self.norm()(self.conv(self.features, (1, 1))(x)))
        y = nn.relu(self.norm()(self.conv(self.features, (3, 3), self.stride, padding=PAD1)(y)))
        # flax's example zero-initialises this scale; cnn_jax (like torchvision) starts it at one.
        y = self.norm()(self.conv(4 * self.features, (1, 1))(y))
        if x.shape != y.shape:
            x = self.norm(name="norm_proj")(self.conv(4 * self.features, (1, 1), self.stride, name="conv_proj")(x))
        return nn.relu(y + x)


def _layers(dtype: Any, train: bool) -> tuple[ModuleDef, ModuleDef]:
    conv = partial(nn.Conv, use_bias=False, dtype=dtype)
    norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype)
    return conv, norm


class FlaxResNet20(nn.Module):
    """CIFAR ResNet-20: 3x3 stem, three stages of 3 basic blocks with 16/32/64 channels, global average pool."""

    num_classes: int = 10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv, norm = _layers(self.dtype, train)
        x = nn.relu(norm()(conv(16, (3, 3))(x)))
        for stage, width in enumerate((16, 32, 64)):
            for b in range(3):
                x = BasicBlock(width, 2 if stage and not b else 1, conv, norm)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x.mean((1, 2)))


class FlaxResNet50(nn.Module):
    """ImageNet ResNet-50 in cnn_jax's (torchvision v1.5) layout, written as flax's examples/imagenet writes it.

    The padding is cnn_jax's (torchvision's), not that example's: the stem convolution pads 3 on every side,
    the max-pool and every 3x3 convolution 1 on every side (the example uses "SAME", which pads (0, 1) on
    even inputs at stride 2).
    """

    num_classes: int = 1000
    stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv, norm = _layers(self.dtype, train)
        x = nn.relu(norm(name="bn_init")(conv(64, (7, 7), (2, 2), padding=((3, 3), (3, 3)), name="conv_init")(x)))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, blocks in enumerate(self.stage_sizes):
            for b in range(blocks):
                x = BottleneckBlock(64 * 2**stage, 2 if stage and not b else 1, conv, norm)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x.mean((1, 2)))


NETS = {"lenet5": FlaxLeNet5, "resnet20": FlaxResNet20, "resnet50": FlaxResNet50}
