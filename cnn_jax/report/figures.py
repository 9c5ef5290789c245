"""Figures from run directories: learning curves per configuration (mean over seeds)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cnn_jax.report.runs import Run


def _label(run: Run, factors: Sequence[str] | Callable[[Run], dict]) -> str:
    label = factors(run) if callable(factors) else {f.split(".")[-1]: run.config.get(f) for f in factors}
    return ", ".join(f"{k}={v}" for k, v in label.items()) or "run"


def learning_curves(runs: list[Run], factors: Sequence[str] | Callable[[Run], dict], path: str | Path,
                    metric: str = "test/accuracy") -> Path:
    """Plot `metric` against step, one line per configuration (mean over its seeds, band = min..max)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curves: dict[str, dict[int, list[float]]] = {}
    for run in runs:
        points = curves.setdefault(_label(run, factors), {})
        for record in run.metrics:
            if metric in record:
                points.setdefault(record["step"], []).append(record[metric])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # 20 distinct colours before any repeats
    for label, points in curves.items():
        steps = sorted(points)
        values = [np.asarray(points[s]) for s in steps]
        ax.plot(steps, [v.mean() for v in values], label=label)
        ax.fill_between(steps, [v.min() for v in values], [v.max() for v in values], alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
