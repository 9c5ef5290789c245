"""Runs -> one row per configuration (mean ± std over seeds) -> Markdown and LaTeX (booktabs) tables."""

from __future__ import annotations

import dataclasses
import math
import re
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


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; nan for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std


# Two-sided 95% quantiles of Student's t by degrees of freedom (1..30); beyond, the normal 1.96.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131)
_T975 += (2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def confidence_interval(values: Sequence[float]) -> tuple[float, float]:
    """The 95% confidence interval of the mean of `values` (Student's t, n - 1 degrees of freedom; n >= 2)."""
    if len(values) < 2:
        raise ValueError(f"a confidence interval needs at least 2 values, got {len(values)}")
    mean, std = mean_std(values)
    half = (_T975[len(values) - 2] if len(values) <= 31 else 1.96) * std / math.sqrt(len(values))
    return mean - half, mean + half


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


def _table(rows: list[Row]) -> tuple[list[str], list[list[str]], list[str], str]:
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
        [_value(v) for v in row.label.values()] + _cells(row, shifts) + [_published(row, sources), row.verdict]
        for row in rows
    ]
    align = "l" * len(factors) + "r" * (len(header) - len(factors) - 1) + "l"
    return header, cells, [SOURCES[s] for s in sources], align


def to_markdown(rows: list[Row], title: str = "") -> str:
    """A Markdown table: factors, accuracy mean ± std over n seeds (and on test inputs shifted by s pixels,
    where the runs measured it), params, MACs, images/s, published, verdict."""
    return markdown_table(*_table(rows), title=title)


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


def _tex_cell(text: str) -> str:
    """An escaped cell; a trailing Markdown footnote mark "[^2]" becomes a superscript."""
    text, mark = re.fullmatch(r"(.*?)((?:\[\^\d+\])?)", text, re.DOTALL).groups()
    return tex_escape(text) + (f"$^{{{mark[2:-1]}}}$" if mark else "")


def to_latex(rows: list[Row], caption: str = "") -> str:
    """The same table as LaTeX (booktabs); sources as footnote marks under the table."""
    return latex_table(*_table(rows), caption=caption)


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
) -> str:
    """A Markdown table of preformatted cells; a cell may end in a footnote mark "[^i]" for footnotes[i-1].
    align: one "l" or "r" per column (default: first left)."""
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
    footnotes: Sequence[str] = (),
    align: str = "",
    caption: str = "",
) -> str:
    """The same as LaTeX (booktabs): text escaped, footnote marks as superscripts."""
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
    if caption:
        lines.append(r"\caption{" + tex_escape(caption) + "}")
    return "\n".join(lines + [r"\end{table}"]) + "\n"


def _comparison(rows: list[Comparison]) -> tuple[list[str], list[list[str]], list[str], str]:
    sources = list(dict.fromkeys(r.source for r in rows))
    cells = [[r.quantity, r.ours, f"{r.published}[^{sources.index(r.source) + 1}]", r.verdict] for r in rows]
    return ["quantity", "ours", "published", "verdict"], cells, sources, "lrrl"


def comparison_markdown(rows: list[Comparison], title: str = "") -> str:
    """quantity | ours | published | verdict, sources as numbered footnotes."""
    return markdown_table(*_comparison(rows), title=title)


def comparison_latex(rows: list[Comparison], caption: str = "") -> str:
    """The same table as LaTeX (booktabs)."""
    return latex_table(*_comparison(rows), caption=caption)
