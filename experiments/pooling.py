"""Study 3: how a network downsamples. Max vs average vs L2 pooling vs strided convolution vs none, in
LeNet-5 (modern) on MNIST and Fashion-MNIST, with test accuracy on inputs shifted by 2 and 4 pixels.

    python -m experiments.pooling --download_dir=../shared/datasets              # 10 points x 3 seeds
    python -m experiments.pooling --download_dir=../shared/datasets --seeds=0 --set=train.num_epochs=3

Pooling buys a little invariance to small translations for free (Scherer et al. 2010; Boureau et al.
2010 compare max and average); strided convolution learns its downsampling; "none" keeps full resolution
and puts 1.1M parameters into the first dense layer. Each run takes about 3 minutes on 2 CPU cores
(10 epochs; "none" about twice that). Writes STUDY_DIR/results.md, results.tex, learning_curves.png.
"""

from __future__ import annotations

from absl import app, flags

from cnn_jax.models.lenet import POOLS
from cnn_jax.sweep import Point
from experiments.study import define_flags, run_and_report

STUDY = define_flags("studies/pooling")
_POOLS = flags.DEFINE_list("pools", list(POOLS), f"downsampling variants, of {', '.join(POOLS)}")
_DATASETS = flags.DEFINE_list("datasets", ["mnist", "fashion_mnist"], "datasets")
CONFIG = "experiments/configs/lenet5_mnist.py"


def points(pools: list[str], datasets: list[str], fixed: tuple = ()) -> list[Point]:
    unknown = sorted(set(pools) - set(POOLS))
    if unknown:
        raise app.UsageError(f"--pools: unknown {unknown}; valid values are {', '.join(POOLS)}")
    return [
        Point(
            f"{pool}__{dataset}",
            CONFIG,
            fixed + (("model.options.pool", pool), ("dataset.name", dataset), ("dataset.eval_shifts", "(2,4)")),
        )
        for dataset in datasets
        for pool in pools
    ]


def main(argv):
    run_and_report(
        STUDY,
        points(_POOLS.value, _DATASETS.value, STUDY.fixed()),
        STUDY.study_dir.value,
        ("pool", "data"),
        "Downsampling in LeNet-5",
    )


if __name__ == "__main__":
    app.run(main)
