"""Flax linen modules: thin wrappers that create parameters and call cnn_jax.ops."""

from cnn_jax.nn.conv import (
    CONV_KINDS,
    CONV_PADDING_MODES,
    Conv,
    ConvSpec,
    ConvTranspose,
    LocalConv,
    TiledConv,
    connected_kernel,
)
from cnn_jax.nn.norm import BatchNorm, LocalResponseNorm
from cnn_jax.nn.pool import (
    AdaptiveAvgPool,
    AdaptiveMaxPool,
    AvgPool,
    BlurPool,
    GlobalAvgPool,
    GlobalMaxPool,
    LpPool,
    MaxPool,
    TrainableSubsampling,
    pool,
)

__all__ = [
    "Conv",
    "ConvTranspose",
    "TiledConv",
    "LocalConv",
    "ConvSpec",
    "connected_kernel",
    "CONV_KINDS",
    "CONV_PADDING_MODES",
    "BatchNorm",
    "LocalResponseNorm",
    "MaxPool",
    "AvgPool",
    "BlurPool",
    "LpPool",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "AdaptiveAvgPool",
    "AdaptiveMaxPool",
    "TrainableSubsampling",
    "pool",
]
