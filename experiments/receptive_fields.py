"""Study 2: theoretical vs effective receptive fields, and what dilation schedules buy.

    python -m experiments.receptive_fields              # everything, offline: about 15 minutes on 2 CPU cores
    python -m experiments.receptive_fields --part=erf   # the measurements only (no training): about 2 minutes

ERF by depth: plain stacks of 3x3 convolutions (16 channels, stride 1, SAME) of depth 2..32 with
uniform weights and no nonlinearity, random (LeCun normal) weights and no nonlinearity, and random
weights with ReLU. Luo et al. 2016: the effective field's size grows as sqrt(depth) while the theoretical
one grows linearly, so it fills an ever smaller fraction (uniform: std = sqrt(2 depth / 3) exactly).
Dilation schedules: four 3x3 layers with dilations (1,1,1,1), (2,2,2,2) (gridding: every position
outside one parity class is never seen), (1,2,4,8) and (1,2,5,9) (hybrid dilated convolution, Wang et al.
2018): ERF heatmaps, the fraction of the theoretical field with zero gradient ("holes"), and test
accuracy (1-D versions, global average pooling) on the long-range XOR task (cnn_jax/data/long_range_builder.py:
markers 12..28 samples apart, solvable only by a unit that sees both) and on MNIST-1D.
Writes STUDY_DIR/results.md, results.tex and erf_*.png (and STUDY_DIR/accuracy/ with the runs' own
report) and prints the tables.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from absl import flags

from cnn_jax.report import SOURCES, load_runs, provenance_note, write_report
from cnn_jax.report.figures import erf_growth, erf_heatmaps
from cnn_jax.report.published import ERF_GROWTH_EXPONENT
from cnn_jax.report.stats import confidence_interval
from cnn_jax.report.tables import (
    Comparison,
    aggregate,
    comparison_latex,
    comparison_markdown,
    format_mean_std,
    latex_table,
    markdown_table,
    verdict,
)
from cnn_jax.sweep import Point
from experiments.study import Study, config, run_cli

NETWORKS = {
    "uniform, linear": ("linear", "uniform"),
    "random, linear": ("linear", "lecun_normal"),
    "random, ReLU": ("relu", "lecun_normal"),
}
SCHEDULES = {"(1,1,1,1)": (1, 1, 1, 1), "(2,2,2,2)": (2, 2, 2, 2), "(1,2,4,8)": (1, 2, 4, 8), "(1,2,5,9)": (1, 2, 5, 9)}
TASKS = ("long_range_xor", "mnist1d")


@dataclasses.dataclass(frozen=True)
class ErfSettings:
    """How each ERF is estimated: random inputs per initialisation, and initialisations averaged."""

    samples: int = 16
    inits: int = 4


def _erf(
    depth_or_dilations,
    settings: ErfSettings,
    activation: str = "relu",
    kernel_init: str = "lecun_normal",
    seed: int = 0,
):
    from cnn_jax import models
    from cnn_jax.analysis import effective_receptive_field

    dilations = (1,) * depth_or_dilations if isinstance(depth_or_dilations, int) else depth_or_dilations
    model = models.create(
        "context_net", num_classes=1, features=16, dilations=dilations, activation=activation, kernel_init=kernel_init
    )
    side = 2 * sum(dilations) + 17  # the theoretical field plus a margin of 8 on each side
    return effective_receptive_field(model, (side, side, 1), samples=settings.samples, inits=settings.inits, seed=seed)


def depth_tables(study_dir: Path, depths: list[int], settings: ErfSettings, command: str | None) -> tuple[str, str]:
    """ERF std against depth for each network, the fitted growth exponent against Luo et al.'s 1/2; `command`
    regenerates them (the tables' provenance line)."""
    erfs = {name: [_erf(d, settings, *network) for d in depths] for name, network in NETWORKS.items()}
    stds = {name: [e.std[0] for e in values] for name, values in erfs.items()}
    fields = [2 * d + 1 for d in depths]
    header = [
        "depth",
        "theoretical RF",
        *(f"ERF std, {name}" for name in NETWORKS),
        "sqrt(2 depth/3)",
        "95% radius, ReLU",
        "ERF std / RF, ReLU",
    ]
    relu = erfs["random, ReLU"]
    rows = [
        [
            str(d),
            str(f),
            *(f"{stds[name][i]:.2f}" for name in NETWORKS),
            f"{np.sqrt(2 * d / 3):.2f}",
            str(relu[i].radius95),
            f"{relu[i].std[0] / f:.3f}",
        ]
        for i, (d, f) in enumerate(zip(depths, fields))
    ]
    title = "Effective receptive field by depth (3x3 convolutions, 2-D, std in pixels)"
    note = provenance_note([], command, str(study_dir / "results.md"), computed=True)
    markdown = markdown_table(header, rows, title=title, provenance=note)
    latex = latex_table(header, rows, caption=title, provenance=note)
    exponents = [_exponent_row(name, depths, stds[name]) for name in NETWORKS]
    markdown += "\n" + comparison_markdown(exponents, "Growth exponent, least-squares fit on log-log", note)
    latex += "\n" + comparison_latex(exponents, "Growth exponent, least-squares fit on log-log", note)
    erf_growth(depths, stds, fields, study_dir / "erf_growth.png")
    erf_heatmaps(
        {f"depth {d}": e for d, e in zip(depths, relu)}, study_dir / "erf_depth_heatmaps.png", columns=len(depths)
    )
    return markdown, latex


def _exponent_row(name: str, depths: list[int], stds: list[float]) -> Comparison:
    exponent = _fit(depths, stds)
    return Comparison(
        f"ERF growth exponent a (std ~ depth^a), {name}",
        f"{exponent:.3f}",
        f"{ERF_GROWTH_EXPONENT:g}",
        SOURCES["luo2016"],
        verdict(exponent, ERF_GROWTH_EXPONENT, 0.05, "within 0.05", "+.2f"),
    )


def _fit(depths: list[int], stds: list[float]) -> float:
    """The least-squares slope of log std against log depth."""
    return float(np.polyfit(np.log(depths), np.log(stds), 1)[0])


def exponent_tables(depths: list[int], seeds: int, settings: ErfSettings, command: str | None) -> tuple[str, str]:
    """The growth exponent of the random networks, one initialisation per seed: fitted over the whole depth
    range and its deeper half, and locally between consecutive depths, as mean and 95% confidence interval
    over seeds. An exponent that falls towards 1/2 as the depths grow is a finite-depth effect; one that
    stays above it at every depth is a real disagreement. `command` regenerates the table."""
    one_init = dataclasses.replace(settings, inits=1)
    deep = depths[len(depths) // 2 - 1 :]
    ranges = {
        f"{depths[0]}-{depths[-1]} (fit)": depths,
        f"{deep[0]}-{deep[-1]} (fit)": deep,
        **{f"{a}-{b}": [a, b] for a, b in zip(depths, depths[1:])},
    }
    header = ["network", "depths", "exponent (mean)", "95% CI", "seeds"]
    rows = []
    for name, network in NETWORKS.items():
        if network[1] != "lecun_normal":
            continue  # the uniform stack is deterministic: its exponent is in the table above
        stds = [{d: _erf(d, one_init, *network, seed=seed).std[0] for d in depths} for seed in range(seeds)]
        for label_, span in ranges.items():
            exponents = [_fit(span, [by_depth[d] for d in span]) for by_depth in stds]
            low, high = confidence_interval(exponents)
            rows.append([name, label_, f"{np.mean(exponents):.3f}", f"[{low:.3f}, {high:.3f}]", str(seeds)])
    title = f"ERF growth exponent by depth range, random initialisations (Luo et al.: {ERF_GROWTH_EXPONENT:g})"
    note = provenance_note([], command, "the exponent table", computed=True)
    return markdown_table(header, rows, title=title, provenance=note), latex_table(
        header, rows, caption=title, provenance=note
    )


def accuracy_points() -> list[Point]:
    """Each dilation schedule trained on each task (1-D)."""
    return [
        Point(
            f"{task}__d{'-'.join(map(str, dilations))}",
            config("context1d", task),
            (("model.options.dilations", dilations),),
        )
        for task in TASKS
        for dilations in SCHEDULES.values()
    ]


def label(config: dict) -> dict:
    """A trained run's row: its task and its dilation schedule."""
    return {"task": config["dataset.name"], "dilations": tuple(config["model.options.dilations"])}


def schedule_tables(
    study_dir: Path, accuracy_dir: Path | None, settings: ErfSettings, command: str | None
) -> tuple[str, str]:
    """Per schedule: theoretical field, ERF std and holes (2-D, random ReLU), test accuracy per task (the
    finished runs in `accuracy_dir`, if given); `command` regenerates them."""
    erfs = {name: _erf(dilations, settings) for name, dilations in SCHEDULES.items()}
    accuracy = {}
    runs = [run for run in load_runs(accuracy_dir) if run.final is not None] if accuracy_dir is not None else []
    if runs:
        for row in aggregate(runs, lambda run: label(run.config)):
            accuracy[row.label["task"], row.label["dilations"]] = f"{format_mean_std(row.mean, row.std)} ({row.n})"
    header = [
        "dilations",
        "theoretical RF",
        "ERF std",
        "95% radius",
        "holes (%)",
        *(f"{task} accuracy (%) (seeds)" for task in TASKS),
    ]
    rows = [
        [
            name,
            str(erf.field[0]),
            f"{erf.std[0]:.2f}",
            str(erf.radius95),
            f"{100 * erf.holes:.1f}",
            *(accuracy.get((task, SCHEDULES[name]), "not run") for task in TASKS),
        ]
        for name, erf in erfs.items()
    ]
    erf_heatmaps({f"dilations {name}": erf for name, erf in erfs.items()}, study_dir / "erf_dilation_heatmaps.png")
    title = "Dilation schedules: four 3x3 layers, ERF of random ReLU networks (2-D), accuracy of 1-D versions"
    note = provenance_note(runs, command, str(study_dir / "results.md"), computed=True)
    return markdown_table(header, rows, title=title, provenance=note), latex_table(
        header, rows, caption=title, provenance=note
    )


def define_flags():
    part = flags.DEFINE_enum(
        "part",
        "all",
        ["all", "erf", "exponent"],
        "all; erf: the ERF measurements only (no training); exponent: the growth exponent over seeds and depths",
    )
    depths = flags.DEFINE_list("depths", ["2", "4", "8", "16", "32"], "depths of the plain stacks")
    exponent_depths = flags.DEFINE_list(
        "exponent_depths", ["2", "4", "8", "16", "32", "64"], "part exponent: the depths of the seed sweep"
    )
    exponent_seeds = flags.DEFINE_integer("exponent_seeds", 10, "part exponent: initialisations (seeds)")
    samples = flags.DEFINE_integer("samples", ErfSettings.samples, "random inputs per initialisation for each ERF")
    inits = flags.DEFINE_integer("inits", ErfSettings.inits, "random initialisations averaged for each ERF")

    def main(study: Study) -> None:
        study_dir, settings = study.study_dir, ErfSettings(samples.value, inits.value)
        study_dir.mkdir(parents=True, exist_ok=True)
        if part.value == "exponent":
            markdown, latex = exponent_tables(
                [int(d) for d in exponent_depths.value], exponent_seeds.value, settings, study.command
            )
            (study_dir / "exponent.md").write_text(markdown)
            (study_dir / "exponent.tex").write_text(latex)
            print(markdown)
            print(f"wrote {study_dir}/exponent.md and exponent.tex")
            return
        accuracy_dir = None
        if part.value == "all":
            accuracy_dir = study_dir / "accuracy"
            study.run(accuracy_points(), accuracy_dir)
            write_report(
                accuracy_dir, lambda run: label(run.config), "Dilation schedules, trained", command=study.command
            )
        depth_md, depth_tex = depth_tables(study_dir, [int(d) for d in depths.value], settings, study.command)
        schedule_md, schedule_tex = schedule_tables(study_dir, accuracy_dir, settings, study.command)
        markdown = depth_md + "\n" + schedule_md
        (study_dir / "results.md").write_text(markdown)
        (study_dir / "results.tex").write_text(depth_tex + "\n" + schedule_tex)
        print(markdown)
        print(f"wrote {study_dir}/results.md, results.tex and erf_*.png")

    return main


if __name__ == "__main__":
    run_cli("studies/receptive_fields", define_flags)
