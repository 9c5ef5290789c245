"""AlexNet (Krizhevsky, Sutskever & Hinton 2012).

`alexnet`: torchvision's single-tower layout (61,100,840 parameters at 1000 classes); `lrn=True`
adds the paper's local response normalisation after the first two ReLUs (no parameters).
`alexnet_cifar`: the TensorFlow CIFAR-10 tutorial's AlexNet-style model after Krizhevsky's
cuda-convnet: two 5x5x64 convolutions with 3x3/2 max-pooling and LRN, then 384 and 192 units.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from cnn_jax import nn as cnn
from cnn_jax.models.common import flatten
from cnn_jax.models.registry import register


@register("alexnet")
class AlexNet(nn.Module):
    num_classes: int
    lrn: bool = False
    dropout: float = 0.5
    conv: cnn.ConvSpec = cnn.ConvSpec()
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm = cnn.LocalResponseNorm() if self.lrn else (lambda y: y)
        x = norm(nn.relu(self.conv.make(64, 11, strides=4, padding=2, dtype=self.dtype, name="conv1")(x)))
        x = cnn.MaxPool(3, 2)(x)
        x = norm(nn.relu(self.conv.make(192, 5, padding=2, dtype=self.dtype, name="conv2")(x)))
        x = cnn.MaxPool(3, 2)(x)
        x = nn.relu(self.conv.make(384, 3, padding=1, dtype=self.dtype, name="conv3")(x))
        x = nn.relu(self.conv.make(256, 3, padding=1, dtype=self.dtype, name="conv4")(x))
        x = nn.relu(self.conv.make(256, 3, padding=1, dtype=self.dtype, name="conv5")(x))
        x = flatten(cnn.AdaptiveAvgPool(6)(cnn.MaxPool(3, 2)(x)))
        for j in range(2):
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
            x = nn.relu(nn.Dense(4096, dtype=self.dtype, name=f"fc{j + 1}")(x))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc3")(x)


@register("alexnet_cifar")
class AlexNetCifar(nn.Module):
    num_classes: int
    conv: cnn.ConvSpec = cnn.ConvSpec()
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        # TF's LRN(depth_radius=4, bias=1, alpha=0.001/9, beta=0.75) in the paper's parametrisation.
        lrn = cnn.LocalResponseNorm(size=9, k=1.0, alpha=0.001 / 9, beta=0.75)
        x = nn.relu(self.conv.make(64, 5, padding="SAME", dtype=self.dtype, name="conv1")(x))
        x = lrn(cnn.MaxPool(3, 2, padding="SAME")(x))
        x = lrn(nn.relu(self.conv.make(64, 5, padding="SAME", dtype=self.dtype, name="conv2")(x)))
        x = flatten(cnn.MaxPool(3, 2, padding="SAME")(x))
        x = nn.relu(nn.Dense(384, dtype=self.dtype, name="fc1")(x))
        x = nn.relu(nn.Dense(192, dtype=self.dtype, name="fc2")(x))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc3")(x)
