"""A trained classifier under translation: its predictions at each shift, accuracy per shift, and the
consistency of Zhang ("Making Convolutional Networks Shift-Invariant Again", ICML 2019).

    predictions = predictions_at_shifts(classify, test.inputs, shifts=range(9))  # (9, N) classes
    robustness = shift_robustness(predictions, test.labels, range(9))
    robustness["consistency"], robustness["accuracy@shift=2"]

A shift moves every input `shift` pixels along its width (the last spatial axis), zero-filled
(`data.shift_width`), as the training engine's `dataset.eval_shifts` does; `circular=True` wraps it around
instead, which keeps every pixel and changes only where the content lies relative to the network's strides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np

from cnn_jax.data import shift_width


def predictions_at_shifts(
    classify: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    shifts: Sequence[int],
    batch_size: int = 1000,
    circular: bool = False,
) -> np.ndarray:
    """`classify`'s classes for x (N, H, W, C) images or (N, L) signals moved by each shift -> (S, N) int.

    classify: a batch of inputs (as x stores them, e.g. uint8) -> its predicted classes (batch,).
    circular: wrap each shift around instead of filling with zeros.
    """
    shifts = list(shifts)
    if not shifts:
        raise ValueError("shifts is empty: give at least one shift (0 is the unshifted input)")
    out = np.empty((len(shifts), len(x)), np.int64)
    for i, shift in enumerate(shifts):
        moved = shift_width(x, shift, circular)
        for start in range(0, len(x), batch_size):
            out[i, start : start + batch_size] = np.asarray(classify(moved[start : start + batch_size]))
    return out


def consistency(predictions: np.ndarray) -> float:
    """How often two different shifts of one input get the same class: Zhang 2019's consistency, with its
    random pair of shifts replaced by every pair, so the number has no sampling noise.

    predictions: (S, N) classes of N inputs at S >= 2 shifts. Returns the mean, over inputs and the
    S (S - 1) / 2 pairs of shifts, of whether the pair's classes agree.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim != 2 or len(predictions) < 2:
        raise ValueError(f"predictions of shape {predictions.shape}: expected (shifts >= 2, inputs)")
    pairs = list(combinations(range(len(predictions)), 2))
    return float(np.mean([np.mean(predictions[a] == predictions[b]) for a, b in pairs]))


def shift_robustness(predictions: np.ndarray, labels: np.ndarray, shifts: Sequence[int]) -> dict[str, float]:
    """{"accuracy@shift=<s>": ... for each shift, "consistency": ...} from `predictions_at_shifts`' output."""
    shifts = list(shifts)
    if len(shifts) != len(predictions):
        raise ValueError(f"{len(shifts)} shifts for predictions at {len(predictions)}")
    result = {f"accuracy@shift={s}": float(np.mean(p == labels)) for s, p in zip(shifts, predictions)}
    result["consistency"] = consistency(predictions)
    return result
