"""What every study command shares: its flags, the config files, and run-then-report.

A study module defines its grid as data (typed `Point`s over the config files here) and a row label read
off each run's config; its flags are defined only when it runs as a command (`run_cli`), so any number of
study modules import side by side, and every path resolves relative to this package, so a study runs from
any directory.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from absl import app, flags

from cnn_jax.compile_cache import enable_compile_cache
from cnn_jax.config_check import runs_per_program
from cnn_jax.console import quiet_libraries
from cnn_jax.report import write_report
from cnn_jax.report.runs import load_run
from cnn_jax.sweep import Point, parse_overrides, run_sweep

CONFIGS = Path(__file__).resolve().parent / "configs"


def config(name: str, arg: str = "") -> str:
    """experiments/configs/NAME.py (with :ARG), as an absolute path: the same file from any directory."""
    return f"{CONFIGS / name}.py" + (f":{arg}" if arg else "")


@dataclasses.dataclass(frozen=True)
class Study:
    """The common settings of a study command: where its runs go, seeds, processes at once, the overrides
    (`--set`, `--download_dir`) every run gets, and the command line that ran it (finished runs are not run
    again, so it also regenerates the study's tables, whose provenance line names it)."""

    study_dir: Path
    seeds: tuple[int, ...] = (0, 1, 2)
    parallel: int = 1
    fixed: tuple[tuple[str, object], ...] = ()
    runs_per_program: int | None = None  # None: as many as the devices' memory holds
    command: str | None = None  # None: not known (a study run from Python)

    def run(self, points: Sequence[Point], study_dir: str | Path | None = None) -> None:
        """Run every point once per seed (finished runs are skipped) into `study_dir` (default: its own)."""
        points = [dataclasses.replace(p, overrides=self.fixed + p.overrides) for p in points]
        run_sweep(
            points,
            self.seeds,
            study_dir or self.study_dir,
            parallel=self.parallel,
            runs_per_program=self.runs_per_program,
        )


def check_choices(flag: str, values: Sequence[str], valid: Sequence[str]) -> None:
    """Raise ValueError naming the values of list flag --`flag` that are not in `valid`, and the valid ones."""
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"--{flag}: unknown {unknown}; valid values are {', '.join(valid)}")


def _command_line() -> str:
    """This process's command line as typed: `python -m MODULE FLAGS` for a module run with -m."""
    spec = sys.modules["__main__"].__spec__
    program = ["python", "-m", spec.name] if spec is not None else ["python", sys.argv[0]]
    return shlex.join([*program, *sys.argv[1:]])


def run_cli(study_dir: str, define_flags: Callable[[], Callable[[Study], None]]) -> None:
    """Run a study as a command: define the common flags and the study's own (`define_flags` defines them
    and returns the study's main), then parse and run it."""
    holders = (
        flags.DEFINE_string("study_dir", study_dir, "where the runs and the report go"),
        flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds per configuration"),
        flags.DEFINE_integer("parallel", 1, "training processes at once"),
        flags.DEFINE_multi_string("set", [], "FIELD=VALUE for every run, e.g. train.num_steps=20"),
        flags.DEFINE_string("download_dir", "", "raw dataset files (<dir>/<dataset>/<file>)"),
        flags.DEFINE_string(
            "runs_per_program", "auto", "most runs in one program: a positive integer, or auto (as many as fit)"
        ),
    )
    main = define_flags()

    def run(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        quiet_libraries()
        enable_compile_cache()
        directory, seeds, parallel, overrides, download_dir, per_program = (h.value for h in holders)
        fixed = parse_overrides(overrides) + ((("dataset.download_dir", download_dir),) if download_dir else ())
        try:
            limit = runs_per_program(per_program)
            main(Study(Path(directory), tuple(int(s) for s in seeds), parallel, fixed, limit, _command_line()))
        except ValueError as err:  # a bad grid value or override: the message alone
            sys.exit(f"error: {err}")

    app.run(run)


def run_and_report(
    study: Study,
    points: Sequence[Point],
    label: Callable[[dict], dict],
    title: str,
    study_dir: Path | None = None,
    baseline: dict | None = None,
) -> str:
    """Run the points, then write results.md/.tex/learning_curves.png with one row per configuration,
    labelled by `label` (a run's flattened config -> {column: value}), in grid order, with differences from
    the `baseline` row where one is named (`write_report`); print and return the Markdown. Runs already in
    the study directory from other grids are reported too, after these."""
    study_dir = study_dir or study.study_dir
    study.run(points, study_dir)
    grid = [label(load_run(study_dir / p.name / f"seed{study.seeds[0]}").config) for p in points]

    def order(row) -> tuple:
        return (grid.index(row.label) if row.label in grid else len(grid), repr(row.label))

    markdown = write_report(
        study_dir, lambda run: label(run.config), title, order, baseline=baseline, command=study.command
    )
    print(markdown)
    print(f"wrote {study_dir}/results.md, results.tex and learning_curves.png")
    return markdown
