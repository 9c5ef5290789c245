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

from collections.abc import Sequence

from absl import flags

from cnn_jax.sweep import Point
from experiments.study import Study, config, run_and_report, run_cli

BATCH_SIZES = (32, 128)
GHOST_BATCH = 16


def norms(ghost_batch: int = GHOST_BATCH) -> dict[str, tuple[tuple[str, object], ...]]:
    """The normalisation variants by name, as model options."""
    return {
        "none": (("model.options.norm", "none"),),
        "batch": (("model.options.norm", "batch"),),
        f"ghost{ghost_batch}": (("model.options.norm", "batch"), ("model.options.virtual_batch_size", ghost_batch)),
        "lrn": (("model.options.norm", "lrn"),),
    }


def points(batch_sizes: Sequence[int] = BATCH_SIZES, ghost_batch: int = GHOST_BATCH) -> list[Point]:
    """Every variant at every batch size (batch outermost); the learning rate scales with the batch."""
    return [
        Point(
            f"{name}__{batch}",
            config("resnet20_fashion_mnist"),
            overrides
            + (
                ("train.batch_size", batch),
                ("optimizer.learning_rate", 0.1 * batch / 128),
                ("optimizer.clip_norm", 5.0),
            ),
        )
        for batch in batch_sizes
        for name, overrides in norms(ghost_batch).items()
    ]


def label(config: dict) -> dict:
    """A run's row: its normalisation (ghost<size> for BatchNorm over virtual batches) and its batch size."""
    ghost = config.get("model.options.virtual_batch_size")
    return {"norm": f"ghost{ghost}" if ghost else config["model.options.norm"], "batch": config["train.batch_size"]}


def define_flags():
    batch_sizes = flags.DEFINE_list("batch_sizes", [str(b) for b in BATCH_SIZES], "global batch sizes")
    ghost_batch = flags.DEFINE_integer("ghost_batch", GHOST_BATCH, "virtual batch size of the ghost BatchNorm variant")

    def main(study: Study) -> None:
        grid = points([int(b) for b in batch_sizes.value], ghost_batch.value)
        model = dict(study.fixed).get("model.name", "resnet20")  # --set=model.name=resnet8: a reduced grid
        run_and_report(study, grid, label, f"Normalisation in {model} on Fashion-MNIST")

    return main


if __name__ == "__main__":
    run_cli("studies/normalization", define_flags)
