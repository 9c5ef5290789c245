"""Study 1: what weight sharing buys. Standard vs tiled vs locally connected convolution, against
logistic regression and an MLP, on data with and without spatial structure.

    python -m experiments.conv_variants                 # MNIST-1D ladder, 3 seeds, offline
    python -m experiments.conv_variants --part=images --download_dir=../shared/datasets

Part mnist1d (Greydanus & Kobak 2024 setup): logreg, MLP, CNN, tiled CNN (t=2, 4), locally connected
CNN, each on MNIST-1D and on MNIST-1D with positions shuffled by one fixed permutation.
Part images: the same ladder (standard, tiled 2/4, local) in 2-D on MNIST and Fashion-MNIST with a
LeNet-style and a ResNet-style backbone, with test accuracy under inputs shifted by 2 and 4 pixels.
Writes STUDY_DIR/results.md, results.tex and learning_curves.png, and prints the table.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from cnn_jax.sweep import Point
from experiments.study import define_flags, run_and_report

IMAGE_DATASETS = ("mnist", "fashion_mnist")
STUDY = define_flags("studies/conv_variants")
_PART = flags.DEFINE_enum("part", "mnist1d", ["mnist1d", "images"], "which ladder to run")
_VARIANTS = flags.DEFINE_list("variants", None, "only these variants (default: all)")
_BACKBONES = flags.DEFINE_list("backbones", ["lenet", "resnet"], "part images: backbones, of lenet, resnet")
_DATASETS = flags.DEFINE_list("datasets", list(IMAGE_DATASETS), "part images: datasets")

CNN1D, MLP = "experiments/configs/cnn1d_mnist1d.py", "experiments/configs/mlp_mnist1d.py"
CONV_KINDS = {
    "cnn": (),
    "tiled2": (("model.conv.kind", "tiled"), ("model.conv.tile", "2")),
    "tiled4": (("model.conv.kind", "tiled"), ("model.conv.tile", "4")),
    "local": (("model.conv.kind", "local"),),
}
MNIST1D_VARIANTS = {
    "logreg": (f"{MLP}:logreg", ()),
    "mlp": (MLP, ()),
    **{name: (CNN1D, overrides) for name, overrides in CONV_KINDS.items()},
}
BACKBONES = {"lenet": "experiments/configs/lenet5_mnist.py", "resnet": "experiments/configs/resnet8_images.py"}


def mnist1d_points(variants: list[str] | None, fixed: tuple = ()) -> list[Point]:
    points = []
    for name, (config, overrides) in MNIST1D_VARIANTS.items():
        if variants and name not in variants:
            continue
        for data, shuffled in (("normal", False), ("shuffled", True)):
            points.append(
                Point(f"{name}__{data}", config, fixed + overrides + (("dataset.permute_positions", str(shuffled)),))
            )
    return points


def image_points(
    variants: list[str] | None,
    fixed: tuple = (),
    backbones: Sequence[str] = tuple(BACKBONES),
    datasets: Sequence[str] = IMAGE_DATASETS,
) -> list[Point]:
    unknown = sorted(set(backbones) - set(BACKBONES))
    if unknown:
        raise app.UsageError(f"--backbones: unknown {unknown}; valid values are {', '.join(BACKBONES)}")
    points = []
    for backbone in backbones:
        config = BACKBONES[backbone]
        for dataset in datasets:
            for name, overrides in CONV_KINDS.items():
                if variants and name not in variants:
                    continue
                points.append(
                    Point(
                        f"{backbone}-{name}__{dataset}",
                        config,
                        fixed + overrides + (("dataset.name", dataset), ("dataset.eval_shifts", "(2,4)")),
                    )
                )
    return points


def main(argv):
    if _PART.value == "mnist1d":
        points = mnist1d_points(_VARIANTS.value, STUDY.fixed())
    else:
        points = image_points(_VARIANTS.value, STUDY.fixed(), _BACKBONES.value, _DATASETS.value)
    run_and_report(
        STUDY,
        points,
        f"{STUDY.study_dir.value}/{_PART.value}",
        ("model", "data"),
        f"Convolution variants ({_PART.value})",
    )


if __name__ == "__main__":
    app.run(main)
