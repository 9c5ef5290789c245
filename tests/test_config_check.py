"""Config overrides naming a field the config lacks: one check (cnn_jax/config_check.py) for the training CLI
and the sweep, answering with the field, the closest valid name and the valid fields; no traceback."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import sweep_cli, train_cli

from cnn_jax.config_check import check_cli, cli_overrides, load_config, with_overrides

REPO = Path(__file__).resolve().parents[1]
CONFIG = "experiments/configs/cnn1d_mnist1d.py"


def run_cli(tmp_path, *flags) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_cli(tmp_path / "run", str(tmp_path / "tfds"), *flags),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_misspelt_field_ends_the_cli_with_a_suggestion_and_no_traceback(tmp_path):
    result = run_cli(tmp_path, "--config.train.batch_sise=64")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: --config.train.batch_sise: {CONFIG} has no field 'batch_sise' in train; valid fields there: "
        "batch_size, checkpoint_every_seconds, checkpoint_every_steps, data_placement, deterministic, "
        "dispatch_form, dtype, eval_batch_size, eval_every_epochs, keep_checkpoints, label_smoothing, "
        "log_every_steps, num_epochs, num_steps, parallel, run_form, steps_per_dispatch",
        "did you mean --config.train.batch_size?",
    ]
    assert not (tmp_path / "run").exists()


def test_a_field_with_no_close_name_lists_the_valid_ones(tmp_path):
    result = run_cli(tmp_path, "--config.model.options.pol=avg")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: --config.model.options.pol: {CONFIG} has no field 'pol' in model.options; valid fields there: channels"
    )


def test_overrides_are_found_as_ml_collections_finds_them(tmp_path):
    argv = [
        "train",
        "--config",
        CONFIG,
        "--workdir=w",
        "--config.seed",
        "3",
        "--noconfig.dataset.permute_positions",
        "-config.train.num_steps=5",
        "--config.dataset.eval_shifts[0]=2",
        "--configure=x",
    ]
    assert cli_overrides(argv) == (
        CONFIG,
        ["seed", "dataset.permute_positions", "train.num_steps", "dataset.eval_shifts[0]"],
    )
    check_cli(argv)  # all exist: no error
    with pytest.raises(
        ValueError,
        match=r"^--config.dataset.nme: .* has no field 'nme' in dataset; .*\n"
        r"did you mean --config.dataset.name\?$",
    ):
        check_cli([*argv, "--config.dataset.nme=mnist"])
    check_cli(["train", "--config=missing.py", "--config.anything=1"])  # absl reports the missing file itself


def test_overrides_apply_as_the_cli_applies_them_placeholders_included():
    # A run batch's --run_overrides and a sweep's grouping parse each run's overrides with `with_overrides`: a
    # placeholder field (None until set, typed by `config_dict.placeholder`) must take a value as --config.FIELD
    # takes it, and a value of the wrong type must fail as a ValueError naming the flag.
    config = load_config("experiments/configs/resnet20_fashion_mnist.py")
    ghost = with_overrides(config, [("model.options.virtual_batch_size", "16"), ("train.batch_size", "32")])
    assert (ghost.model.options.virtual_batch_size, ghost.train.batch_size) == (16, 32)
    assert config.model.options.virtual_batch_size is None and config.train.batch_size == 128  # untouched
    plain = with_overrides(config, [("optimizer.learning_rate", "0.05")])
    assert plain.model.options.virtual_batch_size is None and plain.optimizer.learning_rate == 0.05
    with pytest.raises(ValueError, match=r"--config.model.options.virtual_batch_size=x: invalid literal for int"):
        with_overrides(config, [("model.options.virtual_batch_size", "x")])
    with pytest.raises(ValueError, match=r"override 'train.batch_sise': .*\ndid you mean 'train.batch_size'\?"):
        with_overrides(config, [("train.batch_sise", "3")])


def test_a_misspelt_field_in_a_flagfile_is_caught_too(tmp_path):
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text("--config.train.num_step=5\n")
    result = run_cli(tmp_path, f"--flagfile={flagfile}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "has no field 'num_step' in train" in result.stderr
    assert result.stderr.strip().endswith("did you mean --config.train.num_steps?")


@pytest.mark.parametrize(
    "flag, message",
    [
        # Not one held in memory, so a TFDS name read from files: TFDS knows none such.
        ("--config.dataset.name=mnistt", "error: dataset 'mnistt' is not prepared in .* TFDS knows no dataset"),
        ("--config.dataset.name=mnist", "error: dataset 'mnist' is not prepared in "),
    ],
    ids=["unknown dataset", "no data"],
)
def test_a_data_mistake_ends_the_run_with_the_message_alone(tmp_path, flag, message):
    """One line: no traceback, and none of the notices of jax (no TPU) or TFDS (an unprepared dataset's
    folder) around it; no lock is left behind in the data directory."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "--config=experiments/configs/lenet5_mnist.py",
            f"--workdir={tmp_path / 'run'}",
            f"--config.dataset.data_dir={tmp_path / 'tfds'}",
            f"--config.dataset.download_dir={tmp_path / 'empty'}",
            flag,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and re.match(message, result.stderr), result.stderr
    assert not [p for p in tmp_path.rglob("*") if "lock" in p.name]


def test_a_sweep_with_a_misspelt_field_ends_with_the_message_alone(tmp_path):
    result = subprocess.run(
        sweep_cli(tmp_path, "--grid=train.batch_sise=64,128"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "batch_sise" in result.stderr and "did you mean" in result.stderr
