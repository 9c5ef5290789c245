"""Reshapes several architectures share."""
from __future__ import annotations

import jax


def add_channel_axis(x: jax.Array) -> jax.Array:
    """Signals (N, L) -> (N, L, 1); inputs that already have a channel axis pass through."""
    return x[..., None] if x.ndim == 2 else x


def flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)
