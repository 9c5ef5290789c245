"""The context module of Yu & Koltun 2016, "Multi-scale context aggregation by dilated convolutions".

Basic module (Table 1): seven 3x3 convolutions with dilations 1, 1, 2, 4, 8, 16, 1 and a final
1x1 convolution, all with C channels and ReLUs, resolution preserved; the receptive field grows
3, 5, 9, 17, 33, 65, 67. Here the first layer maps the input channels to `features`, the last
1x1 layer to `num_classes`: per-pixel logits (N, H, W, classes), or with `global_pool=True`
their spatial mean, for image-level labels. Signals (N, L) get a channel axis; any spatial rank works.

With `dilations=(1,) * depth` it is the plain stack of Luo et al. 2016 ("Understanding the effective
receptive field"), whose `activation` ("relu" or "linear") and `kernel_init` ("lecun_normal" random
weights, or "uniform": every weight 1/fan_in) are the settings that paper compares.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np

from cnn_jax import nn as cnn
from cnn_jax.models.common import add_channel_axis
from cnn_jax.models.layers import Layers
from cnn_jax.models.registry import register

ACTIVATIONS = {"relu": nn.relu, "linear": lambda x: x}


def _uniform(key, shape, dtype=jax.numpy.float32):
    """Every weight 1/fan_in, so each layer averages its inputs (Luo et al.'s "uniform" network)."""
    return jax.numpy.full(shape, 1.0 / np.prod(shape[:-1]), dtype)


KERNEL_INITS = {"lecun_normal": None, "uniform": _uniform}  # None: the layer's own LeCun normal


@register("context_net")
class ContextNet(nn.Module):
    num_classes: int
    features: int = 32
    dilations: Sequence[int] = (1, 1, 2, 4, 8, 16, 1)
    global_pool: bool = False
    activation: str = "relu"
    kernel_init: str = "lecun_normal"
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for field, value, valid in (
            ("activation", self.activation, ACTIVATIONS),
            ("kernel_init", self.kernel_init, KERNEL_INITS),
        ):
            if value not in valid:
                raise ValueError(f"ContextNet {field}={value!r}: unknown; valid values are {', '.join(valid)}")
        if self.kernel_init == "uniform" and self.layers.conv.kind != "standard":
            raise ValueError(
                f"ContextNet kernel_init='uniform' needs conv kind 'standard', not {self.layers.conv.kind!r}"
            )
        act, init = ACTIVATIONS[self.activation], KERNEL_INITS[self.kernel_init]
        x = add_channel_axis(x)
        for i, dilation in enumerate(self.dilations):
            x = act(
                self.layers.conv_layer(
                    self.features, 3, padding="SAME", kernel_dilation=dilation, kernel_init=init, name=f"conv{i + 1}"
                )(x)
            )
        x = self.layers.conv_layer(self.num_classes, 1, padding="VALID", kernel_init=init, name="output")(x)
        return cnn.GlobalAvgPool()(x) if self.global_pool else x
