"""Published numbers, each with its source: the one place they are written down.

The study tables put ours beside them, the tests check the models against them, and the docs that list
them are generated from here. `REFERENCES` are test accuracies (percent) that apply to a group of runs when
every field in `match` equals the runs' config value.
"""

from __future__ import annotations

import dataclasses

SOURCES = {
    "greydanus2024": "Greydanus & Kobak, Scaling Down Deep Learning with MNIST-1D, ICML 2024 (Table 1 and Sec. 4).",
    "lecun1998": "LeCun, Bottou, Bengio & Haffner, Gradient-Based Learning Applied to Document Recognition, "
    "Proc. IEEE 1998 (LeNet-5: 0.95% test error on MNIST).",
    "torchvision": "torchvision model cards (ImageNet, 1000 classes)",
    "he2016": "He et al., Deep Residual Learning, CVPR 2016, Table 6 (printed as 0.27M and 1.7M)",
    "araujo2019": "Araujo, Norris & Sim, Computing Receptive Fields of CNNs, Distill 2019",
    "luo2016": "Luo, Li, Urtasun & Zemel, Understanding the Effective Receptive Field in Deep CNNs, NeurIPS 2016",
    "yu2016": "Yu & Koltun, Multi-Scale Context Aggregation by Dilated Convolutions, ICLR 2016 (Table 1)",
}


@dataclasses.dataclass(frozen=True)
class Reference:
    match: dict
    accuracy: float
    source: str


@dataclasses.dataclass(frozen=True)
class ParameterCount:
    """A model's published parameter count, at `num_classes` outputs on `input_shape` (HWC). `rounding` is
    half the printed rounding step (0 for an exact count); `options` are model options it needs."""

    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    count: int
    rounding: int
    source: str
    options: tuple[tuple[str, object], ...] = ()


def _imagenet(model: str, count: int, **options) -> ParameterCount:
    return ParameterCount(model, (224, 224, 3), 1000, count, 0, "torchvision", tuple(options.items()))


def _cifar(model: str, millions: float) -> ParameterCount:
    step = 10_000 if millions < 1 else 100_000  # printed to 0.01M below 1M, else to 0.1M
    return ParameterCount(model, (32, 32, 3), 10, round(millions * 1e6), step // 2, "he2016")


PARAMETER_COUNTS = {
    p.model: p
    for p in (
        _imagenet("alexnet", 61_100_840),
        _imagenet("vgg11", 132_863_336),
        _imagenet("vgg13", 133_047_848),
        _imagenet("vgg16", 138_357_544),
        _imagenet("vgg19", 143_667_240),
        _imagenet("vgg11_bn", 132_868_840),
        _imagenet("vgg13_bn", 133_053_736),
        _imagenet("vgg16_bn", 138_365_992),
        _imagenet("vgg19_bn", 143_678_248),
        _imagenet("resnet18", 11_689_512),
        _imagenet("resnet34", 21_797_672),
        _imagenet("resnet50", 25_557_032),
        _imagenet("googlenet", 6_624_904, branch5x5_kernel=3),  # torchvision's "5x5" branch has 3x3 kernels
        _cifar("resnet20", 0.27),
        _cifar("resnet32", 0.46),
        _cifar("resnet44", 0.66),
        _cifar("resnet56", 0.85),
        _cifar("resnet110", 1.7),
    )
}
"""Published parameter counts by model name."""

LENET5_TRAINABLE = 60_000
"""LeCun et al. 1998: LeNet-5's trainable parameters, output (RBF) layer excluded ("lecun1998")."""
LENET5_C3 = (1_516, 151_600)
"""LeCun et al. 1998: C3's trainable parameters and connections (its table's weights and biases, times its
10x10 outputs) ("lecun1998")."""

RECEPTIVE_FIELDS = {"alexnet": 195, "vgg16": 212, "resnet50": 427}
"""Araujo et al. 2019: the receptive field (pixels) of the last spatial map at 224x224 ("araujo2019")."""

CONTEXT_MODULE_FIELD = 67
"""Yu & Koltun 2016, Table 1: the receptive field of the basic context module ("yu2016")."""

ERF_GROWTH_EXPONENT = 0.5
"""Luo et al. 2016: the effective receptive field's size grows as depth ** 0.5 ("luo2016")."""


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
    Reference(
        {
            "dataset.name": "cifar10",
            "model.name": "resnet20",
            "model.conv.kind": "standard",
            "dataset.permute_positions": False,
        },
        91.25,  # 8.75% error
        "he2016",
    ),
]


def find_reference(config: dict) -> Reference | None:
    """The reference whose fields all match `config` (a flattened run config), if any."""
    for ref in REFERENCES:
        if all(config.get(k) == v for k, v in ref.match.items()):
            return ref
    return None
