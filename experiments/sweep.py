"""Run a config over a grid of flag values x seeds, each as its own run directory in a study directory.

    python -m experiments.sweep --config=experiments/configs/cnn1d_mnist1d.py --study_dir=studies/kinds \
        --grid=model.conv.kind=standard,local --grid=dataset.permute_positions=False,True --seeds=0,1,2 \
        --parallel=2
    python -m experiments.report studies/kinds

On a SLURM cluster, --emit=slurm writes STUDY_DIR/jobs.txt (one command per run batch of unfinished runs)
and prints the array job that runs them, one batch per array task (launch/slurm_array.sbatch).

Runs go to STUDY_DIR/<point>/seed<k>. Re-running skips finished runs (final.json present) and resumes
interrupted ones from their checkpoints. Runs that differ only in seeds and optimizer scalars train as one
run batch: one process, one compiled program (--runs_per_program=N at most; 1: one run per process, as
before; auto, the default: as many as the devices' memory holds). --parallel=N keeps N training processes
going at once.
"""

import sys

from absl import app, flags

from cnn_jax.config_check import runs_per_program
from cnn_jax.sweep import grid_points, run_sweep, write_job_list


def define_flags():
    """The command's flags (defined when it runs, not on import); returns its main."""
    config = flags.DEFINE_string("config", None, "config file (optionally path:arg)")
    study_dir = flags.DEFINE_string("study_dir", None, "directory that receives one run directory per grid point")
    grid = flags.DEFINE_multi_string("grid", [], "FIELD=V1,V2,...: a factor of the grid (repeatable)")
    fixed = flags.DEFINE_multi_string("set", [], "FIELD=VALUE applied to every run (repeatable)")
    seeds = flags.DEFINE_list("seeds", ["0"], "seeds; each grid point runs once per seed")
    parallel = flags.DEFINE_integer("parallel", 1, "training processes at once")
    per_program = flags.DEFINE_string(
        "runs_per_program", "auto", "most runs in one program: a positive integer, or auto (as many as fit)"
    )
    dry_run = flags.DEFINE_bool("dry_run", False, "print the commands instead of running them")
    emit = flags.DEFINE_enum("emit", None, ["slurm"], "write a job list for a cluster scheduler instead of running")
    flags.mark_flags_as_required(["config", "study_dir"])

    def sweep() -> None:
        points = grid_points(config.value, grid.value, fixed.value)
        seed_values = [int(s) for s in seeds.value]
        limit = runs_per_program(per_program.value)
        if emit.value == "slurm":
            jobs, count = write_job_list(points, seed_values, study_dir.value, limit)
            if count == 0:
                print(f"every run in {study_dir.value} has finished; nothing to submit")
            else:
                print(f"sbatch --array=0-{count - 1} launch/slurm_array.sbatch {jobs}")
            return
        run_sweep(
            points, seed_values, study_dir.value, parallel=parallel.value, runs_per_program=limit, dry_run=dry_run.value
        )
        if not dry_run.value:
            print(f"runs in {study_dir.value}/<point>/seed<k>; table: python -m experiments.report {study_dir.value}")

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        try:  # no compilation cache to set up here: the training processes it starts each set theirs up
            sweep()
        except ValueError as err:  # a bad grid, override or field: the message alone
            sys.exit(f"error: {err}")

    return main


if __name__ == "__main__":
    app.run(define_flags())
