"""Study directories -> paper-style tables (Markdown, LaTeX) and figures. Reads only run directories."""

from cnn_jax.report.figures import learning_curves
from cnn_jax.report.provenance import provenance_note
from cnn_jax.report.published import REFERENCES, SOURCES, find_reference
from cnn_jax.report.runs import Run, load_runs, varying_fields
from cnn_jax.report.stats import confidence_interval, mean_std, welch_interval
from cnn_jax.report.tables import Row, aggregate, to_latex, to_markdown
from cnn_jax.report.write import write_comparison, write_report

__all__ = [
    "learning_curves",
    "REFERENCES",
    "SOURCES",
    "find_reference",
    "Run",
    "load_runs",
    "varying_fields",
    "provenance_note",
    "confidence_interval",
    "mean_std",
    "welch_interval",
    "Row",
    "aggregate",
    "to_latex",
    "to_markdown",
    "write_comparison",
    "write_report",
]
