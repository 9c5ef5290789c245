"""Input pipeline: TFDS datasets in host memory (sources, pipeline) and on-device augmentation (augment)."""

from cnn_jax.data.augment import augment, normalize, random_crop, random_flip
from cnn_jax.data.pipeline import (
    Dataset,
    epoch_order,
    eval_batches,
    load_dataset,
    process_rows,
    shift_width,
    steps_per_epoch,
    train_batch_indices,
)
from cnn_jax.data.sources import DATASETS, DOWNLOAD_DIR_ENV, DatasetInfo, DatasetUnavailableError, Split, load_split

__all__ = [
    "augment",
    "normalize",
    "random_crop",
    "random_flip",
    "Dataset",
    "epoch_order",
    "eval_batches",
    "load_dataset",
    "process_rows",
    "shift_width",
    "steps_per_epoch",
    "train_batch_indices",
    "DATASETS",
    "DOWNLOAD_DIR_ENV",
    "DatasetInfo",
    "DatasetUnavailableError",
    "Split",
    "load_split",
]
