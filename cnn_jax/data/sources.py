"""Datasets by TFDS name, prepared from raw downloads (offline) or the network, loaded whole into host memory.

Where the raw files come from, in order:
1. already prepared in the TFDS data directory (`data_dir`, else $TFDS_DATA_DIR, else TFDS's default);
2. a download directory (`download_dir`, else $CNN_JAX_DOWNLOAD_DIR) holding `<download_dir>/<dataset>/<file>`
   with the file names TFDS downloads (checked against TFDS's own sizes and sha256);
3. the network, through TFDS's download manager.
Whatever is missing fails fast (seconds, not TFDS's ~200 s of retries) with a message saying what to do.
A prepared split's decoded arrays are kept beside TFDS's files (`DECODED_DIR`) the first time it is read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
from absl import logging
from etils import epath

from cnn_jax.data.prepare_lock import prepare_lock

DOWNLOAD_DIR_ENV = "CNN_JAX_DOWNLOAD_DIR"
REACHABLE_TIMEOUT_S = 5.0  # the network check's bound, DNS lookup included
# Decoding a split's PNGs costs seconds at every start (60,000 MNIST images: ~4 s on 2 CPU cores); the decoded
# arrays are kept once in this folder of the prepared version's directory, and read back in ~0.1 s.
DECODED_DIR = "cnn_jax_decoded"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the input pipeline needs to know about a dataset beyond its arrays."""

    feature: str  # TFDS feature holding the input
    num_classes: int
    flip: bool  # whether a horizontal flip keeps the label (not for digits)


DATASETS = {
    "mnist": DatasetInfo("image", 10, flip=False),
    "fashion_mnist": DatasetInfo("image", 10, flip=True),
    "cifar10": DatasetInfo("image", 10, flip=True),
    "cifar100": DatasetInfo("image", 100, flip=True),
    "svhn_cropped": DatasetInfo("image", 10, flip=False),
    "mnist1d": DatasetInfo("signal", 10, flip=False),
    "long_range_xor": DatasetInfo("signal", 2, flip=False),
}
# Builders this project defines (generated offline); importing the module registers the builder with TFDS.
CUSTOM_BUILDERS = {"mnist1d": "cnn_jax.data.mnist1d_builder", "long_range_xor": "cnn_jax.data.long_range_builder"}


