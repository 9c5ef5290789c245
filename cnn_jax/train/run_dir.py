"""One run's directory: its config, metrics, checkpoints and final record, the same whether the run trained
alone or in a run batch.

    workdir/config.json     the run's config, written when it starts
    workdir/provenance.json the code (git commit, dirty state), package versions, devices, host and command
                            of the run (`cnn_jax/provenance.py`), written when it starts; a resume keeps it
                            and appends what changed, finishing adds the end time
    workdir/metrics.jsonl   one JSON object per logged step and per evaluation (process 0)
    workdir/tensorboard/    the same scalars as TensorBoard events (process 0)
    workdir/checkpoints/    orbax checkpoints, the last `train.keep_checkpoints`
    workdir/final.json      written once, when the run has finished; a finished run is never rewritten
    workdir/failed.json     the reason a run stopped with an error (a non-finite loss, a failed save); removed
                            when it resumes
    workdir/.run.lock       held while a process trains the run (`run_lock.py`): one writer at a time
    workdir/damaged_checkpoints/   checkpoints that did not read back, moved aside on resume, never deleted
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging

from cnn_jax.config_tree import flatten
from cnn_jax.provenance import collect_provenance, resumed, utc_now
from cnn_jax.train.checkpoint import Checkpoints
from cnn_jax.train.metrics import MetricWriter
from cnn_jax.train.run_lock import RunLock
from cnn_jax.train.run_values import LOCATION_FIELDS

FINAL_FILE = "final.json"
FAILED_FILE = "failed.json"
PROVENANCE_FILE = "provenance.json"
DAMAGED_DIR = "damaged_checkpoints"


def _write_json(path: Path, record: dict) -> None:
    """Write `record` whole or not at all: a run killed mid-write must still resume, and a resume reads it."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(path)


class RunDir:
    """A run directory and what the loop writes there (see the module docstring). `leader`: this process
    writes the metrics and records (process 0); every process takes part in the checkpoints."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path):
        if "://" in str(workdir):  # Path() would quietly turn gs://b/run into the local directory gs:/b/run
            raise ValueError(
                f"workdir {workdir!s} is a URL; it must be a filesystem path every process can write "
                f"(for a bucket, mount it, e.g. with gcsfuse, and pass the mount point)"
            )
        self.config, self.path = config, Path(workdir)
        self.leader = jax.process_index() == 0
        self.checkpoints: Checkpoints | None = None
        self.writer: MetricWriter | None = None
        self._lock: RunLock | None = None

    @property
    def finished(self) -> bool:
        return (self.path / FINAL_FILE).exists()

    def final(self) -> dict[str, float]:
        """A finished run's test metrics, from final.json."""
        self.check_same_config()
        return {k: v for k, v in json.loads((self.path / FINAL_FILE).read_text()).items() if k.startswith("test/")}

    def check_same_config(self) -> None:
        """Resuming with other settings would splice two different runs together: refuse."""
        saved_path = self.path / "config.json"
        if not saved_path.exists():
            return
        saved = flatten(json.loads(saved_path.read_text()))
        current = flatten(json.loads(self.config.to_json()))
        changed = [
            f"{k}: {saved.get(k)!r} -> {current.get(k)!r}"
            for k in sorted(set(saved) | set(current))
            if k not in LOCATION_FIELDS and saved.get(k) != current.get(k)
        ]
        if changed:
            raise ValueError(
                f"{self.path} holds checkpoints of a run with another config ({'; '.join(changed)}); "
                f"rerun with the same settings to resume, or use a new --workdir"
            )

    def lock(self) -> None:
        """Take the run's lock for this process's life of the run (process 0 takes it for all); raises
        RunLockedError if another live process holds it."""
        if self.leader:
            self._lock = RunLock(self.path)
            self._lock.acquire()

    def resume(self, fresh_state):
        """(state, step) to train from: the newest checkpoint that restores, into `fresh_state`'s structure
        (damaged ones moved aside: `Checkpoints.restore_latest`), or (fresh_state, 0) for a new run. Raises
        ValueError if the directory holds another config's run, CheckpointsDamagedError if none restores."""
        self.checkpoints = Checkpoints(self.path / "checkpoints", self.config.train.keep_checkpoints)
        if not self.checkpoints.all_steps():
            return fresh_state, 0
        self.check_same_config()
        state, step = self.checkpoints.restore_latest(fresh_state, self.path / DAMAGED_DIR)
        if step:
            logging.info("resuming from step %d in %s", step, self.path)
        return state, step

    def begin(self, start: int, devices: Sequence[jax.Device] | None = None) -> None:
        """Begin (or resume) writing at step `start` on `devices` (default: all): drop metrics past it, write
        config.json and provenance.json."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.writer = MetricWriter(self.path, enabled=self.leader)
        self.writer.truncate_after(start)
        if self.leader:
            (self.path / FAILED_FILE).unlink(missing_ok=True)
            (self.path / "config.json").write_text(self.config.to_json(indent=2))
            self._record_provenance(start, devices)

    def _record_provenance(self, start: int, devices: Sequence[jax.Device] | None) -> None:
        """A run from step 0 gets a new record (nothing of an earlier attempt is kept); a resume keeps the
        record and appends what changed, with a warning, but does not refuse: the code may differ in what
        changes no number. A resume of a run begun before runs recorded provenance starts a record at its
        `start_step`."""
        path, current = self.path / PROVENANCE_FILE, collect_provenance(devices, start)
        record = current
        if start and path.exists():
            record, changed = resumed(json.loads(path.read_text()), current, start)
            if changed:
                logging.warning(
                    "%s resumes at step %d with other code, versions or devices than it ran with (%s); "
                    "%s records the change",
                    self.path,
                    start,
                    "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items()),
                    PROVENANCE_FILE,
                )
        _write_json(path, record)

    def save(self, step: int, state) -> None:
        self.checkpoints.save(step, state)

    def record_failure(self, step: int, message: str) -> None:
        """Mark the run as stopped by an error; its checkpoints stay as they are (the last is the last good)."""
        if self.leader:
            try:
                (self.path / FAILED_FILE).write_text(json.dumps({"step": step, "error": message}) + "\n")
            except OSError as err:  # a full disk: the message still reaches the log and the command's output
                logging.warning("could not write %s (%s)", self.path / FAILED_FILE, err)

    def finish(self, record: dict) -> None:
        """Add the end time to provenance.json and write final.json, once the last checkpoint is on disk."""
        self.checkpoints.wait()
        if self.leader:
            provenance = self.path / PROVENANCE_FILE
            _write_json(provenance, {**json.loads(provenance.read_text()), "end": utc_now()})
            record = {k: (float(v) if isinstance(v, np.floating) else v) for k, v in record.items()}
            (self.path / FINAL_FILE).write_text(json.dumps(record) + "\n")

    def close(self) -> None:
        """Finish the saves in flight, close the files, release the lock."""
        try:
            if self.writer is not None:
                self.writer.close()
            if self.checkpoints is not None:
                self.checkpoints.close()
        except Exception as err:  # a save that failed was reported when it was found; never mask that here
            logging.warning("closing %s: %s", self.path, err)
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None
