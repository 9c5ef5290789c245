"""Figures: learning curves per configuration (mean over seeds), accuracy by input shift (both as small multiples
when they hold more than MAX_CURVES curves), effective receptive fields."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cnn_jax.analysis import EffectiveReceptiveField
from cnn_jax.report.runs import Run

Label = dict[str, object]  # a curve's label: factor -> value, e.g. {"pool": "max", "data": "mnist"}
MAX_CURVES = 6  # more curves than this on one axis stop being told apart: the figure becomes small multiples


def _label(run: Run, factors: Sequence[str] | Callable[[Run], dict]) -> Label:
    return dict(factors(run)) if callable(factors) else {f.split(".")[-1]: run.config.get(f) for f in factors}


def _text(label: Label) -> str:
    return ", ".join(f"{k}={v}" for k, v in label.items()) or "run"


def panel_factors(labels: Sequence[Label], max_curves: int = MAX_CURVES) -> tuple[str, ...]:
    """The factors whose values split a figure into panels: none while the curves fit one axis, else factors
    with the fewest values first, until no panel holds more than `max_curves` curves, always leaving one
    varying factor to tell a panel's curves apart (study 1's images: backbone, then dataset, 4 curves each)."""
    keys = list(dict.fromkeys(k for label in labels for k in label))
    values = {k: dict.fromkeys(repr(label.get(k)) for label in labels) for k in keys}
    varying = sorted((k for k in keys if len(values[k]) > 1), key=lambda k: len(values[k]))  # stable: ties keep order
    split: list[str] = []

    def most_per_panel() -> int:
        panels: dict[tuple, set] = {}
        for label in labels:
            panels.setdefault(tuple(repr(label.get(k)) for k in split), set()).add(repr(sorted(label.items())))
        return max(map(len, panels.values()), default=0)

    while most_per_panel() > max_curves and len(varying) - len(split) > 1:
        split.append(varying[len(split)])
    return tuple(split)


@dataclasses.dataclass(frozen=True)
class Curve:
    """One line of a figure: its label, x values, and the mean and the min..max band over seeds at each x."""

    label: Label
    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def over_seeds(cls, label: Label, x: Sequence[float], values: Sequence[Sequence[float]]) -> Curve:
        """From each x's values over seeds (their number may differ between x: unfinished runs)."""
        values = [np.asarray(v, float) for v in values]
        return cls(label, np.asarray(x), *(np.array([f(v) for v in values]) for f in (np.mean, np.min, np.max)))


def _small_multiples(curves: Sequence[Curve], xlabel: str, ylabel: str, path: str | Path, ticks: bool = False) -> Path:
    """Draw the curves, each as its mean with a min..max band: on one axis, or, with more than MAX_CURVES, one
    panel per value of the `panel_factors` (two factors: rows x columns) with a shared x axis, a shared y axis
    where every panel fills at least half of it (`_share_y`), and one legend, a curve's colour the same in every
    panel. ticks: a tick and a marker at every x."""
    plt = _pyplot()
    split = panel_factors([c.label for c in curves])
    panel = [tuple((k, str(c.label.get(k))) for k in split) for c in curves]  # str: lists are values too
    legend = [_text({k: v for k, v in c.label.items() if k not in split}) for c in curves]
    panels, names = list(dict.fromkeys(panel)), list(dict.fromkeys(legend))
    if len(split) == 2:  # rows: the first factor's values, columns: the second's
        row_values, column_values = (list(dict.fromkeys(p[i] for p in panels)) for i in (0, 1))
        place = {p: (row_values.index(p[0]), column_values.index(p[1])) for p in panels}
        rows, columns = len(row_values), len(column_values)
    else:  # a row of up to 4 panels, then the next
        columns = min(len(panels), 4)
        place = {p: divmod(i, columns) for i, p in enumerate(panels)}
        rows = -(-len(panels) // columns)
    size = (8, 4) if len(panels) == 1 else (3.4 * columns, 2.8 * rows)
    fig, axes = plt.subplots(rows, columns, figsize=size, sharex=True, sharey=_share_y(curves, panel), squeeze=False)
    palette = plt.cm.tab10.colors if len(names) <= 10 else plt.cm.tab20.colors  # distinct before any repeat
    for ax in axes.flat:
        ax.set_axis_off()  # back on below for the panels that hold curves
    for this, cell in place.items():
        ax = axes[cell]
        ax.set_axis_on()
        for curve, where, name in zip(curves, panel, legend):
            if where == this:
                colour = palette[names.index(name) % len(palette)]
                marker = {"marker": "o", "markersize": 3} if ticks else {}
                ax.plot(curve.x, curve.mean, color=colour, label=name, **marker)
                ax.fill_between(curve.x, curve.low, curve.high, color=colour, alpha=0.2)
        ax.set_title(_text(dict(this)) if split else "", fontsize=9)
        ax.grid(alpha=0.3)
        if ticks:
            ax.set_xticks(curves[panel.index(this)].x)
    if len(panels) == 1:
        axes[0, 0].set(xlabel=xlabel, ylabel=ylabel)
    else:  # once for the grid: per panel, a long label runs into the next panel's
        fig.supxlabel(xlabel, fontsize=10)
        fig.supylabel(ylabel, fontsize=10)
    handles = {line.get_label(): line for ax in axes.flat for line in ax.get_lines()}
    fig.tight_layout()
    # one legend for every panel, beside them: never over a curve
    fig.legend(handles.values(), handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


def _share_y(curves: Sequence[Curve], panel: Sequence[tuple]) -> bool:
    """Whether the panels share one y axis: yes, unless some panel's curves would fill less than half of it (MNIST
    at 99% beside Fashion-MNIST at 91% would draw MNIST's curves as one flat line); then each panel has its own."""
    ranges: dict[tuple, tuple[float, float]] = {}
    for curve, where in zip(curves, panel):
        low, high = ranges.get(where, (np.inf, -np.inf))
        ranges[where] = (min(low, float(np.nanmin(curve.low))), max(high, float(np.nanmax(curve.high))))
    lows, highs = zip(*ranges.values())
    shared = max(highs) - min(lows)
    return all(high - low >= shared / 2 for low, high in ranges.values())


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
    """Plot `metric` against step, one line per configuration (mean over its seeds, band = min..max); with more
    than MAX_CURVES configurations, as small multiples (`panel_factors`)."""
    points: dict[str, tuple[Label, dict[int, list[float]]]] = {}
    for run in runs:
        label = _label(run, factors)
        by_step = points.setdefault(repr(label), (label, {}))[1]
        for record in run.metrics:
            if metric in record:
                by_step.setdefault(record["step"], []).append(record[metric])
    curves = [Curve.over_seeds(label, sorted(v), [v[s] for s in sorted(v)]) for label, v in points.values()]
    return _small_multiples(curves, "step", metric, path)


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
    curves: Sequence[tuple[Label, np.ndarray]],
    shifts: Sequence[int],
    path: str | Path,
    xlabel: str = "shift of the test images (pixels, to the right)",
) -> Path:
    """Test accuracy (%) against input shift: per label, an array (seeds, len(shifts)) of accuracies in [0, 1],
    drawn as its mean with a min..max band; with more than MAX_CURVES labels, as small multiples."""
    percent = [(label, 100 * np.asarray(a).reshape(-1, len(shifts))) for label, a in curves]
    curves = [Curve.over_seeds(label, shifts, a.T) for label, a in percent]
    return _small_multiples(curves, xlabel, "test accuracy (%)", path, ticks=True)
