"""Measurements on a model's last spatial feature map: effective receptive field (Luo et al. 2016)
and translation equivariance / invariance."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_jax import nn as cnn
from cnn_jax.analysis.receptive_field import model_receptive_field

_POOLS_TO_VECTOR = (cnn.GlobalAvgPool, cnn.GlobalMaxPool)


def last_spatial_map(model: nn.Module, variables, x: jax.Array) -> jax.Array:
    """The model's last spatial feature map for x: the input of its global pooling if it has one,
    else the last output of one of its layers that keeps the input's spatial layout."""
    spatial_rank = x.ndim
    captured = []

    def capture(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and isinstance(out, jax.Array):
            if isinstance(context.module, _POOLS_TO_VECTOR):
                captured.append(("pooled", args[0]))
            elif out.ndim == spatial_rank:
                captured.append(("map", out))
        return out

    with nn.intercept_methods(capture):
        model.apply(variables, x)
    pooled = [m for kind, m in captured if kind == "pooled"]
    maps = [m for kind, m in captured if kind == "map"]
    if not pooled and not maps:
        raise ValueError(f"{type(model).__name__} has no layer with a spatial output")
    return pooled[0] if pooled else maps[-1]


@dataclasses.dataclass(frozen=True)
class EffectiveReceptiveField:
    """grad_map: mean |d centre unit / d input| over samples, summed over channels, (*spatial)."""

    grad_map: np.ndarray
    centre: tuple[float, ...]  # input coordinates of the theoretical field's centre
    radius95: int  # smallest Chebyshev radius around the centre holding 95% of the gradient mass
    std: tuple[float, ...]  # gradient-weighted standard deviation per axis, in pixels
    field: tuple[int, ...]  # theoretical receptive field size per axis
    holes: float  # fraction of the theoretical field (inside the input) with exactly zero gradient: gridding


def effective_receptive_field(
    model: nn.Module, input_shape: Sequence[int], *, samples: int = 16, inits: int = 4, seed: int = 0
) -> EffectiveReceptiveField:
    """Luo et al. 2016: the gradient of the centre unit of the last spatial map with respect to the
    input, |.| averaged over `samples` random inputs for each of `inits` random initialisations."""
    key = jax.random.PRNGKey(seed)
    total = np.zeros(input_shape[:-1])
    for init_key in jax.random.split(key, inits):
        k_params, k_data = jax.random.split(init_key)
        x = jax.random.normal(k_data, (samples, *input_shape))
        variables = model.init(k_params, x[:1])

        def centre_unit(x):
            y = last_spatial_map(model, variables, x)
            return y[(slice(None), *(n // 2 for n in y.shape[1:-1]))].sum()

        grad = jax.grad(centre_unit)(x)
        total += np.asarray(jnp.abs(grad).sum(axis=-1).mean(axis=0))
    grad_map = total / inits
    field = model_receptive_field(model, input_shape)
    y_shape = jax.eval_shape(lambda: last_spatial_map(model, variables, x[:1])).shape
    centre = tuple((n // 2) * f.stride - f.padding + (f.size - 1) / 2 for n, f in zip(y_shape[1:-1], field))
    sizes = tuple(f.size for f in field)
    return EffectiveReceptiveField(
        grad_map,
        centre,
        _radius(grad_map, centre, 0.95),
        _std(grad_map, centre),
        sizes,
        _holes(grad_map, centre, sizes),
    )


def _holes(grad_map: np.ndarray, centre, sizes) -> float:
    """Positions a unit cannot see at all (no path) get a gradient of exactly zero, whatever the weights."""
    box = tuple(
        slice(max(0, int(np.ceil(c - (n - 1) / 2))), min(m, int(np.floor(c + (n - 1) / 2)) + 1))
        for c, n, m in zip(centre, sizes, grad_map.shape)
    )
    return float(np.mean(grad_map[box] == 0))


def _radius(grad_map: np.ndarray, centre, fraction: float) -> int:
    grids = np.meshgrid(*(np.arange(n) - c for n, c in zip(grad_map.shape, centre)), indexing="ij")
    distance = np.max(np.abs(np.stack(grids)), axis=0)
    mass = grad_map.sum()
    for radius in range(max(grad_map.shape) + 1):
        if grad_map[distance <= radius + 0.5].sum() >= fraction * mass:
            return radius
    return max(grad_map.shape)


def _std(grad_map: np.ndarray, centre) -> tuple[float, ...]:
    weights = grad_map / grad_map.sum()
    stds = []
    for axis, c in enumerate(centre):
        coords = np.arange(grad_map.shape[axis]) - c
        marginal = weights.sum(axis=tuple(a for a in range(grad_map.ndim) if a != axis))
        stds.append(float(np.sqrt((marginal * coords**2).sum())))
    return tuple(stds)


@dataclasses.dataclass(frozen=True)
class ShiftResponse:
    shift: int
    feature_error: float  # ||F(shift x) - shift F(x)|| / ||F(x)|| away from the borders
    prediction_change: float  # fraction of examples whose predicted class changes


def translation_response(
    model: nn.Module, variables, x: jax.Array, shifts: Sequence[int], axis: int = 1
) -> list[ShiftResponse]:
    """How features and predictions change when the input is shifted by s pixels along `axis`.

    Features are equivariant to a shift s when F(shift_s x) = shift_{s/S} F(x), S the model's
    effective stride: standard convolution is, for s a multiple of S; tiled convolution only for
    multiples of its tile times S; locally connected layers for no s. Shifts are circular and the
    comparison skips a border as wide as the receptive field, where zero padding differs.
    """
    field = model_receptive_field(model, x.shape[1:])[axis - 1]
    base_features = last_spatial_map(model, variables, x)
    base_pred = jnp.argmax(model.apply(variables, x), axis=-1)
    results = []
    for s in shifts:
        # Feature positions near either border see zero padding or wrapped-around input.
        margin = -(-field.size // field.stride) + abs(s) // field.stride
        if base_features.shape[axis] <= 2 * margin:
            raise ValueError(
                f"the feature map ({base_features.shape[axis]} along axis {axis}) has no interior "
                f"beyond a border of {margin} for shift {s}: use a larger input"
            )
        shifted = jnp.roll(x, s, axis=axis)
        features = last_spatial_map(model, variables, shifted)
        expected = jnp.roll(base_features, s // field.stride, axis=axis) if s % field.stride == 0 else None
        if expected is None:
            error = float("nan")  # a shift that is not a multiple of the stride has no feature-map counterpart
        else:
            inner = [slice(None)] * features.ndim
            inner[axis] = slice(margin, features.shape[axis] - margin)
            diff = features[tuple(inner)] - expected[tuple(inner)]
            error = float(jnp.linalg.norm(diff) / (jnp.linalg.norm(base_features[tuple(inner)]) + 1e-12))
        change = float(jnp.mean(jnp.argmax(model.apply(variables, shifted), axis=-1) != base_pred))
        results.append(ShiftResponse(s, error, change))
    return results
