"""Orbax checkpoints of the train state, and when to take them.

A save is atomic (written to a temporary directory, then renamed; a save cut short or failed leaves only the
temporary directory, which the next run removes) and asynchronous: `save` hands a NumPy copy of the state
to orbax, which writes it in a background thread while training goes on. The last k are kept. A save that
fails (a full disk, a permission) raises CheckpointSaveError at the next `save` or `wait`; a checkpoint that
does not read back is moved aside by `restore_latest`, which falls back to the one before.
"""

from __future__ import annotations

import asyncio.base_events
import logging as python_logging
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import orbax.checkpoint as ocp
from absl import logging


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written; the ones before it are intact."""


class CheckpointsDamagedError(RuntimeError):
    """No checkpoint of a run reads back."""


def _reason(err: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first}"[:300]


def _is_late_result(unraisable: sys.UnraisableHookArgs) -> bool:
    """Whether `unraisable` is a tensorstore read or write that finished after its event loop was closed: asyncio's
    call_soon_threadsafe, called by tensorstore's completion callback (native code, so asyncio's frame is the
    first), found the loop closed."""
    frames = traceback.extract_tb(unraisable.exc_traceback)
    return (
        unraisable.exc_type is RuntimeError
        and str(unraisable.exc_value) == "Event loop is closed"
        and unraisable.object is None
        and bool(frames)
        and (frames[0].filename, frames[0].name) == (asyncio.base_events.__file__, "call_soon_threadsafe")
    )


# orbax runs each restore and save in an event loop of its own (`asyncio_utils.run_sync`) and gathers its
# tensorstore reads or writes there. When one fails (a truncated file, a full disk), the gather raises at once and
# orbax closes the loop with the others still in flight; `Checkpoints` reports that failure once (`restore_latest`
# warns, `save` raises CheckpointSaveError). The others would each repeat it as noise: one that finishes after the
# loop closed raises "Event loop is closed" into sys.unraisablehook, a traceback per array; one that failed too,
# just before, leaves a future whose exception nothing read, which asyncio logs whenever it is garbage collected
# (before or after the failure is reported). The two filters below drop exactly those and pass on the rest.


class _DropLateResults:
    """A sys.unraisablehook: `hook`, without the tensorstore results that came after orbax closed their loop."""

    def __init__(self, hook: Callable[[sys.UnraisableHookArgs], object]):
        self.hook = hook

    def __call__(self, unraisable: sys.UnraisableHookArgs) -> None:
        if not _is_late_result(unraisable):
            self.hook(unraisable)


class _DropUnreadSiblingErrors(python_logging.Filter):
    """On asyncio's logger: drops its "exception was never retrieved" records of errors that name a checkpoint
    directory of this process (`directories`). orbax awaits each of its reads and writes, so one whose error went
    unread was abandoned when a sibling's error was raised."""

    def __init__(self):
        super().__init__()
        self.directories: set[str] = set()

    def filter(self, record: python_logging.LogRecord) -> bool:
        error = str(record.exc_info[1]) if record.exc_info else ""
        unread = record.getMessage().split("\n", 1)[0].endswith("exception was never retrieved")
        return not (unread and any(directory in error for directory in self.directories))


_UNREAD_SIBLING_ERRORS = _DropUnreadSiblingErrors()


class Checkpoints:
    """Save and restore NumPy train states under `directory`/<step>."""

    def __init__(self, directory: str | Path, keep: int):
        directory = Path(directory).absolute()
        if not isinstance(sys.unraisablehook, _DropLateResults):
            sys.unraisablehook = _DropLateResults(sys.unraisablehook)
        python_logging.getLogger("asyncio").addFilter(_UNREAD_SIBLING_ERRORS)  # once: a logger keeps one of each
        _UNREAD_SIBLING_ERRORS.directories.add(str(directory))
        self._manager = ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=True, cleanup_tmp_directories=True
            ),
        )
        self._writing: int | None = None  # the step of the save in flight

    @property
    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state) -> None:
        """Start writing `state` (NumPy arrays, not used again by the caller) as step `step`; returns at once.
        The previous save is finished first; if it failed, or this one cannot start, raises CheckpointSaveError
        naming the step that failed."""
        self.wait()
        try:
            if step not in self._manager.all_steps():
                self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
                self._writing = step
        except Exception as err:
            raise self._save_error(step, err) from err

    def wait(self) -> None:
        """Return when every save started so far is on disk; raise CheckpointSaveError if one failed."""
        try:
            self._manager.wait_until_finished()
        except Exception as err:  # orbax re-raises a background save's error, of whatever type it had
            raise self._save_error(self._writing, err) from err
        finally:
            self._writing = None

    def _save_error(self, step: int | None, err: BaseException) -> CheckpointSaveError:
        intact = [s for s in self._manager.all_steps() if s != step]
        return CheckpointSaveError(
            f"could not write the checkpoint of step {step} in {self.directory} ({_reason(err)}). The run stopped; "
            + (f"its checkpoints of steps {', '.join(map(str, intact))} are intact. " if intact else "")
            + "Make room or fix the permissions, then rerun the same command to "
            + ("resume." if intact else "start it again.")
        )

    @property
    def directory(self) -> Path:
        return Path(self._manager.directory)

    def restore_latest(self, template, damaged_dir: Path):
        """(state, step) of the newest checkpoint that reads back, with the structure and dtypes of `template`;
        (template, 0) when there is none. A checkpoint that does not restore (missing, truncated or unreadable
        files, mismatched metadata) is moved into `damaged_dir`, never deleted, with a warning naming its step
        and the reason, and the next older one is tried. Raises CheckpointsDamagedError when none restores."""
        moved = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                return self.restore(template, step), step
            except Exception as err:  # any failure to read it back: fall back to an older one
                aside = damaged_dir / f"{step}.{time.strftime('%Y%m%d-%H%M%S')}"
                aside.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(self.directory / str(step), aside)
                self._manager.reload()
                moved.append(step)
                logging.warning(
                    "checkpoint of step %d in %s does not restore (%s); moved it to %s, trying the one before",
                    step,
                    self.directory,
                    _reason(err),
                    aside,
                )
        if moved:
            raise CheckpointsDamagedError(
                f"no checkpoint in {self.directory} restores (steps {', '.join(map(str, moved))} were moved to "
                f"{damaged_dir}); delete the run directory to train it again from the start"
            )
        return template, 0

    def restore(self, template, step: int | None = None):
        """The state saved at `step` (default: latest), with the structure and dtypes of `template`."""
        return self._manager.restore(
            self.latest_step if step is None else step, args=ocp.args.StandardRestore(template)
        )

    def close(self) -> None:
        """Finish the saves in flight, then release the manager."""
        self._manager.close()


class SaveSchedule:
    """When the loop checkpoints, besides at the end and on preemption: every `every_steps` steps when that
    is > 0, else once `every_seconds` of wall time have passed since the last save (or the start).

    Time-based saves are taken at the end of the first dispatch after the interval, so they cost at most one
    save per interval however short the epochs are; in a multi-process run the processes agree on the
    decision before saving (the loop gathers `due` from every process)."""

    def __init__(self, every_steps: int, every_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.every_steps, self._every_seconds, self._clock = every_steps, every_seconds, clock
        self._last = clock()

    def due(self, step: int) -> bool:
        if self.every_steps:
            return step % self.every_steps == 0
        return self._clock() - self._last >= self._every_seconds

    def saved(self) -> None:
        self._last = self._clock()
