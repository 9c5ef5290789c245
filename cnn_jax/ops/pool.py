"""Pooling over the spatial axes of channels-last activations (N, *spatial, C).

Windows, strides and padding follow `conv` (modes, ints or (lo, hi) pairs); the
stride defaults to the window, the usual pooling convention (PyTorch, Keras).
"""
from __future__ import annotations

from collections.abc import Sequence
from math import ceil, floor, prod

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnn_jax.ops.shapes import ConvGeometry, PaddingLike, as_tuple, conv_geometry, spatial_ndim


def _pool_geometry(x_shape, window: int | Sequence[int], stride, padding) -> ConvGeometry:
    ndim = spatial_ndim(x_shape, "x")
    window = as_tuple(window, ndim, "window")
    geo = conv_geometry(x_shape[1:-1], window, window if stride is None else stride, padding)
    for axis, (k, pads) in enumerate(zip(window, geo.padding)):
        if max(pads) >= k:
            raise ValueError(f"padding={padding!r} pads spatial axis {axis} by {pads} with a window of {k}: "
                             f"some windows would hold only padding. Pad at most {k - 1} per side")
    return geo


def _reduce_window(x, init, op, geo: ConvGeometry) -> jax.Array:
    # A concrete (NumPy) initial value lets JAX recognise max/add windows, which have gradient rules.
    return lax.reduce_window(x, np.asarray(init, x.dtype), op, (1, *geo.kernel, 1), (1, *geo.stride, 1),
                             ((0, 0), *geo.padding, (0, 0)))


def max_pool(x: jax.Array, window: int | Sequence[int], stride: int | Sequence[int] | None = None,
             padding: PaddingLike = "VALID") -> jax.Array:
    """Maximum over each window; padded positions are -inf, so they never win."""
    geo = _pool_geometry(x.shape, window, stride, padding)
    return _reduce_window(x, -jnp.inf, lax.max, geo)


def avg_pool(x: jax.Array, window: int | Sequence[int], stride: int | Sequence[int] | None = None,
             padding: PaddingLike = "VALID", count_include_pad: bool = True) -> jax.Array:
    """Mean over each window. With count_include_pad=False, windows that overlap the padding
    divide by the number of real inputs they hold (PyTorch's count_include_pad=False)."""
    geo = _pool_geometry(x.shape, window, stride, padding)
    total = _reduce_window(x, 0, lax.add, geo)
    if count_include_pad:
        return total / prod(geo.kernel)
    count = _reduce_window(jnp.ones((1, *x.shape[1:-1], 1), x.dtype), 0, lax.add, geo)
    return total / count


def lp_pool(x: jax.Array, window: int | Sequence[int], stride: int | Sequence[int] | None = None,
            padding: PaddingLike = "VALID", p: float = 2.0) -> jax.Array:
    """(sum over the window of |x|^p)^(1/p). p=2 is L2 pooling (Sermanet et al. 2012); large p tends
    to max pooling of |x|. The gradient is 0, not NaN, for an all-zero window."""
    if not p > 0:
        raise ValueError(f"p={p!r}: the exponent of Lp pooling must be > 0")
    geo = _pool_geometry(x.shape, window, stride, padding)
    total = _reduce_window(jnp.abs(x) ** p, 0, lax.add, geo)
    positive = total > 0
    return jnp.where(positive, jnp.where(positive, total, 1) ** (1 / p), 0)


def global_avg_pool(x: jax.Array, keepdims: bool = False) -> jax.Array:
    """Mean over all spatial axes: (N, *spatial, C) -> (N, C)."""
    spatial_ndim(x.shape, "x")
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)), keepdims=keepdims)


def global_max_pool(x: jax.Array, keepdims: bool = False) -> jax.Array:
    """Maximum over all spatial axes: (N, *spatial, C) -> (N, C)."""
    spatial_ndim(x.shape, "x")
    return jnp.max(x, axis=tuple(range(1, x.ndim - 1)), keepdims=keepdims)


def _adaptive_pool(x: jax.Array, output_size: int | Sequence[int], reduce) -> jax.Array:
    ndim = spatial_ndim(x.shape, "x")
    output_size = as_tuple(output_size, ndim, "output_size")
    for axis, (n, m) in enumerate(zip(x.shape[1:-1], output_size)):
        if m > n:
            raise ValueError(f"output_size={output_size} is larger than the input's spatial size "
                             f"{tuple(x.shape[1:-1])} along spatial axis {axis} ({m} > {n}); use output_size <= {n}")
    # The regions are a product of per-axis intervals, so max and mean reduce one axis at a time.
    for axis, (n, m) in enumerate(zip(x.shape[1:-1], output_size), start=1):
        if n % m == 0:
            x = reduce(x.reshape(*x.shape[:axis], m, n // m, *x.shape[axis + 1:]), axis=axis + 1)
        else:  # cell i reads [floor(i*n/m), ceil((i+1)*n/m)), as PyTorch's adaptive pooling
            cells = [reduce(lax.slice_in_dim(x, floor(i * n / m), ceil((i + 1) * n / m), axis=axis),
                            axis=axis, keepdims=True) for i in range(m)]
            x = jnp.concatenate(cells, axis=axis)
    return x


def adaptive_avg_pool(x: jax.Array, output_size: int | Sequence[int]) -> jax.Array:
    """Average pooling to a fixed spatial size for any input size: (N, *spatial, C) -> (N, *output_size, C)."""
    return _adaptive_pool(x, output_size, jnp.mean)


def adaptive_max_pool(x: jax.Array, output_size: int | Sequence[int]) -> jax.Array:
    """Max pooling to a fixed spatial size for any input size: (N, *spatial, C) -> (N, *output_size, C)."""
    return _adaptive_pool(x, output_size, jnp.max)
