"""Train a model from a config file; every config field is a flag.

    python -m experiments.train --config=experiments/configs/lenet5_mnist.py --workdir=runs/lenet5 \
        --config.model.conv.kind=tiled --config.model.conv.tile=2

Multi-host: add --distributed (coordinator and process id from flags, or from SLURM/MPI/Kubernetes/TPU).
"""

import logging as python_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cnn_jax.config_check import check_cli
from cnn_jax.data import DatasetUnavailableError
from cnn_jax.train import NonFiniteLossError, distributed, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory: config, metrics, checkpoints; reused to resume")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() before anything else")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "number of processes (multi-host)")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index (multi-host)")
_HEARTBEAT = flags.DEFINE_integer("heartbeat_timeout_s", 100, "multi-host: a process silent this long fails the job")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(python_logging.Filter):
    """Orbax logs every checkpoint step at INFO; keep its warnings, drop the rest."""

    def filter(self, record: python_logging.LogRecord) -> bool:
        return record.levelno >= python_logging.WARNING or "/orbax/" not in record.pathname


def parse_flags(argv: list[str]) -> list[str]:
    """absl's own parsing, after the --config.FIELD overrides are checked against the config file:
    ml_collections answers a field the config lacks with a traceback, this with the field, the closest valid
    name and the valid fields."""
    try:
        expanded = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)  # --flagfile=..., as absl reads it
    except flags.Error:
        expanded = argv  # an unreadable flagfile: absl's own parsing below says so
    try:
        check_cli(expanded)
    except ValueError as err:
        sys.exit(f"error: {err}")
    return app.parse_flags_with_usage(argv)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    if _DISTRIBUTED.value:
        distributed.initialize(
            _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, heartbeat_timeout_s=_HEARTBEAT.value
        )
    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ValueError, NonFiniteLossError, DatasetUnavailableError) as err:  # expected: the message alone
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
