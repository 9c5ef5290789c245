"""Study 3: how a network downsamples. Max vs average vs L2 pooling vs strided convolution vs none, and
their anti-aliased forms (Zhang 2019: MaxBlurPool, blurred strided convolution), in LeNet-5 (modern) on
MNIST and Fashion-MNIST, with test accuracy on inputs shifted by 2 and 4 pixels.

    python -m experiments.pooling --download_dir=../shared/datasets              # 14 points x 3 seeds
    python -m experiments.pooling --download_dir=../shared/datasets --seeds=0 --set=train.num_epochs=3

Pooling buys a little invariance to small translations for free (Scherer et al. 2010; Boureau et al.
2010 compare max and average); strided convolution learns its downsampling; "none" keeps full resolution
and puts 1.1M parameters into the first dense layer; blurring before subsampling (3-tap binomial filter) is
meant to keep a shifted input's features close to the unshifted ones. A run (10 epochs) takes from half a minute
(strided) to 6 minutes ("none"), two at a time on 2 CPU cores; the grid about 70 minutes, with or without run
batches (docs/results.md). Writes STUDY_DIR/results.md, results.tex, learning_curves.png; the
table gives each row's test accuracy (unshifted) against max pooling on the same dataset, with a 95% interval
over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from cnn_jax.models.lenet import POOLS
from cnn_jax.sweep import Point
from experiments.study import Study, check_choices, config, run_and_report, run_cli

DATASETS = ("mnist", "fashion_mnist")
SHIFTS = (2, 4)
BASELINE = {"pool": "max"}  # LeNet-5 (modern) as configured: each row against max pooling on its own dataset


def points(pools: Sequence[str] = POOLS, datasets: Sequence[str] = DATASETS) -> list[Point]:
    """One LeNet-5 run per (pool, dataset), datasets outermost."""
    check_choices("pools", pools, POOLS)
    return [
        Point(
            f"{pool}__{dataset}",
            config("lenet5_mnist"),
            (("model.options.pool", pool), ("dataset.name", dataset), ("dataset.eval_shifts", SHIFTS)),
        )
        for dataset in datasets
        for pool in pools
    ]


def label(config: dict) -> dict:
    """A run's row: its downsampling and its dataset."""
    return {"pool": config["model.options.pool"], "data": config["dataset.name"]}


def define_flags():
    pools = flags.DEFINE_list("pools", list(POOLS), f"downsampling variants, of {', '.join(POOLS)}")
    datasets = flags.DEFINE_list("datasets", list(DATASETS), "datasets")

    def main(study: Study) -> None:
        run_and_report(study, points(pools.value, datasets.value), label, "Downsampling in LeNet-5", baseline=BASELINE)

    return main


if __name__ == "__main__":
    run_cli("studies/pooling", define_flags)
