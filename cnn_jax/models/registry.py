"""Models by name: `create(name, num_classes=..., conv=ConvSpec(...), **options)`."""
from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

from cnn_jax.nn import ConvSpec

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}


def register(name: str, **defaults) -> Callable:
    """Register a Module class (or factory) under `name`, with default options."""
    def wrap(factory):
        if name in _FACTORIES:
            raise ValueError(f"model name {name!r} is registered twice")
        _FACTORIES[name] = lambda **options: factory(**{**defaults, **options})
        return factory
    return wrap


def names() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_FACTORIES)


def create(name: str, *, num_classes: int, conv: ConvSpec | None = None, **options) -> nn.Module:
    """Build model `name` with `num_classes` outputs and the convolution variant `conv`."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; valid names are {', '.join(names())}")
    if not (isinstance(num_classes, int) and num_classes > 0):
        raise ValueError(f"num_classes={num_classes!r} must be a positive int")
    return _FACTORIES[name](num_classes=num_classes, conv=conv or ConvSpec(), **options)
