"""Orbax checkpoints of the train state: atomic (written to a temporary directory, then renamed), last k kept."""

from __future__ import annotations

from pathlib import Path

import orbax.checkpoint as ocp


class Checkpoints:
    """Save and restore NumPy train states under `directory`/<step>."""

    def __init__(self, directory: str | Path, keep: int):
        self._manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False),
        )

    @property
    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state) -> None:
        if step not in self._manager.all_steps():
            self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore(self, template, step: int | None = None):
        """The state saved at `step` (default: latest), with the structure and dtypes of `template`."""
        return self._manager.restore(
            self.latest_step if step is None else step, args=ocp.args.StandardRestore(template)
        )

    def close(self) -> None:
        self._manager.close()
