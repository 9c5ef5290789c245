"""The training command: a config file, its --config.FIELD overrides and a run directory.

    python -m cnn_jax.train --config=experiments/configs/lenet5_mnist.py --workdir=runs/lenet5 \
        --config.model.conv.kind=tiled --config.model.conv.tile=2

(`python -m experiments.train` is the same command.) Multi-host: add --distributed (coordinator and
process id from flags, or from SLURM/MPI/Kubernetes/TPU). Expected user errors (a misspelt field, a bad
value, missing data) end with the message alone and exit status 1; tracebacks are for bugs.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from cnn_jax.config_check import check_cli
from cnn_jax.console import quiet_libraries


def _define_flags() -> tuple[flags.FlagHolder, ...]:
    config = config_flags.DEFINE_config_file("config", None, "ml_collections config file", lock_config=True)
    holders = (
        config,
        flags.DEFINE_string("workdir", None, "run directory: config, metrics, checkpoints; reused to resume"),
        flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() before anything else"),
        flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host)"),
        flags.DEFINE_integer("num_processes", None, "number of processes (multi-host)"),
        flags.DEFINE_integer("process_id", None, "this process's index (multi-host)"),
        flags.DEFINE_integer("heartbeat_timeout_s", 100, "multi-host: a process silent this long fails the job"),
    )
    flags.mark_flags_as_required(["config", "workdir"])
    return holders


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


def run() -> None:
    """Define the flags and run the command (the entry point of `python -m cnn_jax.train`)."""
    config, workdir, distributed, coordinator, num_processes, process_id, heartbeat = _define_flags()

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        quiet_libraries()
        # Imported here, after the filter: importing the engine imports jax and TFDS.
        from cnn_jax.data import DatasetUnavailableError
        from cnn_jax.train import NonFiniteLossError, train_and_evaluate
        from cnn_jax.train import distributed as multihost

        if distributed.value:
            multihost.initialize(
                coordinator.value, num_processes.value, process_id.value, heartbeat_timeout_s=heartbeat.value
            )
        try:
            train_and_evaluate(config.value, workdir.value)
        except (ValueError, NonFiniteLossError, DatasetUnavailableError) as err:  # expected: the message alone
            sys.exit(f"error: {err}")

    app.run(main, flags_parser=parse_flags)
