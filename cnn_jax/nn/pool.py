"""Pooling modules (no parameters), so a model can take its pooling from configuration, and flax.linen's
generic `pool` function.

The modules' inputs are (*batch, *spatial, C): with a sequence `window` (`output_size` for adaptive pooling),
any number of leading batch axes, none included, as flax.linen's pooling; with an int, the rank gives the
spatial axes (one batch axis; rank 2 is an unbatched 1-D input). Their stride defaults to the window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import prod

import flax.linen as nn
import jax
from jax.typing import ArrayLike

from cnn_jax import ops
from cnn_jax.nn.conv import layer_errors, spatial_axes, with_one_batch_axis
from cnn_jax.ops.shapes import PaddingLike, as_tuple

IntOrSeq = int | Sequence[int]


def pool(
    inputs: jax.Array,
    init: ArrayLike,
    reduce_fn: Callable[[jax.Array, jax.Array], jax.Array],
    window_shape: IntOrSeq,
    strides: IntOrSeq | None,
    padding: PaddingLike,
) -> jax.Array:
    """flax.linen.pool: `reduce_fn` folded over each window from `init`, inputs (*batch, *spatial, C) ->
    (*batch, *out, C), len(window_shape) spatial axes after any number of batch axes, none included.

    flax's signature and its strides=None, which means 1 (ops.pool's None means the window). `padding`: "VALID",
    "SAME" or one (lo, hi) pair per spatial axis, as flax, or ops.pool's other modes. An int window_shape, which
    flax does not take, is ops.pool's: every spatial axis of (N, *spatial, C).
    """
    return ops.pool(inputs, init, reduce_fn, window_shape, 1 if strides is None else strides, padding)


class MaxPool(nn.Module):
    """ops.max_pool as a layer: x (*batch, *spatial, C) -> (*batch, *out, C)."""

    window: IntOrSeq
    strides: IntOrSeq | None = None
    padding: PaddingLike = "VALID"

    def __call__(self, x: jax.Array) -> jax.Array:
        with layer_errors(self):
            return with_one_batch_axis(
                lambda x: ops.max_pool(x, self.window, self.strides, self.padding),
                x,
                spatial_axes(x, self.window, "window"),
            )


class BlurPool(nn.Module):
    """ops.blur_pool as a layer (Zhang 2019: binomial low-pass, then subsample):
    x (*batch, *spatial, C) -> (*batch, *ceil(spatial / strides), C). No parameters."""

    size: int = 3
    strides: IntOrSeq = 2
    pad_mode: str = "REFLECT"

    def __call__(self, x: jax.Array) -> jax.Array:
        with layer_errors(self):
            return with_one_batch_axis(
                lambda x: ops.blur_pool(x, self.size, self.strides, self.pad_mode),
                x,
                spatial_axes(x, self.strides, "strides"),
            )


class AvgPool(nn.Module):
    window: IntOrSeq
    strides: IntOrSeq | None = None
    padding: PaddingLike = "VALID"
    count_include_pad: bool = True

    def __call__(self, x: jax.Array) -> jax.Array:
        with layer_errors(self):
            pool = lambda x: ops.avg_pool(x, self.window, self.strides, self.padding, self.count_include_pad)
            return with_one_batch_axis(pool, x, spatial_axes(x, self.window, "window"))


class LpPool(nn.Module):
    window: IntOrSeq
    strides: IntOrSeq | None = None
    padding: PaddingLike = "VALID"
    p: float = 2.0

    def __call__(self, x: jax.Array) -> jax.Array:
        with layer_errors(self):
            return with_one_batch_axis(
                lambda x: ops.lp_pool(x, self.window, self.strides, self.padding, self.p),
                x,
                spatial_axes(x, self.window, "window"),
            )


class GlobalAvgPool(nn.Module):
    def __call__(self, x: jax.Array) -> jax.Array:
        with layer_errors(self):
            return ops.global_avg_pool(x)


class GlobalMaxPool(nn.Module):
    def __call__(self, x: jax.Array) -> jax.Array:
        with layer_errors(self):
            return ops.global_max_pool(x)


class TrainableSubsampling(nn.Module):
    """LeNet-5's subsampling (LeCun et al. 1998): the sum of each window times a trainable
    coefficient plus a trainable bias, per channel: params "coefficient", "bias" (C,)."""

    window: IntOrSeq = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = (x.shape[-1],)
        count = prod(as_tuple(self.window, x.ndim - 2, "window"))
        # Starts as average pooling: the coefficient times the window sum is the mean.
        coefficient = self.param("coefficient", nn.initializers.constant(1.0 / count), channels)
        bias = self.param("bias", nn.initializers.zeros_init(), channels)
        return _window_sums(x, as_tuple(self.window, x.ndim - 2, "window")) * coefficient + bias


def _window_sums(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    """Sums over non-overlapping windows (VALID, stride = window; a remainder is dropped) as a reshape and a
    sum: the same numbers as ops.avg_pool(x, window) * prod(window), and much faster to differentiate on
    XLA:CPU than a reduce_window."""
    out = [n // k for n, k in zip(x.shape[1:-1], window)]
    x = x[(slice(None), *(slice(0, o * k) for o, k in zip(out, window)))]
    split = [d for o, k in zip(out, window) for d in (o, k)]
    x = x.reshape(x.shape[0], *split, x.shape[-1])
    return x.sum(axis=tuple(range(2, 2 * len(window) + 1, 2)))


class AdaptiveAvgPool(nn.Module):
    output_size: IntOrSeq

    def __call__(self, x: jax.Array) -> jax.Array:
        with layer_errors(self):
            return with_one_batch_axis(
                lambda x: ops.adaptive_avg_pool(x, self.output_size),
                x,
                spatial_axes(x, self.output_size, "output_size"),
            )


class AdaptiveMaxPool(nn.Module):
    output_size: IntOrSeq

    def __call__(self, x: jax.Array) -> jax.Array:
        with layer_errors(self):
            return with_one_batch_axis(
                lambda x: ops.adaptive_max_pool(x, self.output_size),
                x,
                spatial_axes(x, self.output_size, "output_size"),
            )
