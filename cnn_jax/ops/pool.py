"""Pooling over the spatial axes of channels-last activations (N, *spatial, C).

The windowed pools (`pool`, `max_pool`, `min_pool`, `avg_pool`, `lp_pool`) also take flax.linen.pooling's
inputs: with a sequence `window`, x is (*batch, *spatial, C) with len(window) spatial axes after any number
of batch axes, none included. Windows, strides and padding follow `conv` (modes, ints or (lo, hi) pairs); the
stride defaults to the window, the usual pooling convention (PyTorch, Keras; flax
defaults to 1). Zero-style padding is the reduction's identity (-inf for max, 0 for
sums); "CIRCULAR" and "REFLECT" pad with input values, so every window is all real inputs.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from math import ceil, comb, floor, prod

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnn_jax.ops.conv import pad_with_input_values
from cnn_jax.ops.shapes import ConvGeometry, PaddingLike, array_pad_mode, as_tuple, conv_geometry, spatial_ndim

IntOrSeq = int | Sequence[int]


def _pool_geometry(x_shape, window: IntOrSeq, stride, padding) -> ConvGeometry:
    ndim = spatial_ndim(x_shape, "x")
    window = as_tuple(window, ndim, "window")
    geo = conv_geometry(x_shape[1:-1], window, window if stride is None else stride, padding)
    for axis, (k, pads) in enumerate(zip(window, geo.padding)):
        if max(pads) >= k and not array_pad_mode(padding):
            raise ValueError(
                f"padding={padding!r} pads spatial axis {axis} by {pads} with a window of {k}: "
                f"some windows would hold only padding. Pad at most {k - 1} per side"
            )
    return geo


def _spatial_axes(x_shape: Sequence[int], window: IntOrSeq) -> int:
    """Spatial axes of a pooling input: len(window) for a sequence window, after any number of batch axes
    (flax.linen.pooling's rule); for an int window, those of NWC, NHWC or NDHWC (one batch axis)."""
    if isinstance(window, int):
        return spatial_ndim(x_shape, "x")
    if len(x_shape) < len(window) + 1:
        raise ValueError(
            f"x has shape {tuple(x_shape)}, too few axes for window={tuple(window)}: expected "
            f"(*batch, {len(window)} spatial axes, C)"
        )
    return len(window)


def pool(
    x: jax.Array,
    init,
    reduce_fn: Callable[[jax.Array, jax.Array], jax.Array],
    window: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: PaddingLike = "VALID",
) -> jax.Array:
    """Fold `reduce_fn` over each window of x (*batch, *spatial, C), starting from `init` -> (*batch, *out, C).

    The generic form of the named pools: flax.linen.pooling.pool, with the stride defaulting to the
    window. Zero-style padding holds `init`; CIRCULAR and REFLECT hold input values.

    Args:
      x: (N, *spatial, C) for an int `window`; for a sequence, len(window) spatial axes after any number of
        batch axes, none included (flax's rule: (3, 3, 1) with window (2, 2) is one unbatched image).
      init: the identity of `reduce_fn` (0 for a sum, -inf for a max, 1 for a product).
      reduce_fn: an associative (T, T) -> T such as lax.add or lax.max. Only max, min and sums
        with a concrete `init` are differentiable (XLA's reduce_window has no general gradient).
    """
    batch_shape = x.shape[: x.ndim - _spatial_axes(x.shape, window) - 1]
    x = x.reshape(-1, *x.shape[len(batch_shape) :])  # the batch axes merged: the windows below have one
    geo = _pool_geometry(x.shape, window, stride, padding)
    x, geo = pad_with_input_values(x, geo, padding)
    # A concrete (NumPy) initial value lets JAX recognise max/min/add windows, which have gradient rules.
    init = init if isinstance(init, jax.Array) else np.asarray(init, x.dtype)
    y = lax.reduce_window(x, init, reduce_fn, (1, *geo.kernel, 1), (1, *geo.stride, 1), ((0, 0), *geo.padding, (0, 0)))
    return y.reshape(*batch_shape, *y.shape[1:])


def max_pool(
    x: jax.Array, window: IntOrSeq, stride: IntOrSeq | None = None, padding: PaddingLike = "VALID"
) -> jax.Array:
    """Maximum over each window; padded positions are -inf, so they never win."""
    return pool(x, -jnp.inf, lax.max, window, stride, padding)


def min_pool(
    x: jax.Array, window: IntOrSeq, stride: IntOrSeq | None = None, padding: PaddingLike = "VALID"
) -> jax.Array:
    """Minimum over each window; padded positions are +inf, so they never win."""
    return pool(x, jnp.inf, lax.min, window, stride, padding)


def avg_pool(
    x: jax.Array,
    window: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: PaddingLike = "VALID",
    count_include_pad: bool = True,
) -> jax.Array:
    """Mean over each window. With count_include_pad=False, windows that overlap the padding
    divide by the number of real inputs they hold (PyTorch's count_include_pad=False)."""
    total = pool(x, 0, lax.add, window, stride, padding)
    ndim = _spatial_axes(x.shape, window)
    if count_include_pad or array_pad_mode(padding):
        return total / prod(as_tuple(window, ndim, "window"))
    # Every example and channel has the same count: pool ones of size 1 along the batch and channel axes.
    ones = jnp.ones((*[1] * (x.ndim - ndim - 1), *x.shape[-ndim - 1 : -1], 1), x.dtype)
    return total / pool(ones, 0, lax.add, window, stride, padding)


def lp_pool(
    x: jax.Array, window: IntOrSeq, stride: IntOrSeq | None = None, padding: PaddingLike = "VALID", p: float = 2.0
) -> jax.Array:
    """(sum over the window of |x|^p)^(1/p). p=2 is L2 pooling (Sermanet et al. 2012); large p tends
    to max pooling of |x|. The gradient is 0, not NaN, for an all-zero window."""
    if not p > 0:
        raise ValueError(f"p={p!r}: the exponent of Lp pooling must be > 0")
    total = pool(jnp.abs(x) ** p, 0, lax.add, window, stride, padding)
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


def _adaptive_pool(x: jax.Array, output_size: IntOrSeq, reduce) -> jax.Array:
    ndim = spatial_ndim(x.shape, "x")
    output_size = as_tuple(output_size, ndim, "output_size")
    # The regions are a product of per-axis intervals, so max and mean reduce one axis at a time.
    for axis, (n, m) in enumerate(zip(x.shape[1:-1], output_size), start=1):
        if n % m == 0:
            x = reduce(x.reshape(*x.shape[:axis], m, n // m, *x.shape[axis + 1 :]), axis=axis + 1)
        elif m % n == 0:  # every cell reads one input, each input m/n times: a repeat
            x = jnp.repeat(x, m // n, axis=axis)
        else:  # cell i reads [floor(i*n/m), ceil((i+1)*n/m)), as PyTorch's adaptive pooling
            cells = [
                reduce(
                    lax.slice_in_dim(x, floor(i * n / m), ceil((i + 1) * n / m), axis=axis), axis=axis, keepdims=True
                )
                for i in range(m)
            ]
            x = jnp.concatenate(cells, axis=axis)
    return x


def adaptive_avg_pool(x: jax.Array, output_size: IntOrSeq) -> jax.Array:
    """Average pooling to a fixed spatial size for any input size: (N, *spatial, C) -> (N, *output_size, C).

    Output cell i of m along an axis of n reads inputs [floor(i*n/m), ceil((i+1)*n/m)), PyTorch's
    cells for every m: m > n repeats inputs (a 1x1 map pooled to 7x7 is 49 copies, as torchvision's
    VGG on 32x32 inputs relies on)."""
    return _adaptive_pool(x, output_size, jnp.mean)


def adaptive_max_pool(x: jax.Array, output_size: IntOrSeq) -> jax.Array:
    """Max pooling to a fixed spatial size for any input size, PyTorch's cells as `adaptive_avg_pool`."""
    return _adaptive_pool(x, output_size, jnp.max)


BLUR_PAD_MODES = {"REFLECT": "reflect", "CIRCULAR": "wrap", "REPLICATE": "edge", "ZEROS": "constant"}


def binomial_filter(size: int) -> np.ndarray:
    """The 1-D low-pass taps of Zhang 2019: row `size - 1` of Pascal's triangle over its sum, size 1..7:
    [1], [1, 1]/2, [1, 2, 1]/4, [1, 3, 3, 1]/8, ... (float64, shape (size,))."""
    if not (isinstance(size, int) and 1 <= size <= 7):
        raise ValueError(f"size={size!r}: the blur filter has 1 to 7 taps")
    taps = np.array([comb(size - 1, k) for k in range(size)], np.float64)
    return taps / taps.sum()


def blur_pool(x: jax.Array, size: int = 3, stride: IntOrSeq = 2, pad_mode: str = "REFLECT") -> jax.Array:
    """Anti-aliased subsampling (Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019):
    each channel of x (N, *spatial, C) low-passed by the separable binomial filter of `size` taps
    (`binomial_filter`, outer product over the spatial axes), then sampled every `stride` -> (N, *out, C),
    out = ceil(n / stride).

    Padded as the paper's BlurPool: (size - 1) // 2 before and size // 2 after each axis, with `pad_mode`
    REFLECT (the paper's default: mirrored without repeating the edge), CIRCULAR, REPLICATE or ZEROS.
    size=1 is plain subsampling x[:, ::stride]. The paper's variants compose it: MaxBlurPool is
    max_pool(x, 2, stride=1) then blur_pool; a blurred strided convolution is a stride-1 convolution
    (and its nonlinearity) then blur_pool.
    """
    ndim = spatial_ndim(x.shape, "x")
    stride = as_tuple(stride, ndim, "stride")
    taps = binomial_filter(size)
    if pad_mode not in BLUR_PAD_MODES:
        raise ValueError(f"pad_mode={pad_mode!r}: unknown; valid modes are {', '.join(BLUR_PAD_MODES)}")
    lo, hi = (size - 1) // 2, size // 2
    for axis, n in enumerate(x.shape[1:-1]):
        if pad_mode == "REFLECT" and hi >= n:
            raise ValueError(
                f"blur_pool: spatial axis {axis} has {n} positions; REFLECT padding by {hi} needs more than {hi}"
            )
    x = jnp.pad(x, [(0, 0), *[(lo, hi)] * ndim, (0, 0)], mode=BLUR_PAD_MODES[pad_mode])
    # The filter is separable: per axis, a weighted sum of `size` strided slices, elementwise work. As one
    # depthwise convolution the same blur ran 30-44x slower on XLA:CPU (docs/performance.md).
    for axis, s in enumerate(stride, start=1):
        out = -(-(x.shape[axis] - size + 1) // s)
        taps_along = [lax.slice_in_dim(x, t, t + s * (out - 1) + 1, s, axis) * w for t, w in enumerate(taps)]
        x = functools.reduce(operator.add, taps_along).astype(x.dtype)
    return x