class DatasetUnavailableError(FileNotFoundError):
    """The dataset is neither prepared nor obtainable from the download directory or the network."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split in host memory: inputs (N, H, W, C) uint8 images or (N, L) float32 signals, labels (N,) int32."""

    inputs: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def example_shape(self) -> tuple[int, ...]:
        return self.inputs.shape[1:]

    @property
    def dtype(self) -> np.dtype:
        return self.inputs.dtype

    def examples(self, rows: np.ndarray, epoch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The inputs and labels of `rows` (any shape), as stored: augmentation happens on the device, so
        `epoch` and `seed` are not needed here (`record_split.RecordSplit` transforms on the host)."""
        del epoch, seed
        return self.inputs[rows], self.labels[rows]


def check_name(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r}: unknown; valid datasets are {', '.join(DATASETS)}")
    return DATASETS[name]


def load_split(name: str, split: str, *, data_dir: str | None = None, download_dir: str | None = None) -> Split:
    """Prepare (once) and read a whole split of dataset `name` into host memory."""
    info = check_name(name)
    builder = _builder(name, data_dir)
    if not builder.is_prepared():
        # Concurrent runs (a sweep, several processes of one job) share the data directory: one prepares,
        # the others wait for it and then read what it wrote. The lock lives beside the data (gs:// included).
        with prepare_lock(epath.Path(builder.data_dir).parent):
            builder = _builder(name, data_dir)
            if not builder.is_prepared():
                _prepare(builder, name, download_dir or os.environ.get(DOWNLOAD_DIR_ENV) or None)
    cache = epath.Path(builder.data_dir) / DECODED_DIR / f"{split}.npz"
    if cache.exists():
        with cache.open("rb") as f, np.load(f) as arrays:
            return Split(arrays["inputs"], arrays["labels"])
    source = builder.as_data_source(split=split)
    examples = source.__getitems__(list(range(len(source))))
    split_arrays = Split(
        np.stack([e[info.feature] for e in examples]), np.asarray([e["label"] for e in examples], np.int32)
    )
    _write_decoded(cache, split_arrays)
    return split_arrays


def _write_decoded(path: epath.Path, split: Split) -> None:
    """Save the decoded arrays beside TFDS's files (atomically: concurrent runs may race), unless read-only."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            np.savez(f, inputs=split.inputs, labels=split.labels)
        tmp.rename(path)
    except OSError as err:  # a shared, read-only data directory: decode again next time
        logging.info("not caching the decoded split at %s: %s", path, err)
        if tmp.exists():
            tmp.unlink()


def _builder(name: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    if name in CUSTOM_BUILDERS:
        importlib.import_module(CUSTOM_BUILDERS[name])
    return tfds.builder(name, data_dir=data_dir, file_format="array_record")


def _prepare(builder, name: str, download_dir: str | None) -> None:
    import tensorflow_datasets as tfds

    urls = dict(builder.url_infos or {})
    config = tfds.download.DownloadConfig(try_download_gcs=False)
    if download_dir is not None and urls:
        manual_dir = Path(download_dir) / name
        missing = [info.filename for info in urls.values() if not (manual_dir / info.filename).is_file()]
        if missing:
            raise DatasetUnavailableError(
                f"dataset {name!r} is not prepared in {builder.data_dir} and its raw files are missing from "
                f"{manual_dir}: {', '.join(missing)}. Put the files TFDS downloads ({', '.join(urls)}) in "
                f"{manual_dir}, or name another directory with --config.dataset.download_dir or "
                f"${DOWNLOAD_DIR_ENV}, or unset both to download over the network."
            )
        config = tfds.download.DownloadConfig(manual_dir=str(manual_dir), try_download_gcs=False)
    elif urls:
        _check_reachable(name, builder, urls)
    source = (
        f"the raw files in {config.manual_dir}" if config.manual_dir else "the network" if urls else "its generator"
    )
    logging.info("preparing %s from %s into %s (once: later runs read it)", name, source, builder.data_dir)
    start = time.perf_counter()
    # TFDS's progress bars redraw in place on a terminal; in a log file or CI each redraw is a line of its own.
    tfds.display_progress_bar(sys.stderr.isatty())
    # TFDS names extractions of manual files by file name alone, so mnist and fashion_mnist (same names)
    # would share <data_dir>/downloads/extracted and the second would silently get the first's data.
    with tempfile.TemporaryDirectory(prefix=f"{name}-extract-") as extract_dir:
        config = dataclasses.replace(config, extract_dir=extract_dir)
        with contextlib.redirect_stdout(io.StringIO()):  # TFDS's own "Downloading and preparing ..." lines
            builder.download_and_prepare(download_config=config, file_format="array_record")
    logging.info("prepared %s in %.0f s", name, time.perf_counter() - start)


def _connect(host: str, port: int, timeout_s: float) -> None:
    """Open and close a TCP connection to host:port, resolving included, within timeout_s or raise OSError.

    create_connection's timeout bounds the connect, not the DNS lookup: getaddrinfo blocks as long as the
    resolver does. So the attempt runs in a daemon thread, abandoned if it overruns (a daemon thread, unlike
    a concurrent.futures worker, does not hold up the interpreter's exit while the lookup hangs).
    """
    outcome: list[OSError | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(err)

    thread = threading.Thread(target=attempt, daemon=True, name=f"connect {host}:{port}")
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise TimeoutError(f"no answer within {timeout_s:g} s (DNS lookup and connect)")
    if outcome[0] is not None:
        raise outcome[0]


def _check_reachable(name: str, builder, urls: dict) -> None:
    host = urllib.parse.urlparse(next(iter(urls))).hostname
    try:
        _connect(host, 443, REACHABLE_TIMEOUT_S)
    except OSError as err:
        raise DatasetUnavailableError(
            f"dataset {name!r} is not prepared in {builder.data_dir}, no download directory is set, and "
            f"{host} cannot be reached ({err}). Download {', '.join(urls)} into <dir>/{name}/ and pass "
            f"--config.dataset.download_dir=<dir> (or set ${DOWNLOAD_DIR_ENV}), or run where the network "
            f"is reachable."
        ) from None
