"""A study directory -> results.md, results.tex and learning_curves.png."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from cnn_jax.report.figures import learning_curves
from cnn_jax.report.provenance import provenance_note
from cnn_jax.report.runs import Run, load_runs, varying_fields
from cnn_jax.report.tables import (
    Comparison,
    Row,
    aggregate,
    comparison_latex,
    comparison_markdown,
    row_label,
    to_latex,
    to_markdown,
)


def write_report(
    study_dir: str | Path,
    factors: list[str] | Callable[[Run], dict] | None = None,
    title: str = "",
    order: Callable[[Row], object] | None = None,
    baseline: dict | None = None,
    command: str | None = None,
) -> str:
    """Write results.md, results.tex and learning_curves.png into `study_dir`; return the Markdown.

    factors: config fields to group by (default: those that vary between runs), or a function from a
    run to its row label. order: sort key for the rows (default: run directory order). baseline: the
    baseline's values of some factors, for a column of differences from it (`tables.versus_baseline`).
    command: the command that regenerates the report, for the tables' provenance line (default, for
    factors given as fields: `python -m experiments.report STUDY_DIR`; None with a function: not given).
    """
    study_dir = Path(study_dir)
    runs = load_runs(study_dir)
    if not runs:
        raise ValueError(f"no run directories (with config.json) under {study_dir}")
    if command is None and not callable(factors):  # a function of the runs is not a flag: only its caller knows
        command = f"python -m experiments.report {study_dir}" + (f" --factors={','.join(factors)}" if factors else "")
    factors = factors or varying_fields(runs)
    rows = aggregate(runs, factors)
    if order is not None:
        rows.sort(key=order)
    finished = [r for r in runs if r.final is not None]
    provenance = provenance_note(finished, command, str(study_dir / "results.md"))
    if len(finished) < len(runs):
        unfinished = f"{len(runs) - len(finished)} of {len(runs)} runs have not finished and are not in the table."
        provenance = f"{unfinished} {provenance}"
    markdown = to_markdown(rows, title, baseline, provenance)
    (study_dir / "results.md").write_text(markdown)
    (study_dir / "results.tex").write_text(to_latex(rows, title, baseline, provenance))
    # The figure's curves, panels and legend in the table's row order (unfinished runs' curves last).
    label = row_label(factors)
    rank = {repr(row.label): i for i, row in enumerate(rows)}
    in_order = sorted(runs, key=lambda run: rank.get(repr(label(run)), len(rank)))
    learning_curves(in_order, factors, study_dir / "learning_curves.png")
    return markdown


def write_comparison(
    study_dir: str | Path, rows: list[Comparison], title: str = "", *, runs: Sequence[Run], command: str | None
) -> str:
    """Write an ours-vs-published table as results.md and results.tex into `study_dir`; return the Markdown.
    runs: those the rows' values come from, and command, the one that regenerates the table, for its
    provenance line."""
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    provenance = provenance_note(runs, command, str(study_dir / "results.md"))
    markdown = comparison_markdown(rows, title, provenance)
    (study_dir / "results.md").write_text(markdown)
    (study_dir / "results.tex").write_text(comparison_latex(rows, title, provenance))
    return markdown
