"""Runs -> one row per configuration (mean ± std over seeds) -> Markdown and LaTeX (booktabs) tables."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from cnn_jax.report.published import SOURCES, find_reference
from cnn_jax.report.runs import Run

METRIC = "test/accuracy"
SHIFTED = "test/accuracy@shift="  # final.json keys of the translation test, e.g. "test/accuracy@shift=2"


@dataclasses.dataclass(frozen=True)
class Row:
    """Finished runs of one configuration. accuracy in percent; std is the sample std (n-1), nan for n=1."""

    label: dict  # the study's factor values for this row
    n: int  # number of seeds
    mean: float
    std: float
    params: int | None
    macs: int | None
    images_per_s: float | None
    published: float | None = None
    source: str | None = None
    shifted: dict[int, tuple[float, float]] = dataclasses.field(default_factory=dict)  # shift -> (mean, std)

    @property
    def verdict(self) -> str:
        """Within noise when |ours - published| <= max(2 std, 1 point); otherwise by how much."""
        if self.published is None:
            return ""
        diff = self.mean - self.published
        noise = max(2 * (0.0 if math.isnan(self.std) else self.std), 1.0)
        return "within noise" if abs(diff) <= noise else f"off by {diff:+.1f}"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; nan for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std


def aggregate(runs: list[Run], factors: Sequence[str] | Callable[[Run], dict]) -> list[Row]:
    """Group finished runs by their values of `factors` (seeds pooled), in first-seen order.

    factors: config fields, or a function from a run to its row label {column: value}.
    """
    label = factors if callable(factors) else (lambda run: {f: run.config.get(f) for f in factors})
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.final is not None:
            groups.setdefault(tuple(map(repr, label(run).items())), []).append(run)
    rows = []
    for members in groups.values():
        mean, std = mean_std([100 * r.final[METRIC] for r in members])
        speeds = [r.final["images_per_s"] for r in members if r.final.get("images_per_s")]
        ref = find_reference(members[0].config)
        shifts = [k for k in members[0].final if k.startswith(SHIFTED) and all(k in r.final for r in members)]
        rows.append(
            Row(
                label(members[0]),
                len(members),
                mean,
                std,
                members[0].final.get("params"),
                members[0].final.get("macs"),
                sum(speeds) / len(speeds) if speeds else None,
                ref.accuracy if ref else None,
                ref.source if ref else None,
                {int(k[len(SHIFTED) :]): mean_std([100 * r.final[k] for r in members]) for k in shifts},
            )
        )
    return rows


def _shifts(rows: list[Row]) -> list[int]:
    return sorted({s for row in rows for s in row.shifted})


def _accuracy(mean: float, std: float, pm: str) -> str:
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} {pm} {std:.2f}"


def _value(value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(map(str, value)) + ")"
    return str(value)


def _cells(row: Row, pm: str, shifts: list[int]) -> list[str]:
    """Numeric cells (no characters that need escaping in LaTeX besides `pm` itself)."""
    shifted = [_accuracy(*row.shifted[s], pm) if s in row.shifted else "" for s in shifts]
    return [
        _accuracy(row.mean, row.std, pm),
        *shifted,
        str(row.n),
        f"{row.params:,}" if row.params is not None else "",
        f"{row.macs:,}" if row.macs is not None else "",
        f"{row.images_per_s:,.0f}" if row.images_per_s else "",
    ]


def _sources(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(r.source for r in rows if r.source))


def _published(row: Row, sources: list[str], mark) -> str:
    return "" if row.published is None else f"{row.published:g}{mark(sources.index(row.source) + 1)}"


def _table(rows: list[Row], pm: str, mark: Callable[[int], str]) -> tuple[list[str], list[list[str]], list[str], str]:
    """Header, cells, footnotes and column alignment of the results table."""
    factors = list(rows[0].label) if rows else []
    sources, shifts = _sources(rows), _shifts(rows)
    header = [
        *factors,
        "test accuracy (%)",
        *(f"shifted {s}px (%)" for s in shifts),
        "seeds",
        "params",
        "MACs/example",
        "train images/s",
        "published",
        "verdict",
    ]
    cells = [
        [_value(v) for v in row.label.values()]
        + _cells(row, pm, shifts)
        + [_published(row, sources, mark), row.verdict]
        for row in rows
    ]
    align = "l" * len(factors) + "r" * (len(header) - len(factors) - 1) + "l"
    return header, cells, [SOURCES[s] for s in sources], align


def to_markdown(rows: list[Row], title: str = "") -> str:
    """A Markdown table: factors, accuracy mean ± std over n seeds (and on test inputs shifted by s pixels,
    where the runs measured it), params, MACs, images/s, published, verdict."""
    header, cells, notes, align = _table(rows, "±", lambda i: f"[^{i}]")
    return markdown_table(header, cells, title, notes, align)


def _tex(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


def to_latex(rows: list[Row], caption: str = "") -> str:
    """The same table as LaTeX (booktabs); sources as footnote marks under the table."""
    header, cells, notes, align = _table(rows, "±", lambda i: f"$^{{{i}}}$")
    return latex_table(header, cells, caption, notes, align)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One line of an ours-vs-published table; values already formatted."""

    quantity: str
    ours: str
    published: str
    source: str
    verdict: str


def markdown_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    title: str = "",
    footnotes: Sequence[str] = (),
    align: str = "",
) -> str:
    """A Markdown table of preformatted cells. align: one "l" or "r" per column (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = [
        f"**{title}**\n" if title else "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    lines += [""] + [f"[^{i}]: {note}" for i, note in enumerate(footnotes, 1)]
    return "\n".join(lines).strip() + "\n"


def latex_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    caption: str = "",
    footnotes: Sequence[str] = (),
    align: str = "",
) -> str:
    """The same as LaTeX (booktabs). Cells are escaped, and "±" becomes $\\pm$."""

    def cell(text: str) -> str:
        return _tex(text).replace("±", r"$\pm$")

    align = align or "l" + "r" * (len(header) - 1)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{" + align + "}",
        r"\toprule",
        " & ".join(map(cell, header)) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(map(cell, cells)) + r" \\" for cells in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [r"\\[2pt]{\footnotesize $^{" + str(i) + "}$" + _tex(note) + "}" for i, note in enumerate(footnotes, 1)]
    if caption:
        lines.append(r"\caption{" + _tex(caption) + "}")
    return "\n".join(lines + [r"\end{table}"]) + "\n"


def comparison_markdown(rows: list[Comparison], title: str = "") -> str:
    """quantity | ours | published | verdict, sources as numbered footnotes."""
    sources = list(dict.fromkeys(r.source for r in rows))
    cells = [[r.quantity, r.ours, f"{r.published}[^{sources.index(r.source) + 1}]", r.verdict] for r in rows]
    return markdown_table(["quantity", "ours", "published", "verdict"], cells, title, sources, "lrrl")


def comparison_latex(rows: list[Comparison], caption: str = "") -> str:
    """The same table as LaTeX (booktabs)."""
    sources = list(dict.fromkeys(r.source for r in rows))
    cells = [[r.quantity, r.ours, f"{r.published}$^{{{sources.index(r.source) + 1}}}$", r.verdict] for r in rows]
    return latex_table(["quantity", "ours", "published", "verdict"], cells, caption, sources, "lrrl")
