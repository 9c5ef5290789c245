"""Training engine: one per-device step under shard_map or pmap, run batches, the loop, checkpoints and metrics.

The names below load their module on first use (PEP 562), so a light module of this package (`run_values`,
`run_lock`) imports without jax and TFDS: a sweep groups and schedules its runs without loading either.
"""

import importlib

_EXPORTS = {
    "Checkpoints": "checkpoint",
    "default_config": "config",
    "validate": "config",
    "NonFiniteLossError": "loop",
    "Outcome": "loop",
    "train_and_evaluate": "loop",
    "train_runs": "loop",
    "read_metrics": "metrics",
    "Program": "program",
    "build_model": "program",
    "build_program": "program",
    "make_program": "program",
    "load_classifier": "restore",
    "TrainState": "state",
    "create_state": "state",
}

__all__ = ["distributed", *_EXPORTS]


def __getattr__(name: str):
    if name == "distributed":
        return importlib.import_module(f"{__name__}.distributed")
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
