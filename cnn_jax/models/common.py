"""Reshapes and pooling geometry several architectures share."""

from __future__ import annotations

import jax

from cnn_jax import nn as cnn


def add_channel_axis(x: jax.Array) -> jax.Array:
    """Signals (N, L) -> (N, L, 1); inputs that already have a channel axis pass through."""
    return x[..., None] if x.ndim == 2 else x


def flatten_features(x: jax.Array) -> jax.Array:
    """(N, *spatial, C) -> (N, prod(spatial) * C) in NHWC order: PyTorch's NCHW flatten of the same
    feature map orders the same values channel-first (see `torch_weights` for the weight permutation)."""
    return x.reshape(x.shape[0], -1)


def ceil_mode_padding(n: int, window: int, stride: int, padding: int) -> tuple[int, int]:
    """The (low, high) padding under which floor-mode pooling reproduces PyTorch's `ceil_mode=True`.

    PyTorch's ceil mode rounds the output size up, ceil((n + 2p - k) / s) + 1, but drops a last
    window that would start in the right padding; the extra high-side padding only completes the
    last window, so every window starts where PyTorch's does. E.g. n=112, k=3, s=2, p=0 -> (0, 1):
    56 outputs, where floor mode gives 55; n=15, k=3, s=2 -> (0, 0): ceil and floor agree.
    """
    out = -(-(n + 2 * padding - window) // stride) + 1
    if (out - 1) * stride >= n + padding:
        out -= 1
    return padding, padding + max(0, (out - 1) * stride + window - n - 2 * padding)


def max_pool_ceil(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """torch.nn.MaxPool2d(window, stride, padding, ceil_mode=True) on NHWC x: (N, H, W, C) -> (N, H', W', C).

    Padded positions are -inf in cnn_jax's max pooling, as PyTorch ignores them."""
    pads = [ceil_mode_padding(n, window, stride, padding) for n in x.shape[1:-1]]
    return cnn.MaxPool(window, stride, padding=pads)(x)
