"""Models by name: `create(name, num_classes=..., conv=ConvSpec(...), norm=..., dtype=..., **options)`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn

from cnn_jax.models.layers import Layers, Norm
from cnn_jax.nn import ConvSpec

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}
_NORM_DEFAULTS: dict[str, str | None] = {}
_NORM_EPSILONS: dict[str, float] = {}


def register(name: str, *, norm: str | None = None, norm_epsilon: float = Norm.epsilon, **defaults) -> Callable:
    """Register a Module class (or factory) under `name`, with its default options.

    The class takes `num_classes`, `layers` (a `Layers`) and its own architecture options. `norm` is
    the default normalisation of an architecture that has normalisation layers ("none" where they are
    optional); None for one without any, which then refuses a `norm` setting rather than ignore it.
    `norm_epsilon` is the architecture's BatchNorm epsilon, where its reference differs from 1e-5
    (torchvision's GoogLeNet: 1e-3)."""

    def wrap(factory):
        if name in _FACTORIES:
            raise ValueError(f"model name {name!r} is registered twice")
        _FACTORIES[name] = lambda **options: factory(**{**defaults, **options})
        _NORM_DEFAULTS[name] = norm
        _NORM_EPSILONS[name] = norm_epsilon
        return factory

    return wrap


def names() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_FACTORIES)


def create(
    name: str,
    *,
    num_classes: int,
    conv: ConvSpec | None = None,
    norm: str | None = None,
    virtual_batch_size: int | None = None,
    norm_axis_name: str | None = None,
    dtype: Any = None,
    **options,
) -> nn.Module:
    """Build model `name` with `num_classes` outputs.

    Every model takes the same layer settings: `conv` (the convolution variant), `norm` ("batch", "lrn",
    "none"; default: the model's own, e.g. "batch" for ResNets, "none" for VGG-16 and "batch" for
    VGG-16-BN), `virtual_batch_size` (ghost BatchNorm), `norm_axis_name` (the device axis BatchNorm
    statistics average over, set by the training engine) and `dtype` (compute dtype). `options` are
    the architecture's own (e.g. `stage_sizes` for ResNets). BatchNorm's epsilon and momentum are the
    reference implementation's: epsilon 1e-5 (GoogLeNet 1e-3), momentum 0.9 in flax's convention, which
    is PyTorch's momentum=0.1.
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; valid names are {', '.join(names())}")
    if not (isinstance(num_classes, int) and num_classes > 0):
        raise ValueError(f"num_classes={num_classes!r} must be a positive int")
    default_norm = _NORM_DEFAULTS[name]
    if default_norm is None and (norm not in (None, "none") or virtual_batch_size is not None):
        raise ValueError(
            f"model {name!r} has no normalisation layers: norm={norm!r}, "
            f"virtual_batch_size={virtual_batch_size!r} would have no effect"
        )
    layers = Layers(
        conv or ConvSpec(),
        Norm(norm or default_norm or "none", norm_axis_name, virtual_batch_size, epsilon=_NORM_EPSILONS[name]),
        dtype,
    )
    return _FACTORIES[name](num_classes=num_classes, layers=layers, **options)
