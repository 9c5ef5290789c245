"""A run directory survives its users: one writer at a time, damaged checkpoints fall back, failed saves stop
the run with everything before them intact."""

import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import ONE_DEVICE, final_state, flat, sweep_cli, train_cli
from test_train import TIMING, small_config

from cnn_jax import provenance
from cnn_jax.config_tree import flatten
from cnn_jax.train import Checkpoints, read_metrics, train_and_evaluate
from cnn_jax.train.checkpoint import CheckpointSaveError, CheckpointsDamagedError
from cnn_jax.train.run_dir import PROVENANCE_FILE, RunDir
from cnn_jax.train.run_lock import LOCK_NAME, RunLock, RunLockedError, held_by
from experiments.configs import cnn1d_mnist1d

REPO = Path(__file__).resolve().parents[1]
CNN1D_CONFIG = "experiments/configs/cnn1d_mnist1d.py"


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _records(workdir) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(workdir)]


def test_a_second_process_on_a_run_ends_at_once_naming_the_holder(tfds_dir, tmp_path):
    # The same long run started twice at once: one trains, the other ends with one line, within 20 s.
    command = train_cli(tmp_path / "run", tfds_dir, "--config.train.num_steps=3000")
    first, second = (
        subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True, env={**os.environ, **ONE_DEVICE})
        for _ in range(2)
    )  # fmt: skip
    start = time.monotonic()
    loser = None
    while loser is None:
        assert time.monotonic() - start < 60, "neither process ended"
        loser = next((p for p in (first, second) if p.poll() is not None), None)
        time.sleep(0.1)
    winner = second if loser is first else first
    _, stderr = loser.communicate()
    assert time.monotonic() - start < 20 and loser.returncode == 1, stderr
    lines = stderr.strip().splitlines()
    holder = f"pid {winner.pid} on {socket.gethostname()} since "
    assert "Traceback" not in stderr and lines[-1].startswith(f"error: {tmp_path / 'run'} is being trained by {holder}")
    assert "wait for it to finish, or stop it, then rerun" in lines[-1]
    winner.send_signal(signal.SIGTERM)
    _, stderr = winner.communicate(timeout=60)
    assert winner.returncode == 0 and "stopped by SIGTERM" in stderr
    steps = [(r["step"], "test/accuracy" in r) for r in read_metrics(tmp_path / "run")]
    assert steps and len(steps) == len(set(steps))  # each record once
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released at the end


def test_a_lock_whose_holder_is_gone_is_taken_over_with_a_warning(tmp_path, caplog):
    record = {"host": socket.gethostname(), "pid": _dead_pid(), "since": "2026-12-01 10:00:00 UTC"}
    for use_flock in (True, False):  # the kernel's lock, and the heartbeat protocol without one
        (tmp_path / LOCK_NAME).write_text(json.dumps(record))
        lock = RunLock(tmp_path, use_flock=use_flock)
        with caplog.at_level("WARNING"):
            lock.acquire()
        assert f"took over the{' stale' * (not use_flock)} lock of pid {record['pid']}" in caplog.text
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        lock.release()
        assert not (tmp_path / LOCK_NAME).exists()
        caplog.clear()


def test_a_heartbeat_lock_is_stale_only_once_it_stops_beating(tmp_path):
    holder = RunLock(tmp_path, use_flock=False, beat_s=0.05, stale_s=0.5)
    holder.acquire()
    with pytest.raises(RunLockedError, match=f"is being trained by pid {os.getpid()} on"):
        RunLock(tmp_path, use_flock=False, beat_s=0.05, stale_s=0.5).acquire()  # a live holder on this host
    holder.release()
    elsewhere = {"host": "another-host", "pid": 1, "since": "then", "beat": 3}
    (tmp_path / LOCK_NAME).write_text(json.dumps(elsewhere))
    start = time.monotonic()
    taker = RunLock(tmp_path, use_flock=False, beat_s=0.05, stale_s=0.5)
    taker.acquire()  # nothing rewrites another-host's record: stale after 0.5 s
    assert time.monotonic() - start >= 0.5
    taker.release()


