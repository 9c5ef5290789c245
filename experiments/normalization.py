"""Study 4: normalisation in ResNet-20 on Fashion-MNIST. None vs BatchNorm vs BatchNorm over small
virtual ("ghost") batches of 16 vs local response normalisation (AlexNet's), at batch sizes 32 and 128.

    python -m experiments.normalization --download_dir=../shared/datasets      # 8 points x 3 seeds
    python -m experiments.normalization --download_dir=../shared/datasets --seeds=0 --set=train.num_epochs=3

What the literature leads one to expect: BatchNorm trains fastest and best (Ioffe & Szegedy 2015);
statistics over small ghost batches add noise that regularises large-batch training (Hoffer et al.
2017); LRN normalises across channels only and was dropped after AlexNet. Without BatchNorm a 20-layer
network is fragile at a high learning rate, so every variant warms up over 200 steps and clips the
gradient norm at 5; the learning rate scales linearly with the batch (0.1 at 128). Ghost batches are
taken within each device's share of the batch, so the per-device batch must be a multiple of 16.
Cost: ResNet-20 trains at about 150 images/s on 2 CPU cores, so each 30-epoch run is about 3.5 hours
there (8 points x 3 seeds: days); on one GPU, minutes.
Writes STUDY_DIR/results.md, results.tex, learning_curves.png.
"""

from __future__ import annotations

from absl import app, flags

from cnn_jax.sweep import Point
from experiments.study import define_flags, run_and_report

STUDY = define_flags("studies/normalization")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["32", "128"], "global batch sizes")
_GHOST_BATCH = flags.DEFINE_integer("ghost_batch", 16, "virtual batch size of the ghost BatchNorm variant")
CONFIG = "experiments/configs/resnet20_fashion_mnist.py"


def norms(ghost_batch: int) -> dict[str, tuple[tuple[str, str], ...]]:
    return {
        "none": (("model.options.norm", "none"),),
        "batch": (("model.options.norm", "batch"),),
        f"ghost{ghost_batch}": (
            ("model.options.norm", "batch"),
            ("model.options.virtual_batch_size", str(ghost_batch)),
        ),
        "lrn": (("model.options.norm", "lrn"),),
    }


def points(batch_sizes: list[int], ghost_batch: int, fixed: tuple = ()) -> list[Point]:
    return [
        Point(
            f"{name}__{batch}",
            CONFIG,
            fixed
            + overrides
            + (
                ("train.batch_size", str(batch)),
                ("optimizer.learning_rate", str(0.1 * batch / 128)),
                ("optimizer.clip_norm", "5.0"),
            ),
        )
        for batch in batch_sizes
        for name, overrides in norms(ghost_batch).items()
    ]


def main(argv):
    batch_sizes = [int(b) for b in _BATCH_SIZES.value]
    run_and_report(
        STUDY,
        points(batch_sizes, _GHOST_BATCH.value, STUDY.fixed()),
        STUDY.study_dir.value,
        ("norm", "batch"),
        "Normalisation in ResNet-20 on Fashion-MNIST",
    )


if __name__ == "__main__":
    app.run(main)
