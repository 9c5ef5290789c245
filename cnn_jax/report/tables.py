"""Runs -> one row per configuration (mean ± std over seeds) -> Markdown and LaTeX (booktabs) tables."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence

from cnn_jax.report.published import SOURCES, find_reference
from cnn_jax.report.runs import Run
from cnn_jax.report.stats import mean_std, welch_interval

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
        noise = max(2 * (0.0 if math.isnan(self.std) else self.std), 1.0)
        return verdict(self.mean, self.published, noise, "within noise", "+.1f")


def verdict(ours: float, published: float, tolerance: float = 0, within: str = "", digits: str = "+,") -> str:
    """The verdict column of every ours-vs-published table: for an exact quantity (tolerance 0) "exact" when
    equal; otherwise `within` when |ours - published| <= tolerance; else "off by" the difference, formatted
    with `digits`."""
    diff = ours - published
    if abs(diff) <= tolerance:
        return within if tolerance else "exact"
    return f"off by {diff:{digits}}"


def row_label(factors: Sequence[str] | Callable[[Run], dict]) -> Callable[[Run], dict]:
    """A run -> its row label {column: value}: `factors` itself if a function, else the run's config fields."""
    return factors if callable(factors) else (lambda run: {f: run.config.get(f) for f in factors})


def aggregate(runs: list[Run], factors: Sequence[str] | Callable[[Run], dict]) -> list[Row]:
    """Group finished runs by their values of `factors` (seeds pooled), in first-seen order.

    factors: config fields, or a function from a run to its row label {column: value}.
    """
    label = row_label(factors)
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


def format_mean_std(mean: float, std: float) -> str:
    """ "97.12 ± 0.15", or "97.12" for one seed (std nan): every accuracy cell of the reports."""
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _value(value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(map(str, value)) + ")"
    return str(value)


def _cells(row: Row, shifts: list[int]) -> list[str]:
    shifted = [format_mean_std(*row.shifted[s]) if s in row.shifted else "" for s in shifts]
    return [
        format_mean_std(row.mean, row.std),
        *shifted,
        str(row.n),
        f"{row.params:,}" if row.params is not None else "",
        f"{row.macs:,}" if row.macs is not None else "",
        f"{row.images_per_s:,.0f}" if row.images_per_s else "",
    ]


def _sources(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(r.source for r in rows if r.source))


def _published(row: Row, sources: list[str]) -> str:
    return "" if row.published is None else f"{row.published:g}[^{sources.index(row.source) + 1}]"


def versus_baseline(row: Row, rows: Sequence[Row], baseline: dict) -> str:
    """The cell of `row` in the "vs baseline" column: its mean minus its baseline row's, in accuracy points,
    with the 95% interval by Welch's t over seeds (`stats.welch_interval`), marked " *" when the interval
    excludes 0; "baseline" for a baseline row, "1 seed" when either row has one, "no baseline row" when none
    was run. `baseline` names the baseline's values of some factors; a row's baseline row has those values and
    the row's own in the other factors (`{"pool": "max"}`: max pooling on the row's dataset)."""
    target = {**row.label, **baseline}
    if row.label == target:
        return "baseline"
    base = next((r for r in rows if r.label == target), None)
    if base is None:
        return "no baseline row"
    if min(row.n, base.n) < 2:
        return "1 seed"
    difference, low, high = welch_interval((row.mean, row.std, row.n), (base.mean, base.std, base.n))
    return f"{difference:+.2f} [{low:.2f}, {high:.2f}]" + (" *" if low > 0 or high < 0 else "")


def _check_baseline(rows: list[Row], baseline: dict) -> None:
    factors = list(rows[0].label) if rows else []
    unknown = sorted(set(baseline) - set(factors))
    if rows and unknown:
        raise ValueError(f"baseline {baseline}: {unknown} are not columns of the table; its columns are {factors}")


def _baseline_note(baseline: dict) -> str:
    named = ", ".join(f"{k} = {_value(v)}" for k, v in baseline.items())
    return (
        f"vs baseline: the row's mean test accuracy minus its baseline row's ({named}, the other columns as in "
        "the row), in points, with its 95% interval by Welch's t over seeds (degrees of freedom rounded down); "
        "* marks an interval that excludes 0."
    )


def _table(rows: list[Row], baseline: dict | None = None) -> tuple[list[str], list[list[str]], list[str], str]:
    """Header, cells, footnotes and column alignment of the results table; with a `baseline`
    (`versus_baseline`), a column of differences from it after the accuracy."""
    factors = list(rows[0].label) if rows else []
    sources, shifts = _sources(rows), _shifts(rows)
    notes = [SOURCES[s] for s in sources]
    versus = []
    if baseline is not None:
        _check_baseline(rows, baseline)
        notes.append(_baseline_note(baseline))
        versus = [f"vs baseline (points)[^{len(notes)}]"]
    header = [
        *factors,
        "test accuracy (%)",
        *versus,
        *(f"shifted {s}px (%)" for s in shifts),
        "seeds",
        "params",
        "MACs/example",
        "train images/s",
        "published",
        "verdict",
    ]
    cells = []
    for row in rows:
        accuracy, *rest = _cells(row, shifts)
        differences = [versus_baseline(row, rows, baseline)] if versus else []
        labels = [_value(v) for v in row.label.values()]
        cells.append([*labels, accuracy, *differences, *rest, _published(row, sources), row.verdict])
    align = "l" * len(factors) + "r" * (len(header) - len(factors) - 1) + "l"
    return header, cells, notes, align


def to_markdown(rows: list[Row], title: str = "", baseline: dict | None = None, provenance: str = "") -> str:
    """A Markdown table: factors, accuracy mean ± std over n seeds (the difference from a `baseline` row,
    `versus_baseline`; on test inputs shifted by s pixels, where the runs measured it), params, MACs,
    images/s, published, verdict; `provenance` (`report.provenance.provenance_note`) as its last line."""
    return markdown_table(*_table(rows, baseline), title=title, provenance=provenance)


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",  # unescaped, a non-breaking space
    "^": r"\textasciicircum{}",  # unescaped, "Missing $ inserted"
    "±": r"$\pm$",
}


