"""Baselines for the MNIST-1D ladder (Greydanus & Kobak 2024): MLP and a small 1-D CNN, with the
layer sizes of the MNIST-1D reference code (MLPBase: two hidden layers of 100; ConvBase: three
convolutions of 25 channels, kernels 5/3/3, stride 2, padding 1, then one dense layer)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from cnn_jax import nn as cnn
from cnn_jax.models.common import add_channel_axis, flatten
from cnn_jax.models.registry import register


@register("mlp")
class MLP(nn.Module):
    """Flatten, then ReLU dense layers of `hidden` units, then the classifier. hidden=() is logistic regression."""
    num_classes: int
    hidden: Sequence[int] = (100, 100)
    conv: cnn.ConvSpec = cnn.ConvSpec()  # accepted for a uniform interface; an MLP has no convolution
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = flatten(x)
        for i, units in enumerate(self.hidden):
            x = nn.relu(nn.Dense(units, dtype=self.dtype, name=f"fc{i + 1}")(x))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="output")(x)


@register("cnn1d")
class CNN1D(nn.Module):
    """1-D CNN for signals (N, L) or (N, L, C): e.g. MNIST-1D's 40 samples -> 19 -> 10 -> 5 positions."""
    num_classes: int
    channels: int = 25
    kernels: Sequence[int] = (5, 3, 3)
    conv: cnn.ConvSpec = cnn.ConvSpec()
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = add_channel_axis(x)
        for i, k in enumerate(self.kernels):
            x = nn.relu(self.conv.make(self.channels, k, strides=2, padding=1, dtype=self.dtype,
                                       name=f"conv{i + 1}")(x))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="output")(flatten(x))
