"""Long-range XOR: a synthetic 1-D task that a network can solve only if one unit sees two far-apart
inputs at once. Generated offline from a fixed seed, as a TFDS builder.

Each signal has length 64: Gaussian noise (std 0.2) plus two markers, each a single sample of +1 or -1,
at positions p and p + D with the distance D drawn uniformly from 12..28. The label is 1 when the two
markers have different signs (XOR), else 0. Classes are balanced; chance is 50%.

Why it measures context: a network whose logits are a spatial mean of per-position features (global
average pooling) can only compute the XOR where some unit's receptive field covers both markers: if no
unit sees both, the pooled features are a sum f(m1) + f(m2), and XOR is not linearly separable in such a
sum (the "different signs" class sits at the midpoint of the two "same sign" points). So a stack whose
receptive field spans fewer than D + 1 samples, or sees only every second offset (gridding), is at chance
on the examples it cannot reach: with kernels of 3, dilations (1,1,1,1) (field 9) are at chance on all,
(2,2,2,2) (field 17, even offsets only) reach only D in {12, 14, 16}, and (1,2,4,8) (31) and (1,2,5,9) (35)
reach every D.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

LENGTH = 64
DISTANCES = (12, 28)  # inclusive range of the distance between the markers
NOISE = 0.2
SIZES = {"train": 10_000, "test": 2_000}
SEEDS = {"train": 0, "test": 1}


def generate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n signals (n, LENGTH) float32 and labels (n,) int64 from `seed`."""
    rng = np.random.default_rng(seed)
    signals = (NOISE * rng.standard_normal((n, LENGTH))).astype(np.float32)
    distance = rng.integers(DISTANCES[0], DISTANCES[1] + 1, n)
    first = rng.integers(0, LENGTH - distance)
    signs = rng.choice([-1.0, 1.0], (n, 2))
    rows = np.arange(n)
    signals[rows, first] = signs[:, 0]
    signals[rows, first + distance] = signs[:, 1]
    return signals, (signs[:, 0] != signs[:, 1]).astype(np.int64)


class LongRangeXor(tfds.core.GeneratorBasedBuilder):
    """TFDS name "long_range_xor": features {"signal": float32[64], "label": 0..1}."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "10,000 train (seed 0) / 2,000 test (seed 1) signals."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "signal": tfds.features.Tensor(shape=(LENGTH,), dtype=np.float32),
                    "label": tfds.features.ClassLabel(num_classes=2),
                }
            ),
            supervised_keys=("signal", "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(*generate(SIZES[split], SEEDS[split])) for split in SIZES}

    def _generate_examples(self, signals: np.ndarray, labels: np.ndarray):
        for i, (signal, label) in enumerate(zip(signals, labels)):
            yield i, {"signal": signal, "label": int(label)}
