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

from absl import app, flags

from cnn_jax.report import write_report
from cnn_jax.sweep import Point, parse_overrides, run_sweep

_STUDY_DIR = flags.DEFINE_string("study_dir", "studies/conv_variants", "where the runs and the report go")
_PART = flags.DEFINE_enum("part", "mnist1d", ["mnist1d", "images"], "which ladder to run")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds per configuration")
_VARIANTS = flags.DEFINE_list("variants", None, "only these variants (default: all)")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "training processes at once")
_SET = flags.DEFINE_multi_string("set", [], "FIELD=VALUE for every run, e.g. train.num_steps=20")
_DOWNLOAD_DIR = flags.DEFINE_string("download_dir", "", "raw dataset files (<dir>/<dataset>/<file>)")

CNN1D, MLP = "experiments/configs/cnn1d_mnist1d.py", "experiments/configs/mlp_mnist1d.py"
CONV_KINDS = {"cnn": (), "tiled2": (("model.conv.kind", "tiled"), ("model.conv.tile", "2")),
              "tiled4": (("model.conv.kind", "tiled"), ("model.conv.tile", "4")),
              "local": (("model.conv.kind", "local"),)}
MNIST1D_VARIANTS = {"logreg": (f"{MLP}:logreg", ()), "mlp": (MLP, ()),
                    **{name: (CNN1D, overrides) for name, overrides in CONV_KINDS.items()}}
BACKBONES = {"lenet": "experiments/configs/lenet5_mnist.py", "resnet": "experiments/configs/resnet8_images.py"}


def mnist1d_points(variants: list[str] | None, fixed: tuple = ()) -> list[Point]:
    points = []
    for name, (config, overrides) in MNIST1D_VARIANTS.items():
        if variants and name not in variants:
            continue
        for data, shuffled in (("normal", False), ("shuffled", True)):
            points.append(Point(f"{name}__{data}", config,
                                fixed + overrides + (("dataset.permute_positions", str(shuffled)),)))
    return points


def image_points(variants: list[str] | None, fixed: tuple = ()) -> list[Point]:
    points = []
    for backbone, config in BACKBONES.items():
        for dataset in ("mnist", "fashion_mnist"):
            for name, overrides in CONV_KINDS.items():
                if variants and name not in variants:
                    continue
                points.append(Point(f"{backbone}-{name}__{dataset}", config,
                                    fixed + overrides + (("dataset.name", dataset), ("dataset.eval_shifts", "(2,4)"))))
    return points


def label(run) -> dict:
    """Row label from the run's point name, `<model>__<data>`."""
    model, data = run.path.parent.name.split("__")
    return {"model": model, "data": data}


def main(argv):
    fixed = parse_overrides(_SET.value)
    if _DOWNLOAD_DIR.value:
        fixed += (("dataset.download_dir", _DOWNLOAD_DIR.value),)
    points = (mnist1d_points if _PART.value == "mnist1d" else image_points)(_VARIANTS.value, fixed)
    study_dir = f"{_STUDY_DIR.value}/{_PART.value}"
    run_sweep(points, [int(s) for s in _SEEDS.value], study_dir, parallel=_PARALLEL.value)
    ladder = [p.name.split("__")[0] for p in points]
    print(write_report(study_dir, label, title=f"Convolution variants ({_PART.value})",
                       order=lambda row: (ladder.index(row.label["model"]), row.label["data"])))


if __name__ == "__main__":
    app.run(main)
