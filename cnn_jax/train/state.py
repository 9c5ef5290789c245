"""The train state: everything a checkpoint holds, as one pytree."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """step: number of optimizer updates applied; batch_stats: BatchNorm running averages ({} if none)."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def create_state(
    model: nn.Module, tx: optax.GradientTransformation, input_shape: tuple[int, ...], seed: int
) -> TrainState:
    """Initialise parameters from `seed` on a (1, *input_shape) dummy batch."""
    variables = jax.jit(lambda key: model.init(key, jnp.zeros((1, *input_shape), jnp.float32), train=False))(
        jax.random.key(seed)
    )
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
    )
