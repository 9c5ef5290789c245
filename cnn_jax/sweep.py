"""Sweeps: a config over a grid of flag values x seeds, each as its own run directory in a study directory.

Runs go to STUDY_DIR/<point>/seed<k>. Re-running skips finished runs (final.json present) and resumes
interrupted ones from their checkpoints. Runs that differ only in their values (seeds, learning rates: see
`cnn_jax/train/run_values.py`) train together as run batches, one process and one compiled program each
(`runs_per_program` at most); `parallel` training processes run at once.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from cnn_jax import config_check
from cnn_jax.config_check import flag_value


@dataclasses.dataclass(frozen=True)
class Point:
    """One configuration of a study: a config file (path[:arg]) plus overrides (FIELD, VALUE). A value is
    typed (True, 2, 0.025, (2, 4)) or a string as a command line gives it ("(2,4)"); both reach the run as
    its --config.FIELD flag."""

    name: str
    config: str
    overrides: tuple[tuple[str, object], ...] = ()


def _pair(text: str, flag: str) -> tuple[str, str]:
    field, sep, value = text.partition("=")
    if not sep or not field:
        raise ValueError(f"--{flag}={text!r}: expected FIELD=VALUE, e.g. model.conv.kind=tiled")
    return field, value


def parse_overrides(items: Sequence[str], flag: str = "set") -> tuple[tuple[str, str], ...]:
    """["train.num_steps=5", ...] (a repeated --set flag) -> (("train.num_steps", "5"), ...)."""
    return tuple(_pair(item, flag) for item in items)


def grid_points(config: str, grid: Sequence[str], fixed: Sequence[str] = ()) -> list[Point]:
    """The cartesian product of the --grid factors, each point named by its factor values."""
    factors = [(field, values.split(",")) for field, values in (_pair(g, "grid") for g in grid)]
    common = parse_overrides(fixed)
    points = []
    for values in itertools.product(*(v for _, v in factors)):
        chosen = tuple((field, value) for (field, _), value in zip(factors, values))
        name = "__".join(f"{field.split('.')[-1]}={value}" for field, value in chosen) or "base"
        points.append(Point(name, config, common + chosen))
    return points


def check_fields(points: Sequence[Point]) -> None:
    """Fail before any run starts if an override names a field its config does not have."""
    for config in dict.fromkeys(p.config for p in points):
        config_check.check_fields(config, (f for p in points if p.config == config for f, _ in p.overrides))


Job = tuple[Point, int, Path]  # a grid point, its seed and its run directory


def sweep_runs(points: Sequence[Point], seeds: Sequence[int], study_dir: str | Path) -> list[Job]:
    """Every (point, seed, run directory) of the grid, in grid order; overrides checked against the configs."""
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ValueError(f"grid point names must be unique, got {names}")
    check_fields(points)
    return [(point, seed, Path(study_dir) / point.name / f"seed{seed}") for point in points for seed in seeds]


def pending(runs: Sequence[Job]) -> list[Job]:
    """The runs that have not finished (no final.json)."""
    return [r for r in runs if not (r[2] / "final.json").exists()]


def run_batches(jobs: Sequence[Job], runs_per_program: int | None) -> list[list[Job]]:
    """The jobs grouped into run batches, each trained by one process: jobs of one config file whose overrides
    leave the same program structure (`cnn_jax.train.run_values.structure_key`: they differ only in seeds,
    learning rates and the like), at most `runs_per_program` to a batch (None: the whole group; the process
    then splits it to fit its devices' memory). A grid whose points change the structure is split, never
    refused. Groups in order of their first job."""
    from cnn_jax.train.run_values import structure_key  # imports jax: only when a sweep is grouped

    loaded = {
        config: config_check.load_config(config) for config in dict.fromkeys(point.config for point, _, _ in jobs)
    }
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        point, seed, _ = job
        config = config_check.with_overrides(loaded[point.config], _overrides(point, seed))
        groups.setdefault((point.config, structure_key(config)), []).append(job)
    limit = runs_per_program or max(map(len, groups.values()), default=1)
    return [group[i : i + limit] for group in groups.values() for i in range(0, len(group), limit)]


def _overrides(point: Point, seed: int) -> list[tuple[str, str]]:
    """A run's --config.FIELD=VALUE overrides: its seed, then its point's."""
    return [("seed", str(seed)), *((field, flag_value(value)) for field, value in point.overrides)]


def run_command(batch: Sequence[Job]) -> list[str]:
    """The training command of a run batch: for one run, its overrides as --config.FIELD flags; for several, one
    --workdir each and their overrides as --run_overrides (`cnn_jax/train/cli.py`)."""
    command = [sys.executable, "-m", "cnn_jax.train", f"--config={batch[0][0].config}"]
    if len(batch) == 1:
        (point, seed, workdir), *_ = batch
        return [*command, f"--workdir={workdir}", *(f"--config.{f}={v}" for f, v in _overrides(point, seed))]
    each = [dict(_overrides(point, seed)) for point, seed, _ in batch]
    return [*command, *(f"--workdir={workdir}" for _, _, workdir in batch), f"--run_overrides={json.dumps(each)}"]


def write_job_list(
    points: Sequence[Point], seeds: Sequence[int], study_dir: str | Path, runs_per_program: int | None = None
) -> tuple[Path, int]:
    """STUDY_DIR/jobs.txt: one shell command per run batch of the unfinished runs, for a SLURM array (one array
    task per batch: launch/slurm_array.sbatch). Returns the file and the number of lines."""
    batches = run_batches(pending(sweep_runs(points, seeds, study_dir)), runs_per_program)
    path = Path(study_dir) / "jobs.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(shlex.join(run_command(batch)) + "\n" for batch in batches))
    return path, len(batches)


def _copy_lines(source, paths: Sequence[Path]) -> None:
    """Append every line a process writes to each of `paths` (each run's log.txt), until it closes its output."""
    logs = [open(path, "a") for path in paths]
    try:
        for line in source:
            for log in logs:
                log.write(line)
                log.flush()
    finally:
        for log in logs:
            log.close()


def _free(batch: Sequence[Job]) -> list[Job]:
    """The jobs of `batch` that still need training when it starts: not finished meanwhile, and not held by
    another process (a second sweep on the same study directory), which it says, and leaves to that process."""
    from cnn_jax.train.run_lock import held_by  # imported here: its package imports jax

    free = []
    for job in pending(batch):
        holder = held_by(job[2])
        if holder:
            print(f"skipping {job[2]}: being trained by {holder}", flush=True)
        else:
            free.append(job)
    return free


def run_sweep(
    points: Sequence[Point],
    seeds: Sequence[int],
    study_dir: str | Path,
    *,
    parallel: int = 1,
    runs_per_program: int | None = None,
    dry_run: bool = False,
    poll_s: float = 0.5,
) -> list[Path]:
    """Run every (point, seed) not finished yet, as run batches (`run_batches`), `parallel` processes at a time;
    return all run directories. Each run's log.txt gets its process's output. A run that finished or that
    another process trains by the time its batch starts is skipped, so two sweeps of one study directory share
    the work.

    Raises RuntimeError naming the runs that failed (after the others have finished), with the end of
    each one's log.txt.
    """
    if parallel < 1:
        raise ValueError(f"parallel={parallel} must be >= 1")
    if runs_per_program is not None and runs_per_program < 1:
        raise ValueError(f"runs_per_program={runs_per_program} must be >= 1 (or None: as many as fit)")
    runs = sweep_runs(points, seeds, study_dir)
    todo = run_batches(pending(runs), runs_per_program)
    if dry_run:
        for batch in todo:
            print(shlex.join(run_command(batch)))
        return [r[2] for r in runs]
    running: list[tuple[subprocess.Popen, threading.Thread, list[Job]]] = []
    failed = []
    while todo or running:
        while todo and len(running) < parallel:
            batch = _free(todo.pop(0))
            if not batch:
                continue
            for _, _, workdir in batch:
                workdir.mkdir(parents=True, exist_ok=True)
            process = subprocess.Popen(
                run_command(batch), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy()
            )
            copier = threading.Thread(target=_copy_lines, args=(process.stdout, [w / "log.txt" for _, _, w in batch]))
            copier.start()
            running.append((process, copier, batch))
        for process, copier, batch in list(running):
            if process.poll() is not None:
                copier.join()
                running.remove((process, copier, batch))
                for job in _free(batch) if process.returncode != 0 else ():  # each run not finished and not
                    workdir = job[2]  # taken by another process between the probe and its start: failed
                    tail = (workdir / "log.txt").read_text().splitlines()[-5:]
                    failed.append(f"{workdir} (exit {process.returncode}):\n    " + "\n    ".join(tail))
        time.sleep(poll_s if running else 0)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(runs)} runs failed:\n" + "\n".join(failed))
    return [r[2] for r in runs]
