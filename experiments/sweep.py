"""Run a config over a grid of flag values x seeds, each as its own run directory in a study directory.

    python -m experiments.sweep --config=experiments/configs/cnn1d_mnist1d.py --study_dir=studies/kinds \
        --grid=model.conv.kind=standard,local --grid=dataset.permute_positions=False,True --seeds=0,1,2 \
        --parallel=2
    python -m experiments.report studies/kinds

On a SLURM cluster, --emit=slurm writes STUDY_DIR/jobs.txt (one command per unfinished run) and prints
the array job that runs them, one run per array task (launch/slurm_array.sbatch).

Runs go to STUDY_DIR/<point>/seed<k>. Re-running skips finished runs (final.json present) and resumes
interrupted ones from their checkpoints. --parallel=N keeps N training processes going at once.
"""

import sys

from absl import app, flags

from cnn_jax.sweep import grid_points, run_sweep, write_job_list

_CONFIG = flags.DEFINE_string("config", None, "config file (optionally path:arg)")
_STUDY_DIR = flags.DEFINE_string("study_dir", None, "directory that receives one run directory per grid point")
_GRID = flags.DEFINE_multi_string("grid", [], "FIELD=V1,V2,...: a factor of the grid (repeatable)")
_SET = flags.DEFINE_multi_string("set", [], "FIELD=VALUE applied to every run (repeatable)")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "seeds; each grid point runs once per seed")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "training processes at once")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "print the commands instead of running them")
_EMIT = flags.DEFINE_enum("emit", None, ["slurm"], "write a job list for a cluster scheduler instead of running")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        sweep()
    except ValueError as err:  # a bad grid, override or field: the message alone
        sys.exit(f"error: {err}")


def sweep():
    points = grid_points(_CONFIG.value, _GRID.value, _SET.value)
    seeds = [int(s) for s in _SEEDS.value]
    if _EMIT.value == "slurm":
        jobs, count = write_job_list(points, seeds, _STUDY_DIR.value)
        if count == 0:
            print(f"every run in {_STUDY_DIR.value} has finished; nothing to submit")
        else:
            print(f"sbatch --array=0-{count - 1} launch/slurm_array.sbatch {jobs}")
        return
    run_sweep(points, seeds, _STUDY_DIR.value, parallel=_PARALLEL.value, dry_run=_DRY_RUN.value)
    if not _DRY_RUN.value:
        print(f"runs in {_STUDY_DIR.value}/<point>/seed<k>; table: python -m experiments.report {_STUDY_DIR.value}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "study_dir"])
    app.run(main)
