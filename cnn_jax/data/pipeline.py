"""Host side of the input pipeline: the dataset in memory, its study variants, and which rows form each batch.

Every batch is a pure function of (seed, step), so a resumed run sees exactly the batches an
uninterrupted one would, and every process computes the same global batch and keeps its own rows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cnn_jax.data.image_sources import TfdsImages, image_folder_splits
from cnn_jax.data.record_split import IMAGENET_MEAN, IMAGENET_STD, RecordSplit, record_splits
from cnn_jax.data.sources import DatasetInfo, Split, check_name, load_split

IMAGE_FOLDER = "image_folder"  # dataset.name of a class-per-folder tree (dataset.image_folder names its root)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test splits, in host memory or read from files, plus the per-channel statistics used to
    normalise on device."""

    name: str
    info: DatasetInfo
    train: Split | RecordSplit
    test: Split | RecordSplit
    mean: np.ndarray  # (C,) in input units
    std: np.ndarray  # (C,)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example as the model sees it: (H, W, C) or (L, 1)."""
        shape = self.train.example_shape
        return shape if len(shape) == 3 else (*shape, 1)

    @property
    def scale(self) -> float:
        """Factor from stored to [0, 1] units: 1/255 for uint8 images."""
        return 1 / 255 if self.train.dtype == np.uint8 else 1.0


def load_dataset(
    name: str,
    *,
    data_dir: str | None = None,
    download_dir: str | None = None,
    permute_positions: bool = False,
    permutation_seed: int = 0,
    test_shift: int = 0,
) -> Dataset:
    """Load `name` with the study variants applied to both splits (permutation) or to the test split (shift).

    permute_positions: reorder the spatial positions of every example by one fixed permutation, which
        keeps the information but destroys locality (the MNIST-1D "shuffled" test).
    test_shift: translate test inputs by this many pixels along the last spatial axis (width),
        filling with zeros; the translation-robustness test.
    """
    info = check_name(name)
    train, test = (load_split(name, s, data_dir=data_dir, download_dir=download_dir) for s in ("train", "test"))
    if permute_positions:
        train, test = (_permute(s, permutation_seed) for s in (train, test))
    if test_shift:
        test = Split(shift_width(test.inputs, test_shift), test.labels)
    scale = 1 / 255 if train.inputs.dtype == np.uint8 else 1.0
    pixels = train.inputs.reshape(len(train), -1, train.inputs.shape[-1] if train.inputs.ndim == 4 else 1) * scale
    mean, std = pixels.mean(axis=(0, 1)), pixels.std(axis=(0, 1))
    return Dataset(name, info, train, test, (mean / scale).astype(np.float32), (std / scale).astype(np.float32))


def load_files_dataset(
    name: str,
    *,
    image_folder: str = "",
    data_dir: str | None = None,
    image_size: int = 224,
    eval_resize: int = 0,
    flip: bool = True,
    readers: int = 8,
    on_corrupt: str = "stop",
) -> Dataset:
    """A dataset read from files as it trains: a class-per-folder tree (`name` "image_folder", its root
    `image_folder` holding train/ and val/) or a TFDS image dataset prepared as array_record (train and
    validation splits, else train and test).

    Training examples get a random-resized crop to `image_size` and a flip (`flip`); test examples the shorter
    side resized to `eval_resize` (0: 256/224 of `image_size`) and a centre crop. Normalised on the device with
    ImageNet's statistics, as torchvision's weights expect. See `record_split` for the determinism guarantee.
    """
    if name == IMAGE_FOLDER:
        train, test = image_folder_splits(image_folder)
    else:
        train = TfdsImages(name, "train", data_dir=data_dir)
        # ImageNet's and Imagenette's held-out split is "validation" (their test labels are not public).
        test = TfdsImages(name, "validation" if "validation" in train.splits else "test", data_dir=data_dir)
    if train.num_classes != test.num_classes:
        raise ValueError(f"dataset {name!r}: {train.num_classes} training classes but {test.num_classes} test classes")
    train_split, test_split = record_splits(
        train, test, image_size, eval_resize=eval_resize, flip=flip, readers=readers, on_corrupt=on_corrupt
    )
    info = DatasetInfo("image", train.num_classes, flip=True)
    mean, std = (np.asarray(v, np.float32) * 255 for v in (IMAGENET_MEAN, IMAGENET_STD))
    return Dataset(name, info, train_split, test_split, mean, std)


def _permute(split: Split, seed: int) -> Split:
    x = split.inputs
    spatial = x.shape[1:3] if x.ndim == 4 else x.shape[1:]
    order = np.random.default_rng(seed).permutation(int(np.prod(spatial)))
    flat = x.reshape(len(x), -1, *x.shape[3:])[:, order]
    return Split(flat.reshape(x.shape), split.labels)


def shift_width(x: np.ndarray, shift: int, circular: bool = False) -> np.ndarray:
    """Translate (N, H, W, C) images or (N, L) signals by `shift` along W or L (positive: right), zero-filled;
    with `circular`, what leaves one edge comes back at the other (np.roll), so nothing is lost."""
    axis = 2 if x.ndim == 4 else 1
    if circular:
        return np.roll(x, shift, axis)
    out = np.zeros_like(x)
    n = x.shape[axis]
    if abs(shift) < n:
        src = [slice(None)] * x.ndim
        dst = [slice(None)] * x.ndim
        src[axis] = slice(max(-shift, 0), n - max(shift, 0))
        dst[axis] = slice(max(shift, 0), n - max(-shift, 0))
        out[tuple(dst)] = x[tuple(src)]
    return out


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
    """Training drops the last partial batch of each epoch, so every step sees a full global batch."""
    if global_batch > num_examples:
        raise ValueError(f"batch_size={global_batch} is larger than the {num_examples} training examples")
    return num_examples // global_batch


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch `epoch` visits the training examples: a permutation drawn from (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def train_batch_indices(num_examples: int, global_batch: int, seed: int, step: int) -> np.ndarray:
    """Rows of global batch number `step`: consecutive slices of its epoch's `epoch_order`."""
    epoch, within = divmod(step, steps_per_epoch(num_examples, global_batch))
    return epoch_order(num_examples, seed, epoch)[within * global_batch : (within + 1) * global_batch]


def process_rows(global_rows: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
    """The contiguous slice of a global batch (the last axis of `global_rows`) that process `process_index`
    feeds to its devices."""
    per_process = global_rows.shape[-1] // process_count
    return global_rows[..., process_index * per_process : (process_index + 1) * per_process]


def eval_batches(num_examples: int, global_batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, mask) per eval batch: the last batch is padded with row 0 and mask 0, so every example counts once."""
    batches = []
    for start in range(0, num_examples, global_batch):
        rows = np.arange(start, start + global_batch)
        mask = rows < num_examples
        batches.append((np.where(mask, rows, 0), mask.astype(np.float32)))
    return batches
