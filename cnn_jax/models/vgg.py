"""VGG (Simonyan & Zisserman 2015, configurations A/B/D/E = vgg11/13/16/19), torchvision's layout.

ImageNet: 3x3 convolutions (padding 1, with bias), 2x2 max-pools, adaptive average pooling to
7x7, then 4096-4096-classes dense layers with dropout (the _bn variants add BatchNorm after every
convolution; torchvision's parameter counts are in cnn_jax/report/published.py). CIFAR variants
(`vgg16_cifar`): the same convolutional stack with BatchNorm, global average pooling and one dense
layer, as commonly trained on 32x32 images.

The ImageNet models compute torchvision's function; `models.from_torch_state_dict` loads its weights
(the first dense layer's rows permuted: cnn_jax flattens the 7x7x512 map in NHWC order, torchvision
in NCHW order).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from cnn_jax import nn as cnn
from cnn_jax.models.common import flatten_features
from cnn_jax.models.layers import Layers
from cnn_jax.models.registry import register

CONFIGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
    num_classes: int
    config: Sequence[int | str] = CONFIGS[16]  # output channels per 3x3 convolution, "M" for a 2x2 max-pool
    head: str = "imagenet"
    dropout: float = 0.5
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layers = self.layers
        for i, layer in enumerate(self.config):
            if layer == "M":
                x = cnn.MaxPool(2)(x)
                continue
            x = layers.conv_layer(layer, 3, padding=layers.centred_padding(3), name=f"conv{i}")(x)
            x = nn.relu(layers.norm_layer(train, f"norm{i}")(x))
        if self.head == "cifar":
            return layers.dense(self.num_classes, name="fc")(cnn.GlobalAvgPool()(x))
        x = flatten_features(cnn.AdaptiveAvgPool(7)(x))
        for j in range(2):
            x = nn.relu(layers.dense(4096, name=f"fc{j + 1}")(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return layers.dense(self.num_classes, name="fc3")(x)


for _depth, _config in CONFIGS.items():
    register(f"vgg{_depth}", norm="none", config=_config)(VGG)
    register(f"vgg{_depth}_bn", norm="batch", config=_config)(VGG)
    register(f"vgg{_depth}_cifar", norm="batch", config=_config, head="cifar")(VGG)
