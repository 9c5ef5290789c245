"""Host-side image transforms against references: torchvision's evaluation preset written with PIL (the library
torchvision calls), RandomResizedCrop's box distribution against a plain transcription of torchvision's sampler,
and decoding of ImageNet's kinds of file."""

import io
import math

import numpy as np
import pytest
from image_data import encode, smooth_image
from PIL import Image

from cnn_jax.data.image_transforms import CorruptImageError, crop_box, decode_rgb, eval_image, train_image

# (kind, height, width): ImageNet's modes and its range of sizes, tiny and large included.
FILES = [
    ("rgb", 375, 500),
    ("rgb", 500, 375),
    ("rgb", 333, 500),
    ("rgb", 1200, 1600),
    ("rgb", 37, 61),
    ("gray", 375, 500),
    ("cmyk", 300, 451),
    ("exif", 375, 500),
    ("png", 256, 341),
]


@pytest.fixture(scope="module")
def files() -> list[tuple[str, bytes, tuple[int, int]]]:
    rng = np.random.default_rng(0)
    return [(kind, encode(smooth_image(rng, h, w, rng.uniform(40, 215, 3)), kind), (h, w)) for kind, h, w in FILES]


def torchvision_eval(data: bytes, resize: int, crop: int) -> np.ndarray:
    """torchvision's Resize(resize) + CenterCrop(crop) on its loader's PIL image, transcribed from
    torchvision/transforms/functional.py (_compute_resized_output_size, center_crop)."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize, int(resize * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    image = image.resize((new_w, new_h), Image.BILINEAR)
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    return np.asarray(image.crop((left, top, left + crop, top + crop)))


@pytest.mark.parametrize("resize, crop", [(256, 224), (73, 64)])
def test_evaluation_transform_equals_torchvisions_preset(files, resize, crop):
    for kind, data, _ in files:
        ours = eval_image(data, resize=resize, crop=crop, name=kind)
        assert ours.shape == (crop, crop, 3) and ours.dtype == np.uint8
        difference = np.abs(ours.astype(int) - torchvision_eval(data, resize, crop))
        assert difference.max() <= 1, (kind, difference.max())


def torchvision_box(rng: np.random.Generator, height: int, width: int) -> tuple[int, int, int, int]:
    """RandomResizedCrop.get_params (torchvision 0.28), line by line, with NumPy's generator for torch's."""
    area = height * width
    log_ratio = [math.log(3 / 4), math.log(4 / 3)]
    for _ in range(10):
        target_area = area * rng.uniform(0.08, 1.0)
        aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = float(width) / float(height)
    if in_ratio < 3 / 4:
        w = width
        h = int(round(w / (3 / 4)))
    elif in_ratio > 4 / 3:
        h = height
        w = int(round(h * (4 / 3)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _statistics(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    top, left, h, w = boxes.T
    area, log_aspect = h * w / (height * width), np.log(w / h)
    centre_y, centre_x = (top + h / 2) / height, (left + w / 2) / width
    # Quantiles of the area fraction and the log aspect; the centres' mean and spread (their quantiles jump where
    # the fallback's centred boxes make an atom at 0.5).
    quantiles = [np.quantile(v, q) for v in (area, log_aspect) for q in (0.1, 0.5, 0.9)]
    return np.array(quantiles + [f(v) for v in (centre_y, centre_x) for f in (np.mean, np.std)])


@pytest.mark.parametrize("height, width", [(375, 500), (500, 375), (100, 1000), (64, 64)])
def test_crop_boxes_follow_random_resized_crops_distribution(height, width):
    draws = 10_000
    ours = np.array([crop_box(np.random.default_rng([1, i]), height, width) for i in range(draws)])
    reference = np.array([torchvision_box(np.random.default_rng([2, i]), height, width) for i in range(draws)])
    top, left, h, w = ours.T
    assert (h > 0).all() and (w > 0).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    # 10,000 draws: the standard errors of these statistics of unit-range values (area fraction, log aspect
    # within +-0.29, centres in [0, 1]) are below 0.006; 0.03 is 5 of them.
    np.testing.assert_allclose(_statistics(ours, height, width), _statistics(reference, height, width), atol=0.03)
    # The centre-crop fallback (no try fits): its rate, which is large for the elongated image.
    fallback = lambda boxes: np.mean((boxes[:, 2] == height) & (boxes[:, 0] == 0))  # noqa: E731
    assert abs(fallback(ours) - fallback(reference)) < 0.02


def test_crop_box_is_torchvisions_draw_for_draw():
    for i in range(200):
        assert crop_box(np.random.default_rng(i), 300, 451) == torchvision_box(np.random.default_rng(i), 300, 451)


def test_training_crops_are_a_function_of_the_generator_and_flip_half_the_time(files):
    _, data, _ = files[0]
    first = train_image(data, np.random.default_rng(3), 64)
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, train_image(data, np.random.default_rng(3), 64))
    flipped = [train_image(data, np.random.default_rng(i), 16, flip=True) for i in range(200)]
    unflipped = [train_image(data, np.random.default_rng(i), 16, flip=False) for i in range(200)]
    mirrored = [np.array_equal(a, b[:, ::-1]) and not np.array_equal(a, b) for a, b in zip(flipped, unflipped)]
    assert 0.4 < np.mean(mirrored) < 0.6


def _full_decode_crop(data: bytes, rng: np.random.Generator, size: int) -> np.ndarray:
    """The training crop without the decoder's downscaling: the whole image decoded, the box resized."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    top, left, h, w = crop_box(rng, image.size[1], image.size[0])
    return np.asarray(image.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h)))


