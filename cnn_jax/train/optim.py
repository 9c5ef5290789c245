"""Optimizer and learning-rate schedule from `config.optimizer` (optax)."""

from __future__ import annotations

import ml_collections
import optax


def make_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup over `warmup_steps`, then constant, cosine to zero, or step decay.

    step: multiply by `decay_factor` at each fraction of training in `decay_boundaries` (e.g. (0.5, 0.75)).
    """
    lr, warmup = config.learning_rate, config.warmup_steps
    rest = max(total_steps - warmup, 1)
    if config.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, rest)
    else:
        main = optax.piecewise_constant_schedule(
            lr, {int(b * total_steps) - warmup: config.decay_factor for b in config.decay_boundaries}
        )
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """SGD (momentum, Nesterov), Adam or AdamW; weight decay; global-norm gradient clipping when clip_norm > 0."""
    schedule = make_schedule(config, total_steps)
    if config.name == "sgd":
        core = optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov)
    elif config.name == "adam":
        core = optax.adam(schedule, b1=config.b1, b2=config.b2)
    else:
        core = optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay)
    chain = []
    if config.clip_norm:
        chain.append(optax.clip_by_global_norm(config.clip_norm))
    if config.weight_decay and config.name != "adamw":
        # Coupled L2 decay (added to the gradient), as in the classic SGD recipes.
        chain.append(optax.add_decayed_weights(config.weight_decay))
    return optax.chain(*chain, core)
