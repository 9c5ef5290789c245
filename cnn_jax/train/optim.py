"""Optimizer and learning-rate schedule from `config.optimizer` (optax), with the run's scalars as traced values.

The config decides the optimizer's structure (which transforms, which schedule, its boundaries); the run's
scalars (learning rate, momentum, Adam's betas, weight decay, warmup, clipping norm, decay factor: see
`run_values.py`) are arrays passed in when the step runs, not constants compiled into it. So one compiled
step serves every learning rate of a sweep, and a batch of runs can carry one value per run.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

Schedule = Callable[[jax.Array, Mapping[str, jax.Array]], jax.Array]  # (update count, run values) -> rate


def make_schedule(config: ml_collections.ConfigDict, total_steps: int) -> Schedule:
    """`lr(count, values)`: linear warmup over `warmup_steps` from 0, then constant, cosine to zero, or step
    decay, each counted from the end of the warmup (as `optax.join_schedules` counts).

    step: multiply by `decay_factor` at each fraction of training in `decay_boundaries` (e.g. (0.5, 0.75)).
    The formulas are optax's (`linear_schedule`, `cosine_decay_schedule`, `piecewise_constant_schedule`),
    written over traced values.
    """
    kind = config.schedule
    # Boundaries in steps from the start; optax's dict of them keeps one entry per step.
    boundaries = sorted({int(b * total_steps) for b in config.decay_boundaries})

    def lr(count: jax.Array, values: Mapping[str, jax.Array]) -> jax.Array:
        base, warmup = values["learning_rate"], values["warmup_steps"]
        after = count - warmup  # steps since the warmup ended
        if kind == "constant":
            main = base
        elif kind == "cosine":
            rest = jnp.maximum(total_steps - warmup, 1)
            main = base * (0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(after, rest) / rest)))
        else:
            main = base
            for boundary in boundaries:
                main = jnp.where(after >= boundary - warmup, main * values["decay_factor"], main)
        return jnp.where(count < warmup, base * count / jnp.maximum(warmup, 1), main)

    return lr


def make_optimizer(
    config: ml_collections.ConfigDict, total_steps: int
) -> Callable[[Mapping[str, jax.Array]], optax.GradientTransformation]:
    """`tx(values)`: SGD (momentum, Nesterov), Adam or AdamW; weight decay; global-norm gradient clipping.

    The config's momentum, weight decay and clipping norm only say whether each transform is present (> 0);
    their amounts come from `values`, like the rest of the run's scalars. The optimizer state's structure
    does not depend on `values`, so `tx(any values).init(params)` initialises it.
    """
    schedule = make_schedule(config, total_steps)

    def tx(values: Mapping[str, jax.Array]) -> optax.GradientTransformation:
        rate = lambda count: schedule(count, values)
        if config.name == "sgd":
            core = optax.sgd(rate, momentum=values["momentum"] if config.momentum else None, nesterov=config.nesterov)
        elif config.name == "adam":
            core = optax.adam(rate, b1=values["b1"], b2=values["b2"])
        else:
            core = optax.adamw(rate, b1=values["b1"], b2=values["b2"], weight_decay=values["weight_decay"])
        chain = []
        if config.clip_norm:
            chain.append(optax.clip_by_global_norm(values["clip_norm"]))
        if config.weight_decay and config.name != "adamw":
            # Coupled L2 decay (added to the gradient), as in the classic SGD recipes.
            chain.append(optax.add_decayed_weights(values["weight_decay"]))
        return optax.chain(*chain, core)

    return tx


def optimizer_init(tx: Callable[[Mapping[str, jax.Array]], optax.GradientTransformation]) -> Callable:
    """`init(params) -> optimizer state` of `tx` (from `make_optimizer`): the state's structure and initial
    values depend on the config alone, so any run values build it (zeros here)."""
    return tx(collections.defaultdict(float)).init
