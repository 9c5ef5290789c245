"""The fixed costs of a run: the persistent compilation cache, and the programs a run compiles."""

import os
import re
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import ONE_DEVICE, final_state, train_cli
from test_train import small_config

from cnn_jax import compile_cache
from cnn_jax.programs import CompiledPrograms
from cnn_jax.train import read_metrics, train_and_evaluate

REPO = Path(__file__).resolve().parents[1]
PROGRAMS_LINE = re.compile(r"XLA programs compiled or loaded: (\d+), [\d.]+ s: (.*)")


def cli(workdir, tfds_dir, cache_dir) -> tuple[list[str], dict]:
    """A 20-step CLI run with $CNN_JAX_CACHE_DIR=cache_dir: its command and environment."""
    env = {**os.environ, **ONE_DEVICE, compile_cache.CACHE_DIR_ENV: str(cache_dir)}
    return train_cli(workdir, tfds_dir, "--config.train.num_steps=20"), env


def programs_of(stderr: str) -> list[str]:
    """The programs a run's log lists, e.g. ["init_state 1.33 s", "train_dispatch 0.02 s (cache hit)", ...]."""
    (count, listed), *_ = PROGRAMS_LINE.findall(stderr)
    assert int(count) == len(listed.split(", ")), stderr
    return listed.split(", ")


def run_cli(workdir, tfds_dir, cache_dir) -> tuple[list[str], str]:
    command, env = cli(workdir, tfds_dir, cache_dir)
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return programs_of(result.stderr), result.stderr


def test_processes_share_the_cache_and_a_later_one_compiles_nothing(tfds_dir, tmp_path):
    # Two runs at once on an empty cache both compile and write the same entries; neither sees a partial one.
    cache = tmp_path / "xla"
    started = [
        subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
        for command, env in (cli(tmp_path / name, tfds_dir, cache) for name in ("a", "b"))
    ]
    for process in started:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0 and len(programs_of(stderr)) == 3, stderr
        assert "persistent compilation cache" not in stderr, stderr  # JAX's warning for an unreadable entry
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) >= 3 and not [e for e in entries if not e.endswith("-cache")], entries  # no temporary files
    programs, _ = run_cli(tmp_path / "c", tfds_dir, cache)
    assert len(programs) == 3 and all(p.endswith("(cache hit)") for p in programs), programs


def test_an_unusable_cache_directory_warns_once_and_the_run_trains(tfds_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    programs, stderr = run_cli(tmp_path / "run", tfds_dir, blocker / "xla")
    assert len(programs) == 3 and not any("cache hit" in p for p in programs)
    assert stderr.count("compilation cache") == 1 and f"compilation cache {blocker / 'xla'} is not usable" in stderr
    assert (tmp_path / "run" / "final.json").exists()


def test_an_empty_cache_variable_turns_the_cache_off(monkeypatch):
    monkeypatch.setenv(compile_cache.CACHE_DIR_ENV, "")
    assert compile_cache.cache_dir() is None
    monkeypatch.delenv(compile_cache.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert compile_cache.cache_dir() == Path("/somewhere/cnn_jax/xla")


def test_a_failing_write_stops_writing_and_warns_once(tmp_path, monkeypatch):
    cache = compile_cache._file_cache_class()(tmp_path)
    warnings = []
    monkeypatch.setattr(compile_cache, "_warned", False)
    monkeypatch.setattr(compile_cache.logging, "warning", lambda *args: warnings.append(args[0] % args[1:]))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(compile_cache.tempfile, "mkstemp", full)
        cache.put("a", b"x")
        cache.put("b", b"y")
    cache.put("c", b"z")  # the disk has room again, but the cache stays off for the rest of the process
    assert list(tmp_path.iterdir()) == [] and cache.get("a") is None
    assert len(warnings) == 1 and "No space left on device" in warnings[0]


def test_entries_are_replaced_whole(tmp_path):
    # A put replaces a damaged entry (one cut short by a process killed mid-write before this cache existed).
    cache = compile_cache._file_cache_class()(tmp_path)
    (tmp_path / "key-cache").write_bytes(b"trunc")
    cache.put("key", b"the whole entry")
    assert cache.get("key") == b"the whole entry" and [p.name for p in tmp_path.iterdir()] == ["key-cache"]


def test_a_run_compiles_one_program_each_to_initialise_train_and_evaluate(tfds_dir, tmp_path):
    # 50 steps per epoch in dispatches of 4: every epoch ends with a dispatch of 2 steps, and the evaluation
    # streams its 25 batches in dispatches of 8 (the last one of 1). Neither compiles a program of its own, nor
    # do the shifted evaluations or the model summary.
    config = small_config(tfds_dir, num_steps=100, data_placement="host", steps_per_dispatch=4, eval_batch_size=40)
    config.dataset.eval_shifts = (1, 2)
    with CompiledPrograms() as programs:
        train_and_evaluate(config, tmp_path, devices=jax.devices()[:2])
    assert [p.name for p in programs.records] == ["init_state", "train_dispatch", "eval_dispatch"]


def test_compiled_programs_names_each_compilation():
    with CompiledPrograms() as programs:
        jax.jit(lambda x: x * 3)(np.arange(3.0))  # (jnp.arange would compile a program of its own)
    assert [p.name for p in programs.records] == ["<lambda>"] and programs.records[0].seconds > 0
    assert re.fullmatch(r"1, [\d.]+ s: <lambda> [\d.]+ s( \(cache hit\))?", programs.summary())


@pytest.mark.parametrize("form", ["per_step", "scan"])
def test_a_short_dispatch_runs_the_same_program(tfds_dir, tmp_path, form):
    # 30 steps in dispatches of 16: the second dispatch holds 14 real steps and 2 padded ones, which must not run.
    config = small_config(tfds_dir, num_steps=30, steps_per_dispatch=16, dispatch_form=form, log_every_steps=1)
    with CompiledPrograms() as programs:
        train_and_evaluate(config, tmp_path)
    assert [p.name for p in programs.records].count("train_dispatch") == 1
    assert [r["step"] for r in read_metrics(tmp_path) if "train/loss" in r] == list(range(1, 31))
    assert int(final_state(tmp_path)["step"]) == 30


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="counts the process's memory maps in /proc (Linux)")
def test_a_test_file_s_programs_are_unmapped_after_its_last_test(request):
    """conftest's teardown hook, which keeps a process running both tiers under Linux's limit on memory maps:
    XLA:CPU maps every program it compiles, and dropping JAX's caches unmaps them."""
    import conftest

    def code_maps() -> int:
        """Executable memory backed by no file: compiled code (threads and libraries map other kinds)."""
        maps = [line.split() for line in Path("/proc/self/maps").read_text().splitlines()]
        return sum(fields[1] == "r-xp" and len(fields) == 5 for fields in maps)

    before = code_maps()
    for n in range(1, 61):
        jax.numpy.zeros((n, 3)).reshape(3, n).block_until_ready()  # new programs for every shape
    compiled = code_maps()
    conftest.pytest_runtest_teardown(request.node, nextitem=None)
    assert compiled - before >= 60, (before, compiled)
    assert code_maps() <= before, (before, compiled, code_maps())
