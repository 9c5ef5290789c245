"""A study directory -> results.md, results.tex and learning_curves.png."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cnn_jax.report.figures import learning_curves
from cnn_jax.report.runs import Run, load_runs, varying_fields
from cnn_jax.report.tables import (
    Comparison,
    Row,
    aggregate,
    comparison_latex,
    comparison_markdown,
    to_latex,
    to_markdown,
)


def write_report(
    study_dir: str | Path,
    factors: list[str] | Callable[[Run], dict] | None = None,
    title: str = "",
    order: Callable[[Row], object] | None = None,
) -> str:
    """Write results.md, results.tex and learning_curves.png into `study_dir`; return the Markdown.

    factors: config fields to group by (default: those that vary between runs), or a function from a
    run to its row label. order: sort key for the rows (default: run directory order).
    """
    study_dir = Path(study_dir)
    runs = load_runs(study_dir)
    if not runs:
        raise ValueError(f"no run directories (with config.json) under {study_dir}")
    factors = factors or varying_fields(runs)
    rows = aggregate(runs, factors)
    if order is not None:
        rows.sort(key=order)
    unfinished = sum(r.final is None for r in runs)
    markdown = to_markdown(rows, title)
    if unfinished:
        markdown += f"\n{unfinished} of {len(runs)} runs have not finished and are not in the table.\n"
    (study_dir / "results.md").write_text(markdown)
    (study_dir / "results.tex").write_text(to_latex(rows, title))
    learning_curves(runs, factors, study_dir / "learning_curves.png")
    return markdown


def write_comparison(study_dir: str | Path, rows: list[Comparison], title: str = "") -> str:
    """Write an ours-vs-published table as results.md and results.tex into `study_dir`; return the Markdown."""
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    markdown = comparison_markdown(rows, title)
    (study_dir / "results.md").write_text(markdown)
    (study_dir / "results.tex").write_text(comparison_latex(rows, title))
    return markdown
