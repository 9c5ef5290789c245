"""What a run varies without changing its program, and what splits runs into separate programs.

A run's *values* (`RUN_VALUES`) are the config fields that change no array shape and no computation's
structure: the seed (initialisation, data order, augmentation and dropout) and the optimizer's scalars. The
train step takes them as traced arrays (`run_values`), so runs that differ only in these train with one
compiled program, and in a run batch with one value per run. Every other field (model, convolution,
dataset, batch size, dtype, steps, schedule kind, ...) is *structure*: runs batch together only when their
`structure_key`s are equal. Whether momentum, weight decay and clipping are on at all (> 0) is structure too,
since it adds or removes a transform and its state; their amounts are values.
"""

from __future__ import annotations

import json

import ml_collections
import numpy as np

from cnn_jax.config_tree import flatten

# Config field -> its name in the values the step receives.
RUN_VALUES = {
    "seed": "seed",
    "optimizer.learning_rate": "learning_rate",
    "optimizer.momentum": "momentum",
    "optimizer.b1": "b1",
    "optimizer.b2": "b2",
    "optimizer.weight_decay": "weight_decay",
    "optimizer.warmup_steps": "warmup_steps",
    "optimizer.clip_norm": "clip_norm",
    "optimizer.decay_factor": "decay_factor",
    "train.label_smoothing": "label_smoothing",
}
_INTEGER_VALUES = ("seed", "warmup_steps")
_SWITCHES = ("optimizer.momentum", "optimizer.weight_decay", "optimizer.clip_norm")  # on (> 0) or off
# Where a run's files and data live: they may differ between runs of one batch, and between machines.
LOCATION_FIELDS = ("dataset.data_dir", "dataset.download_dir")


def run_values(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """The run's values as NumPy scalars: int32 for the seed and warmup steps, the default float dtype (float32,
    float64 under `jax.enable_x64`) for the rest."""
    import jax  # here: the rest of this module is for sweeps, which group runs without loading jax

    flat = flatten(config.to_dict())
    floating = jax.dtypes.canonicalize_dtype(np.float64)
    return {
        name: np.asarray(flat[field], np.int32 if name in _INTEGER_VALUES else floating)
        for field, name in RUN_VALUES.items()
    }


def structure_key(config: ml_collections.ConfigDict) -> str:
    """A string equal for two configs exactly when their runs can share one program: every field but the run
    values and the locations, plus which of momentum, weight decay and clipping are on."""
    flat = flatten(config.to_dict())
    kept = {k: v for k, v in flat.items() if k not in RUN_VALUES and k not in LOCATION_FIELDS}
    kept.update({f"{field} > 0": bool(flat[field]) for field in _SWITCHES})
    return json.dumps(kept, sort_keys=True, default=repr)


def stack_values(values: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Several runs' values as one dict of arrays (runs,), for a batch over a leading run axis."""
    return {name: np.stack([v[name] for v in values]) for name in values[0]}
