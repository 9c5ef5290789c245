"""Training engine: one per-device step under shard_map or pmap, the loop, checkpoints and metrics."""

from cnn_jax.train import distributed
from cnn_jax.train.checkpoint import Checkpoints
from cnn_jax.train.config import default_config, validate
from cnn_jax.train.loop import NonFiniteLossError, Outcome, train_and_evaluate, train_runs
from cnn_jax.train.metrics import read_metrics
from cnn_jax.train.program import Program, build_model, build_program, make_program
from cnn_jax.train.restore import load_classifier
from cnn_jax.train.state import TrainState, create_state

__all__ = [
    "distributed",
    "Checkpoints",
    "default_config",
    "validate",
    "NonFiniteLossError",
    "build_model",
    "build_program",
    "make_program",
    "Program",
    "train_and_evaluate",
    "train_runs",
    "Outcome",
    "read_metrics",
    "load_classifier",
    "TrainState",
    "create_state",
]
