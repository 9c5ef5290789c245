"""AlexNet (Krizhevsky, Sutskever & Hinton 2012).

`alexnet`: torchvision's single-tower layout (its parameter count: cnn_jax/report/published.py); `norm="lrn"`
adds the paper's local response normalisation after the first two ReLUs (no parameters). Without
it the model computes torchvision's function; `models.from_torch_state_dict` loads its weights (the
first dense layer's rows permuted from torchvision's NCHW flatten order to cnn_jax's NHWC).
`alexnet_cifar`: the TensorFlow CIFAR-10 tutorial's AlexNet-style model after Krizhevsky's
cuda-convnet: two 5x5x64 convolutions with 3x3/2 max-pooling and LRN, then 384 and 192 units.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from cnn_jax import nn as cnn
from cnn_jax.models.common import flatten_features
from cnn_jax.models.layers import Layers
from cnn_jax.models.registry import register


@register("alexnet", norm="none")
class AlexNet(nn.Module):
    """torchvision's layout; the normalisation (norm="lrn": the paper's LRN) follows the first two ReLUs."""

    num_classes: int
    dropout: float = 0.5
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layers = self.layers
        x = layers.norm_layer(train, "norm1")(nn.relu(layers.conv_layer(64, 11, strides=4, padding=2, name="conv1")(x)))
        x = cnn.MaxPool(3, 2)(x)
        x = layers.norm_layer(train, "norm2")(nn.relu(layers.conv_layer(192, 5, padding=2, name="conv2")(x)))
        x = cnn.MaxPool(3, 2)(x)
        x = nn.relu(layers.conv_layer(384, 3, padding=1, name="conv3")(x))
        x = nn.relu(layers.conv_layer(256, 3, padding=1, name="conv4")(x))
        x = nn.relu(layers.conv_layer(256, 3, padding=1, name="conv5")(x))
        x = flatten_features(cnn.AdaptiveAvgPool(6)(cnn.MaxPool(3, 2)(x)))
        for j in range(2):
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
            x = nn.relu(layers.dense(4096, name=f"fc{j + 1}")(x))
        return layers.dense(self.num_classes, name="fc3")(x)


@register("alexnet_cifar")
class AlexNetCifar(nn.Module):
    """The TF tutorial's model; its LRN is part of the architecture (TF's constants), not the `norm` setting."""

    num_classes: int
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layers = self.layers
        # TF's LRN(depth_radius=4, bias=1, alpha=0.001/9, beta=0.75) in the paper's parametrisation.
        lrn = cnn.LocalResponseNorm(size=9, k=1.0, alpha=0.001 / 9, beta=0.75)
        x = nn.relu(layers.conv_layer(64, 5, padding="SAME", name="conv1")(x))
        x = lrn(cnn.MaxPool(3, 2, padding="SAME")(x))
        x = lrn(nn.relu(layers.conv_layer(64, 5, padding="SAME", name="conv2")(x)))
        x = flatten_features(cnn.MaxPool(3, 2, padding="SAME")(x))
        x = nn.relu(layers.dense(384, name="fc1")(x))
        x = nn.relu(layers.dense(192, name="fc2")(x))
        return layers.dense(self.num_classes, name="fc3")(x)
