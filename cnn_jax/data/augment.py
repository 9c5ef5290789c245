"""Device side of the input pipeline: normalisation and per-example random augmentation, inside the jitted step.

Each example's randomness comes from (step key, its index in the global batch), so augmentations do
not depend on how the batch is split across devices or processes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def normalize(x: jax.Array, mean: jax.Array, std: jax.Array, scale: float) -> jax.Array:
    """Stored inputs (N, H, W, C) uint8 or (N, L) float -> standardised per channel, NHWC or NLC.

    The result is JAX's default float: float32, or float64 under `jax.enable_x64`.
    """
    x = x.astype(float) * scale
    if x.ndim == 2:
        x = x[..., None]
    return (x - mean * scale) / (std * scale)


def random_crop(x: jax.Array, key: jax.Array, padding: int) -> jax.Array:
    """Zero-pad every spatial axis of one example (..., C) by `padding`, crop back at a random offset.

    This is a random translation by up to `padding` positions per axis with zero fill.
    """
    spatial = x.ndim - 1
    padded = jnp.pad(x, [(padding, padding)] * spatial + [(0, 0)])
    offsets = jax.random.randint(key, (spatial,), 0, 2 * padding + 1)
    return jax.lax.dynamic_slice(padded, (*offsets, 0), x.shape)


def random_flip(x: jax.Array, key: jax.Array) -> jax.Array:
    """Mirror one (H, W, C) example along W with probability 1/2."""
    return jnp.where(jax.random.bernoulli(key), x[:, ::-1], x)


def augment(x: jax.Array, keys: jax.Array, *, crop_padding: int, flip: bool) -> jax.Array:
    """Augment a normalised batch (N, ..., C) with one key per example."""

    def one(example, key):
        crop_key, flip_key = jax.random.split(key)
        if crop_padding:
            example = random_crop(example, crop_key, crop_padding)
        if flip:
            example = random_flip(example, flip_key)
        return example

    if not crop_padding and not flip:
        return x
    return jax.vmap(one)(x, keys)
