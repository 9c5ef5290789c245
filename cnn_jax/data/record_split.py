"""Splits read from files with random access, for datasets larger than host memory.

A `RecordSplit` holds no examples. When a dispatch's batches are assembled it reads each row's encoded image
from its source (a class-per-folder tree or a TFDS array_record dataset, `image_sources`), decodes and transforms
it on the host, and stacks the results. grain's random-access `MapDataset` runs the rows through a pool of
reader threads: Pillow releases the GIL while it decodes and resizes, so threads scale with the cores without
worker processes (measured on 2 CPU cores, 500x375 JPEGs of 40 KB decoded and a box resized to 224: 632
images/s on 1 thread, 1,181 on 2).

Determinism: example `row` of epoch `epoch` is transformed with a generator seeded by (seed, epoch, row) alone,
so its pixels do not depend on the reader count, the order the threads finish in, the device or process count,
or where a run was resumed. Each process reads only the rows it feeds (`cnn_jax.data.process_rows`).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Protocol

import numpy as np
from absl import logging

from cnn_jax.data.image_transforms import CorruptImageError, eval_image, train_image

CORRUPT_POLICIES = ("stop", "skip")
# ImageNet's per-channel mean and standard deviation in [0, 1] units: what torchvision's weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The shorter side before the centre crop, as a multiple of the crop: torchvision's 256 for 224.
EVAL_RESIZE_RATIO = 256 / 224


class ImageSource(Protocol):
    """Random access to one split's encoded images: grain's data-source protocol plus a name per row."""

    def __len__(self) -> int: ...

    def __getitem__(self, row: int) -> tuple[bytes, int]: ...

    def name(self, row: int) -> str: ...


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """Encoded image -> (size, size, 3) uint8.

    train: a random-resized crop (torchvision's RandomResizedCrop: area 8-100%, aspect 3/4-4/3) resized to
        `size`, then a horizontal flip with probability 1/2 when `flip`;
    eval: the shorter side resized to `resize` (0: round(size * 256 / 224)), then a centre crop of `size`,
        torchvision's ImageClassification preset.
    """

    train: bool
    size: int
    resize: int = 0
    flip: bool = True

    @property
    def eval_resize(self) -> int:
        return self.resize or round(self.size * EVAL_RESIZE_RATIO)

    def __call__(self, data: bytes, rng: np.random.Generator, name: str) -> np.ndarray:
        if self.train:
            return train_image(data, rng, self.size, flip=self.flip, name=name)
        return eval_image(data, resize=self.eval_resize, crop=self.size, name=name)


def example_rng(seed: int, epoch: int, row: int) -> np.random.Generator:
    """The generator of one example's augmentation: a function of (seed, epoch, row) only."""
    return np.random.default_rng([seed, epoch, row])


class RecordSplit:
    """A split whose examples are read, decoded and transformed when asked for (see the module docstring).

    on_corrupt: what a file that does not decode does mid-epoch: "stop" raises `CorruptImageError` naming it;
        "skip" logs it once and uses the next row that decodes instead (rows wrap around), with the original
        row's generator, so the replacement is deterministic too; `skipped` counts the replacements.
    """

    def __init__(self, source: ImageSource, transform: ImageTransform, *, readers: int = 8, on_corrupt: str = "stop"):
        if on_corrupt not in CORRUPT_POLICIES:
            raise ValueError(f"on_corrupt={on_corrupt!r}: valid policies are {', '.join(CORRUPT_POLICIES)}")
        if not (isinstance(readers, int) and readers > 0):
            raise ValueError(f"readers={readers!r} must be a positive number of reader threads")
        self.source, self.transform, self.readers, self.on_corrupt = source, transform, readers, on_corrupt
        self.skipped = 0
        self._read_images, self._read_seconds = 0, 0.0
        self._reported: set[str] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.source)

    @property
    def example_shape(self) -> tuple[int, int, int]:
        return (self.transform.size, self.transform.size, 3)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def example(self, row: int, epoch: int, seed: int) -> tuple[np.ndarray, int]:
        """Row `row` of epoch `epoch`, transformed: ((size, size, 3) uint8, label)."""
        for attempt in range(len(self)):
            read = (row + attempt) % len(self)
            data, label = self.source[read]
            try:  # a fresh generator each attempt: a replacement draws what the row itself would have
                return self.transform(data, example_rng(seed, epoch, row), self.source.name(read)), label
            except CorruptImageError as err:
                if self.on_corrupt == "stop":
                    raise
                self._count_skip(str(err))
        raise CorruptImageError(f"none of the {len(self)} images of this split decodes")

    @property
    def images_per_s(self) -> float:
        """The rate this split's readers have delivered at while reading (not waiting for the consumer): what
        the input pipeline could feed, to set beside the training step's images/s."""
        return self._read_images / self._read_seconds if self._read_seconds else 0.0

    def _count_skip(self, message: str) -> None:
        with self._lock:
            self.skipped += 1
            if message not in self._reported:
                self._reported.add(message)
                logging.warning("%s; using the next image instead (dataset.on_corrupt='skip')", message)

    def examples(self, rows: np.ndarray, epoch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """rows (...) int -> (inputs (..., size, size, 3) uint8, labels (...) int32), read by the reader threads."""
        import grain  # here, not at the top: grain imports orbax, which reading results must not load

        start = time.perf_counter()
        flat = np.asarray(rows).reshape(-1)
        dataset = grain.MapDataset.range(len(flat)).map(lambda i: self.example(int(flat[i]), epoch, seed))
        read = grain.ReadOptions(num_threads=self.readers, prefetch_buffer_size=2 * self.readers)
        pairs = list(dataset.to_iter_dataset(read)) if len(flat) else []
        inputs = np.empty((len(flat), *self.example_shape), np.uint8)
        labels = np.empty((len(flat),), np.int32)
        for i, (image, label) in enumerate(pairs):
            inputs[i], labels[i] = image, label
        with self._lock:
            self._read_images += len(flat)
            self._read_seconds += time.perf_counter() - start
        return inputs.reshape(*np.shape(rows), *self.example_shape), labels.reshape(np.shape(rows))


def record_splits(
    train: ImageSource,
    test: ImageSource,
    size: int,
    *,
    eval_resize: int = 0,
    flip: bool = True,
    readers: int = 8,
    on_corrupt: str = "stop",
) -> tuple[RecordSplit, RecordSplit]:
    """The training split with the random-resized crop and the test split with the evaluation transform."""
    options = dict(readers=readers, on_corrupt=on_corrupt)
    return (
        RecordSplit(train, ImageTransform(True, size, flip=flip), **options),
        RecordSplit(test, ImageTransform(False, size, eval_resize), **options),
    )
