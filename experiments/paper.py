"""One LaTeX document of every study: its description and commands, then its tables and figures as generated.

    python -m experiments.paper          # writes docs/paper.tex from docs/results
    python -m experiments.paper --pdf    # and compiles it with pdflatex: docs/paper.pdf

A study's section is its module docstring (what it compares, how to run it, what it costs), then each of its
generated tables (docs/results/*.tex, each ending with the provenance line of the runs behind it) and figures
(docs/results/*.png). Nothing is recomputed: rerun a study's command and copy its results over to update a
section. The document depends on LaTeX's base and recommended packages only (booktabs, graphicx, geometry).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from absl import app, flags

from cnn_jax.report.tables import tex_escape
from experiments import conv_variants, mnist1d_gap, normalization, pooling, receptive_fields, reproduce, shift

DOCS = Path(__file__).resolve().parents[1] / "docs"


@dataclasses.dataclass(frozen=True)
class Section:
    """A study in the document: its heading, the module whose docstring describes it, and its generated tables
    and figures (file stems in the results directory)."""

    title: str
    module: ModuleType
    tables: tuple[str, ...]
    figures: tuple[str, ...] = ()


SECTIONS = (
    Section(
        "Convolution variants (study 1)",
        conv_variants,
        ("conv_variants_mnist1d", "conv_variants_images"),
        ("conv_variants_mnist1d_curves", "conv_variants_images_curves"),
    ),
    Section(
        "Receptive fields and dilation (study 2)",
        receptive_fields,
        ("receptive_fields", "receptive_fields_exponent"),
        (
            "receptive_fields_erf_growth",
            "receptive_fields_depth_heatmaps",
            "receptive_fields_dilation_heatmaps",
            "receptive_fields_accuracy_curves",
        ),
    ),
    Section("Downsampling in LeNet-5 (study 3)", pooling, ("pooling",), ("pooling_curves",)),
    Section(
        "Normalisation in ResNet (study 4), the reduced CPU grid",
        normalization,
        ("normalization_reduced",),
        ("normalization_reduced_curves",),
    ),
    Section("Ours against published values (study 5)", reproduce, ("reproduce",)),
    Section(
        "Accuracy under shifts (study 6)",
        shift,
        ("shift", "shift_circular"),
        ("shift_accuracy_by_shift", "shift_accuracy_by_circular_shift"),
    ),
    Section("The MNIST-1D gap", mnist1d_gap, ("mnist1d_gap",)),
)
PREAMBLE = r"""\documentclass[10pt]{article}
\usepackage[margin=1.8cm]{geometry}
\usepackage{booktabs}
\usepackage{graphicx}
\setlength{\tabcolsep}{3.5pt}
\renewcommand{\arraystretch}{1.05}
% generated tables and figures are floats: near where their section puts them
\makeatletter\renewcommand{\fps@table}{!htbp}\renewcommand{\fps@figure}{!htbp}\makeatother
"""


def describe(docstring: str) -> str:
    """A module docstring as LaTeX: its indented lines (commands) verbatim, every other paragraph as text."""
    blocks, text, commands = [], [], []
    for line in [*docstring.strip().splitlines(), ""]:
        if line.startswith("    "):
            commands.append(line[4:])
            continue
        if commands:
            blocks.append("{\\footnotesize\n\\begin{verbatim}\n" + "\n".join(commands) + "\n\\end{verbatim}\n}")
            commands = []
        if line.strip():
            text.append(line.strip())
        elif text:
            blocks.append(tex_escape(" ".join(text)))
            text = []
    return "\n\n".join(blocks)


def _table(path: Path) -> str:
    """A generated table, set small and never wider than the line; one generated before tables named their
    sources says so."""
    table = path.read_text()
    if "Provenance:" not in table:
        table += (
            "\n{\\footnotesize This table was generated before tables recorded the runs' provenance: rerun its "
            "command (above) to regenerate it with its sources.}\n"
        )
    # Scaled down to the line when wider (graphicx: \width is the table's natural width), never up.
    table = table.replace(
        "\\begin{tabular}", "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{\\begin{tabular}"
    ).replace("\\end{tabular}", "\\end{tabular}}")
    return "{\\footnotesize\n" + table + "}\n"


def _figure(stem: str, results_dir: Path, root: Path) -> str:
    path = Path(os.path.relpath(results_dir / f"{stem}.png", root)).as_posix()
    caption = tex_escape(stem.replace("_", " "))
    return (
        "\\begin{figure}\n\\centering\n"
        f"\\includegraphics[width=\\linewidth,height=0.42\\textheight,keepaspectratio]{{{path}}}\n"
        f"\\caption{{{caption}}}\n\\end{{figure}}\n"
    )


def paper(results_dir: Path, out: Path) -> str:
    """The document's LaTeX source, with figure paths relative to `out`'s directory; raises ValueError naming
    any table or figure a section lists that `results_dir` lacks, and any results file no section lists."""
    listed = {f"{t}.tex" for s in SECTIONS for t in s.tables} | {f"{f}.png" for s in SECTIONS for f in s.figures}
    present = {p.name for p in results_dir.iterdir() if p.suffix in (".tex", ".png")}
    if listed - present:
        raise ValueError(f"{results_dir} lacks {sorted(listed - present)}: run the studies that write them")
    if present - listed:
        raise ValueError(f"no section of experiments/paper.py lists {sorted(present - listed)}")
    parts = [
        PREAMBLE,
        "\\title{cnn\\_jax: the studies}\n\\author{}\n\\date{}\n\\begin{document}\n\\maketitle\n",
        tex_escape(
            "Every table and figure of the studies, as the study commands generated them. Each table's last "
            "line names the commits, package versions and devices of the runs behind it, and the command that "
            "regenerates it. This document is regenerated by `python -m experiments.paper --pdf`."
        ),
        "\n\\tableofcontents\n",
    ]
    for section in SECTIONS:
        parts.append(f"\\clearpage\n\\section{{{tex_escape(section.title)}}}\n")
        parts.append(describe(section.module.__doc__) + "\n")
        parts += [_table(results_dir / f"{stem}.tex") for stem in section.tables]
        parts += [_figure(stem, results_dir, out.parent) for stem in section.figures]
    parts.append("\\end{document}\n")
    return "\n".join(parts)


def compile_pdf(source: Path) -> Path:
    """Run pdflatex on `source` in its directory (twice: the table of contents); the PDF's path. Raises
    RuntimeError with the end of LaTeX's log when it fails."""
    if shutil.which("pdflatex") is None:
        raise RuntimeError("pdflatex is not installed (Debian: texlive-latex-base, texlive-latex-recommended)")
    for _ in range(2):
        result = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", source.name],
            cwd=source.parent,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pdflatex failed on {source}:\n{result.stdout[-3000:]}")
    return source.with_suffix(".pdf")


def define_flags():
    """The command's flags (defined when it runs, not on import); returns its main."""
    results_dir = flags.DEFINE_string("results_dir", str(DOCS / "results"), "the studies' generated tables and figures")
    out = flags.DEFINE_string("out", str(DOCS / "paper.tex"), "the LaTeX file to write")
    pdf = flags.DEFINE_bool("pdf", False, "also compile it with pdflatex")

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        path = Path(out.value)
        try:
            path.write_text(paper(Path(results_dir.value), path))
            print(f"wrote {path}")
            if pdf.value:
                print(f"wrote {compile_pdf(path)}")
        except (ValueError, RuntimeError) as err:  # missing results, no pdflatex: the message alone
            sys.exit(f"error: {err}")

    return main


if __name__ == "__main__":
    app.run(define_flags())
