"""Random-access image sources: torchvision's ImageFolder layout and order, every bad input, and a TFDS image
dataset prepared as array_record, read without TensorFlow."""

import io
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from image_data import CLASS_NAMES, SIZES, write_image_folder, write_tfds_images
from PIL import Image

from cnn_jax.data import DatasetUnavailableError
from cnn_jax.data.image_sources import ImageFolder, TfdsImages, image_folder_splits


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"), classes=10, per_class=6, val_per_class=2)


def test_classes_and_files_are_in_torchvisions_order(folder):
    train, val = image_folder_splits(folder)
    assert train.classes == val.classes == tuple(sorted(CLASS_NAMES[:10])) != tuple(CLASS_NAMES[:10])
    # torchvision's make_dataset: classes in sorted order, each class's files as a sorted os.walk finds them.
    expected = [
        (os.path.join(name, f), label)
        for label, name in enumerate(sorted(CLASS_NAMES[:10]))
        for f in sorted(os.listdir(folder / "train" / name))
    ]
    assert list(zip(train.files, train.labels.tolist())) == expected
    assert len(train) == 60 and len(val) == 20 and train.num_classes == 10


def test_a_row_is_its_files_bytes_and_label_and_survives_pickling(folder):
    train = ImageFolder(folder, "train")
    data, label = train[13]
    assert data == Path(train.name(13)).read_bytes() and label == train.labels[13] == 2
    copy = pickle.loads(pickle.dumps(train))
    assert copy[13] == (data, label) and copy.files == train.files


def test_files_in_nested_folders_and_of_any_case_count_and_others_do_not(folder, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(folder, root)
    name = sorted(CLASS_NAMES[:10])[0]
    (root / "train" / name / "deeper").mkdir()
    shutil.copy(root / "train" / name / os.listdir(root / "train" / name)[0], root / "train" / name / "deeper/x.jpg")
    (root / "train" / name / "notes.txt").write_text("not an image")
    train = ImageFolder(root, "train")
    assert os.path.join(name, "deeper", "x.jpg") in train.files and len(train) == 61
    assert not [f for f in train.files if f.endswith(".txt")]


def _broken(folder: Path, tmp_path: Path, damage) -> Path:
    root = tmp_path / "broken"
    shutil.copytree(folder, root)
    damage(root)
    return root


@pytest.mark.parametrize(
    "damage, error, message",
    [
        (lambda r: shutil.rmtree(r), DatasetUnavailableError, r"image folder .*broken does not exist; it should hold"),
        (lambda r: shutil.rmtree(r / "val"), DatasetUnavailableError, "has no val/ folder"),
        (lambda r: (r / "train" / "stray.JPEG").write_bytes(b"x"), ValueError, "files outside any class folder"),
        (lambda r: (r / "val" / "n09999999").mkdir(), ValueError, "n09999999 holds no images"),
        (
            lambda r: shutil.move(r / "val" / sorted(CLASS_NAMES[:10])[-1], r / "val" / "n09999998"),
            ValueError,
            r"different classes \(only in train/: n0.*; only in val/: n09999998 \(1\)\)",
        ),
        (lambda r: [shutil.rmtree(p) for p in (r / "val").iterdir()], ValueError, "val has no class folders"),
    ],
    ids=["no-root", "no-split", "stray-file", "empty-class", "other-classes", "no-classes"],
)
def test_bad_folders_are_refused_naming_what_is_wrong(folder, tmp_path, damage, error, message):
    root = _broken(folder, tmp_path, damage)
    with pytest.raises(error, match=message):
        image_folder_splits(root)


@pytest.fixture(scope="module")
def tfds_images(tmp_path_factory) -> tuple[str, Path]:
    data_dir = tmp_path_factory.mktemp("tfds")
    return write_tfds_images(data_dir), data_dir


def test_a_tfds_dataset_prepared_as_array_record_reads_encoded_images(tfds_images):
    name, data_dir = tfds_images
    train = TfdsImages(name, "train", data_dir=str(data_dir))
    assert len(train) == 24 and train.num_classes == 10 and train.name(3) == f"{name} train[3]"
    labels = sorted(train[i][1] for i in range(len(train)))
    assert labels == sorted(i % 10 for i in range(24))
    data, _ = train[5]
    assert data[:2] == b"\xff\xd8"  # still a JPEG: the readers decode it
    assert Image.open(io.BytesIO(data)).size in {(w // 4, h // 4) for h, w in SIZES}  # what the builder wrote
    copy = pickle.loads(pickle.dumps(train))
    assert copy[5] == train[5]


def test_reading_records_does_not_import_tensorflow(tfds_images):
    name, data_dir = tfds_images
    script = (
        "import sys\nfrom cnn_jax.data.image_sources import TfdsImages\n"
        f"s = TfdsImages({name!r}, 'test', data_dir={str(data_dir)!r})\n"
        "assert len(s[0][0]) > 100\nprint('tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", result.stderr


def test_an_unprepared_or_unsplit_dataset_says_how_to_prepare_it(tfds_images, tmp_path):
    name, data_dir = tfds_images
    with pytest.raises(DatasetUnavailableError, match="tfds build mnist --file_format=array_record"):
        TfdsImages("mnist", "train", data_dir=str(tmp_path))
    with pytest.raises(DatasetUnavailableError, match=f"{name}' is not prepared in .* TFDS knows no dataset"):
        TfdsImages(name, "train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="has no split 'validation'; its splits are"):
        TfdsImages(name, "validation", data_dir=str(data_dir))
    assert np.unique([TfdsImages(name, "test", data_dir=str(data_dir))[i][1] for i in range(8)]).size == 8
