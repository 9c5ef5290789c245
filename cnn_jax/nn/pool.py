"""Pooling modules (no parameters), so a model can take its pooling from configuration."""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from cnn_jax import ops
from cnn_jax.ops.shapes import PaddingLike

IntOrSeq = int | Sequence[int]


class MaxPool(nn.Module):
    window: IntOrSeq
    strides: IntOrSeq | None = None
    padding: PaddingLike = "VALID"

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.max_pool(x, self.window, self.strides, self.padding)


class AvgPool(nn.Module):
    window: IntOrSeq
    strides: IntOrSeq | None = None
    padding: PaddingLike = "VALID"
    count_include_pad: bool = True

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.avg_pool(x, self.window, self.strides, self.padding, self.count_include_pad)


class LpPool(nn.Module):
    window: IntOrSeq
    strides: IntOrSeq | None = None
    padding: PaddingLike = "VALID"
    p: float = 2.0

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.lp_pool(x, self.window, self.strides, self.padding, self.p)


class GlobalAvgPool(nn.Module):
    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.global_avg_pool(x)


class GlobalMaxPool(nn.Module):
    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.global_max_pool(x)


class AdaptiveAvgPool(nn.Module):
    output_size: IntOrSeq

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.adaptive_avg_pool(x, self.output_size)


class AdaptiveMaxPool(nn.Module):
    output_size: IntOrSeq

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.adaptive_max_pool(x, self.output_size)
