"""The choices a training config may take, checked before any data is loaded or anything is traced."""

from __future__ import annotations

import ml_collections

from cnn_jax import models
from cnn_jax.data import DATASETS
from cnn_jax.nn.conv import CONV_KINDS
from cnn_jax.train.feed import PLACEMENTS

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")
PARALLEL = ("shard_map", "pmap")
DTYPES = ("float32", "bfloat16")


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}, as run directories' config.json is compared and grouped; lists become
    tuples so values can be grouped on."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


def _choice(field: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"config.{field}={value!r}: unknown; valid values are {', '.join(map(str, valid))}")


def _positive(field: str, value, allow_zero: bool = False) -> None:
    if not (isinstance(value, (int, float)) and (value >= 0 if allow_zero else value > 0)):
        raise ValueError(f"config.{field}={value!r} must be a {'non-negative' if allow_zero else 'positive'} number")


def _get(config: ml_collections.ConfigDict, field: str):
    for key in field.split("."):
        config = config[key]
    return config


def validate(config: ml_collections.ConfigDict, *, device_count: int, process_count: int = 1) -> None:
    """Raise ValueError naming the first bad field, its value and what would be valid."""
    _choice("dataset.name", config.dataset.name, DATASETS)
    _choice("model.name", config.model.name, models.names())
    _choice("model.conv.kind", config.model.conv.kind, CONV_KINDS)
    _choice("optimizer.name", config.optimizer.name, OPTIMIZERS)
    _choice("optimizer.schedule", config.optimizer.schedule, SCHEDULES)
    _choice("train.parallel", config.train.parallel, PARALLEL)
    _choice("train.dtype", config.train.dtype, DTYPES)
    _choice("train.data_placement", config.train.data_placement, PLACEMENTS)
    for field in (
        "optimizer.learning_rate",
        "train.batch_size",
        "train.eval_batch_size",
        "train.num_epochs",
        "train.log_every_steps",
        "train.keep_checkpoints",
        "train.steps_per_dispatch",
    ):
        _positive(field, _get(config, field))
    for field in (
        "optimizer.weight_decay",
        "optimizer.warmup_steps",
        "optimizer.clip_norm",
        "optimizer.momentum",
        "train.num_steps",
        "train.checkpoint_every_steps",
        "dataset.augment.crop_padding",
    ):
        _positive(field, _get(config, field), allow_zero=True)
    if not 0 <= config.train.label_smoothing < 1:
        raise ValueError(f"config.train.label_smoothing={config.train.label_smoothing!r} must be in [0, 1)")
    if config.dataset.augment.flip and not DATASETS[config.dataset.name].flip:
        raise ValueError(
            f"config.dataset.augment.flip=True: a horizontal flip changes the label of "
            f"{config.dataset.name!r} examples; flip is valid for "
            f"{', '.join(n for n, d in DATASETS.items() if d.flip)}"
        )
    for field in ("batch_size", "eval_batch_size"):
        batch = config.train[field]
        if batch % device_count:
            raise ValueError(
                f"config.train.{field}={batch} is not divisible by the {device_count} devices; "
                f"use a multiple of {device_count}"
            )
        if batch % process_count:
            raise ValueError(f"config.train.{field}={batch} is not divisible by the {process_count} processes")
