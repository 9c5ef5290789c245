"""Baselines for the MNIST-1D ladder (Greydanus & Kobak 2024): MLP and a small 1-D CNN, with the
layer sizes of the MNIST-1D reference code (MLPBase: two hidden layers of 100; ConvBase: three
convolutions of 25 channels, kernels 5/3/3, stride 2, padding 1, then one dense layer)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from cnn_jax.models.common import add_channel_axis, flatten_features
from cnn_jax.models.layers import Layers
from cnn_jax.models.registry import register


@register("mlp")
class MLP(nn.Module):
    """Flatten, then ReLU dense layers of `hidden` units, then the classifier. hidden=() is logistic regression.

    residual=True adds each hidden layer's input to its output where their widths agree, as the MNIST-1D
    reference code's MLPBase does (h = relu(W1 x); h = h + relu(W2 h)); the default is the plain stack."""

    num_classes: int
    hidden: Sequence[int] = (100, 100)
    residual: bool = False
    layers: Layers = Layers()  # an MLP uses only its dtype

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = flatten_features(x)
        for i, units in enumerate(self.hidden):
            h = nn.relu(self.layers.dense(units, name=f"fc{i + 1}")(x))
            x = x + h if self.residual and x.shape[-1] == units else h
        return self.layers.dense(self.num_classes, name="output")(x)


@register("cnn1d")
class CNN1D(nn.Module):
    """1-D CNN for signals (N, L) or (N, L, C): e.g. MNIST-1D's 40 samples -> 19 -> 10 -> 5 positions.

    The dense layer reads the (5, 25) map flattened position-major (NLC); the PyTorch reference flattens
    it channel-major (NCL): the same function up to a permutation of the dense layer's input rows."""

    num_classes: int
    channels: int = 25
    kernels: Sequence[int] = (5, 3, 3)
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = add_channel_axis(x)
        for i, k in enumerate(self.kernels):
            x = nn.relu(self.layers.conv_layer(self.channels, k, strides=2, padding=1, name=f"conv{i + 1}")(x))
        return self.layers.dense(self.num_classes, name="output")(flatten_features(x))
