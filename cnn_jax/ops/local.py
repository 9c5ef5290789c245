"""Locally connected (unshared) and tiled (Ngiam et al. 2010) convolution.

Both are one computation, a *phase convolution*: output position i along an axis of
length `out` is written i = q*t + r with tile phase r = i mod t, and uses kernel
w[r]. Tiled convolution has small t; locally connected has t = out (every position
is its own phase). Weight layouts, channels-last like HWIO:
    tiled_conv: w (*tile, *kernel, C_in/groups, C_out)
    local_conv: w (*out_sizes, *kernel, C_in/groups, C_out)
With groups, output channel o reads input group o // (C_out/groups) only, as in `conv`.

Lowering, at the FLOPs of a standard convolution: im2col (one strided slice of the
padded input per kernel tap, stacked along channels), then the positions are
regrouped so that the tile phase r leads, and each phase is one matmul with its own
kernel (a single batched dot_general). Locally connected layers are the case of one
block per phase. On XLA:CPU this measured fastest of the forms tried, including
a space-to-depth rearrangement before the slicing, one strided convolution per phase,
and summing per-tap products instead of building the patch tensor, which XLA keeps
alive for the backward pass anyway (docs/performance.md).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from math import ceil

import jax
import jax.numpy as jnp
from jax import lax

from cnn_jax.ops.conv import check_channels, conv, dilate_input, dilated_sizes, pad_with_input_values
from cnn_jax.ops.shapes import ConvGeometry, PaddingLike, as_tuple, conv_geometry, spatial_ndim

_LAYOUT = "(*positions_or_tile, *kernel, C_in/groups, C_out)"


def _phase_check(x_shape, w_shape, stride, padding, dilation, groups, input_dilation) -> tuple[int, ConvGeometry]:
    ndim = spatial_ndim(x_shape, "x")
    if len(w_shape) != 2 * ndim + 2:
        raise ValueError(
            f"w has shape {tuple(w_shape)}; for x of rank {len(x_shape)} it must have rank {2 * ndim + 2}: {_LAYOUT}"
        )
    check_channels(x_shape, w_shape, groups, _LAYOUT)
    sizes = dilated_sizes(x_shape[1:-1], padding, input_dilation)
    return ndim, conv_geometry(sizes, w_shape[ndim : 2 * ndim], stride, padding, dilation)


def _prepared_input(x, geo: ConvGeometry, padding, input_dilation) -> tuple[jax.Array, ConvGeometry]:
    """x dilated (zeros between inputs) and, for CIRCULAR / REFLECT, padded with its own values."""
    return pad_with_input_values(dilate_input(x, input_dilation), geo, padding)


def tiled_conv(
    x: jax.Array,
    w: jax.Array,
    *,
    tile: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    input_dilation: int | Sequence[int] = 1,
    precision: lax.PrecisionLike = None,
) -> jax.Array:
    """Tiled convolution: x (N, *spatial, C_in), w (*tile, *kernel, C_in/groups, C_out) -> (N, *out, C_out).

    Output position (i, j) uses kernel w[i % t_h, j % t_w]. tile=1 is `conv`; tile equal
    to the output size is `local_conv`. The tile must not exceed the output size along
    any axis (kernels beyond it would never be used); it need not divide it: the last,
    partial period uses phases 0 .. out % t - 1. `padding`, `groups` and `input_dilation` as in `conv`.
    """
    ndim, geo = _phase_check(x.shape, w.shape, stride, padding, dilation, groups, input_dilation)
    tile = as_tuple(tile, ndim, "tile")
    if tuple(w.shape[:ndim]) != tile:
        raise ValueError(
            f"w has shape {tuple(w.shape)}, whose leading axes {tuple(w.shape[:ndim])} must equal "
            f"tile={tile}: w is (*tile, *kernel, C_in, C_out)"
        )
    for axis, (t, o) in enumerate(zip(tile, geo.out_sizes)):
        if t > o:
            raise ValueError(
                f"tile={tile} exceeds the output size {geo.out_sizes} along spatial axis {axis} "
                f"({t} > {o}): phases >= {o} would never be used. Use tile <= {o}; "
                "tile equal to the output size is local_conv"
            )
    x, geo = _prepared_input(x, geo, padding, input_dilation)
    return _tiled_lowering(x, w, tile, geo, groups, precision)


def local_conv(
    x: jax.Array,
    w: jax.Array,
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    input_dilation: int | Sequence[int] = 1,
    precision: lax.PrecisionLike = None,
) -> jax.Array:
    """Locally connected layer: x (N, *spatial, C_in), w (*out, *kernel, C_in/groups, C_out) -> (N, *out, C_out).

        y[n, i, o] = sum_{a, c} x_pad[n, i*s + a*d, g(o)*C_in/groups + c] * w[i, a, c, o]

    `padding` (CIRCULAR and REFLECT included), `groups` and `input_dilation` as in `conv`.
    """
    ndim, geo = _phase_check(x.shape, w.shape, stride, padding, dilation, groups, input_dilation)
    if tuple(w.shape[:ndim]) != geo.out_sizes:
        raise ValueError(
            f"w has shape {tuple(w.shape)}; local_conv needs one kernel per output position, "
            f"so its leading axes must be the output size {geo.out_sizes}"
        )
    x, geo = _prepared_input(x, geo, padding, input_dilation)
    return _phase_conv(x, w, geo.out_sizes, geo, groups, precision)


# On one H200 (fwd+bwd, ratio to conv; docs/performance.md), per-phase strided convolutions beat the patch
# form at t=2 on a GPU-sized layer (N=256, 32x32, 64->64: 1.65 vs 2.2-2.65) but not on a small one (N=64,
# 28x28, 32->32: 1.55 vs 1.24), and never at t=4 or 8 (4.7 / 12.6 vs 2.5 / 2.8-3.3). The threshold on the
# multiply-adds of the layer lies between the two measured shapes (5e7 and 1.1e9).
_CUDA_PER_PHASE_MAX_TILE = 2
_CUDA_PER_PHASE_MIN_MACS = 2.5e8


def _tiled_lowering(x, w, tile, geo: ConvGeometry, groups: int, precision) -> jax.Array:
    """The patch form everywhere, except per-phase strided convolutions where they measured faster (CUDA)."""
    macs = x.shape[0] * math.prod(geo.out_sizes) * math.prod(geo.kernel) * w.shape[-2] * w.shape[-1]
    if max(tile) > _CUDA_PER_PHASE_MAX_TILE or macs < _CUDA_PER_PHASE_MIN_MACS:
        return _phase_conv(x, w, tile, geo, groups, precision)
    return lax.platform_dependent(
        x,
        w,
        cuda=lambda x, w: _per_phase_conv(x, w, tile, geo, groups, precision),
        default=lambda x, w: _phase_conv(x, w, tile, geo, groups, precision),
    )


def _pad_to_periods(x, geo: ConvGeometry, padded_out) -> jax.Array:
    """x padded so that `padded_out` outputs (whole tile periods) fit; rows no output reads are cropped."""
    config = [(0, 0, 0)] + [
        (lo, (o - 1) * s + (k - 1) * d + 1 - n - lo, 0)
        for (lo, _), o, s, k, d, n in zip(geo.padding, padded_out, geo.stride, geo.kernel, geo.dilation, x.shape[1:-1])
    ]
    return lax.pad(x, jnp.zeros((), x.dtype), config + [(0, 0, 0)])


def _per_phase_conv(x, w, tile, geo: ConvGeometry, groups: int, precision) -> jax.Array:
    """Tiled convolution as prod(tile) strided convolutions, one per phase, interleaved.

    Output i = q*t + r reads the padded input from (q*t + r)*s on: phase r is a convolution with stride t*s
    of the input shifted by r*s, with kernel w[r]. The FLOPs of one convolution, in prod(tile) launches.
    """
    ndim = len(tile)
    blocks = [ceil(o / t) for o, t in zip(geo.out_sizes, tile)]
    padded_out = [q * t for q, t in zip(blocks, tile)]
    xp = _pad_to_periods(x, geo, padded_out)
    phases = []
    for phase in itertools.product(*map(range, tile)):
        shifted = lax.slice(xp, (0, *(r * s for r, s in zip(phase, geo.stride)), 0), xp.shape)
        y = conv(
            shifted,
            w[phase],
            stride=[t * s for t, s in zip(tile, geo.stride)],
            dilation=geo.dilation,
            groups=groups,
            precision=precision,
        )
        phases.append(y[(slice(None), *(slice(0, q) for q in blocks))])
    y = jnp.stack(phases).reshape(*tile, x.shape[0], *blocks, w.shape[-1])
    # (*tile, N, *blocks, C_out) -> (N, q_0, r_0, q_1, r_1, ..., C_out): position q*t + r, r fastest.
    y = y.transpose(ndim, *itertools.chain(*((ndim + 1 + i, i) for i in range(ndim))), 2 * ndim + 1)
    y = y.reshape(y.shape[0], *padded_out, y.shape[-1])
    return y[(slice(None), *(slice(0, o) for o in geo.out_sizes))]


def _phase_conv(x, w, tile, geo: ConvGeometry, groups: int, precision) -> jax.Array:
    ndim = len(tile)
    blocks = [ceil(o / t) for o, t in zip(geo.out_sizes, tile)]
    padded_out = [q * t for q, t in zip(blocks, tile)]  # whole tile periods; the excess is cropped at the end
    xp = _pad_to_periods(x, geo, padded_out)  # every tap's strided slice then has padded_out entries
    taps = math.prod(geo.kernel)
    # im2col: (N, *padded_out, prod(kernel) * C_in), taps major as in w's (*kernel, C_in) axes.
    patches = jnp.concatenate(
        [
            lax.slice(
                xp,
                (0, *(a * d for a, d in zip(tap, geo.dilation)), 0),
                (
                    xp.shape[0],
                    *((a * d) + (o - 1) * s + 1 for a, d, o, s in zip(tap, geo.dilation, padded_out, geo.stride)),
                    xp.shape[-1],
                ),
                (1, *geo.stride, 1),
            )
            for tap in itertools.product(*map(range, geo.kernel))
        ],
        axis=-1,
    )
    # Position i = q*t + r -> (q, r); phase axes r lead as the batch axes of one matmul per phase.
    patches = patches.reshape(x.shape[0], *itertools.chain(*zip(blocks, tile)), patches.shape[-1])
    patches = patches.transpose(*(2 + 2 * i for i in range(ndim)), 0, *(1 + 2 * i for i in range(ndim)), 2 * ndim + 1)
    # Split channels into (tap, group, channel in group) and the kernel's outputs into (group, output in group):
    # one matmul per (phase, group), contracting taps and the group's channels.
    patches = patches.reshape(*patches.shape[:-1], taps, groups, -1)
    kernel = w.reshape(*tile, taps, w.shape[-2], groups, -1)
    phase_axes = tuple(range(ndim))
    y = lax.dot_general(
        patches,
        kernel,
        (((2 * ndim + 1, 2 * ndim + 3), (ndim, ndim + 1)), (phase_axes + (2 * ndim + 2,), phase_axes + (ndim + 2,))),
        precision=precision,
    )
    # (*tile, groups, N, *blocks, C_out/groups) -> (*tile, N, *blocks, C_out)
    y = jnp.moveaxis(y, ndim, -2).reshape(*tile, x.shape[0], *blocks, w.shape[-1])
    # (*tile, N, *blocks, C_out) -> (N, *padded_out, C_out), cropped to the output size.
    y = y.transpose(ndim, *itertools.chain(*((ndim + 1 + i, i) for i in range(ndim))), 2 * ndim + 1)
    y = y.reshape(y.shape[0], *padded_out, y.shape[-1])
    return y[(slice(None), *(slice(0, o) for o in geo.out_sizes))]
