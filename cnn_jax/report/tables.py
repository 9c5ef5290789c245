"""Runs -> one row per configuration (mean ± std over seeds) -> Markdown and LaTeX (booktabs) tables."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from cnn_jax.report.published import SOURCES, find_reference
from cnn_jax.report.runs import Run

METRIC = "test/accuracy"


@dataclasses.dataclass(frozen=True)
class Row:
    """Finished runs of one configuration. accuracy in percent; std is the sample std (n-1), nan for n=1."""
    label: dict            # the study's factor values for this row
    n: int                 # number of seeds
    mean: float
    std: float
    params: int | None
    macs: int | None
    images_per_s: float | None
    published: float | None = None
    source: str | None = None

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
        rows.append(Row(label(members[0]), len(members), mean, std,
                        members[0].final.get("params"), members[0].final.get("macs"),
                        sum(speeds) / len(speeds) if speeds else None,
                        ref.accuracy if ref else None, ref.source if ref else None))
    return rows


def _value(value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(map(str, value)) + ")"
    return str(value)


def _cells(row: Row, pm: str) -> list[str]:
    """Numeric cells (no characters that need escaping in LaTeX besides `pm` itself)."""
    acc = f"{row.mean:.2f}" if math.isnan(row.std) else f"{row.mean:.2f} {pm} {row.std:.2f}"
    return [acc, str(row.n), f"{row.params:,}" if row.params is not None else "",
            f"{row.macs:,}" if row.macs is not None else "",
            f"{row.images_per_s:,.0f}" if row.images_per_s else ""]


def _sources(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(r.source for r in rows if r.source))


def _published(row: Row, sources: list[str], mark) -> str:
    return "" if row.published is None else f"{row.published:g}{mark(sources.index(row.source) + 1)}"


def to_markdown(rows: list[Row], title: str = "") -> str:
    """A Markdown table: factors, accuracy mean ± std over n seeds, params, MACs, images/s, published, verdict."""
    factors = list(rows[0].label) if rows else []
    sources = _sources(rows)
    header = [*factors, "test accuracy (%)", "seeds", "params", "MACs/example", "train images/s", "published",
              "verdict"]
    lines = [f"**{title}**\n" if title else "", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < len(factors) else "---:" for i in range(len(header))) + "|"]
    for row in rows:
        cells = [_value(v) for v in row.label.values()] + _cells(row, "±")
        cells += [_published(row, sources, lambda i: f"[^{i}]"), row.verdict]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"[^{i}]: {SOURCES[s]}" for i, s in enumerate(sources, 1)]
    return "\n".join(line for line in lines if line is not None).strip() + "\n"


def _tex(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


def to_latex(rows: list[Row], caption: str = "") -> str:
    """The same table as LaTeX (booktabs); sources as footnote marks under the table."""
    factors = list(rows[0].label) if rows else []
    sources = _sources(rows)
    header = [*factors, "accuracy (\\%)", "seeds", "params", "MACs", "img/s", "published", "verdict"]
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{" + "l" * len(factors) + "r" * 6 + "l}",
             r"\toprule", " & ".join(_tex(h) if i < len(factors) else h for i, h in enumerate(header)) + r" \\",
             r"\midrule"]
    for row in rows:
        cells = [_tex(_value(v)) for v in row.label.values()] + _cells(row, r"$\pm$")
        cells += [_published(row, sources, lambda i: f"$^{{{i}}}$"), _tex(row.verdict)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [r"\\[2pt]{\footnotesize $^{" + str(i) + "}$" + _tex(SOURCES[s]) + "}" for i, s in enumerate(sources, 1)]
    if caption:
        lines.append(r"\caption{" + _tex(caption) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One line of an ours-vs-published table; values already formatted."""
    quantity: str
    ours: str
    published: str
    source: str
    verdict: str


def comparison_markdown(rows: list[Comparison], title: str = "") -> str:
    """quantity | ours | published | verdict, sources as numbered footnotes."""
    sources = list(dict.fromkeys(r.source for r in rows))
    lines = [f"**{title}**\n" if title else "", "| quantity | ours | published | verdict |", "|---|---:|---:|---|"]
    lines += [f"| {r.quantity} | {r.ours} | {r.published}[^{sources.index(r.source) + 1}] | {r.verdict} |"
              for r in rows]
    lines += [""] + [f"[^{i}]: {s}" for i, s in enumerate(sources, 1)]
    return "\n".join(lines).strip() + "\n"


def comparison_latex(rows: list[Comparison], caption: str = "") -> str:
    """The same table as LaTeX (booktabs)."""
    sources = list(dict.fromkeys(r.source for r in rows))
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{lrrl}", r"\toprule",
             r"quantity & ours & published & verdict \\", r"\midrule"]
    lines += [" & ".join([_tex(r.quantity), r.ours.replace("±", r"$\pm$"),
                          f"{r.published}$^{{{sources.index(r.source) + 1}}}$", _tex(r.verdict)]) + r" \\"
              for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [r"\\[2pt]{\footnotesize $^{" + str(i) + "}$" + _tex(s) + "}" for i, s in enumerate(sources, 1)]
    if caption:
        lines.append(r"\caption{" + _tex(caption) + "}")
    return "\n".join(lines + [r"\end{table}"]) + "\n"
