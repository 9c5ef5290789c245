"""Study 5: the numbers with published values, ours beside them, in one table with a verdict.

    python -m experiments.reproduce --download_dir=../shared/datasets     # trains LeNet-5 and MNIST-1D models
    python -m experiments.reproduce --part=analytic                        # parameter counts, receptive fields

Analytic rows (exact: the verdict is "exact" or the difference): parameter counts against torchvision and
He et al. 2016, receptive fields against Araujo et al. 2019. Trained rows: LeNet-5 (classic) on MNIST
against LeCun et al. 1998, and the MNIST-1D models against Greydanus & Kobak 2024, mean ± std over seeds
with the study report's verdict rule.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from cnn_jax.report import SOURCES, load_runs, write_comparison
from cnn_jax.report.tables import Comparison, aggregate
from cnn_jax.sweep import Point
from experiments.study import define_flags

STUDY = define_flags("studies/reproduce")
_PART = flags.DEFINE_enum("part", "all", ["all", "analytic"], "analytic rows only, or everything")

TORCHVISION = "torchvision model cards (ImageNet, 1000 classes)"
HE2016 = "He et al., Deep Residual Learning, CVPR 2016, Table 6 (printed as 0.27M and 1.7M)"
LECUN1998 = "LeCun et al., Proc. IEEE 1998"
ARAUJO2019 = "Araujo, Norris & Sim, Computing Receptive Fields of CNNs, Distill 2019"
# (model, input, classes, published, half of the published rounding step)
PARAMS = [
    ("alexnet", (224, 224, 3), 1000, 61_100_840, 0, TORCHVISION),
    ("vgg16", (224, 224, 3), 1000, 138_357_544, 0, TORCHVISION),
    ("resnet50", (224, 224, 3), 1000, 25_557_032, 0, TORCHVISION),
    ("resnet20", (32, 32, 3), 10, 270_000, 5_000, HE2016),  # printed 0.27M
    ("resnet110", (32, 32, 3), 10, 1_700_000, 50_000, HE2016),
]  # printed 1.7M
RECEPTIVE_FIELDS = [("alexnet", 195), ("vgg16", 212), ("resnet50", 427)]
LENET = "experiments/configs/lenet5_classic_mnist.py"
MNIST1D = {
    "logreg": "experiments/configs/mlp_mnist1d.py:logreg",
    "mlp": "experiments/configs/mlp_mnist1d.py",
    "cnn": "experiments/configs/cnn1d_mnist1d.py",
}


def analytic_rows() -> list[Comparison]:
    import jax
    import jax.numpy as jnp

    from cnn_jax import models
    from cnn_jax.analysis import model_receptive_field

    rows = []
    for name, shape, classes, published, rounding, source in PARAMS:
        model = models.create(name, num_classes=classes)
        variables = jax.eval_shape(lambda m=model, s=shape: m.init(jax.random.key(0), jnp.zeros((1, *s))))
        ours = sum(p.size for p in jax.tree.leaves(variables["params"]))
        verdict = (
            "exact"
            if ours == published
            else "within rounding"
            if abs(ours - published) <= rounding
            else f"off by {ours - published:+,}"
        )
        rows.append(Comparison(f"{name} parameters", f"{ours:,}", f"{published:,}", source, verdict))
    for name, published in RECEPTIVE_FIELDS:
        ours = model_receptive_field(models.create(name, num_classes=1000), (224, 224, 3))[0].size
        rows.append(
            Comparison(
                f"{name} receptive field (last spatial map)",
                str(ours),
                str(published),
                ARAUJO2019,
                "exact" if ours == published else f"off by {ours - published:+}",
            )
        )
    return rows


def trained_points(fixed: tuple) -> list[Point]:
    points = [Point("lenet5_classic__mnist", LENET, fixed)]
    for name, config in MNIST1D.items():
        points.append(Point(f"{name}__mnist1d", config, fixed))
    points.append(Point("cnn__mnist1d_shuffled", MNIST1D["cnn"], fixed + (("dataset.permute_positions", "True"),)))
    return points


def trained_rows(study_dir: Path) -> list[Comparison]:
    rows = []
    for row in aggregate(load_runs(study_dir), lambda run: {"run": run.path.parent.name}):
        if row.published is not None:
            std = "" if row.n == 1 else f" ± {row.std:.2f}"
            seeds = "1 seed" if row.n == 1 else f"{row.n} seeds"
            rows.append(
                Comparison(
                    f"{row.label['run'].replace('__', ' on ')} test accuracy (%), {seeds}",
                    f"{row.mean:.2f}{std}",
                    f"{row.published:g}",
                    SOURCES[row.source],
                    row.verdict,
                )
            )
    return rows


def main(argv):
    study_dir = Path(STUDY.study_dir.value)
    rows = analytic_rows()
    if _PART.value == "all":
        STUDY.run(trained_points(STUDY.fixed()), study_dir)
        rows += trained_rows(study_dir)
    print(write_comparison(study_dir, rows, "Ours vs published"))


if __name__ == "__main__":
    app.run(main)
