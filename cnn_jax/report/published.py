"""Published numbers our tables put beside ours, each with the source it comes from.

A reference applies to a group of runs when every field in `match` equals the runs' config value.
Values are test accuracy in percent.
"""

from __future__ import annotations

import dataclasses

SOURCES = {
    "greydanus2024": "Greydanus & Kobak, Scaling Down Deep Learning with MNIST-1D, ICML 2024 (Table 1 and Sec. 4).",
    "lecun1998": "LeCun, Bottou, Bengio & Haffner, Gradient-Based Learning Applied to Document Recognition, "
    "Proc. IEEE 1998 (LeNet-5: 0.95% test error on MNIST).",
}


@dataclasses.dataclass(frozen=True)
class Reference:
    match: dict
    accuracy: float
    source: str


_MNIST1D = {"dataset.name": "mnist1d", "model.conv.kind": "standard"}
REFERENCES = [
    Reference(
        {**_MNIST1D, "model.name": "mlp", "model.options.hidden": (), "dataset.permute_positions": False},
        32.0,
        "greydanus2024",
    ),
    Reference(
        {**_MNIST1D, "model.name": "mlp", "model.options.hidden": (100, 100), "dataset.permute_positions": False},
        68.0,
        "greydanus2024",
    ),
    Reference({**_MNIST1D, "model.name": "cnn1d", "dataset.permute_positions": False}, 94.0, "greydanus2024"),
    Reference({**_MNIST1D, "model.name": "cnn1d", "dataset.permute_positions": True}, 56.0, "greydanus2024"),
    Reference(
        {
            "dataset.name": "mnist",
            "model.name": "lenet5_classic",
            "model.conv.kind": "standard",
            "dataset.permute_positions": False,
        },
        99.05,
        "lecun1998",
    ),
]


def find_reference(config: dict) -> Reference | None:
    """The reference whose fields all match `config` (a flattened run config), if any."""
    for ref in REFERENCES:
        if all(config.get(k) == v for k, v in ref.match.items()):
            return ref
    return None
