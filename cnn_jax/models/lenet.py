"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to document
recognition", sec. II.B), as published and in its modern form."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_jax import nn as cnn
from cnn_jax.models.common import flatten_features
from cnn_jax.models.layers import Layers
from cnn_jax.models.registry import register

# Which S2 maps feed each C3 map (Table I of the paper): 6 maps see 3 contiguous maps, 9 see 4,
# and the last sees all 6, breaking symmetry at 1,516 parameters instead of 2,416.
C3_TABLE = (
    (0, 1, 2),
    (1, 2, 3),
    (2, 3, 4),
    (3, 4, 5),
    (0, 4, 5),
    (0, 1, 5),
    (0, 1, 2, 3),
    (1, 2, 3, 4),
    (2, 3, 4, 5),
    (0, 3, 4, 5),
    (0, 1, 4, 5),
    (0, 1, 2, 5),
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


# C3 holds only the table's 1,500 weights (plus 16 biases: the paper's 1,516 parameters) and runs as one
# convolution, their kernel gathered into a 6x16 one with zeros elsewhere (`cnn.connected_kernel`): on
# XLA:CPU that is 7x faster than one convolution per map (and grouped convolutions, one per fan-in, are far
# slower still). Every map's weights start at the scale of the full kernel's fan-in (150), not of its own
# 75, 100 or 150 inputs.
C3_CONNECTIONS = np.zeros((6, 16), bool)
for _map, _inputs in enumerate(C3_TABLE):
    C3_CONNECTIONS[list(_inputs), _map] = True


def squash(x: jax.Array) -> jax.Array:
    """The paper's sigmoid, f(a) = A tanh(S a) with A = 1.7159 and S = 2/3 (appendix A)."""
    return 1.7159 * jnp.tanh(x * (2.0 / 3.0))


@register("lenet5_classic")
class LeNet5Classic(nn.Module):
    """LeNet-5 as published (its trainable parameters before the output layer: report/published.py).

    C1 (6@5x5, 156) - S2 (trainable subsampling, 12) - C3 (16@5x5 over the connection table: 1,516) -
    S4 (32) - C5 (120@5x5 convolution, 48,120) - F6 (84, 10,164) - output. The paper's output
    layer is 10 fixed RBF units; here it is a trainable dense layer named "output", counted
    separately. Inputs smaller than 32x32 are zero-padded to 32x32 (the paper centred the
    28x28 digits in a 32x32 field).
    """

    num_classes: int
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        pad = [max(0, 32 - n) for n in x.shape[1:3]]
        x = jnp.pad(x, ((0, 0), (pad[0] // 2, pad[0] - pad[0] // 2), (pad[1] // 2, pad[1] - pad[1] // 2), (0, 0)))
        x = squash(self.layers.conv_layer(6, 5, padding="VALID", name="C1")(x))
        x = squash(cnn.TrainableSubsampling(2, name="S2")(x))
        x = squash(self.layers.conv_layer(16, 5, padding="VALID", connections=C3_CONNECTIONS, name="C3")(x))
        x = squash(cnn.TrainableSubsampling(2, name="S4")(x))
        x = squash(self.layers.conv_layer(120, 5, padding="VALID", name="C5")(x))
        x = squash(self.layers.dense(84, name="F6")(flatten_features(x)))
        return self.layers.dense(self.num_classes, name="output")(x)


POOLS = ("max", "avg", "l2", "strided", "none", "blurmax", "blurstrided")


@register("lenet5")
class LeNet5(nn.Module):
    """The modern LeNet-5: ReLU, max-pooling, SAME first convolution so 28x28 inputs work as is.

    conv 6@5x5 - pool 2 - conv 16@5x5 - pool 2 - dense 120 - dense 84 - dense classes.
    pool: "max", "avg" or "l2" (Lp pooling, p=2) with window 2 and stride 2; "strided" downsamples by
    giving both convolutions stride 2 instead (same 5x5x16 output for 28x28 inputs); "none" keeps full
    resolution (28x28 -> 24x24x16 into the dense layers, which then hold most of the parameters).
    Anti-aliased (Zhang 2019, `cnn.BlurPool` with a `blur_size`-tap binomial filter): "blurmax" is
    MaxBlurPool (max over 2x2 windows at stride 1, then blurred subsampling), "blurstrided" a blurred
    strided convolution (each convolution at stride 1, its ReLU, then blurred subsampling). Every variant
    but "none" maps 28x28 inputs to the same 5x5x16.
    """

    num_classes: int
    pool: str = "max"
    blur_size: int = 3
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.pool not in POOLS:
            raise ValueError(f"LeNet5 pool={self.pool!r}: unknown; valid values are {', '.join(POOLS)}")
        pools = {"max": cnn.MaxPool, "avg": cnn.AvgPool, "l2": functools.partial(cnn.LpPool, p=2.0)}

        def pool(x: jax.Array) -> jax.Array:  # a new layer per use, so each has its own name (summaries)
            if self.pool == "blurmax":
                x = cnn.MaxPool(2, strides=1)(x)
            if self.pool.startswith("blur"):
                return cnn.BlurPool(self.blur_size)(x)
            return pools[self.pool](2)(x) if self.pool in pools else x

        stride = 2 if self.pool == "strided" else 1
        x = pool(nn.relu(self.layers.conv_layer(6, 5, strides=stride, padding="SAME", name="conv1")(x)))
        x = pool(nn.relu(self.layers.conv_layer(16, 5, strides=stride, padding="VALID", name="conv2")(x)))
        x = nn.relu(self.layers.dense(120, name="fc1")(flatten_features(x)))
        x = nn.relu(self.layers.dense(84, name="fc2")(x))
        return self.layers.dense(self.num_classes, name="output")(x)