def test_decoding_only_as_finely_as_the_crop_needs_changes_pixels_little(files):
    # The 1600x1200 image at 32 px: most boxes are 4-8x the output, so the JPEG decodes at 1/4 or 1/8 size.
    _, data, _ = files[3]
    errors = []
    for i in range(20):
        ours = train_image(data, np.random.default_rng(i), 32, flip=False)
        errors.append(np.abs(ours.astype(int) - _full_decode_crop(data, np.random.default_rng(i), 32)).mean())
    assert max(errors) < 3, errors  # in 0-255 units; smooth images


@pytest.mark.parametrize("index", range(len(FILES)))
def test_every_kind_of_file_decodes_to_rgb_at_its_stored_size(files, index):
    kind, data, (height, width) = files[index]
    image = decode_rgb(data, kind)
    # EXIF orientation is not applied (as torchvision's loader and TF's decode_jpeg): the stored size.
    assert image.mode == "RGB" and image.size == (width, height)
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(image), reference)


def test_corrupt_and_truncated_files_raise_naming_the_file(files):
    _, data, _ = files[0]
    for broken in (data[: len(data) // 2], b"not an image at all"):
        with pytest.raises(CorruptImageError, match="n01440764_17.JPEG does not decode"):
            decode_rgb(broken, "n01440764_17.JPEG")
        with pytest.raises(CorruptImageError, match="n01440764_17.JPEG"):
            train_image(broken, np.random.default_rng(0), 32, name="n01440764_17.JPEG")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda d: eval_image(d, resize=64, crop=224), "crop=224 is larger than resize=64"),
        (lambda d: eval_image(d, resize=0), "resize=0 must be a positive number of pixels"),
        (lambda d: train_image(d, np.random.default_rng(0), -3), "size=-3 must be a positive number of pixels"),
        (lambda d: crop_box(np.random.default_rng(0), 10, 10, scale=(0.5, 0.1)), r"scale=\(0.5, 0.1\) must be"),
        (lambda d: crop_box(np.random.default_rng(0), 0, 10), "image size 0x10"),
    ],
)
def test_bad_arguments_are_refused_naming_them(files, call, message):
    with pytest.raises(ValueError, match=message):
        call(files[0][1])
