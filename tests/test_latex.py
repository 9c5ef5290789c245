"""The LaTeX tables compile: every generated file in docs/results, and a table whose text holds every
character special to LaTeX, each in a minimal booktabs document, whenever pdflatex is installed (.ci/run
installs Debian's texlive-latex-base and texlive-latex-recommended)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from cnn_jax.report.tables import Comparison, comparison_latex, latex_table, tex_escape

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
SPECIAL = r"a_b & 5% $x$ #1 {y} ~z std ~ depth^a \path ± 0.5"
needs_pdflatex = pytest.mark.skipif(
    shutil.which("pdflatex") is None,
    reason="pdflatex not installed (Debian: texlive-latex-base, texlive-latex-recommended)",
)


def compile_table(table: str, tmp_path: Path) -> None:
    source = tmp_path / "table.tex"
    source.write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + table + "\\end{document}\n"
    )
    result = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", source.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert (tmp_path / "table.pdf").exists()


def test_every_special_character_is_escaped():
    escaped = tex_escape(SPECIAL)
    for raw in ("_", "&", "%", "$", "#", "{", "}", "~", "^"):
        assert f"\\{raw}" in escaped or raw in ("~", "^")
    assert r"\textasciitilde{}" in escaped and r"\textasciicircum{}" in escaped and r"\textbackslash{}path" in escaped
    assert "$\\pm$" in escaped
    table = comparison_latex([Comparison("std ~ depth^a", "0.581", "0.5", "Luo et al. ~2016", "off by +0.08")])
    assert r"std \textasciitilde{} depth\textasciicircum{}a" in table
    assert r"0.5$^{1}$" in table  # the footnote mark is a superscript, not escaped text


@needs_pdflatex
@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.tex")), ids=lambda p: p.name)
def test_generated_tables_compile(path, tmp_path):
    compile_table(path.read_text(), tmp_path)


def test_the_provenance_line_sets_commands_in_typewriter_type():
    table = latex_table(["a"], [["1"]], provenance=f"Provenance: 2 runs; regenerate: `{SPECIAL}`.")
    assert (
        table.splitlines()[-2]
        == r"\\[2pt]{\footnotesize Provenance: 2 runs; regenerate: \texttt{" + tex_escape(SPECIAL) + "}.}"
    )


@needs_pdflatex
def test_special_characters_compile(tmp_path):
    provenance = f"Provenance: 3 runs; commit 119ce70+dirty; regenerate: `python -m x {SPECIAL}`."
    table = latex_table(
        ["quantity", SPECIAL],
        [[SPECIAL, "1.00 ± 0.10[^1]"], ["vs baseline", "-5.50 [-8.79, -2.21] *"]],
        [SPECIAL],
        caption=SPECIAL,
        provenance=provenance,
    )
    compile_table(table, tmp_path)


def test_the_committed_paper_is_what_the_command_writes_from_the_committed_results():
    from experiments.paper import paper

    committed = RESULTS.parent / "paper.tex"
    assert committed.read_text() == paper(RESULTS, committed), "stale: run python -m experiments.paper"


def test_a_study_description_keeps_its_commands_verbatim_and_escapes_its_text():
    from experiments.paper import describe

    latex = describe("Study 9: 50% of a_b.\n\n    python -m x --a=1   # 2 min\n\nWrites STUDY_DIR/results.md.\n")
    assert latex.split("\n\n") == [
        r"Study 9: 50\% of a\_b.",
        "{\\footnotesize\n\\begin{verbatim}\npython -m x --a=1   # 2 min\n\\end{verbatim}\n}",
        r"Writes STUDY\_DIR/results.md.",
    ]


def test_the_paper_refuses_missing_and_unlisted_results(tmp_path):
    from experiments.paper import paper

    for path in RESULTS.iterdir():
        shutil.copy(path, tmp_path)
    (tmp_path / "pooling.tex").unlink()
    with pytest.raises(ValueError, match=r"lacks \['pooling.tex'\]: run the studies"):
        paper(tmp_path, tmp_path / "paper.tex")
    shutil.copy(RESULTS / "pooling.tex", tmp_path)
    (tmp_path / "extra_study.tex").write_text("")
    with pytest.raises(ValueError, match=r"no section of experiments/paper.py lists \['extra_study.tex'\]"):
        paper(tmp_path, tmp_path / "paper.tex")


@needs_pdflatex
def test_the_paper_compiles(tmp_path):
    from experiments.paper import compile_pdf, paper

    source = tmp_path / "paper.tex"
    source.write_text(paper(RESULTS, source))
    pdf = compile_pdf(source)
    log = source.with_suffix(".log").read_text(errors="replace")
    assert pdf.stat().st_size > 100_000  # the figures are in it
    assert "Overfull" not in log and "undefined" not in log.lower()  # every table and command fits the page
    toc = source.with_suffix(".toc").read_text()
    assert toc.count("\\contentsline {section}") == 7
