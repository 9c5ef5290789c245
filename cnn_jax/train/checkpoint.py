"""Orbax checkpoints of the train state, and when to take them.

A save is atomic (written to a temporary directory, then renamed; a save cut short leaves only the
temporary directory, which the next run removes) and asynchronous: `save` hands a NumPy copy of the state
to orbax, which writes it in a background thread while training goes on. The last k are kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orbax.checkpoint as ocp


class Checkpoints:
    """Save and restore NumPy train states under `directory`/<step>."""

    def __init__(self, directory: str | Path, keep: int):
        self._manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=True, cleanup_tmp_directories=True
            ),
        )

    @property
    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state) -> None:
        """Start writing `state` (NumPy arrays, not used again by the caller) as step `step`; returns at once.
        A save still being written when the next one starts is finished first."""
        if step not in self._manager.all_steps():
            self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def wait(self) -> None:
        """Return when every save started so far is on disk."""
        self._manager.wait_until_finished()

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
