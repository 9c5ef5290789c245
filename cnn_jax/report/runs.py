"""Read a study directory: every run directory below it (one holding config.json), nothing else."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from cnn_jax.config_tree import flatten


@dataclasses.dataclass(frozen=True)
class Run:
    """One run directory: its flattened config, final.json (None while unfinished), metrics records and
    provenance.json (None for runs from before it was written)."""

    path: Path
    config: dict
    final: dict | None
    metrics: list[dict]
    provenance: dict | None = None

    def get(self, field: str):
        """A config field ("model.conv.kind") or a final value ("test/accuracy", "params")."""
        if field in self.config:
            return self.config[field]
        return (self.final or {}).get(field)


def _json_or_none(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def load_run(path: Path) -> Run:
    metrics_path = path / "metrics.jsonl"
    return Run(
        path,
        flatten(json.loads((path / "config.json").read_text())),
        _json_or_none(path / "final.json"),
        [json.loads(line) for line in metrics_path.read_text().splitlines()] if metrics_path.exists() else [],
        _json_or_none(path / "provenance.json"),
    )


def load_runs(study_dir: str | Path) -> list[Run]:
    """All runs under `study_dir`, sorted by path."""
    return [load_run(p.parent) for p in sorted(Path(study_dir).rglob("config.json"))]


def varying_fields(runs: list[Run], ignore: tuple[str, ...] = ("seed",)) -> list[str]:
    """Config fields whose value differs between runs (the study's factors), in config order."""
    fields = dict.fromkeys(k for r in runs for k in r.config)
    return [f for f in fields if f not in ignore and len({repr(r.config.get(f)) for r in runs}) > 1]