def test_held_by_probes_without_taking_the_lock(tmp_path):
    assert held_by(tmp_path) is None and not list(tmp_path.iterdir())  # nothing written
    lock = RunLock(tmp_path)
    lock.acquire()
    assert held_by(tmp_path).startswith(f"pid {os.getpid()} on {socket.gethostname()} since ")
    lock.release()
    assert held_by(tmp_path) is None


def test_two_sweeps_on_one_study_directory_share_the_work(tfds_dir, tmp_path):
    command = sweep_cli(
        tmp_path,
        "--grid=model.options.channels=4,6,8,10",
        "--seeds=0",
        "--runs_per_program=1",
        f"--set=dataset.data_dir={tfds_dir}",
        "--set=train.batch_size=80",
        "--set=train.num_steps=400",
        "--set=train.log_every_steps=50",
    )
    env = {**os.environ, **ONE_DEVICE}
    start = lambda: subprocess.Popen(  # noqa: E731
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    sweeps = [start()]
    deadline = time.monotonic() + 60
    while not (tmp_path / "channels=4" / "seed0" / LOCK_NAME).exists():  # the first sweep trains its first run
        assert time.monotonic() < deadline and sweeps[0].poll() is None
        time.sleep(0.05)
    sweeps.append(start())
    outputs = [s.communicate(timeout=600)[0] for s in sweeps]
    assert [s.returncode for s in sweeps] == [0, 0], outputs
    assert "being trained by" in "".join(outputs)  # one sweep found a run the other one held, and went on
    for run in sorted(tmp_path.glob("channels=*/seed0")):
        assert (run / "final.json").exists()
        steps = [(r["step"], "test/accuracy" in r) for r in read_metrics(run)]
        assert len(steps) == len(set(steps)), run  # trained once


def _halve(path: Path) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


def _damage(checkpoint: Path) -> None:
    """Truncate every file of a checkpoint to half its size (a bad copy, a full disk)."""
    for path in checkpoint.rglob("*"):
        if path.is_file():
            _halve(path)


def _command(workdir, config) -> list[str]:
    """experiments.train on `workdir` with `config`: its fields that differ from the 1-D CNN's config file as flags."""
    base = flatten(cnn1d_mnist1d.get_config().to_dict())
    flags = [f"--config.{key}={value}" for key, value in flatten(config.to_dict()).items() if value != base[key]]
    return [sys.executable, "-m", "experiments.train", f"--config={CNN1D_CONFIG}", f"--workdir={workdir}", *flags]


def test_a_damaged_newest_checkpoint_falls_back_to_an_older_one(tfds_dir, tmp_path):
    # The command killed after three checkpoints, the newest's largest file cut short, the command again. With the
    # config's 25 channels that file holds arrays (at 8 they fit in the index), so orbax's reads of the newest fail
    # while others are still in flight: the rerun printed a traceback for each of those before its warning. Logs
    # at the checkpoints (a resume averages the train metrics from its step); the final evaluation only.
    config = small_config(tfds_dir, num_steps=500, checkpoint_every_steps=100, log_every_steps=100)
    config.train.eval_every_epochs = 100
    config.model.options.channels = 25
    straight, run = tmp_path / "straight", tmp_path / "damaged"
    # All three runs as commands on one device: an in-process run would have the tests' 8, which sum in another
    # order, and 8 host devices in a process beside others can starve XLA:CPU's collectives (helpers.ONE_DEVICE).
    env = {**os.environ, **ONE_DEVICE}
    subprocess.run(_command(straight, config), cwd=REPO, capture_output=True, check=True, env=env)

    def saved() -> list[int]:
        return sorted(int(p.name) for p in (run / "checkpoints").glob("*") if p.name.isdigit())

    killed = subprocess.Popen(
        _command(run, config), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    while len(saved()) < 3:
        assert killed.poll() is None, "the run ended before its third checkpoint"
        time.sleep(0.01)
    killed.kill()
    killed.wait()
    *_, older, newest = saved()
    _halve(max((p for p in (run / "checkpoints" / str(newest)).rglob("*") if p.is_file()), key=os.path.getsize))
    rerun = subprocess.run(_command(run, config), cwd=REPO, capture_output=True, text=True, env=env)
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0 and "Traceback" not in output and len(output.splitlines()) <= 15, output
    [warning] = [line for line in output.splitlines() if "does not restore" in line]
    assert re.search(rf"checkpoint of step {newest} in .* does not restore \(\w+: .+\); moved it to", warning), warning
    assert output.index(warning) < output.index(f"resuming from step {older} in {run}")
    assert [p.name.split(".")[0] for p in (run / "damaged_checkpoints").iterdir()] == [f"{newest}"]  # moved, kept
    assert RunDir(config, run).final() == RunDir(config, straight).final()
    np.testing.assert_array_equal(flat(final_state(run)), flat(final_state(straight)))
    assert _records(run) == _records(straight)  # truncated to the older step, then written again


def test_when_no_checkpoint_restores_the_run_ends_with_one_line(tfds_dir, tmp_path):
    config = small_config(tfds_dir, checkpoint_every_steps=5)
    train_and_evaluate(config, tmp_path)
    (tmp_path / "final.json").unlink()
    for checkpoint in (tmp_path / "checkpoints").iterdir():
        if checkpoint.name.isdigit():
            _damage(checkpoint)
    with pytest.raises(CheckpointsDamagedError, match="no checkpoint in .* restores .steps 20, 15, 10 were moved"):
        train_and_evaluate(config, tmp_path)
    # From the command line: the one line, no traceback.
    for checkpoint in (tmp_path / "damaged_checkpoints").iterdir():
        shutil.move(checkpoint, tmp_path / "checkpoints" / checkpoint.name.split(".")[0])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "--config=experiments/configs/cnn1d_mnist1d.py",
            f"--workdir={tmp_path}",
            f"--config.dataset.data_dir={tfds_dir}",
            "--config.dataset.augment.crop_padding=2",
            "--config.model.options.channels=8",
            "--config.train.batch_size=80",
            "--config.train.eval_batch_size=240",
            "--config.train.num_steps=20",
            "--config.train.log_every_steps=5",
            "--config.train.checkpoint_every_steps=5",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: no checkpoint in {tmp_path / 'checkpoints'}")


def test_a_failed_save_stops_the_run_and_the_rerun_resumes(tfds_dir, tmp_path, monkeypatch):
    from orbax.checkpoint._src.path import async_path

    config = small_config(tfds_dir, checkpoint_every_steps=5)
    write_text = async_path.write_text

    async def full_disk(path, text):  # the filesystem fails every write from the checkpoint of step 15 on
        if any(part.startswith("15") for part in Path(path).parts):
            raise OSError(28, "No space left on device", str(path))
        return await write_text(path, text)

    monkeypatch.setattr(async_path, "write_text", full_disk)
    with pytest.raises(CheckpointSaveError, match=r"checkpoint of step 15 .*No space left on device") as err:
        train_and_evaluate(config, tmp_path / "full")
    assert "its checkpoints of steps 5, 10 are intact" in str(err.value) and "to resume." in str(err.value)
    assert Checkpoints(tmp_path / "full" / "checkpoints", 3).all_steps() == [5, 10]  # nothing half-written counts
    assert json.loads((tmp_path / "full" / "failed.json").read_text())["error"] == str(err.value)
    monkeypatch.setattr(async_path, "write_text", write_text)
    final = train_and_evaluate(config, tmp_path / "full")
    assert final == train_and_evaluate(config, tmp_path / "straight")
    np.testing.assert_array_equal(flat(final_state(tmp_path / "full")), flat(final_state(tmp_path / "straight")))
    assert not (tmp_path / "full" / "failed.json").exists()
    assert not [p for p in (tmp_path / "full" / "checkpoints").iterdir() if "tmp" in p.name]


@pytest.fixture
def small_filesystem(tmp_path):
    """A 512 KiB tmpfs at tmp_path/small, where the system lets this process mount one (root, a mount namespace)."""
    where = tmp_path / "small"
    where.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(where)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {result.stderr.decode().strip()}")
    yield where
    subprocess.run(["umount", "--lazy", str(where)], check=True)  # lazy: a failed test may leave files open


def test_a_full_filesystem_stops_the_run_with_its_checkpoints_intact(tfds_dir, tmp_path, small_filesystem):
    config = small_config(tfds_dir, checkpoint_every_steps=5)
    train_and_evaluate(config, tmp_path / "measure")
    last = tmp_path / "measure" / "checkpoints" / "20"  # its disk blocks, as a full filesystem counts them
    per_checkpoint = sum(p.stat().st_blocks * 512 for p in last.rglob("*") if p.is_file())
    run = small_filesystem / "run"
    room = int(2.5 * per_checkpoint) + 64 * 1024  # config, metrics, events, and about two checkpoints
    (small_filesystem / "filler").write_bytes(b"\0" * (shutil.disk_usage(small_filesystem).free - room))
    with pytest.raises(CheckpointSaveError, match="could not write the checkpoint of step") as err:
        train_and_evaluate(config, run)
    intact = Checkpoints(run / "checkpoints", 3).all_steps()
    assert intact and max(intact) < 20, (intact, str(err.value))
    (small_filesystem / "filler").unlink()
    assert train_and_evaluate(config, run) == train_and_evaluate(config, tmp_path / "straight")


def _begin(config, workdir, start: int) -> dict:
    """RunDir.begin at step `start` (as the loop does, on all devices); the provenance.json it leaves."""
    run = RunDir(config, workdir)
    run.begin(start)
    run.close()
    return json.loads((workdir / PROVENANCE_FILE).read_text())


def test_a_run_records_its_provenance_when_it_starts_and_keeps_it_on_resume(tmp_path, caplog):
    config = small_config("unused")
    record = _begin(config, tmp_path, 0)
    assert re.fullmatch("[0-9a-f]{40}", record["commit"]) and record["git_error"] is None  # the tests' checkout
    assert isinstance(record["dirty"], bool) and (record["diff_sha256"] is not None) == record["dirty"]
    assert record["versions"]["jax"] == jax.__version__ and set(record["versions"]) == {"python", *provenance.PACKAGES}
    assert (record["platform"], record["device_count"], record["process_count"]) == ("cpu", len(jax.devices()), 1)
    assert record["command"] == sys.argv and record["host"] == socket.gethostname() and record["start_step"] == 0
    assert datetime.datetime.fromisoformat(record["start"]).utcoffset() == datetime.timedelta(0)
    assert _begin(config, tmp_path, 5) == record  # resumed with the same code: kept as it was

    # As if it had started on another commit, clean, with another jax: the resume keeps that and says what changed.
    started = {**record, "commit": "0" * 40, "dirty": False, "diff_sha256": None}
    started["versions"] = {**record["versions"], "jax": "0.0.1"}
    (tmp_path / PROVENANCE_FILE).write_text(json.dumps(started))
    with caplog.at_level("WARNING"):
        resumed = _begin(config, tmp_path, 10)
    assert {k: v for k, v in resumed.items() if k != "changes"} == started
    [change] = resumed["changes"]
    assert (change["step"], change["host"], change["command"]) == (10, socket.gethostname(), sys.argv)
    expected = {"commit": ["0" * 40, record["commit"]], "versions.jax": ["0.0.1", jax.__version__]}
    if record["dirty"]:
        expected |= {"dirty": [False, True], "diff_sha256": [None, record["diff_sha256"]]}
    assert change["changed"] == expected
    assert f"{tmp_path} resumes at step 10 with other code, versions or devices" in caplog.text
    assert f"commit: '{'0' * 40}' -> '{record['commit']}'" in caplog.text
    assert _begin(config, tmp_path, 15)["changes"] == [change]  # the same code again: nothing more to record
    assert "changes" not in _begin(config, tmp_path, 0)  # started over: a new record


def test_outside_a_git_checkout_the_record_says_why(tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.setattr(provenance, "PACKAGE_DIR", outside)  # as if cnn_jax were a copy outside any checkout
    record = _begin(small_config("unused"), tmp_path / "run", 0)
    assert (record["commit"], record["dirty"], record["diff_sha256"]) == (None, None, None)
    assert record["git_error"].startswith(f"`git ls-files --error-unmatch -- .` in {outside} failed: ")
    no_git = tmp_path / "no_git"
    no_git.mkdir()
    monkeypatch.setenv("PATH", "")
    assert provenance.git_state(no_git)["git_error"] == "git is not installed"


def test_a_package_that_is_not_installed_has_version_null(monkeypatch):
    monkeypatch.setattr(provenance, "PACKAGES", ("jax", "no-such-package-here"))
    provenance.package_versions.cache_clear()
    try:
        assert provenance.package_versions()["no-such-package-here"] is None
    finally:
        provenance.package_versions.cache_clear()
