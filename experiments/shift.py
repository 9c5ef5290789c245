"""Shift study: does aliasing explain why a small shift can hurt more than a larger one? LeNet-5 and ResNet-8
on MNIST and Fashion-MNIST, each as published, anti-aliased with the 3- and 5-tap binomial filter (Zhang 2019:
MaxBlurPool in LeNet-5, blurred strided convolutions and shortcuts in ResNet-8), and with circular padding
(every convolution pads with the image wrapped around instead of zeros), tested at every shift 0..8 px, with
Zhang's consistency.

    python -m experiments.shift --download_dir=../shared/datasets --models=lenet5 --parallel=2  # 24 runs, CPU
    python -m experiments.shift --download_dir=../shared/datasets --parallel=12                 # all 48, a GPU

Study 1 found ResNet-8 on Fashion-MNIST more accurate at a 4 px shift than at 2 px, beyond the seeds'
spread, and offered aliasing in its stride-2 subsampling as the explanation: a blurred network whose
accuracy falls smoothly with the shift would support it, a blurred network with the same dip would not.
Circular padding removes the other thing a shift changes inside the network, where the zero border lies
relative to the content (ResNet-8 with it is exactly invariant to circular shifts by multiples of 4).
A shift moves every test image to the right by s pixels (zero fill); training sees no shifts. Each run is
also tested under circular shifts (wrapped around): they lose no pixel, so what they change is only the
content's position relative to the network's strides (its phase), the part aliasing acts on. Consistency:
how often two different shifts (of 0..8) of one test image get the same class, over every pair
(`cnn_jax.analysis.consistency`). Both are computed after training from each run's checkpoint and kept in
its `shift.json`. Writes STUDY_DIR/results.md, results.tex, learning_curves.png (the usual study report),
and per kind of shift a table and a figure: results_shift.md/.tex and accuracy_by_shift.png (zero fill),
results_shift_circular.md/.tex and accuracy_by_circular_shift.png (wrapped around).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import flags

from cnn_jax.analysis import predictions_at_shifts, shift_robustness
from cnn_jax.report import figures, provenance_note
from cnn_jax.report.runs import load_runs
from cnn_jax.report.stats import mean_std
from cnn_jax.report.tables import format_mean_std, latex_table, markdown_table
from cnn_jax.sweep import Point
from experiments.study import Study, check_choices, config, run_and_report, run_cli

DATASETS = ("mnist", "fashion_mnist")
SHIFTS = tuple(range(9))
TABLE_SHIFTS = (0, 1, 2, 3, 4, 8)  # the table's columns; the figure shows every shift
BLUR_SIZES = (3, 5)
# Per model: its config file, and its anti-aliased form with a filter of `size` taps as config overrides.
MODELS = {
    "lenet5": ("lenet5_mnist", lambda size: (("model.options.pool", "blurmax"), ("model.options.blur_size", size))),
    "resnet8": ("resnet8_images", lambda size: (("model.options.blur_size", size),)),
}
# Per variant: its config overrides for a model.
VARIANTS = {
    "standard": lambda model: (),
    **{f"blur{n}": (lambda model, n=n: MODELS[model][1](n)) for n in BLUR_SIZES},
    "circular": lambda model: (("model.conv.padding_mode", "circular"),),
}
RESULT_FILE = "shift.json"
# Per kind of test shift: the suffix of its files, its name, and its results in a run's shift.json.
SHIFT_KINDS = (("", "zero-filled", lambda r: r), ("_circular", "wrapped around", lambda r: r["circular"]))


def points(
    models: Sequence[str] = tuple(MODELS), datasets: Sequence[str] = DATASETS, variants: Sequence[str] = tuple(VARIANTS)
) -> list[Point]:
    """Per (dataset, model): the published network, its anti-aliased forms (3 and 5 taps), circular padding."""
    check_choices("models", models, MODELS)
    check_choices("variants", variants, VARIANTS)
    grid = []
    for dataset in datasets:
        for model in models:
            common = (("dataset.name", dataset), ("dataset.eval_shifts", SHIFTS[1:]))
            grid += [
                Point(f"{model}_{variant}__{dataset}", config(MODELS[model][0]), VARIANTS[variant](model) + common)
                for variant in VARIANTS
                if variant in variants
            ]
    return grid


def label(config: dict) -> dict:
    """A run's row: model, variant (standard, blur<taps> or circular) and dataset."""
    model, size = config["model.name"], config.get("model.options.blur_size", 0)
    blurred = config["model.options.pool"] == "blurmax" if model == "lenet5" else size > 0
    variant = f"blur{size}" if blurred else "standard"
    if config.get("model.conv.padding_mode", "zeros") == "circular":  # runs from before the option have none
        variant = "circular"
    return {"model": model, "variant": variant, "data": config["dataset.name"]}


