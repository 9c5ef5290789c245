"""Random-access sources of encoded images, for datasets larger than host memory.

Each source is a grain data source (`len(source)`, `source[row] -> (encoded bytes, label)`) that reads nothing
until a row is asked for, and pickles as its paths and names alone:
- `ImageFolder`: one split of a class-per-subfolder tree, torchvision's `ImageFolder` layout and class order,
  so torchvision's label indices (and its pretrained weights' outputs) carry over;
- `TfdsImages`: one split of a TFDS image dataset prepared as array_record (imagenet2012, imagenette, ...), read
  with `tfds.data_source`, its images left encoded for the readers to decode; TensorFlow is not imported.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from cnn_jax.data.sources import DATASETS, DatasetUnavailableError

# torchvision's IMG_EXTENSIONS: the files ImageFolder takes, compared case-insensitively (ImageNet's are .JPEG).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
LAYOUT = "ROOT/train/<class>/<image> and ROOT/val/<class>/<image>"


def _class_files(directory: Path) -> list[str]:
    """Image files under a class folder, relative to it, in torchvision's order (os.walk, sorted, following links)."""
    found = []
    for parent, _, names in sorted(os.walk(directory, followlinks=True)):
        for name in sorted(names):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(parent, name), directory))
    return found


class ImageFolder:
    """One split of a class-per-subfolder tree: `root/split/<class>/<image>`, torchvision's ImageFolder layout.

    Classes are the split's subfolders sorted by name, as torchvision's `find_classes` sorts them; a class's
    images are the files with an image extension (IMAGE_EXTENSIONS, any case) anywhere below its folder.

    Raises (before anything is trained): DatasetUnavailableError for a missing root or split; ValueError for a
    split without class folders, an empty class folder, or a stray file directly in the split (a flat folder of
    unlabelled images, usually).
    """

    def __init__(self, root: str | os.PathLike, split: str):
        self.root, self.split = Path(root), split
        directory = self.root / split
        if not self.root.is_dir():
            raise DatasetUnavailableError(f"image folder {self.root} does not exist; it should hold {LAYOUT}")
        if not directory.is_dir():
            raise DatasetUnavailableError(f"image folder {self.root} has no {split}/ folder; it should hold {LAYOUT}")
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
        stray = [e.name for e in entries if not e.is_dir() and not e.name.startswith(".")]
        if stray:
            raise ValueError(
                f"{directory} holds files outside any class folder ({', '.join(stray[:3])}"
                f"{', ...' if len(stray) > 3 else ''}): every image belongs in a class folder, {LAYOUT}; move them"
            )
        self.classes = tuple(e.name for e in entries if e.is_dir())
        if not self.classes:
            raise ValueError(f"{directory} has no class folders; it should hold {LAYOUT}")
        files, labels = [], []
        for label, name in enumerate(self.classes):
            found = _class_files(directory / name)
            if not found:
                raise ValueError(
                    f"class folder {directory / name} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)}); "
                    f"remove it or fill it (torchvision's ImageFolder refuses empty classes too)"
                )
            files += [os.path.join(name, f) for f in found]
            labels += [label] * len(found)
        self.files = tuple(files)
        self.labels = np.asarray(labels, np.int32)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def name(self, row: int) -> str:
        """The path of row `row`'s file, for messages."""
        return str(self.root / self.split / self.files[row])

    def __getitem__(self, row: int) -> tuple[bytes, int]:
        with open(self.name(row), "rb") as f:
            return f.read(), int(self.labels[row])


def image_folder_splits(root: str | os.PathLike, train: str = "train", test: str = "val") -> tuple[ImageFolder, ...]:
    """The training and evaluation splits of a class-per-subfolder tree; ValueError if their classes differ."""
    splits = ImageFolder(root, train), ImageFolder(root, test)
    only = [sorted(set(a.classes) - set(b.classes)) for a, b in (splits, splits[::-1])]
    if any(only):
        described = "; ".join(
            f"only in {split}/: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''} ({len(names)})"
            for split, names in zip((train, test), only)
            if names
        )
        raise ValueError(f"image folder {root}: {train}/ and {test}/ have different classes ({described})")
    return splits


class TfdsImages:
    """One split of a TFDS image classification dataset prepared as array_record, read with random access.

    Its image feature stays encoded (`tfds.decode.SkipDecoding`), to be decoded by the readers; `tfds.data_source`
    reads the array_record files without TensorFlow. Prepare the dataset once with
    `tfds build NAME --file_format=array_record` (imagenet2012: --manual_dir holding ILSVRC2012_img_train.tar and
    ILSVRC2012_img_val.tar; preparing it takes hours).
    """

    def __init__(
        self,
        name: str,
        split: str,
        *,
        data_dir: str | None = None,
        image_key: str = "image",
        label_key: str = "label",
    ):
        self.dataset, self.split, self.data_dir = name, split, data_dir
        self.image_key, self.label_key = image_key, label_key
        builder = self._builder()
        if not builder.is_prepared():
            raise DatasetUnavailableError(
                f"dataset {name!r} is not prepared in {builder.data_dir}: prepare it once with `tfds build {name} "
                f"--file_format=array_record{f' --data_dir={data_dir}' if data_dir else ''}`"
                + (
                    " --manual_dir=DIR` with DIR holding ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (hours)"
                    if name.startswith("imagenet2012")
                    else ""
                )
            )
        info = builder.info
        if info.file_format is None or info.file_format.value != "array_record":
            raise DatasetUnavailableError(
                f"dataset {name!r} in {builder.data_dir} is prepared as {info.file_format}, not array_record, which "
                f"random access needs: prepare it again with `tfds build {name} --file_format=array_record`"
            )
        if split not in info.splits:
            raise ValueError(f"dataset {name!r} has no split {split!r}; its splits are {', '.join(info.splits)}")
        self.splits = tuple(info.splits)
        self.num_classes = info.features[label_key].num_classes
        self._length = info.splits[split].num_examples

    def _builder(self):
        import tensorflow_datasets as tfds

        try:
            return tfds.builder(self.dataset, data_dir=self.data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            raise DatasetUnavailableError(
                f"dataset {self.dataset!r} is not prepared in {self.data_dir or 'the TFDS data directory'} and TFDS "
                f"knows no dataset of that name; check the name and --config.dataset.data_dir (the datasets held in "
                f"memory are {', '.join(DATASETS)})"
            ) from None

    @functools.cached_property
    def _source(self):
        import tensorflow_datasets as tfds

        return tfds.data_source(
            self.dataset,
            split=self.split,
            data_dir=self.data_dir,
            download=False,
            decoders={self.image_key: tfds.decode.SkipDecoding()},
        )

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_source"}  # each process opens its own files

    def __len__(self) -> int:
        return self._length

    def name(self, row: int) -> str:
        return f"{self.dataset} {self.split}[{row}]"

    def __getitem__(self, row: int) -> tuple[bytes, int]:
        example = self._source[row]
        return bytes(example[self.image_key]), int(example[self.label_key])
