"""The training command: a config file, its --config.FIELD overrides and a run directory.

    python -m cnn_jax.train --config=experiments/configs/lenet5_mnist.py --workdir=runs/lenet5 \
        --config.model.conv.kind=tiled --config.model.conv.tile=2

(`python -m experiments.train` is the same command.) Multi-host: add --distributed (coordinator and
process id from flags, or from SLURM/MPI/Kubernetes/TPU). Expected user errors (a misspelt field, a bad
value, missing data) end with the message alone and exit status 1; tracebacks are for bugs.

Several runs in one process, as run batches (`cnn_jax/train/run_batch.py`): one --workdir per run, and
--run_overrides with each run's own fields (a JSON list, one object per --workdir, values written as on the
command line), on top of --config and its --config.FIELD flags, e.g. three seeds:

    python -m cnn_jax.train --config=experiments/configs/cnn1d_mnist1d.py \
        --workdir=runs/s0 --workdir=runs/s1 --workdir=runs/s2 \
        --run_overrides='[{"seed": "0"}, {"seed": "1"}, {"seed": "2"}]'

Runs whose overrides change the program's structure (a model, a batch size) train as separate batches of
the same process. Exit status 1 if any run fails.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from cnn_jax.compile_cache import enable_compile_cache
from cnn_jax.config_check import check_cli, flag_value, runs_per_program, with_overrides
from cnn_jax.console import quiet_libraries


def _define_flags() -> tuple[flags.FlagHolder, ...]:
    config = config_flags.DEFINE_config_file("config", None, "ml_collections config file", lock_config=True)
    holders = (
        config,
        flags.DEFINE_multi_string(
            "workdir", None, "run directory: config, metrics, checkpoints; reused to resume (one per run)"
        ),
        flags.DEFINE_string(
            "run_overrides", None, 'each run\'s own fields, a JSON list of {"FIELD": "VALUE"}, one per --workdir'
        ),
        flags.DEFINE_string(
            "runs_per_program", "auto", "most runs in one run batch: a positive integer, or auto (as many as fit)"
        ),
        flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() before anything else"),
        flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host)"),
        flags.DEFINE_string(
            "coordinator_bind_address",
            None,
            "where process 0's coordinator listens (default: the coordinator's own address if it is a loopback "
            "one, else every interface)",
        ),
        flags.DEFINE_integer("num_processes", None, "number of processes (multi-host)"),
        flags.DEFINE_integer("process_id", None, "this process's index (multi-host)"),
        flags.DEFINE_integer("heartbeat_timeout_s", 100, "multi-host: a process silent this long fails the job"),
    )
    flags.mark_flags_as_required(["config", "workdir"])
    return holders


def _runs(config, workdirs: list[str], overrides: str | None) -> list[tuple]:
    """(config, workdir) of each run: the config, with each run's own --run_overrides applied."""
    if overrides is None:
        return [(config, workdir) for workdir in workdirs]
    try:
        each = json.loads(overrides)
    except json.JSONDecodeError as err:
        raise ValueError(f"--run_overrides is not JSON ({err}): {overrides!r}") from None
    if not (isinstance(each, list) and all(isinstance(o, dict) for o in each)) or len(each) != len(workdirs):
        raise ValueError(
            f"--run_overrides must be a JSON list of {len(workdirs)} objects, one per --workdir; got {overrides!r}"
        )
    return [
        (with_overrides(config, [(field, flag_value(value)) for field, value in o.items()]), workdir)
        for o, workdir in zip(each, workdirs)
    ]


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
    (config, workdirs, overrides, per_program, distributed, coordinator, bind, num_processes, process_id, heartbeat) = (
        _define_flags()
    )

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        quiet_libraries()
        try:
            runs = _runs(config.value, workdirs.value, overrides.value)
            limit = runs_per_program(per_program.value)
        except ValueError as err:
            sys.exit(f"error: {err}")
        enable_compile_cache()
        # Imported here, after the filter: importing the engine imports jax and TFDS.
        from cnn_jax.data import DatasetUnavailableError
        from cnn_jax.train import distributed as multihost
        from cnn_jax.train import train_runs

        if distributed.value:
            multihost.initialize(
                coordinator.value,
                num_processes.value,
                process_id.value,
                heartbeat_timeout_s=heartbeat.value,
                coordinator_bind_address=bind.value,
            )
        try:
            outcomes = train_runs(runs, runs_per_program=limit)
        except (ValueError, DatasetUnavailableError) as err:  # expected: the message alone
            sys.exit(f"error: {err}")
        failed = [o for o in outcomes if o.error]
        if failed:
            where = len(outcomes) > 1
            sys.exit("\n".join(f"error: {f'{o.workdir}: ' if where else ''}{o.error}" for o in failed))

    app.run(main, flags_parser=parse_flags)
