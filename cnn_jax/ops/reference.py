"""Slow NumPy implementations by the definitions: the oracles the tests check the fast ops against.

Written for reading, not speed: explicit loops over output positions, and im2col
(a convolution as one matrix product W_row @ X_col). Layouts as in cnn_jax.ops:
x (N, *spatial, C), conv kernels (*kernel, C_in/groups, C_out).
"""

from __future__ import annotations

import itertools
from math import ceil, floor

import numpy as np

from cnn_jax.ops.shapes import ConvGeometry, array_pad_mode, conv_geometry


def pad(x: np.ndarray, padding, value: float = 0.0, mode: str | None = None) -> np.ndarray:
    """Pad the spatial axes of x (N, *spatial, C) by (lo, hi) pairs: with `value`, or by np.pad's `mode`
    ("wrap": periodic, "reflect": mirrored without repeating the edge)."""
    pads = [(0, 0), *padding, (0, 0)]
    return np.pad(x, pads, mode=mode) if mode else np.pad(x, pads, constant_values=value)


def dilate(x: np.ndarray, input_dilation) -> np.ndarray:
    """x (N, *spatial, C) with input_dilation - 1 zeros between neighbours along each spatial axis."""
    ndim = x.ndim - 2
    input_dilation = (input_dilation,) * ndim if isinstance(input_dilation, int) else tuple(input_dilation)
    out = np.zeros((x.shape[0], *((n - 1) * d + 1 for n, d in zip(x.shape[1:-1], input_dilation)), x.shape[-1]))
    out[(slice(None), *(slice(None, None, d) for d in input_dilation))] = x
    return out


def window(xp: np.ndarray, pos, geo: ConvGeometry) -> np.ndarray:
    """The input window (N, *kernel, C) that output position `pos` reads from padded input xp."""
    index = tuple(
        slice(i * s, i * s + d * (k - 1) + 1, d) for i, s, d, k in zip(pos, geo.stride, geo.dilation, geo.kernel)
    )
    return xp[(slice(None), *index)]


def conv(x, w, stride=1, padding="VALID", dilation=1, groups=1, flip=False, input_dilation=1) -> np.ndarray:
    """y[n, i, o] = sum_{a, c} x_pad[n, i*s + a*d, g(o)*C_in/groups + c] * w[a, c, o] (cross-correlation).

    x_pad is x dilated by `input_dilation`, then padded (with zeros, or periodically / mirrored)."""
    ndim = x.ndim - 2
    x = dilate(x, input_dilation)
    geo = conv_geometry(x.shape[1:-1], w.shape[:ndim], stride, padding, dilation)
    if flip:
        w = w[(slice(None, None, -1),) * ndim]
    xp = pad(x, geo.padding, mode=array_pad_mode(padding))
    cin_g, cout = w.shape[-2], w.shape[-1]
    cout_g = cout // groups
    y = np.zeros((x.shape[0], *geo.out_sizes, cout))
    for pos in itertools.product(*map(range, geo.out_sizes)):
        patch = window(xp, pos, geo)
        for g in range(groups):
            p = patch[..., g * cin_g : (g + 1) * cin_g].reshape(x.shape[0], -1)
            y[(slice(None), *pos, slice(g * cout_g, (g + 1) * cout_g))] = p @ w[
                ..., g * cout_g : (g + 1) * cout_g
            ].reshape(-1, cout_g)
    return y


def im2col(x: np.ndarray, kernel, stride=1, padding="VALID", dilation=1) -> np.ndarray:
    """X_col (prod(kernel)*C, N*positions): one column per output position, one row per (tap, channel)."""
    geo = conv_geometry(x.shape[1:-1], kernel, stride, padding, dilation)
    xp = pad(x, geo.padding)
    columns = [window(xp, pos, geo).reshape(x.shape[0], -1) for pos in itertools.product(*map(range, geo.out_sizes))]
    # columns[p][n] -> column n*positions + p
    return np.stack(columns, axis=1).reshape(-1, np.prod(geo.kernel) * x.shape[-1]).T


def conv_im2col(x, w, stride=1, padding="VALID", dilation=1) -> np.ndarray:
    """Convolution as one matrix product: W_row (C_out, prod(kernel)*C_in) @ X_col (prod(kernel)*C_in, N*positions)."""
    ndim = x.ndim - 2
    geo = conv_geometry(x.shape[1:-1], w.shape[:ndim], stride, padding, dilation)
    w_row = w.reshape(-1, w.shape[-1]).T
    y = w_row @ im2col(x, w.shape[:ndim], stride, padding, dilation)
    return y.T.reshape(x.shape[0], *geo.out_sizes, w.shape[-1])


