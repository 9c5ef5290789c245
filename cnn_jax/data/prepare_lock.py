"""The lock that lets one of many concurrent runs prepare a dataset while the others wait for it.

It lives beside the data (`<data_dir>/<dataset>/.prepare.lock`), so it is shared by whoever shares the data:
- local or network filesystem paths: an fcntl lock, released by the kernel if its holder dies;
- URLs (`gs://`, `s3://`: objects without fcntl or exclusive create, through etils.epath): a lock file that
  holds its owner's token and heartbeat. A waiter takes the lock when the file is absent, writes its token,
  and owns it if the token is still there after a settling pause (the last writer wins, and object stores
  read back the last completed write). A lock whose content has not changed for `stale_s` by the waiter's
  own clock belongs to a dead process and is removed. Unlike fcntl this is best effort: a write that lands
  more than `settle_s` after a concurrent one was read back lets both writers win, and both then prepare,
  each into its own temporary directory that TFDS renames into place at the end.
Either way the lock file is removed on release, so a failed preparation leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from absl import logging
from etils import epath

LOCK_NAME = ".prepare.lock"


def is_local(path: str | os.PathLike) -> bool:
    """Whether `path` is on a filesystem with POSIX locks (a plain path), not an object-store URL."""
    return "://" not in os.fspath(path)


@contextlib.contextmanager
def prepare_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock `<directory>/.prepare.lock`. On exit the file goes, and so does a local
    `directory` left empty (a dataset that could not be prepared)."""
    if is_local(directory):
        with _fcntl_lock(Path(directory) / LOCK_NAME):
            yield
    else:
        with object_lock(epath.Path(directory) / LOCK_NAME):
            yield


def _remove_empty_dir(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:  # not empty (the prepared data, another dataset version), or already gone
        pass


@contextlib.contextmanager
def _fcntl_lock(path: Path) -> Iterator[None]:
    fd = _lock_file(path)
    try:
        yield
    finally:
        # Unlinking while still locked: a waiter that then gets the lock on the unlinked file sees that the
        # path no longer names it, and starts over (_lock_file).
        path.unlink(missing_ok=True)
        _remove_empty_dir(path.parent)
        os.close(fd)


def _lock_file(path: Path) -> int:
    """A descriptor of `path`, flock'ed, that `path` still names once locked."""
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # the previous holder removed the directory between mkdir and open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.info("waiting for %s: another process is preparing this dataset", path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            held, named = os.fstat(fd), os.stat(path)
            if (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _read(path: epath.Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def object_lock(
    path: epath.Path, *, poll_s: float = 2.0, settle_s: float = 2.0, beat_s: float = 20.0, stale_s: float = 120.0
) -> Iterator[None]:
    """The lock-file protocol of the module docstring on `path` (any epath.Path). `beat_s` must be well below
    `stale_s`: the holder rewrites its heartbeat that often, and waiters wait `stale_s` for a change."""
    if not beat_s < stale_s:
        raise ValueError(f"beat_s={beat_s} must be less than stale_s={stale_s}: a live holder would look dead")
    token = f"{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex}"
    _acquire(path, token, poll_s, settle_s, stale_s)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, token, beat_s, stop), daemon=True, name=f"heartbeat {path}")
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        if (_read(path) or "").startswith(token):  # never remove a lock a waiter took over as stale
            path.unlink(missing_ok=True)


def _acquire(path: epath.Path, token: str, poll_s: float, settle_s: float, stale_s: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # object stores have no directories to remove afterwards
    seen, since = None, time.monotonic()
    while True:
        content = _read(path)
        if content is None:
            path.write_text(token)
            time.sleep(settle_s)  # let a concurrent writer's write land; the last one wins
            if (_read(path) or "").startswith(token):
                return
        elif content != seen:
            if seen is None:
                logging.info("waiting for %s: %s is preparing this dataset", path, content)
            seen, since = content, time.monotonic()
        elif time.monotonic() - since > stale_s:
            path.unlink(missing_ok=True)  # its holder stopped beating: died without releasing
            seen = None
            continue
        time.sleep(poll_s)


def _heartbeat(path: epath.Path, token: str, beat_s: float, stop: threading.Event) -> None:
    beats = 0
    while not stop.wait(beat_s):
        beats += 1
        try:
            path.write_text(f"{token} beat {beats}")
        except Exception as err:  # tf.io.gfile raises its own error types; a missed beat is not fatal
            logging.warning("could not refresh %s (%s); waiters take a lock silent for long as stale", path, err)
