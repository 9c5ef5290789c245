"""Pieces several architectures share: normalisation by name, flattening."""
from __future__ import annotations

import jax

from cnn_jax import nn as cnn

NORMS = ("batch", "none", "lrn")


def make_norm(kind: str, train: bool, *, axis_name: str | None = None, virtual_batch_size: int | None = None,
              dtype=None, name: str | None = None):
    """The normalisation layer after a convolution: "batch" (BatchNorm), "lrn" (AlexNet's LRN) or "none"."""
    if kind == "batch":
        return cnn.BatchNorm(use_running_average=not train, axis_name=axis_name,
                             virtual_batch_size=virtual_batch_size, dtype=dtype, name=name)
    if kind == "lrn":
        return cnn.LocalResponseNorm(name=name)
    if kind == "none":
        return lambda x: x
    raise ValueError(f"norm={kind!r}: unknown; valid values are {', '.join(NORMS)}")


def add_channel_axis(x: jax.Array) -> jax.Array:
    """Signals (N, L) -> (N, L, 1); inputs that already have a channel axis pass through."""
    return x[..., None] if x.ndim == 2 else x


def flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)
