"""GoogLeNet / Inception v1 (Szegedy et al. 2015, "Going deeper with convolutions", Table 1).

Four parallel branches per Inception module: 1x1; 1x1 then 3x3; 1x1 then 5x5; 3x3 max-pool then
1x1, concatenated along channels. Layout and widths as in the paper, and the function torchvision's
`googlenet` computes: BatchNorm with epsilon 1e-3 after every bias-free convolution (BasicConv2d;
`norm="none"` for a network without it, with biases; the 2014 network's local response normalisation
in the stem is left out), convolutions padded (k - 1) / 2 on every side, and max-pools with PyTorch's
ceil_mode=True. torchvision's implementation uses a 3x3 kernel in the "5x5" branch: with
`branch5x5_kernel=3` the parameter count is torchvision's (cnn_jax/report/published.py) and
`models.from_torch_state_dict("googlenet", ...)` loads its weights.
`aux_heads=True` adds the two auxiliary classifiers (after 4a and 4d) used in training; the model then
returns (logits, aux1, aux2) when called with train=True. `transform_input=True` is torchvision's
option of the same name, on for its pretrained weights: it maps inputs normalised with the ImageNet
mean and std to the [-1, 1] scaling the weights were trained with.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_jax import nn as cnn
from cnn_jax.models.common import flatten_features, max_pool_ceil
from cnn_jax.models.layers import Layers
from cnn_jax.models.registry import register

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection) per module, Table 1.
MODULES = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
# The per-channel ImageNet statistics torchvision's `transform_input` undoes (RGB).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


class ConvNormReLU(nn.Module):
    features: int
    kernel_size: int
    strides: int = 1
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        # A bias is redundant before BatchNorm's shift, so only the unnormalised network has one.
        x = self.layers.conv_layer(
            self.features,
            self.kernel_size,
            strides=self.strides,
            padding=self.layers.centred_padding(self.kernel_size),
            use_bias=self.layers.norm.kind != "batch",
            name="conv",
        )(x)
        return nn.relu(self.layers.norm_layer(train, "norm")(x))


class InceptionModule(nn.Module):
    widths: tuple[int, ...]
    branch5x5_kernel: int = 5
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        w1, w3r, w3, w5r, w5, wp = self.widths
        unit = lambda features, k, name: ConvNormReLU(features, k, layers=self.layers, name=name)
        branches = [
            unit(w1, 1, "b1")(x, train),
            unit(w3, 3, "b2_conv")(unit(w3r, 1, "b2_reduce")(x, train), train),
            unit(w5, self.branch5x5_kernel, "b3_conv")(unit(w5r, 1, "b3_reduce")(x, train), train),
            unit(wp, 1, "b4_proj")(cnn.MaxPool(3, 1, padding=1)(x), train),  # stride 1: ceil_mode changes nothing
        ]
        return jnp.concatenate(branches, axis=-1)


class AuxHead(nn.Module):
    num_classes: int
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = ConvNormReLU(128, 1, layers=self.layers, name="conv")(cnn.AdaptiveAvgPool(4)(x), train)
        x = nn.relu(self.layers.dense(1024, name="fc1")(flatten_features(x)))
        x = nn.Dropout(0.7, deterministic=not train)(x)
        return self.layers.dense(self.num_classes, name="fc2")(x)


@register("googlenet", norm="batch", norm_epsilon=1e-3)
class GoogLeNet(nn.Module):
    num_classes: int
    branch5x5_kernel: int = 5
    aux_heads: bool = False
    dropout: float = 0.2
    transform_input: bool = False
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        """x (N, H, W, 3) -> logits (N, classes); with aux_heads and train, (logits, aux1, aux2)."""
        layers = self.layers
        if self.transform_input:
            x = x * jnp.asarray(IMAGENET_STD / 0.5, x.dtype) + jnp.asarray((IMAGENET_MEAN - 0.5) / 0.5, x.dtype)
        x = ConvNormReLU(64, 7, strides=2, layers=layers, name="conv1")(x, train)
        x = max_pool_ceil(x, 3, 2)
        x = ConvNormReLU(64, 1, layers=layers, name="conv2")(x, train)
        x = ConvNormReLU(192, 3, layers=layers, name="conv3")(x, train)
        x = max_pool_ceil(x, 3, 2)
        aux = []
        for name, widths in MODULES.items():
            if name in ("4a", "5a"):
                x = max_pool_ceil(x, 3 if name == "4a" else 2, 2)
            x = InceptionModule(widths, self.branch5x5_kernel, layers=layers, name=f"inception{name}")(x, train)
            if self.aux_heads and name in ("4a", "4d"):
                aux.append(AuxHead(self.num_classes, layers=layers, name=f"aux_{name}")(x, train))
        x = nn.Dropout(self.dropout, deterministic=not train)(cnn.GlobalAvgPool()(x))
        logits = layers.dense(self.num_classes, name="fc")(x)
        return (logits, *aux) if self.aux_heads and train else logits
