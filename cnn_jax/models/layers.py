"""The one constructor contract of every model: `layers`, the factories it builds its layers from.

As flax's examples pass `partial(nn.Conv, ...)` and `partial(nn.BatchNorm, axis_name=...)` down, every
model here takes one `Layers` value holding the convolution variant (a ConvSpec), the normalisation (a
`Norm`, which carries the cross-device axis name and the ghost-batch size) and the compute dtype. The
training engine sets the axis name through `models.create(..., norm_axis_name=...)` and never asks a
model what it has; a model without normalisation simply never calls `norm_layer`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from cnn_jax import nn as cnn

NORMS = ("batch", "none", "lrn")


@dataclasses.dataclass(frozen=True)
class Norm:
    """The normalisation after a convolution: "batch" (BatchNorm), "lrn" (AlexNet's local response
    normalisation) or "none"; for BatchNorm the device axis its statistics average over, the ghost-batch
    size, momentum (flax's convention: running = momentum * running + (1 - momentum) * batch) and epsilon."""

    kind: str = "batch"
    axis_name: str | None = None
    virtual_batch_size: int | None = None
    momentum: float = 0.9
    epsilon: float = 1e-5

    def __post_init__(self):
        if self.kind not in NORMS:
            raise ValueError(f"norm={self.kind!r}: unknown; valid values are {', '.join(NORMS)}")


@dataclasses.dataclass(frozen=True)
class Layers:
    """conv (the variant every convolution uses), norm and dtype (compute dtype; parameters stay float32)."""

    conv: cnn.ConvSpec = cnn.ConvSpec()
    norm: Norm = Norm()
    dtype: Any = None

    def conv_layer(self, features: int, kernel_size, **kwargs) -> nn.Module:
        """A convolution of the configured variant: flax.linen.Conv's arguments (strides, padding, ...)."""
        return self.conv.make(features, kernel_size, dtype=self.dtype, **kwargs)

    def centred_padding(self, kernel_size: int) -> int | tuple[int, ...]:
        """(k - 1) / 2 times the variant's dilation on every side, for an odd kernel: PyTorch's padding
        (symmetric, unlike "SAME" at stride 2 and even sizes), which also keeps stride-1 sizes under
        ConvSpec(dilation=...)."""
        dilation = self.conv.dilation
        if isinstance(dilation, int):
            return dilation * (kernel_size // 2)
        return tuple(d * (kernel_size // 2) for d in dilation)

    def norm_layer(self, train: bool, name: str | None = None) -> Callable[[jax.Array], jax.Array]:
        """The normalisation layer; BatchNorm uses batch statistics when `train`, running averages otherwise."""
        n = self.norm
        if n.kind == "batch":
            return cnn.BatchNorm(
                use_running_average=not train,
                momentum=n.momentum,
                epsilon=n.epsilon,
                axis_name=n.axis_name,
                virtual_batch_size=n.virtual_batch_size,
                dtype=self.dtype,
                name=name,
            )
        if n.kind == "lrn":
            return cnn.LocalResponseNorm(name=name)
        return lambda x: x

    def dense(self, features: int, name: str | None = None) -> nn.Dense:
        return nn.Dense(features, dtype=self.dtype, name=name)
