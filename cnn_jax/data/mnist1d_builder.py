"""MNIST-1D (Greydanus & Kobak, ICML 2024) as a TFDS builder that generates the data offline.

The `mnist1d` package draws the dataset from templates it ships: `make_dataset(get_dataset_args())`
gives the canonical 4000 train / 1000 test signals of length 40 (its seed 42). Its download path
is never used, so preparing this builder needs no network.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

SIGNAL_LENGTH = 40


class Mnist1d(tfds.core.GeneratorBasedBuilder):
    """TFDS name "mnist1d": features {"signal": float32[40], "label": 0..9}."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "The canonical split of mnist1d.data.get_dataset_args(), in its order."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="MNIST-1D: ten 1-D digit templates, padded, translated, sheared, scaled and noised.",
            features=tfds.features.FeaturesDict(
                {
                    "signal": tfds.features.Tensor(shape=(SIGNAL_LENGTH,), dtype=np.float32),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("signal", "label"),
            disable_shuffling=True,  # keep mnist1d's own example order
            homepage="https://github.com/greydanus/mnist1d",
            citation="Greydanus & Kobak, Scaling Down Deep Learning with MNIST-1D, ICML 2024.",
        )

    def _split_generators(self, dl_manager):
        from mnist1d.data import get_dataset_args, make_dataset

        data = make_dataset(get_dataset_args())
        return {
            "train": self._generate_examples(data["x"], data["y"]),
            "test": self._generate_examples(data["x_test"], data["y_test"]),
        }

    def _generate_examples(self, signals: np.ndarray, labels: np.ndarray):
        for i, (signal, label) in enumerate(zip(signals, labels)):
            yield i, {"signal": signal.astype(np.float32), "label": int(label)}
