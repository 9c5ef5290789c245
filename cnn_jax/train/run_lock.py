"""One writer per run directory: a run holds `<workdir>/.run.lock` for its whole life.

Two processes training the same run directory (a sweep rerun while the first still runs, a requeued job that
overlaps its predecessor) would both write its checkpoints and metrics. The lock file records its holder
(host, process id, start time), and is taken in one of two ways, as the TFDS preparation lock is
(`cnn_jax/data/prepare_lock.py`):

- where the filesystem has POSIX locks: `flock` on the file, without waiting. The kernel releases it when its
  holder dies, so a lock file whose holder is gone is simply free; its record says who held it, and the
  new holder says it takes it over.
- where it has none (some FUSE and network mounts answer flock with ENOSYS or EOPNOTSUPP): a heartbeat, with
  etils.epath. The holder rewrites its record every `beat_s`; a record from this host whose process is gone,
  or one unchanged for `stale_s` by the reader's clock, is stale and taken over.

A live holder makes `RunLock.acquire` raise RunLockedError, whose message names the directory, the holder and
since when, and what to do. In a multi-process run, process 0 holds the lock for all of its processes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

from absl import logging
from etils import epath

LOCK_NAME = ".run.lock"
_NO_FLOCK = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL)


class RunLockedError(RuntimeError):
    """Another live process holds the run directory."""


_ATTEMPTS = 5  # flock attempts 0.1 s apart before a lock counts as held


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        held, named = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def _record() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def describe(record: dict) -> str:
    """'pid 123 on host-a since 2026-12-03 10:00:00 UTC'."""
    return f"pid {record.get('pid')} on {record.get('host')} since {record.get('since')}"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text() or "null")
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _alive_here(record: dict) -> bool:
    """Whether the record's process runs on this host (False for a record from another host)."""
    if record.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True  # another user's process, or a record we cannot read: assume it lives
    return True


class RunLock:
    """The lock of one run directory (see the module docstring). `beat_s`, `stale_s`: the heartbeat protocol's
    periods, used only where the filesystem has no POSIX locks (`use_flock=False` forces it, for tests)."""

    def __init__(self, workdir: str | Path, *, use_flock: bool = True, beat_s: float = 20.0, stale_s: float = 120.0):
        self.path = Path(workdir) / LOCK_NAME
        self._use_flock, self._beat_s, self._stale_s = use_flock, beat_s, stale_s
        self._fd: int | None = None
        self._stop: threading.Event | None = None
        self._beat: threading.Thread | None = None
        self._token: dict | None = None

    def acquire(self) -> None:
        """Take the lock, or raise RunLockedError naming its live holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        previous = _read(self.path)
        if self._use_flock and self._try_flock():
            self._write(previous)
            return
        self._acquire_heartbeat(previous)

    def _try_flock(self) -> bool:
        """True once flock'ed; False where the filesystem has no flock. Raises RunLockedError if held."""
        for attempt in range(_ATTEMPTS):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held; or probed by `held_by` this instant: look again shortly
                os.close(fd)
                if attempt == _ATTEMPTS - 1:
                    raise RunLockedError(self._held_message(_read(self.path))) from None
                time.sleep(0.1)
                continue
            except OSError as err:
                os.close(fd)
                if err.errno in _NO_FLOCK:
                    return False
                raise
            if _same_file(fd, self.path):
                self._fd = fd
                return True
            os.close(fd)  # its holder unlinked it on release after we opened it: open the new one
        raise RunLockedError(self._held_message(_read(self.path)))

    def _write(self, previous: dict | None) -> None:
        if previous:
            logging.warning("%s: took over the lock of %s, which is no longer running", self.path, describe(previous))
        self._token = _record()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(self._token).encode(), 0)

    def _acquire_heartbeat(self, previous: dict | None) -> None:
        path = epath.Path(self.path)
        if previous and not self._stale(previous):
            raise RunLockedError(self._held_message(previous))
        if previous:
            logging.warning("%s: took over the stale lock of %s", self.path, describe(previous))
        self._token = {**_record(), "beat": 0}
        path.write_text(json.dumps(self._token))
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, args=(path,), daemon=True, name=f"heartbeat {path}")
        self._beat.start()

    def _stale(self, record: dict) -> bool:
        """A record from this host whose process is gone, or one that does not change for stale_s."""
        if record.get("host") == socket.gethostname():
            return not _alive_here(record)
        deadline = time.monotonic() + self._stale_s
        while time.monotonic() < deadline:
            time.sleep(min(self._beat_s, max(deadline - time.monotonic(), 0)))
            if _read(self.path) != record:
                return False
        return True

    def _heartbeat(self, path: epath.Path) -> None:
        while not self._stop.wait(self._beat_s):
            self._token["beat"] += 1
            try:
                path.write_text(json.dumps(self._token))
            except OSError as err:  # a missed beat is not fatal; a long run of them lets another process take over
                logging.warning("could not refresh %s (%s)", path, err)

    def _held_message(self, record: dict | None) -> str:
        holder = describe(record) if record else "another process"
        return (
            f"{self.path.parent} is being trained by {holder}; wait for it to finish, or stop it, then rerun "
            f"(a finished run is left as it is). If that process is gone, delete {self.path} and rerun"
        )

    def release(self) -> None:
        """Give the lock up (the lock file goes; a heartbeat holder first stops beating)."""
        if self._stop is not None:
            self._stop.set()
            self._beat.join()
            if _read(self.path) == self._token:  # never remove a lock another process took over as stale
                self.path.unlink(missing_ok=True)
            self._stop = None
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still locked: a waiter sees the file it locked unlinked
            os.close(self._fd)
            self._fd = None


def held_by(workdir: str | Path) -> str | None:
    """Who holds `workdir`'s run lock, as `describe` writes it, or None if nobody live does: a probe for sweeps,
    which writes nothing. It takes a shared lock for an instant, which an exclusive holder refuses; one
    acquiring at that instant tries again (`RunLock.acquire`)."""
    path = Path(workdir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        record = _read(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return describe(record) if record else "another process"
        except OSError:  # no flock here: the heartbeat record; one from this host whose process is gone is stale
            if record and (record.get("host") != socket.gethostname() or _alive_here(record)):
                return describe(record)
        return None
    finally:
        os.close(fd)  # also releases the probe's shared lock
