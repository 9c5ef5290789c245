"""What every study CLI shares: its flags, the overrides they add to each run, and run-then-report.

A study names each grid point "<value>__<value>..." after its row label; `run_and_report` runs the
points (skipping finished runs), then writes and prints the table with the rows in grid order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from cnn_jax.report import write_report
from cnn_jax.sweep import Point, parse_overrides, run_sweep


@dataclasses.dataclass(frozen=True)
class StudyFlags:
    study_dir: flags.FlagHolder
    seeds: flags.FlagHolder
    parallel: flags.FlagHolder
    overrides: flags.FlagHolder
    download_dir: flags.FlagHolder

    def fixed(self) -> tuple[tuple[str, str], ...]:
        """The --set overrides, plus the download directory when one is given."""
        fixed = parse_overrides(self.overrides.value)
        return fixed + ((("dataset.download_dir", self.download_dir.value),) if self.download_dir.value else ())

    def run(self, points: Sequence[Point], study_dir: str | Path) -> None:
        run_sweep(points, [int(s) for s in self.seeds.value], study_dir, parallel=self.parallel.value)


def define_flags(study_dir: str) -> StudyFlags:
    """Define the common study flags (call once, at import time of the study's module)."""
    return StudyFlags(
        flags.DEFINE_string("study_dir", study_dir, "where the runs and the report go"),
        flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds per configuration"),
        flags.DEFINE_integer("parallel", 1, "training processes at once"),
        flags.DEFINE_multi_string("set", [], "FIELD=VALUE for every run, e.g. train.num_steps=20"),
        flags.DEFINE_string("download_dir", "", "raw dataset files (<dir>/<dataset>/<file>)"),
    )


def run_and_report(
    study: StudyFlags, points: Sequence[Point], study_dir: str | Path, columns: Sequence[str], title: str
) -> str:
    """Run the points, then write results.md/.tex/learning_curves.png with one row per point, labelled by
    splitting its name at "__" into `columns`, in the points' order; return the Markdown. Runs already in
    the study directory from other points are reported too, after these."""
    study.run(points, study_dir)
    names = [p.name for p in points]

    def label(run) -> dict:
        return dict(zip(columns, run.path.parent.name.split("__")))

    def order(row) -> tuple:  # grid order; rows of earlier invocations with other points go last
        name = "__".join(map(str, row.label.values()))
        return (names.index(name) if name in names else len(names), name)

    markdown = write_report(study_dir, label, title=title, order=order)
    print(markdown)
    return markdown
