"""Input pipeline: offline TFDS preparation, fast failures, batch order, sharding, variants, augmentation."""

import os
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ONE_DEVICE

from cnn_jax.data import (
    DatasetUnavailableError,
    augment,
    eval_batches,
    load_dataset,
    load_split,
    prepare_lock,
    process_rows,
    shift_width,
    sources,
    steps_per_epoch,
    train_batch_indices,
)


def test_mnist_prepared_offline_from_raw_files(download_dir, tfds_dir):
    data = load_dataset("mnist", data_dir=tfds_dir, download_dir=download_dir)
    assert data.train.inputs.shape == (60000, 28, 28, 1) and data.train.inputs.dtype == np.uint8
    assert data.test.inputs.shape == (10000, 28, 28, 1)
    assert np.bincount(data.test.labels).tolist()[:3] == [980, 1135, 1032]  # MNIST's published test counts
    np.testing.assert_allclose(data.mean, [33.32], atol=0.01)


def test_decoded_split_is_kept_and_read_back_unchanged(tmp_path, monkeypatch):
    first = load_split("mnist1d", "test", data_dir=str(tmp_path))
    (cache,) = tmp_path.rglob(f"{sources.DECODED_DIR}/test.npz")
    assert not list(tmp_path.rglob("*.tmp"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded the split again")

    import tensorflow_datasets as tfds

    monkeypatch.setattr(tfds.core.DatasetBuilder, "as_data_source", no_decoding)
    again = load_split("mnist1d", "test", data_dir=str(tmp_path))
    np.testing.assert_array_equal(again.inputs, first.inputs)
    np.testing.assert_array_equal(again.labels, first.labels)
    assert again.inputs.dtype == first.inputs.dtype and again.labels.dtype == np.int32


def test_unwritable_cache_folder_decodes_without_a_cache(tmp_path):
    first = load_split("mnist1d", "test", data_dir=str(tmp_path))
    (cache,) = tmp_path.rglob(sources.DECODED_DIR)
    for f in cache.iterdir():
        f.unlink()
    cache.rmdir()
    cache.write_text("a file where the folder would go: mkdir fails as on a read-only data directory")
    again = load_split("mnist1d", "test", data_dir=str(tmp_path))
    np.testing.assert_array_equal(again.inputs, first.inputs)
    assert not list(tmp_path.rglob("*.npz")) and not list(tmp_path.rglob("*.tmp"))


@pytest.mark.slow
def test_mnist_and_fashion_mnist_do_not_share_extractions(download_dir, tfds_dir):
    # Both ship files with the same names; TFDS alone would reuse the first one's extraction for the second.
    fashion = load_dataset("fashion_mnist", data_dir=tfds_dir, download_dir=download_dir)
    assert fashion.train.inputs.shape == (60000, 28, 28, 1)
    np.testing.assert_allclose(fashion.mean, [72.94], atol=0.01)
    assert np.bincount(fashion.test.labels).tolist() == [1000] * 10


def test_mnist1d_is_generated_offline(tfds_dir):
    from mnist1d.data import get_dataset_args, make_dataset

    data = load_dataset("mnist1d", data_dir=tfds_dir)
    expected = make_dataset(get_dataset_args())
    assert data.train.inputs.shape == (4000, 40) and data.test.inputs.shape == (1000, 40)
    assert data.input_shape == (40, 1)
    np.testing.assert_allclose(data.test.inputs, expected["x_test"], rtol=1e-6)
    np.testing.assert_array_equal(data.train.labels, expected["y"])


def test_concurrent_processes_prepare_a_dataset_once(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from cnn_jax.data import load_split; "
        f"print(len(load_split('mnist1d', 'test', data_dir={str(tmp_path)!r})))"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0 and out.strip().splitlines()[-1] == "1000", err[-2000:]
    assert not list(tmp_path.rglob(prepare_lock.LOCK_NAME))


def _hold_in_turns(lock, count: int = 4, hold_s: float = 0.2) -> list[tuple[float, float]]:
    """Threads that each hold `lock()` for hold_s; the (enter, leave) times of each."""
    spans = []

    def hold():
        with lock():
            enter = time.monotonic()
            time.sleep(hold_s)
            spans.append((enter, time.monotonic()))

    threads = [threading.Thread(target=hold) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(spans)


@pytest.mark.parametrize("kind", ["local", "object store"])
def test_prepare_lock_admits_one_holder_at_a_time_and_leaves_nothing(tmp_path, monkeypatch, kind):
    # flock excludes separate opens of the file, so threads stand in for processes; the object-store protocol
    # (for gs:// and other URLs) runs on a local path through etils.epath, with short pauses.
    if kind == "object store":
        monkeypatch.setattr(prepare_lock, "is_local", lambda path: False)
        fast = prepare_lock.object_lock
        monkeypatch.setattr(
            prepare_lock, "object_lock", lambda path: fast(path, poll_s=0.02, settle_s=0.1, beat_s=0.05, stale_s=5)
        )
    directory = tmp_path / "mnist"
    spans = _hold_in_turns(lambda: prepare_lock.prepare_lock(directory))
    assert len(spans) == 4
    assert all(leave <= enter for (_, leave), (enter, _) in zip(spans, spans[1:])), spans
    assert not (directory / prepare_lock.LOCK_NAME).exists()
    if kind == "local":
        assert not directory.exists()  # nothing was prepared in it: the empty directory goes too


def test_object_store_lock_takes_over_a_lock_whose_holder_died(tmp_path):
    lock = tmp_path / prepare_lock.LOCK_NAME
    lock.write_text("host pid 1 0123 beat 7")  # never beats again
    start = time.monotonic()
    with prepare_lock.object_lock(prepare_lock.epath.Path(lock), poll_s=0.05, settle_s=0.05, beat_s=0.1, stale_s=0.5):
        assert lock.read_text().split()[1:3] == ["pid", str(os.getpid())]
    assert 0.5 <= time.monotonic() - start < 10 and not lock.exists()
    with pytest.raises(ValueError, match="beat_s=5 must be less than stale_s=5"):
        with prepare_lock.object_lock(prepare_lock.epath.Path(lock), beat_s=5, stale_s=5):
            pass


def test_a_url_data_dir_gets_the_object_store_lock_beside_the_data(tmp_path, monkeypatch):
    """gs:// and other URLs cannot take an fcntl lock, nor may the lock become a local path named 'gs:'.
    Here a local path stands in for a bucket: the object-store branch prepares the dataset and cleans up."""
    assert not prepare_lock.is_local("gs://bucket/tensorflow_datasets/mnist")
    assert prepare_lock.is_local(tmp_path) and prepare_lock.is_local("relative/dir")
    used = []
    fast = prepare_lock.object_lock

    def spy(path, **kwargs):
        used.append(str(path))
        return fast(path, settle_s=0.05)

    monkeypatch.setattr(prepare_lock, "is_local", lambda path: False)
    monkeypatch.setattr(prepare_lock, "object_lock", spy)
    assert len(load_split("mnist1d", "test", data_dir=str(tmp_path))) == 1000
    assert used == [str(tmp_path / "mnist1d" / prepare_lock.LOCK_NAME)]
    assert not list(tmp_path.rglob(prepare_lock.LOCK_NAME))


def test_missing_raw_files_fail_fast_with_instructions(tmp_path, tfds_dir):
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError) as err:
        load_split("cifar10", "train", data_dir=tfds_dir, download_dir=str(tmp_path))
    assert time.perf_counter() - start < 10
    message = str(err.value)
    for needed in (
        "cifar10",
        str(tmp_path / "cifar10"),
        "cifar-10-binary.tar.gz",
        "download_dir",
        "CNN_JAX_DOWNLOAD_DIR",
    ):
        assert needed in message
    assert not Path(tfds_dir, "cifar10").exists()  # no empty .prepare.lock (nor its directory) left behind


def test_unreachable_network_fails_fast(tfds_dir, monkeypatch):
    def unreachable(address, timeout):
        raise OSError("Name or service not known")

    monkeypatch.setattr(sources.socket, "create_connection", unreachable)
    monkeypatch.delenv(sources.DOWNLOAD_DIR_ENV, raising=False)
    with pytest.raises(DatasetUnavailableError, match=r"svhn_cropped.*cannot be reached.*download_dir"):
        load_split("svhn_cropped", "train", data_dir=tfds_dir)


def test_the_network_check_is_bounded_even_when_the_dns_lookup_hangs(tfds_dir, monkeypatch):
    # socket.create_connection's own timeout starts after getaddrinfo, which waits as long as the resolver.
    release = threading.Event()

    def hanging_lookup(*args, **kwargs):
        release.wait(60)
        raise OSError("resolver gave up")

    monkeypatch.setattr(sources.socket, "getaddrinfo", hanging_lookup)
    monkeypatch.setattr(sources, "REACHABLE_TIMEOUT_S", 1.0)
    monkeypatch.delenv(sources.DOWNLOAD_DIR_ENV, raising=False)
    builder = sources._builder("svhn_cropped", tfds_dir)
    start = time.monotonic()
    try:
        with pytest.raises(DatasetUnavailableError, match=r"svhn_cropped.*cannot be reached \(no answer within 1 s"):
            sources._check_reachable("svhn_cropped", builder, dict(builder.url_infos))
        assert time.monotonic() - start < 1.5
    finally:
        release.set()


def test_unknown_dataset_lists_choices():
    with pytest.raises(ValueError, match=r"dataset='imagenet'.*mnist, fashion_mnist, cifar10"):
        load_split("imagenet", "train")


def test_batches_are_a_pure_function_of_seed_and_step():
    n, batch = 1000, 96
    per_epoch = steps_per_epoch(n, batch)
    epoch0 = np.concatenate([train_batch_indices(n, batch, 3, s) for s in range(per_epoch)])
    assert len(np.unique(epoch0)) == per_epoch * batch  # no repeats within an epoch
    np.testing.assert_array_equal(train_batch_indices(n, batch, 3, 5), train_batch_indices(n, batch, 3, 5))
    assert not np.array_equal(train_batch_indices(n, batch, 3, 0), train_batch_indices(n, batch, 3, per_epoch))
    assert not np.array_equal(train_batch_indices(n, batch, 3, 0), train_batch_indices(n, batch, 4, 0))


def test_process_rows_partition_the_global_batch():
    rows = np.arange(100, 132)
    parts = [process_rows(rows, p, 4) for p in range(4)]
    np.testing.assert_array_equal(np.concatenate(parts), rows)


def test_eval_batches_count_every_example_once():
    counts = np.zeros(1003)
    for rows, mask in eval_batches(1003, 240):
        assert len(rows) == 240
        np.add.at(counts, rows, mask)
    np.testing.assert_array_equal(counts, 1)


def test_shift_width_translates_and_zero_fills():
    x = np.arange(1, 6)[None]
    np.testing.assert_array_equal(shift_width(x, 2), [[0, 0, 1, 2, 3]])
    np.testing.assert_array_equal(shift_width(x, -1), [[2, 3, 4, 5, 0]])
    images = np.arange(2 * 3 * 4).reshape(1, 3, 4, 2)
    np.testing.assert_array_equal(shift_width(images, 1)[0, :, 1:], images[0, :, :-1])


def test_permute_positions_is_one_fixed_permutation(tfds_dir):
    plain = load_dataset("mnist1d", data_dir=tfds_dir)
    shuffled = load_dataset("mnist1d", data_dir=tfds_dir, permute_positions=True)
    # the same permutation of positions maps every example, train and test alike
    perm = [int(np.flatnonzero(plain.train.inputs[0] == v)[0]) for v in shuffled.train.inputs[0]]
    np.testing.assert_array_equal(shuffled.test.inputs, plain.test.inputs[:, perm])
    assert sorted(perm) == list(range(40))


def test_augmentation_depends_on_the_example_key_only():
    x = jnp.arange(2 * 8 * 8 * 1, dtype=jnp.float32).reshape(2, 8, 8, 1)
    keys = jax.random.split(jax.random.key(0), 2)
    both = augment(x, keys, crop_padding=2, flip=True)
    alone = augment(x[1:], keys[1:], crop_padding=2, flip=True)
    np.testing.assert_array_equal(both[1:], alone)
    # a crop with padding p is a zero-filled translation: the shifted content is still there
    assert set(np.asarray(both[0]).ravel()) - {0.0} <= set(np.asarray(x[0]).ravel())


NOISE = ("%|", "oneDNN", "Downloading and preparing", "Generating", "Shuffling", "absl::InitializeLog", "libtpu")


def _first_run(tmp_path, config: str, *flags) -> list[str]:
    """The output lines of a training command's first run (a fresh data directory), not on a terminal."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "experiments.train", f"--config={config}", f"--workdir={tmp_path / 'run'}",
               f"--config.dataset.data_dir={tmp_path / 'data'}", *flags]  # fmt: skip
    env = {**os.environ, **ONE_DEVICE}  # as a newcomer runs it: this machine's one CPU device, not the tests' 8
    result = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return (result.stdout + result.stderr).splitlines()


def test_a_first_run_prints_no_library_noise(tmp_path):
    # MNIST-1D: prepared by TFDS from its generator (the same progress bars and notices as MNIST, in seconds).
    lines = _first_run(tmp_path, "experiments/configs/cnn1d_mnist1d.py", "--config.train.num_steps=100")
    assert len(lines) <= 25 and not [line for line in lines if any(n in line for n in NOISE)], lines
    assert any("preparing mnist1d from its generator" in line for line in lines)


@pytest.mark.slow
def test_the_readme_job_prints_no_library_noise_the_first_time(tmp_path, download_dir):
    # The README's main job, one epoch, from MNIST's raw files: TFDS's download and extraction progress bars and
    # TensorFlow's oneDNN notices were 95 of its 117 lines in a log file.
    lines = _first_run(
        tmp_path,
        "experiments/configs/lenet5_mnist.py",
        f"--config.dataset.download_dir={download_dir}",
        "--config.train.num_epochs=1",
    )
    assert len(lines) <= 25 and not [line for line in lines if any(n in line for n in NOISE)], lines


def test_the_analysis_command_prints_only_its_table():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "cnn_jax.analysis", "--model=lenet5", "--input=28,28,1", "--num_classes=10"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith("| layer")
