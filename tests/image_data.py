"""Image datasets the tests generate: a class-per-folder tree with ImageNet's sizes and modes, and a tiny TFDS
image dataset prepared as array_record."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

# WordNet-style class names whose sorted order differs from the order they are created in.
CLASS_NAMES = [f"n0{(7919 * i) % 9973:07d}" for i in range(1, 101)]
EXIF_ORIENTATION = 0x0112


def smooth_image(rng: np.random.Generator, height: int, width: int, colour: np.ndarray) -> Image.Image:
    """Upsampled low-resolution noise around `colour`: compresses like a photograph, differs from pixel to pixel."""
    small = rng.normal(0, 40, (max(height // 16, 2), max(width // 16, 2), 3)) + colour
    image = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    detail = rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image) + detail, 0, 255).astype(np.uint8))


def encode(image: Image.Image, kind: str) -> bytes:
    """`image` as the bytes of one of ImageNet's kinds of file: rgb, gray, cmyk, exif (orientation 6), png."""
    out = io.BytesIO()
    if kind == "png":
        image.save(out, "PNG")
    elif kind == "gray":
        image.convert("L").save(out, "JPEG", quality=90)
    elif kind == "cmyk":
        image.convert("CMYK").save(out, "JPEG", quality=90)
    elif kind == "exif":
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6
        image.save(out, "JPEG", quality=90, exif=exif)
    else:
        image.save(out, "JPEG", quality=90)
    return out.getvalue()


# (kind, height, width) of the unusual files in every split; the rest are RGB JPEGs of ImageNet-like sizes.
SPECIAL = [
    ("gray", 375, 500),
    ("cmyk", 333, 500),
    ("exif", 375, 500),
    ("png", 300, 400),
    ("rgb", 8, 8),
    ("rgb", 1200, 1600),
    ("rgb", 90, 700),
]
SIZES = [(375, 500), (500, 375), (333, 500), (256, 341)]


def write_image_folder(
    root: Path, *, classes: int = 10, per_class: int = 30, val_per_class: int = 5, seed: int = 0
) -> Path:
    """ROOT/train/<class>/*.JPEG and ROOT/val/<class>/*.JPEG, each class its own mean colour; the special files
    (SPECIAL) spread over the first classes. Returns root."""
    rng = np.random.default_rng(seed)
    names = CLASS_NAMES[:classes]
    colours = rng.uniform(40, 215, (classes, 3))
    for split, count in (("train", per_class), ("val", val_per_class)):
        for label, name in enumerate(names):
            os.makedirs(root / split / name, exist_ok=True)
            for i in range(count):
                index = label * count + i
                kind, height, width = SPECIAL[index] if index < len(SPECIAL) else ("rgb", *SIZES[index % len(SIZES)])
                data = encode(smooth_image(rng, height, width, colours[label]), kind)
                (root / split / name / f"{name}_{index}.JPEG").write_bytes(data)
    return root


def corrupt_jpeg(path: Path) -> None:
    """Cut a file to half its length in place: a truncated download."""
    os.truncate(path, os.path.getsize(path) // 2)


def write_tfds_images(data_dir: Path, *, train: int = 24, test: int = 8, seed: int = 0) -> str:
    """A tiny TFDS image classification dataset (10 classes, varied sizes) prepared as array_record in
    `data_dir`; returns its name."""
    import tensorflow_datasets as tfds

    class CnnJaxTestImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = {
                "image": tfds.features.Image(encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=10),
            }
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(train, seed), "test": self._generate_examples(test, seed + 1)}

        def _generate_examples(self, count, split_seed):
            rng = np.random.default_rng(split_seed)
            for i in range(count):
                height, width = SIZES[i % len(SIZES)]
                image = smooth_image(rng, height // 4, width // 4, rng.uniform(40, 215, 3))
                yield i, {"image": np.asarray(image), "label": i % 10}

    builder = CnnJaxTestImages(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return builder.name
