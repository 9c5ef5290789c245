"""The train state: everything a checkpoint holds, as one pytree."""

from __future__ import annotations

from collections.abc import Callable
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


def state_initializer(
    model: nn.Module, optimizer_init: Callable, input_shape: tuple[int, ...]
) -> Callable[[int], TrainState]:
    """`init(seed) -> TrainState`: parameters from `seed` on a (1, *input_shape) dummy batch, and the optimizer
    state (`optimizer_init(params)`, e.g. an optax transformation's `init`). One compiled program ("init_state")
    with the seed as its argument: every seed, one compilation."""

    def init_state(seed):
        variables = model.init(jax.random.key(seed), jnp.zeros((1, *input_shape), jnp.float32), train=False)
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=optimizer_init(params),
        )

    return jax.jit(init_state)


def create_state(
    model: nn.Module, tx: optax.GradientTransformation, input_shape: tuple[int, ...], seed: int
) -> TrainState:
    """The state `state_initializer` gives for one seed."""
    return state_initializer(model, tx.init, input_shape)(seed)
