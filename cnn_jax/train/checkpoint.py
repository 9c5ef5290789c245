"""Orbax checkpoints of the train state, and when to take them.

A save is atomic (written to a temporary directory, then renamed; a save cut short or failed leaves only the
temporary directory, which the next run removes) and asynchronous: `save` hands a NumPy copy of the state
to orbax, which writes it in a background thread while training goes on. The last k are kept. A save that
fails (a full disk, a permission) raises CheckpointSaveError at the next `save` or `wait`; a checkpoint that
does not read back is moved aside by `restore_latest`, which falls back to the one before.
"""

from __future__ import annotations

import shutil
import time
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


class Checkpoints:
    """Save and restore NumPy train states under `directory`/<step>."""

    def __init__(self, directory: str | Path, keep: int):
        self._manager = ocp.CheckpointManager(
            Path(directory).absolute(),
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
