"""The persistent XLA compilation cache: a program compiled once is loaded, not compiled, by every later run.

Every command of the library (training, sweeps, studies, `load_classifier`, the benchmarks) calls
`enable_compile_cache()` before it compiles anything. The cache directory is

- `$CNN_JAX_CACHE_DIR` when set (an empty value turns the cache off),
- else `$XDG_CACHE_HOME/cnn_jax/xla`, else `~/.cache/cnn_jax/xla`.

Clear it with `rm -r` of that directory; nothing else refers to it. It holds one file per compiled program
(keyed by the program, the compiler's flags and versions, and the devices), about 20 KB to a few MB each.

Three things differ from JAX's own cache, each for a reason:
- Programs of every size and compile time are kept (JAX skips those that compiled in under a second),
  because a short run is made of small programs.
- Entries are written to a temporary file and renamed into place. JAX writes them in place, so a process
  that reads an entry while another is writing it, or a process killed mid-write, leaves a truncated entry
  that JAX then reports on every later run and never rewrites. Writing by rename makes the cache safe to
  share between the processes of a sweep (`--parallel`) or the hosts of a run on a shared filesystem (JAX
  writes entries from process 0 only). A put also replaces an existing entry, so one damaged by other
  means is repaired the next time its program is compiled.
- A cache directory that cannot be written (read-only, full, not a directory) turns the cache off with one
  warning line; training goes on compiling as it would without a cache.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from absl import logging

CACHE_DIR_ENV = "CNN_JAX_CACHE_DIR"
_SUFFIX = "-cache"  # JAX's name for an entry: <key>-cache

_enabled_dir: Path | None = None
_warned = False


def cache_dir() -> Path | None:
    """The cache directory the environment asks for, or None when `$CNN_JAX_CACHE_DIR` is set and empty."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit is not None:
        return Path(explicit).expanduser() if explicit else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnn_jax" / "xla"


def _warn_once(directory: Path, err: Exception) -> None:
    global _warned
    if not _warned:
        _warned = True
        logging.warning(
            "compilation cache %s is not usable (%s: %s); compiling without it. Set %s to a writable "
            "directory, or to an empty value to turn the cache off",
            directory,
            type(err).__name__,
            err,
            CACHE_DIR_ENV,
        )


def _probe(directory: Path) -> None:
    """Raise OSError unless `directory` exists (or can be made) and a file can be written into it."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-") as f:
        f.write(b"cnn_jax")
        f.flush()


def _file_cache_class():
    from jax._src.compilation_cache_interface import CacheInterface

    class AtomicFileCache(CacheInterface):
        """JAX's file cache interface, with entries written by rename (see the module docstring)."""

        def __init__(self, path: Path):
            self._path = path
            self._broken = False

        def get(self, key: str) -> bytes | None:
            try:
                return (self._path / f"{key}{_SUFFIX}").read_bytes()
            except FileNotFoundError:
                return None

        def put(self, key: str, value: bytes) -> None:
            if self._broken:
                return
            tmp = None
            try:
                fd, tmp = tempfile.mkstemp(dir=self._path, prefix=f".{key}.")
                with os.fdopen(fd, "wb") as f:
                    f.write(value)
                os.replace(tmp, self._path / f"{key}{_SUFFIX}")
            except OSError as err:  # full, read-only or removed: stop writing, keep training
                self._broken = True
                if tmp:
                    Path(tmp).unlink(missing_ok=True)
                _warn_once(self._path, err)

    return AtomicFileCache


def enable_compile_cache() -> Path | None:
    """Turn on the persistent compilation cache in `cache_dir()`; return it, or None when it is off.

    Call before the first compilation of the process; later calls return the directory already chosen.
    """
    global _enabled_dir
    if _enabled_dir is not None:
        return _enabled_dir
    directory = cache_dir()
    if directory is None:
        return None
    try:
        _probe(directory)
    except OSError as err:
        _warn_once(directory, err)
        return None

    import jax
    from jax._src import compilation_cache

    atomic = _file_cache_class()
    # JAX builds its file cache through this factory when the first program is compiled.
    compilation_cache.get_file_cache = lambda path: (atomic(Path(path)), path)
    if compilation_cache._cache is not None:  # something compiled already, with another cache: build it again
        compilation_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    _enabled_dir = directory
    return directory