def tex_escape(text: str) -> str:
    """`text` as LaTeX prints it literally: every character special to LaTeX escaped, in one pass."""
    return "".join(_TEX.get(char, char) for char in text)


def _tex_text(text: str) -> str:
    """Escaped text whose `code` spans (Markdown's backticks) are set in typewriter type."""
    parts = text.split("`")
    return "".join(r"\texttt{" + tex_escape(p) + "}" if i % 2 else tex_escape(p) for i, p in enumerate(parts))


def _tex_cell(text: str) -> str:
    """An escaped cell; a trailing Markdown footnote mark "[^2]" becomes a superscript."""
    text, mark = re.fullmatch(r"(.*?)((?:\[\^\d+\])?)", text, re.DOTALL).groups()
    return tex_escape(text) + (f"$^{{{mark[2:-1]}}}$" if mark else "")


def to_latex(rows: list[Row], caption: str = "", baseline: dict | None = None, provenance: str = "") -> str:
    """The same table as LaTeX (booktabs); sources as footnote marks under the table."""
    return latex_table(*_table(rows, baseline), caption=caption, provenance=provenance)


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
    footnotes: Sequence[str] = (),
    align: str = "",
    title: str = "",
    provenance: str = "",
) -> str:
    """A Markdown table of preformatted cells; a cell may end in a footnote mark "[^i]" for footnotes[i-1].
    align: one "l" or "r" per column (default: first left). provenance: the closing line, after the footnotes
    (`report.provenance.provenance_note`)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = [
        f"**{title}**\n" if title else "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    lines += [""] + [f"[^{i}]: {note}" for i, note in enumerate(footnotes, 1)]
    lines += ["", provenance] if provenance else []
    return "\n".join(lines).strip() + "\n"


def latex_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    footnotes: Sequence[str] = (),
    align: str = "",
    caption: str = "",
    provenance: str = "",
) -> str:
    """The same as LaTeX (booktabs): text escaped, footnote marks as superscripts, `code` in typewriter type."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{" + align + "}",
        r"\toprule",
        " & ".join(map(_tex_cell, header)) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(map(_tex_cell, cells)) + r" \\" for cells in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [
        r"\\[2pt]{\footnotesize $^{" + str(i) + "}$" + tex_escape(note) + "}" for i, note in enumerate(footnotes, 1)
    ]
    lines += [r"\\[2pt]{\footnotesize " + _tex_text(provenance) + "}"] if provenance else []
    if caption:
        lines.append(r"\caption{" + tex_escape(caption) + "}")
    return "\n".join(lines + [r"\end{table}"]) + "\n"


def _comparison(rows: list[Comparison]) -> tuple[list[str], list[list[str]], list[str], str]:
    sources = list(dict.fromkeys(r.source for r in rows))
    cells = [[r.quantity, r.ours, f"{r.published}[^{sources.index(r.source) + 1}]", r.verdict] for r in rows]
    return ["quantity", "ours", "published", "verdict"], cells, sources, "lrrl"


def comparison_markdown(rows: list[Comparison], title: str = "", provenance: str = "") -> str:
    """quantity | ours | published | verdict, sources as numbered footnotes; `provenance` as the last line."""
    return markdown_table(*_comparison(rows), title=title, provenance=provenance)


def comparison_latex(rows: list[Comparison], caption: str = "", provenance: str = "") -> str:
    """The same table as LaTeX (booktabs)."""
    return latex_table(*_comparison(rows), caption=caption, provenance=provenance)
