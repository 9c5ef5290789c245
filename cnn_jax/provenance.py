"""Where a run's numbers come from: the code, the package versions, the devices and the command, recorded
when the run starts (`train/run_dir.py` keeps it in provenance.json beside config.json).

    {"commit": "119ce70...", "dirty": true, "diff_sha256": "9f2c...", "git_error": null,
     "versions": {"python": "3.12.3", "jax": "0.10.2", "jaxlib": "0.10.2", "flax": "0.12.8", ...},
     "platform": "cpu", "device_kind": "cpu", "device_count": 8, "process_count": 1,
     "host": "node-1", "command": ["/repo/experiments/train.py", "--config=..."],
     "start": "2026-12-04T10:00:00+00:00", "start_step": 0, "end": "2026-12-04T10:03:12+00:00",
     "changes": [{"time": "...", "host": "node-2", "command": [...], "step": 400,
                  "changed": {"commit": ["119ce70...", "a2c507f..."], "versions.jax": ["0.10.2", "0.11.2"]}}]}

The code is the git checkout that holds the running cnn_jax package, wherever the command runs from. Dirty
means a tracked file differs from HEAD (staged or not: `git status --porcelain --untracked-files=no`), which
is exactly what `git diff HEAD`, whose sha256 is recorded, covers; untracked files do not count (in a
research checkout they are mostly outputs; a new module counts once it is `git add`ed). Outside a git
checkout, or without git, commit, dirty and diff_sha256 are null and git_error says why. A package that is
not installed has version null. `changes` lists each resume that ran with other code, versions or devices
than the record's last state (`code_states`).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib.metadata
import platform
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import jax

from cnn_jax.config_tree import flatten

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets")
# What makes two states of a run differ (flattened as "versions.jax"); host, command and times do not.
COMPARED = ("commit", "dirty", "diff_sha256", "versions", "platform", "device_kind", "device_count", "process_count")
GIT_TIMEOUT_S = 10.0


def _git(directory: Path, *args: str) -> bytes:
    # --no-optional-locks: never take the index lock, which a git command of the user's may hold.
    command = ["git", "--no-optional-locks", "-C", str(directory), *args]
    return subprocess.run(command, capture_output=True, timeout=GIT_TIMEOUT_S, check=True).stdout


@functools.cache
def git_state(directory: Path) -> dict:
    """commit, dirty, diff_sha256 and git_error (None, or why the others are None) of the git checkout whose
    tracked files include `directory`. Asked once per process: the code a process runs is the code it
    imported."""
    try:
        # A package installed into a virtual environment inside some checkout is not that checkout's code.
        _git(directory, "ls-files", "--error-unmatch", "--", ".")
        commit = _git(directory, "rev-parse", "--verify", "HEAD").decode().strip()
        dirty = bool(_git(directory, "status", "--porcelain", "--untracked-files=no").strip())
        diff = _git(directory, "diff", "HEAD", "--no-ext-diff", "--no-color", "--binary") if dirty else None
    except FileNotFoundError:
        error = "git is not installed"
    except subprocess.TimeoutExpired:
        error = f"git did not answer within {GIT_TIMEOUT_S:g} s"
    except subprocess.CalledProcessError as err:
        lines = err.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {err.returncode}"]
        error = f"`git {' '.join(err.cmd[4:])}` in {directory} failed: {lines[0]}"
    else:
        return {
            "commit": commit,
            "dirty": dirty,
            "diff_sha256": hashlib.sha256(diff).hexdigest() if dirty else None,
            "git_error": None,
        }
    return {"commit": None, "dirty": None, "diff_sha256": None, "git_error": error}


@functools.cache
def package_versions() -> dict[str, str | None]:
    """Python's version and each of PACKAGES' installed version (None where it is not installed)."""

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), **{name: version(name) for name in PACKAGES}}


def utc_now() -> str:
    """The time as ISO 8601 in UTC, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def collect_provenance(devices: Sequence[jax.Device] | None = None, start_step: int = 0) -> dict:
    """This process's provenance record (see the module docstring) for a run on `devices` (default: all)
    starting at `start_step`; "end" is added when the run finishes."""
    devices = list(devices or jax.devices())
    return {
        **git_state(PACKAGE_DIR),
        "versions": package_versions(),
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "host": socket.gethostname(),
        "command": list(sys.argv),
        "start": utc_now(),
        "start_step": start_step,
    }


def code_states(record: dict) -> list[dict]:
    """The COMPARED fields (flattened) of each state a run went through: as it started, then after each
    change."""
    state = {k: v for k, v in flatten(record).items() if k.split(".")[0] in COMPARED}
    states = [state]
    for change in record.get("changes", []):
        state = {**state, **{key: new for key, (_, new) in change["changed"].items()}}
        states.append(state)
    return states


def resumed(record: dict, current: dict, step: int) -> tuple[dict, dict]:
    """A run's `record` resumed at `step` by a process whose own record is `current`: (the record, with a
    change appended when the code, versions or devices differ from its last state; what changed, as
    {field: [old, new]})."""
    last, now = code_states(record)[-1], code_states(current)[0]
    changed = {k: [last.get(k), now.get(k)] for k in sorted(set(last) | set(now)) if last.get(k) != now.get(k)}
    if changed:
        entry = {"time": current["start"], "host": current["host"], "command": current["command"], "step": step}
        record = {**record, "changes": [*record.get("changes", []), {**entry, "changed": changed}]}
    return record, changed
