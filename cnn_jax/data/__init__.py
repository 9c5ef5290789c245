"""Input pipeline: TFDS datasets in host memory (sources, pipeline), datasets read from files as they train
(image_sources, image_transforms, record_split) and on-device augmentation (augment)."""

from cnn_jax.data.augment import augment, normalize, random_crop, random_flip
from cnn_jax.data.image_sources import ImageFolder, TfdsImages
from cnn_jax.data.image_transforms import CorruptImageError
from cnn_jax.data.pipeline import (
    IMAGE_FOLDER,
    Dataset,
    epoch_order,
    eval_batches,
    load_dataset,
    load_files_dataset,
    process_rows,
    shift_width,
    steps_per_epoch,
    train_batch_indices,
)
from cnn_jax.data.record_split import CORRUPT_POLICIES, ImageTransform, RecordSplit
from cnn_jax.data.sources import DATASETS, DOWNLOAD_DIR_ENV, DatasetInfo, DatasetUnavailableError, Split, load_split

__all__ = [
    "augment",
    "normalize",
    "random_crop",
    "random_flip",
    "IMAGE_FOLDER",
    "CORRUPT_POLICIES",
    "CorruptImageError",
    "ImageFolder",
    "ImageTransform",
    "RecordSplit",
    "TfdsImages",
    "load_files_dataset",
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
