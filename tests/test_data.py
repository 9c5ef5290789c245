"""Input pipeline: offline TFDS preparation, fast failures, batch order, sharding, variants, augmentation."""
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax.data import (DatasetUnavailableError, augment, eval_batches, load_dataset, load_split, process_rows,
                          shift_width, steps_per_epoch, train_batch_indices)
from cnn_jax.data import sources


def test_mnist_prepared_offline_from_raw_files(download_dir, tfds_dir):
    data = load_dataset("mnist", data_dir=tfds_dir, download_dir=download_dir)
    assert data.train.inputs.shape == (60000, 28, 28, 1) and data.train.inputs.dtype == np.uint8
    assert data.test.inputs.shape == (10000, 28, 28, 1)
    assert np.bincount(data.test.labels).tolist()[:3] == [980, 1135, 1032]  # MNIST's published test counts
    np.testing.assert_allclose(data.mean, [33.32], atol=0.01)


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
    code = ("import sys; from cnn_jax.data import load_split; "
            f"print(len(load_split('mnist1d', 'test', data_dir={str(tmp_path)!r})))")
    workers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(3)]
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0 and out.strip().splitlines()[-1] == "1000", err[-2000:]


def test_missing_raw_files_fail_fast_with_instructions(tmp_path, tfds_dir):
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError) as err:
        load_split("cifar10", "train", data_dir=tfds_dir, download_dir=str(tmp_path))
    assert time.perf_counter() - start < 10
    message = str(err.value)
    for needed in ("cifar10", str(tmp_path / "cifar10"), "cifar-10-binary.tar.gz", "download_dir",
                   "CNN_JAX_DOWNLOAD_DIR"):
        assert needed in message


def test_unreachable_network_fails_fast(tfds_dir, monkeypatch):
    def unreachable(address, timeout):
        raise OSError("Name or service not known")
    monkeypatch.setattr(sources.socket, "create_connection", unreachable)
    monkeypatch.delenv(sources.DOWNLOAD_DIR_ENV, raising=False)
    with pytest.raises(DatasetUnavailableError, match=r"svhn_cropped.*cannot be reached.*download_dir"):
        load_split("svhn_cropped", "train", data_dir=tfds_dir)


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
