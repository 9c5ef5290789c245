"""Figures: learning curves per configuration (mean over seeds), effective receptive fields."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cnn_jax.analysis import EffectiveReceptiveField
from cnn_jax.report.runs import Run


def _label(run: Run, factors: Sequence[str] | Callable[[Run], dict]) -> str:
    label = factors(run) if callable(factors) else {f.split(".")[-1]: run.config.get(f) for f in factors}
    return ", ".join(f"{k}={v}" for k, v in label.items()) or "run"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    fig.clf()
    _pyplot().close(fig)
    return path


def learning_curves(
    runs: list[Run], factors: Sequence[str] | Callable[[Run], dict], path: str | Path, metric: str = "test/accuracy"
) -> Path:
    """Plot `metric` against step, one line per configuration (mean over its seeds, band = min..max)."""
    plt = _pyplot()
    curves: dict[str, dict[int, list[float]]] = {}
    for run in runs:
        points = curves.setdefault(_label(run, factors), {})
        for record in run.metrics:
            if metric in record:
                points.setdefault(record["step"], []).append(record[metric])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # 20 distinct colours before any repeats
    for label, points in curves.items():
        steps = sorted(points)
        values = [np.asarray(points[s]) for s in steps]
        ax.plot(steps, [v.mean() for v in values], label=label)
        ax.fill_between(steps, [v.min() for v in values], [v.max() for v in values], alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the axes: never over a curve
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def erf_heatmaps(erfs: dict[str, EffectiveReceptiveField], path: str | Path, columns: int = 4) -> Path:
    """One panel per 2-D ERF (|gradient| normalised to its maximum, square-root colour scale so the
    tails show), with the theoretical field as a red box; zero-gradient holes are black."""
    plt = _pyplot()
    from matplotlib.colors import PowerNorm
    from matplotlib.patches import Rectangle

    rows = -(-len(erfs) // columns)
    fig, axes = plt.subplots(
        rows, min(columns, len(erfs)), figsize=(3 * min(columns, len(erfs)), 3.2 * rows), squeeze=False
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (title, erf) in zip(axes.flat, erfs.items()):
        ax.imshow(erf.grad_map / erf.grad_map.max(), cmap="magma", norm=PowerNorm(0.5, 0, 1))
        (cy, cx), (fy, fx) = erf.centre, erf.field
        ax.add_patch(Rectangle((cx - fx / 2, cy - fy / 2), fx, fy, fill=False, edgecolor="red", linewidth=0.8))
        ax.set_title(f"{title}\nRF {fy}, std {erf.std[0]:.1f}, holes {100 * erf.holes:.0f}%", fontsize=8)
    return _save(fig, path)


def erf_growth(
    depths: Sequence[int], stds: dict[str, Sequence[float]], fields: Sequence[int], path: str | Path
) -> Path:
    """ERF standard deviation against depth (log-log) per network, with the theoretical field size and
    a sqrt(depth) guide through the first point of the first network."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    depths = np.asarray(depths, float)
    for label, values in stds.items():
        ax.plot(depths, values, "o-", label=f"ERF std, {label}")
    first = np.asarray(next(iter(stds.values())), float)
    ax.plot(depths, first[0] * np.sqrt(depths / depths[0]), "k:", label=r"$\propto\sqrt{depth}$")
    ax.plot(depths, fields, "k--", label="theoretical RF size")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("depth (3x3 convolutions)")
    ax.set_ylabel("pixels")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _save(fig, path)


def accuracy_by_shift(
    curves: dict[str, np.ndarray],
    shifts: Sequence[int],
    path: str | Path,
    xlabel: str = "shift of the test images (pixels, to the right)",
) -> Path:
    """Test accuracy (%) against input shift: per label, an array (seeds, len(shifts)) of accuracies in [0, 1],
    drawn as its mean with a min..max band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)
    for label, accuracies in curves.items():
        percent = 100 * np.asarray(accuracies).reshape(-1, len(shifts))
        ax.plot(shifts, percent.mean(0), marker="o", markersize=3, label=label)
        ax.fill_between(shifts, percent.min(0), percent.max(0), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(list(shifts))
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