def conv_transpose(y, w, input_size, stride=1, padding="VALID", dilation=1) -> np.ndarray:
    """Adjoint of `conv` in x: scatter y[n, i, o] * w[a, :, o] back onto padded input position i*s + a*d,
    then every padded position back onto the input position it was copied from (zeros: dropped)."""
    ndim = y.ndim - 2
    geo = conv_geometry(tuple(input_size), w.shape[:ndim], stride, padding, dilation)
    xp = np.zeros((y.shape[0], *(n + lo + hi for n, (lo, hi) in zip(input_size, geo.padding)), w.shape[-2]))
    for pos in itertools.product(*map(range, geo.out_sizes)):
        contribution = np.einsum("no,...co->n...c", y[(slice(None), *pos)], w)
        index = tuple(
            slice(i * s, i * s + d * (k - 1) + 1, d) for i, s, d, k in zip(pos, geo.stride, geo.dilation, geo.kernel)
        )
        xp[(slice(None), *index)] += contribution
    for axis, (n, (lo, hi)) in enumerate(zip(input_size, geo.padding), start=1):
        xp = _unpad(xp, axis, n, lo, hi, array_pad_mode(padding))
    return xp


def _unpad(xp: np.ndarray, axis: int, n: int, lo: int, hi: int, mode: str | None) -> np.ndarray:
    """Adjoint of padding one axis: the source index of each padded position, from np.pad of the indices."""
    source = np.pad(np.arange(n), (lo, hi), mode=mode) if mode else np.pad(np.arange(n), (lo, hi), constant_values=-1)
    x = np.zeros((*xp.shape[:axis], n, *xp.shape[axis + 1 :]))
    for p, i in enumerate(source):
        if i >= 0:
            np.moveaxis(x, axis, 0)[i] += np.moveaxis(xp, axis, 0)[p]
    return x


def tiled_conv(x, w, tile, stride=1, padding="VALID", dilation=1, groups=1) -> np.ndarray:
    """Output position i uses its own kernel w[i mod tile] (w: (*tile, *kernel, C_in/groups, C_out))."""
    ndim = x.ndim - 2
    tile = (tile,) * ndim if isinstance(tile, int) else tuple(tile)
    geo = conv_geometry(x.shape[1:-1], w.shape[ndim : 2 * ndim], stride, padding, dilation)
    xp = pad(x, geo.padding, mode=array_pad_mode(padding))
    cin_g, cout_g = w.shape[-2], w.shape[-1] // groups
    y = np.zeros((x.shape[0], *geo.out_sizes, w.shape[-1]))
    for pos in itertools.product(*map(range, geo.out_sizes)):
        kernel = w[tuple(i % t for i, t in zip(pos, tile))]
        patch = window(xp, pos, geo)
        for g in range(groups):
            p = patch[..., g * cin_g : (g + 1) * cin_g].reshape(x.shape[0], -1)
            y[(slice(None), *pos, slice(g * cout_g, (g + 1) * cout_g))] = p @ kernel[
                ..., g * cout_g : (g + 1) * cout_g
            ].reshape(-1, cout_g)
    return y


def local_conv(x, w, stride=1, padding="VALID", dilation=1, groups=1) -> np.ndarray:
    """Every output position has its own kernel: w (*out_sizes, *kernel, C_in/groups, C_out)."""
    return tiled_conv(x, w, w.shape[: x.ndim - 2], stride, padding, dilation, groups)


def _pool(x, reduce, window_shape, stride, padding, fill):
    stride = window_shape if stride is None else stride
    geo = conv_geometry(x.shape[1:-1], window_shape, stride, padding)
    xp = pad(x, geo.padding, fill, array_pad_mode(padding))
    y = np.zeros((x.shape[0], *geo.out_sizes, x.shape[-1]))
    for pos in itertools.product(*map(range, geo.out_sizes)):
        y[(slice(None), *pos)] = reduce(window(xp, pos, geo).reshape(x.shape[0], -1, x.shape[-1]), pos, geo)
    return y


def pool(x, init, reduce_fn, window_shape, stride=None, padding="VALID") -> np.ndarray:
    """Fold reduce_fn over each window, starting from init; padding is init (or input values)."""

    def fold(p, *_):
        out = np.full((p.shape[0], p.shape[2]), init, dtype=np.float64)
        for k in range(p.shape[1]):
            out = reduce_fn(out, p[:, k])
        return out

    return _pool(x, fold, window_shape, stride, padding, init)


