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

from absl import flags

from cnn_jax.sweep import Point
from experiments.study import Study, check_choices, config, run_and_report, run_cli

IMAGE_DATASETS = ("mnist", "fashion_mnist")
SHIFTS = (2, 4)
LADDER = {  # the weight-sharing ladder: convolution settings by rung
    "cnn": (("model.conv.kind", "standard"),),
    "tiled2": (("model.conv.kind", "tiled"), ("model.conv.tile", 2)),
    "tiled4": (("model.conv.kind", "tiled"), ("model.conv.tile", 4)),
    "local": (("model.conv.kind", "local"),),
}
MNIST1D_VARIANTS = {
    "logreg": (config("mlp_mnist1d", "logreg"), ()),
    "mlp": (config("mlp_mnist1d"), ()),
    **{name: (config("cnn1d_mnist1d"), overrides) for name, overrides in LADDER.items()},
}
BACKBONES = {"lenet": config("lenet5_mnist"), "resnet": config("resnet8_images")}
# A run's model.name -> its backbone. Runs made before resnet8 was registered recorded it as resnet20 with
# stage_sizes (1, 1, 1); their directories still report under the same row.
BACKBONE_MODELS = {"lenet5": "lenet", "resnet8": "resnet", "resnet20": "resnet"}


def mnist1d_points(variants: Sequence[str] | None = None) -> list[Point]:
    """Each variant on MNIST-1D as generated and with its positions shuffled."""
    return [
        Point(f"{name}__{data}", config_file, overrides + (("dataset.permute_positions", shuffled),))
        for name, (config_file, overrides) in MNIST1D_VARIANTS.items()
        if not variants or name in variants
        for data, shuffled in (("normal", False), ("shuffled", True))
    ]


def image_points(
    variants: Sequence[str] | None = None,
    backbones: Sequence[str] = tuple(BACKBONES),
    datasets: Sequence[str] = IMAGE_DATASETS,
) -> list[Point]:
    """Each rung of the ladder in each backbone on each dataset, evaluated at the shifts."""
    check_choices("backbones", backbones, BACKBONES)
    return [
        Point(
            f"{backbone}-{name}__{dataset}",
            BACKBONES[backbone],
            overrides + (("dataset.name", dataset), ("dataset.eval_shifts", SHIFTS)),
        )
        for backbone in backbones
        for dataset in datasets
        for name, overrides in LADDER.items()
        if not variants or name in variants
    ]


def rung(config: dict) -> str:
    """The ladder rung of a run's convolution: cnn, tiled<t> or local."""
    kind = config["model.conv.kind"]
    return {"standard": "cnn", "tiled": f"tiled{config['model.conv.tile']}"}.get(kind, kind)


def mnist1d_label(config: dict) -> dict:
    if config["model.name"] == "mlp":
        model = "mlp" if config["model.options.hidden"] else "logreg"
    else:
        model = rung(config)
    return {"model": model, "data": "shuffled" if config["dataset.permute_positions"] else "normal"}


def image_label(config: dict) -> dict:
    """A run's row: backbone, rung and dataset (three factors, so the figure's panels are backbone x dataset)."""
    return {"backbone": BACKBONE_MODELS[config["model.name"]], "model": rung(config), "data": config["dataset.name"]}


def define_flags():
    part = flags.DEFINE_enum("part", "mnist1d", ["mnist1d", "images"], "which ladder to run")
    variants = flags.DEFINE_list("variants", None, "only these variants (default: all)")
    backbones = flags.DEFINE_list("backbones", list(BACKBONES), "part images: backbones, of lenet, resnet")
    datasets = flags.DEFINE_list("datasets", list(IMAGE_DATASETS), "part images: datasets")

    def main(study: Study) -> None:
        if part.value == "mnist1d":
            grid, label = mnist1d_points(variants.value), mnist1d_label
        else:
            grid, label = image_points(variants.value, backbones.value, datasets.value), image_label
        run_and_report(study, grid, label, f"Convolution variants ({part.value})", study.study_dir / part.value)

    return main


if __name__ == "__main__":
    run_cli("studies/conv_variants", define_flags)
