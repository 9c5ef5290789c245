"""Sweeps: a config over a grid of flag values x seeds, each as its own run directory in a study directory.

Runs go to STUDY_DIR/<point>/seed<k>. Re-running skips finished runs (final.json present) and resumes
interrupted ones from their checkpoints; `parallel` training processes run at once.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cnn_jax import config_check


@dataclasses.dataclass(frozen=True)
class Point:
    """One configuration of a study: a config file (path[:arg]) plus overrides (FIELD, VALUE). A value is
    typed (True, 2, 0.025, (2, 4)) or a string as a command line gives it ("(2,4)"); both reach the run as
    its --config.FIELD flag."""

    name: str
    config: str
    overrides: tuple[tuple[str, object], ...] = ()


def flag_value(value: object) -> str:
    """An override as ml_collections parses it from --config.FIELD=VALUE: strings as given, others by repr."""
    return value if isinstance(value, str) else repr(value)


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


def run_command(point: Point, seed: int, workdir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cnn_jax.train",
        f"--config={point.config}",
        f"--workdir={workdir}",
        f"--config.seed={seed}",
        *(f"--config.{field}={flag_value(value)}" for field, value in point.overrides),
    ]


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


def write_job_list(points: Sequence[Point], seeds: Sequence[int], study_dir: str | Path) -> tuple[Path, int]:
    """STUDY_DIR/jobs.txt: one shell command per unfinished run, for a SLURM array (launch/slurm_array.sbatch).
    Returns the file and the number of lines."""
    todo = pending(sweep_runs(points, seeds, study_dir))
    path = Path(study_dir) / "jobs.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(shlex.join(run_command(point, seed, workdir)) + "\n" for point, seed, workdir in todo))
    return path, len(todo)


def run_sweep(
    points: Sequence[Point],
    seeds: Sequence[int],
    study_dir: str | Path,
    *,
    parallel: int = 1,
    dry_run: bool = False,
    poll_s: float = 0.5,
) -> list[Path]:
    """Run every (point, seed) not finished yet, `parallel` at a time; return all run directories.

    Raises RuntimeError naming the runs that failed (after the others have finished), with the end of
    each one's log.txt.
    """
    if parallel < 1:
        raise ValueError(f"parallel={parallel} must be >= 1")
    runs = sweep_runs(points, seeds, study_dir)
    todo = pending(runs)
    if dry_run:
        for point, seed, workdir in todo:
            print(" ".join(run_command(point, seed, workdir)))
        return [r[2] for r in runs]
    running: list[tuple[subprocess.Popen, Path]] = []
    failed = []
    while todo or running:
        while todo and len(running) < parallel:
            point, seed, workdir = todo.pop(0)
            workdir.mkdir(parents=True, exist_ok=True)
            with open(workdir / "log.txt", "a") as log:
                running.append(
                    (
                        subprocess.Popen(
                            run_command(point, seed, workdir),
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            env=os.environ.copy(),
                        ),
                        workdir,
                    )
                )
        for process, workdir in list(running):
            if process.poll() is not None:
                running.remove((process, workdir))
                if process.returncode != 0:
                    tail = (workdir / "log.txt").read_text().splitlines()[-5:]
                    failed.append(f"{workdir} (exit {process.returncode}):\n    " + "\n    ".join(tail))
        time.sleep(poll_s if running else 0)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(runs)} runs failed:\n" + "\n".join(failed))
    return [r[2] for r in runs]