def analyse_run(run_dir: Path) -> dict:
    """Accuracy at every shift and consistency of a finished run, zero-filled and (under "circular") wrapped
    around, kept in run_dir/shift.json."""
    path = run_dir / RESULT_FILE
    result = json.loads(path.read_text()) if path.exists() else {}
    if "circular" in result:
        return result
    from cnn_jax.train import load_classifier  # the engine, only when a run is analysed

    classify, data = load_classifier(run_dir)
    for circular in (False, True):
        predictions = predictions_at_shifts(classify, data.test.inputs, SHIFTS, circular=circular)
        robustness = shift_robustness(predictions, data.test.labels, SHIFTS)
        result.update({"circular": robustness} if circular else robustness)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _grid_order(model: str, variant: str, data: str) -> tuple[int, int, int]:
    """Rows as the grid runs them: dataset, then model, then the variants in VARIANTS' order."""
    orders = ((list(DATASETS), data), (list(MODELS), model), (list(VARIANTS), variant))
    return tuple(v.index(x) if x in v else len(v) for v, x in orders)


def _cells(results: list[dict[str, float]]) -> list[str]:
    """A row's numbers: accuracy at TABLE_SHIFTS, consistency (mean ± std over seeds, %) and the seed count."""
    keys = [*(f"accuracy@shift={s}" for s in TABLE_SHIFTS), "consistency"]
    return [*(format_mean_std(*mean_std([100 * r[k] for r in results])) for k in keys), str(len(results))]


def report(study_dir: Path, title: str, command: str | None = None) -> str:
    """From the finished runs, per kind of shift (zero-filled, then wrapped around): a table of accuracy at
    TABLE_SHIFTS and consistency, mean ± std over seeds (results_shift.md/.tex, results_shift_circular.md/.tex),
    and a figure of accuracy at every shift (accuracy_by_shift.png, accuracy_by_circular_shift.png). Returns
    the Markdown of both tables; `command` regenerates them."""
    groups: dict[tuple, list[dict]] = {}
    finished = [run for run in load_runs(study_dir) if run.final is not None]
    for run in finished:
        groups.setdefault(tuple(label(run.config).values()), []).append(analyse_run(run.path))
    groups = dict(sorted(groups.items(), key=lambda item: _grid_order(*item[0])))
    header = ["model", "variant", "data", *(f"{s} px (%)" for s in TABLE_SHIFTS), "consistency (%)", "seeds"]
    align = "lll" + "r" * (len(header) - 3)
    markdown = []
    for suffix, kind, pick in SHIFT_KINDS:
        rows = [[*key, *_cells([pick(r) for r in runs])] for key, runs in groups.items()]
        caption = f"{title}; test images shifted right, {kind}"
        provenance = provenance_note(finished, command, str(study_dir / f"results_shift{suffix}.md"))
        markdown.append(markdown_table(header, rows, [], align, title=caption, provenance=provenance))
        (study_dir / f"results_shift{suffix}.md").write_text(markdown[-1])
        latex = latex_table(header, rows, [], align, caption=caption, provenance=provenance)
        (study_dir / f"results_shift{suffix}.tex").write_text(latex)
        curves = [
            (dict(zip(header, key)), np.array([[pick(r)[f"accuracy@shift={s}"] for s in SHIFTS] for r in runs]))
            for key, runs in groups.items()
        ]
        xlabel = f"shift of the test images (pixels, to the right, {kind})"
        figures.accuracy_by_shift(curves, SHIFTS, study_dir / f"accuracy_by{suffix}_shift.png", xlabel)
    return "\n".join(markdown)


def define_flags():
    models = flags.DEFINE_list("models", list(MODELS), f"networks, of {', '.join(MODELS)}")
    datasets = flags.DEFINE_list("datasets", list(DATASETS), "datasets")
    variants = flags.DEFINE_list("variants", list(VARIANTS), f"forms of each network, of {', '.join(VARIANTS)}")

    def main(study: Study) -> None:
        title = "Accuracy under shifts: published, anti-aliased and circularly padded"
        run_and_report(study, points(models.value, datasets.value, variants.value), label, title)
        print(report(study.study_dir, title, study.command))
        print(f"wrote {study.study_dir}/results_shift[_circular].md/.tex, accuracy_by[_circular]_shift.png")

    return main


if __name__ == "__main__":
    run_cli("studies/shift", define_flags)
