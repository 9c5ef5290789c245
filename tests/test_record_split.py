"""Datasets read from files as they train: determinism at any reader, process and device count, the corrupt-image
policy, the config's checks, and ResNet-18 trained through the CLI on a generated folder, killed and resumed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ONE_DEVICE, final_state, flat
from image_data import corrupt_jpeg, write_image_folder

from cnn_jax.data import CorruptImageError, ImageTransform, RecordSplit, process_rows, train_batch_indices
from cnn_jax.data.image_sources import image_folder_splits
from cnn_jax.data.record_split import example_rng
from cnn_jax.train.config import default_config, validate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"), classes=10, per_class=8, val_per_class=2)


def _train_split(root: Path, readers: int = 2, on_corrupt: str = "stop") -> RecordSplit:
    train, _ = image_folder_splits(root)
    return RecordSplit(train, ImageTransform(True, 32), readers=readers, on_corrupt=on_corrupt)


def test_an_example_is_a_function_of_seed_epoch_and_row_alone(folder):
    rows = np.array([[3, 7, 1, 0], [5, 2, 9, 11]])
    one, labels = _train_split(folder, readers=1).examples(rows, 2, 5)
    many, many_labels = _train_split(folder, readers=4).examples(rows, 2, 5)
    assert one.shape == (2, 4, 32, 32, 3) and one.dtype == np.uint8 and labels.shape == (2, 4)
    np.testing.assert_array_equal(one, many)
    np.testing.assert_array_equal(labels, many_labels)
    train, _ = image_folder_splits(folder)
    np.testing.assert_array_equal(labels, train.labels[rows])
    # The same row alone, at another position of another batch: the same pixels, those of example_rng's draws.
    split = _train_split(folder)
    alone, _ = split.examples(np.array([7]), 2, 5)
    np.testing.assert_array_equal(alone[0], one[0, 1])
    data, _ = train[7]
    np.testing.assert_array_equal(split.transform(data, example_rng(5, 2, 7), "row 7"), one[0, 1])
    # Another epoch or another seed crops elsewhere.
    assert not np.array_equal(split.examples(rows, 3, 5)[0], one)
    assert not np.array_equal(split.examples(rows, 2, 6)[0], one)


def test_each_process_reads_its_rows_of_the_one_process_batch(folder):
    split = _train_split(folder)
    rows = train_batch_indices(len(split), 16, seed=1, step=9)
    whole, labels = split.examples(rows, 9 * 16 // len(split), 1)
    parts = [split.examples(process_rows(rows, p, 2), 9 * 16 // len(split), 1) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), labels)


def test_evaluation_examples_do_not_depend_on_seed_or_epoch(folder):
    _, val = image_folder_splits(folder)
    split = RecordSplit(val, ImageTransform(False, 32), readers=3)
    rows = np.arange(len(split))
    first, _ = split.examples(rows, 0, 0)
    np.testing.assert_array_equal(first, split.examples(rows, 4, 9)[0])
    assert first.shape == (len(val), 32, 32, 3)


@pytest.fixture
def damaged(folder, tmp_path) -> tuple[Path, int]:
    """A copy of the folder whose training row 5 is a truncated JPEG."""
    root = tmp_path / "damaged"
    shutil.copytree(folder, root)
    train, _ = image_folder_splits(root)
    corrupt_jpeg(Path(train.name(5)))
    return root, 5


def test_a_corrupt_image_stops_the_split_naming_its_file(damaged):
    root, row = damaged
    split = _train_split(root)
    with pytest.raises(CorruptImageError, match=Path(split.source.name(row)).name):
        split.examples(np.array([0, row, 1]), 0, 0)


def test_a_corrupt_image_is_replaced_by_the_next_with_its_own_draws_and_counted(damaged, caplog):
    root, row = damaged
    split = _train_split(root, on_corrupt="skip")
    inputs, labels = split.examples(np.array([[row, 0], [1, row]]), 3, 4)
    data, label = split.source[row + 1]
    np.testing.assert_array_equal(inputs[0, 0], split.transform(data, example_rng(4, 3, row), "next"))
    np.testing.assert_array_equal(inputs[1, 1], inputs[0, 0])
    assert labels[0, 0] == label and split.skipped == 2
    warnings = [r for r in caplog.records if "using the next image" in r.getMessage()]
    assert len(warnings) == 1 and Path(split.source.name(row)).name in warnings[0].getMessage()


def _files_config(root: Path, **fields):
    config = default_config()
    config.dataset.name = "image_folder"
    config.dataset.image_folder = str(root)
    for field, value in fields.items():
        section, key = field.split("__")
        config[section][key] = value
    return config


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"dataset__image_folder": ""}, "needs config.dataset.image_folder=ROOT"),
        ({"dataset__source": "memory"}, "config.dataset.name='image_folder': unknown"),
        ({"dataset__source": "disk"}, "config.dataset.source='disk': unknown"),
        ({"dataset__test_shift": 2}, "config.dataset.test_shift=2: not available for a dataset read from files"),
        ({"dataset__image_size": 0}, "config.dataset.image_size=0 must be a positive integer"),
        ({"dataset__eval_resize": 100, "dataset__image_size": 128}, "config.dataset.eval_resize=100 must be"),
        ({"dataset__on_corrupt": "ignore"}, "config.dataset.on_corrupt='ignore': unknown"),
    ],
)
def test_bad_file_dataset_fields_are_refused_naming_them(folder, fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        validate(_files_config(folder, **fields), device_count=1)


def _cli(root: Path, workdir: Path, *flags: str) -> list[str]:
    """ResNet-18 at 32 px on the generated folder (80 training images: 10 steps of 8 per epoch)."""
    return [
        sys.executable,
        "-m",
        "experiments.train",
        "--config=experiments/configs/resnet18_image_folder.py",
        f"--config.dataset.image_folder={root}",
        f"--workdir={workdir}",
        "--config.dataset.image_size=32",
        "--config.dataset.readers=2",
        "--config.train.batch_size=8",
        "--config.train.eval_batch_size=10",
        "--config.train.log_every_steps=10",
        "--config.optimizer.learning_rate=0.01",
        *flags,
    ]


def _final(workdir: Path) -> dict:
    """final.json without its timings."""
    final = json.loads((workdir / "final.json").read_text())
    return {k: v for k, v in final.items() if k not in ("images_per_s", "input_images_per_s")}


@pytest.mark.slow
def test_resnet18_on_a_folder_through_the_cli_killed_and_resumed_equals_one_run(folder, tmp_path):
    # 64 px, 100 steps of 8 (10 epochs of the 80 training images), a checkpoint every 25; killed after the second.
    flags = (
        "--config.dataset.image_size=64",
        "--config.train.num_epochs=10",
        "--config.train.checkpoint_every_steps=25",
    )
    env = {**os.environ, **ONE_DEVICE}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_cli(folder, straight, *flags), cwd=REPO, check=True, capture_output=True, env=env)
    run = subprocess.Popen(_cli(folder, killed, *flags), cwd=REPO, stderr=subprocess.DEVNULL, env=env)
    while not [p for p in (killed / "checkpoints").glob("*") if p.name.isdigit() and int(p.name) >= 50]:
        assert run.poll() is None, "the run ended before its second checkpoint"
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait()
    resumed = subprocess.run(_cli(folder, killed, *flags), cwd=REPO, capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step" in resumed.stderr
    final = _final(killed)
    assert final == _final(straight)
    assert final["step"] == 100 and final["skipped_images"] == 0
    # Ten classes, each its own mean colour: learnt beyond chance (0.1) in 100 steps.
    assert final["test/accuracy"] >= 0.5, final  # measured: 0.95
    np.testing.assert_array_equal(flat(final_state(killed)), flat(final_state(straight)))


def test_a_missing_folder_ends_the_cli_with_the_message_alone(tmp_path):
    result = subprocess.run(
        _cli(tmp_path / "nowhere", tmp_path / "run"),
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **ONE_DEVICE},
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "nowhere" in result.stderr
