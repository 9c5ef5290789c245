"""Study 5: the numbers with published values, ours beside them, in one table with a verdict.

    python -m experiments.reproduce --download_dir=../shared/datasets     # trains LeNet-5 and MNIST-1D models
    python -m experiments.reproduce --part=analytic                        # parameter counts, receptive fields

Analytic rows (exact: the verdict is "exact" or the difference): parameter counts against torchvision and
He et al. 2016, receptive fields against Araujo et al. 2019. Trained rows: LeNet-5 (classic) on MNIST
against LeCun et al. 1998, and the MNIST-1D models against Greydanus & Kobak 2024, mean ± std over seeds
with the study report's verdict rule. The published values are cnn_jax/report/published.py's.
"""

from __future__ import annotations

from absl import flags

from cnn_jax.report import SOURCES, load_runs, write_comparison
from cnn_jax.report.published import PARAMETER_COUNTS, RECEPTIVE_FIELDS
from cnn_jax.report.runs import Run
from cnn_jax.report.tables import Comparison, aggregate, format_mean_std, verdict
from cnn_jax.sweep import Point
from experiments.study import Study, config, run_cli

PARAMETER_ROWS = ("alexnet", "vgg16", "resnet50", "resnet20", "resnet110")  # the table's rows, not all counts
MNIST1D = {"logreg": config("mlp_mnist1d", "logreg"), "mlp": config("mlp_mnist1d"), "cnn": config("cnn1d_mnist1d")}


def analytic_rows() -> list[Comparison]:
    import jax
    import jax.numpy as jnp

    from cnn_jax import models
    from cnn_jax.analysis import model_receptive_field

    rows = []
    for name in PARAMETER_ROWS:
        published = PARAMETER_COUNTS[name]
        model = models.create(name, num_classes=published.num_classes, **dict(published.options))
        shape = published.input_shape
        variables = jax.eval_shape(lambda m=model, s=shape: m.init(jax.random.key(0), jnp.zeros((1, *s))))
        ours = sum(p.size for p in jax.tree.leaves(variables["params"]))
        rows.append(
            Comparison(
                f"{name} parameters",
                f"{ours:,}",
                f"{published.count:,}",
                SOURCES[published.source],
                verdict(ours, published.count, published.rounding, "within rounding"),
            )
        )
    for name, published in RECEPTIVE_FIELDS.items():
        ours = model_receptive_field(models.create(name, num_classes=1000), (224, 224, 3))[0].size
        rows.append(
            Comparison(
                f"{name} receptive field (last spatial map)",
                str(ours),
                str(published),
                SOURCES["araujo2019"],
                verdict(ours, published, digits="+"),
            )
        )
    return rows


def trained_points() -> list[Point]:
    points = [Point("lenet5_classic__mnist", config("lenet5_classic_mnist"))]
    points += [Point(f"{name}__mnist1d", config_file) for name, config_file in MNIST1D.items()]
    points.append(Point("cnn__mnist1d_shuffled", MNIST1D["cnn"], (("dataset.permute_positions", True),)))
    return points


def label(config: dict) -> dict:
    """ "<model> on <data>": logreg/mlp/cnn/lenet5_classic on mnist, mnist1d or mnist1d_shuffled."""
    model = {"cnn1d": "cnn"}.get(config["model.name"], config["model.name"])
    if model == "mlp" and not config["model.options.hidden"]:
        model = "logreg"
    data = config["dataset.name"] + ("_shuffled" if config["dataset.permute_positions"] else "")
    return {"run": f"{model} on {data}"}


def trained_rows(runs: list[Run]) -> list[Comparison]:
    return [
        Comparison(
            f"{row.label['run']} test accuracy (%), {row.n} seed{'s' if row.n > 1 else ''}",
            format_mean_std(row.mean, row.std),
            f"{row.published:g}",
            SOURCES[row.source],
            row.verdict,
        )
        for row in aggregate(runs, lambda run: label(run.config))
        if row.published is not None
    ]


def define_flags():
    part = flags.DEFINE_enum("part", "all", ["all", "analytic"], "analytic rows only, or everything")

    def main(study: Study) -> None:
        rows, runs = analytic_rows(), []
        if part.value == "all":
            study.run(trained_points())
            runs = [run for run in load_runs(study.study_dir) if run.final is not None]
            rows += trained_rows(runs)
        print(write_comparison(study.study_dir, rows, "Ours vs published", runs=runs, command=study.command))
        print(f"wrote {study.study_dir}/results.md and results.tex")

    return main


if __name__ == "__main__":
    run_cli("studies/reproduce", define_flags)