def max_pool(x, window_shape, stride=None, padding="VALID") -> np.ndarray:
    """Maximum over each window; padding never wins (it is -inf)."""
    return _pool(x, lambda p, *_: p.max(axis=1), window_shape, stride, padding, -np.inf)


def avg_pool(x, window_shape, stride=None, padding="VALID", count_include_pad=True) -> np.ndarray:
    """Mean over each window, dividing by the window size or by the number of real inputs in it."""

    def mean(p, pos, geo):
        if count_include_pad:
            return p.mean(axis=1)
        inside = np.ones((1, *x.shape[1:-1], 1))
        count = window(pad(inside, geo.padding, mode=array_pad_mode(padding)), pos, geo).sum()
        return p.sum(axis=1) / count

    return _pool(x, mean, window_shape, stride, padding, 0.0)


def lp_pool(x, window_shape, stride=None, padding="VALID", p=2.0) -> np.ndarray:
    """(sum over the window of |x|^p)^(1/p); p=2 is L2 pooling, p -> inf tends to max pooling of |x|."""
    return _pool(x, lambda w, *_: (np.abs(w) ** p).sum(axis=1) ** (1 / p), window_shape, stride, padding, 0.0)


def adaptive_pool(x, output_size, reduce) -> np.ndarray:
    """Output cell i of n_out along an axis of n reads [floor(i*n/n_out), ceil((i+1)*n/n_out))."""
    ndim = x.ndim - 2
    output_size = (output_size,) * ndim if isinstance(output_size, int) else tuple(output_size)
    y = np.zeros((x.shape[0], *output_size, x.shape[-1]))
    for pos in itertools.product(*map(range, output_size)):
        index = tuple(
            slice(floor(i * n / m), ceil((i + 1) * n / m)) for i, n, m in zip(pos, x.shape[1:-1], output_size)
        )
        region = x[(slice(None), *index)].reshape(x.shape[0], -1, x.shape[-1])
        y[(slice(None), *pos)] = reduce(region, axis=1)
    return y


def batch_norm(x, scale, bias, epsilon=1e-5) -> np.ndarray:
    """Normalise each channel by the mean and (biased) variance over every other axis."""
    axes = tuple(range(x.ndim - 1))
    return (x - x.mean(axes)) / np.sqrt(x.var(axes) + epsilon) * scale + bias


def local_response_norm(x, size=5, k=2.0, alpha=1e-4, beta=0.75) -> np.ndarray:
    """AlexNet (Krizhevsky et al. 2012, sec. 3.3): b_c = a_c / (k + alpha * sum_{|j-c| <= size//2} a_j^2)^beta."""
    channels = x.shape[-1]
    y = np.empty_like(x, dtype=np.float64)
    for c in range(channels):
        lo, hi = max(0, c - size // 2), min(channels, c + size // 2 + 1)
        y[..., c] = x[..., c] / (k + alpha * (x[..., lo:hi] ** 2).sum(-1)) ** beta
    return y


def blur_pool(x, size=3, stride=2, pad_mode="REFLECT") -> np.ndarray:
    """Zhang 2019's BlurPool by its definition: pad ((size-1)//2, size//2), then each output is the
    binomial-weighted sum of its size^ndim window, windows `stride` apart."""
    from math import comb

    ndim = x.ndim - 2
    stride = (stride,) * ndim if isinstance(stride, int) else tuple(stride)
    taps = np.array([comb(size - 1, k) for k in range(size)], np.float64) / 2 ** (size - 1)
    mode = {"REFLECT": "reflect", "CIRCULAR": "wrap", "REPLICATE": "edge", "ZEROS": "constant"}[pad_mode]
    xp = np.pad(x, [(0, 0), *[((size - 1) // 2, size // 2)] * ndim, (0, 0)], mode=mode)
    out_sizes = [(n + size - 1 - size) // s + 1 for n, s in zip(x.shape[1:-1], stride)]
    y = np.zeros((x.shape[0], *out_sizes, x.shape[-1]))
    for pos in itertools.product(*map(range, out_sizes)):
        for offsets in itertools.product(range(size), repeat=ndim):
            weight = np.prod([taps[o] for o in offsets])
            y[(slice(None), *pos)] += weight * xp[(slice(None), *(p * s + o for p, s, o in zip(pos, stride, offsets)))]
    return y
