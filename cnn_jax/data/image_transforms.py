"""Decoding and augmenting encoded images on the host (Pillow and NumPy): ImageNet's training and evaluation
transforms with torchvision's semantics, as (H, W, 3) uint8 arrays.

- Training: `crop_box` draws torchvision's `RandomResizedCrop` box (area 8-100% of the image, log-uniform aspect
  3/4-4/3, 10 tries, then a centre crop), `train_image` resizes it to the model's size and flips it.
- Evaluation: `eval_image` is torchvision's `ImageClassification` preset: the shorter side resized to 256
  (bilinear, antialiased), then a centre crop of 224.

Decoding follows torchvision's loader, `Image.open(f).convert("RGB")`: grayscale, CMYK (Adobe's inverted
JPEGs included), palette and 16-bit images become RGB, and a PNG named .JPEG (ImageNet has one) decodes by its
content. EXIF orientation is not applied, deliberately: neither torchvision's loader nor TF's `decode_jpeg`
applies it, so published weights see the pixels they were trained and evaluated on.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

# ImageNet's training crop: torchvision's RandomResizedCrop defaults.
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_TRIES = 10


class CorruptImageError(ValueError):
    """An image that cannot be decoded; the message names the file and the decoder's reason."""


def _corrupt(name: str, err: Exception) -> CorruptImageError:
    return CorruptImageError(f"{name or 'an image'} does not decode ({type(err).__name__}: {err})")


def _open(data: bytes, name: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except Exception as err:  # PIL raises UnidentifiedImageError, OSError, SyntaxError... for bad headers
        raise _corrupt(name, err) from None


def _rgb(image: Image.Image, name: str) -> Image.Image:
    """The fully decoded RGB image: decoding happens here, so a truncated file fails here, naming itself."""
    try:
        image.load()
        return image.convert("RGB")
    except Exception as err:  # a truncated or corrupt body: OSError ("image file is truncated"), SyntaxError...
        raise _corrupt(name, err) from None


def _reduction(image: Image.Image, keep: tuple[int, int]) -> int:
    """The largest JPEG DCT-domain scale divisor (1, 2, 4 or 8) that keeps the image at least keep=(h, w)."""
    width, height = image.size
    scale = 1
    while scale < 8 and height // (2 * scale) >= keep[0] and width // (2 * scale) >= keep[1]:
        scale *= 2
    return scale


def decode_rgb(data: bytes, name: str = "") -> Image.Image:
    """Encoded image bytes -> an RGB PIL image at full size, as torchvision's loader decodes it (module docstring).

    Args:
      data: the file's bytes (JPEG, PNG, or anything Pillow reads).
      name: the file's name, for the error message.

    Raises:
      CorruptImageError: the bytes do not decode (a truncated file, not an image), naming `name`.
    """
    return _rgb(_open(data, name), name)


def _check_range(name: str, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if not 0 < low <= high:
        raise ValueError(f"{name}={bounds!r} must be (low, high) with 0 < low <= high")


def crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
    tries: int = CROP_TRIES,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop of an height x width image: torchvision's
    `RandomResizedCrop.get_params`, drawing from `rng`.

    Up to `tries` times: an area fraction uniform in `scale` and an aspect ratio (w / h) log-uniform in `ratio`,
    rounded to whole pixels; the first box that fits is placed uniformly. If none fits (elongated images), the
    largest centred box whose aspect lies in `ratio`.
    """
    _check_range("scale", scale)
    _check_range("ratio", ratio)
    if height < 1 or width < 1:
        raise ValueError(f"image size {height}x{width}: both sides must be at least 1 pixel")
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(tries):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def _check_size(name: str, value: int) -> None:
    if not (isinstance(value, int) and value > 0):
        raise ValueError(f"{name}={value!r} must be a positive number of pixels")


def train_image(data: bytes, rng: np.random.Generator, size: int, *, flip: bool = True, name: str = "") -> np.ndarray:
    """An encoded image -> (size, size, 3) uint8: a `crop_box` resized to size x size (bilinear, antialiased, as
    torchvision resizes PIL images), then mirrored with probability 1/2 when `flip`.

    The box is drawn on the image's full size, read from its header; a JPEG is then decoded only as finely as
    the box needs (the decoder downscales by 2, 4 or 8 in the DCT domain, much cheaper than a full decode: a box
    at least 2x `size` on both sides decodes at half resolution, and so on), and the box is mapped into the
    reduced image. The draws come in a fixed order (box, then flip), so the result is a function of the bytes and
    the generator's state.
    """
    _check_size("size", size)
    image = _open(data, name)
    width, height = image.size
    top, left, h, w = crop_box(rng, height, width)
    mirror = flip and bool(rng.integers(2))
    if image.format == "JPEG":
        scale = _reduction(image, (max(size * height // h, 1), max(size * width // w, 1)))
        if scale > 1:
            image.draft(image.mode, (width // scale, height // scale))
    image = _rgb(image, name)
    sx, sy = image.size[0] / width, image.size[1] / height  # 1 unless the decoder reduced the image
    box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
    out = image.resize((size, size), Image.BILINEAR, box=box)
    if mirror:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(out)


def eval_image(data: bytes, *, resize: int = 256, crop: int = 224, name: str = "") -> np.ndarray:
    """An encoded image -> (crop, crop, 3) uint8: torchvision's `ImageClassification` preset on PIL images.

    The shorter side is resized to `resize` and the longer to int(resize * long / short) (bilinear, antialiased),
    then the centre crop x crop is taken, its offset int(round((side - crop) / 2)). Decoded at full resolution,
    so the pixels are torchvision's.
    """
    _check_size("resize", resize)
    _check_size("crop", crop)
    if crop > resize:
        raise ValueError(f"crop={crop} is larger than resize={resize}: the centre crop must fit the resized image")
    image = decode_rgb(data, name)
    width, height = image.size
    if width <= height:
        new_w, new_h = resize, int(resize * height / width)
    else:
        new_w, new_h = int(resize * width / height), resize
    image = image.resize((new_w, new_h), Image.BILINEAR)
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    return np.asarray(image.crop((left, top, left + crop, top + crop)))
