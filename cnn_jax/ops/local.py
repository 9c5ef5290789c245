"""Locally connected (unshared) and tiled (Ngiam et al. 2010) convolution.

Both are one computation, a *phase convolution*: output position i along an axis of
length `out` is written i = q*t + r with tile phase r = i mod t, and uses kernel
w[r]. Tiled convolution has small t; locally connected has t = out (every position
is its own phase). Weight layouts, channels-last like HWIO:
    tiled_conv: w (*tile, *kernel, C_in, C_out)
    local_conv: w (*out_sizes, *kernel, C_in, C_out)

Lowering, at the FLOPs of a standard convolution: the padded input is rearranged
once into phase-major blocks (space-to-depth with block t*stride), so that for
each kernel tap the inputs of all positions of phase r form one contiguous slice.
Each phase is then a batched matmul of its inputs with its own kernel. Tiled
convolution stacks the taps (one matmul with contraction prod(kernel)*C_in, fastest);
locally connected sums tap by tap and recomputes the slices in the backward pass, so
no (positions x prod(kernel)*C_in) patch tensor is ever stored.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from math import ceil

import jax
import jax.numpy as jnp
from jax import lax

from cnn_jax.ops.conv import check_channels
from cnn_jax.ops.shapes import ConvGeometry, PaddingLike, as_tuple, conv_geometry, spatial_ndim


def _phase_check(x_shape, w_shape, stride, padding, dilation) -> tuple[int, ConvGeometry]:
    ndim = spatial_ndim(x_shape, "x")
    if len(w_shape) != 2 * ndim + 2:
        raise ValueError(f"w has shape {tuple(w_shape)}; for x of rank {len(x_shape)} it must have rank "
                         f"{2 * ndim + 2}: (*positions_or_tile, *kernel, C_in, C_out)")
    check_channels(x_shape, w_shape, 1, "(*positions_or_tile, *kernel, C_in, C_out)")
    return ndim, conv_geometry(x_shape[1:-1], w_shape[ndim:2 * ndim], stride, padding, dilation)


def tiled_conv(x: jax.Array, w: jax.Array, *, tile: int | Sequence[int], stride: int | Sequence[int] = 1,
               padding: PaddingLike = "VALID", dilation: int | Sequence[int] = 1,
               precision: lax.PrecisionLike = None) -> jax.Array:
    """Tiled convolution: x (N, *spatial, C_in), w (*tile, *kernel, C_in, C_out) -> (N, *out, C_out).

    Output position (i, j) uses kernel w[i % t_h, j % t_w]. tile=1 is `conv`; tile equal
    to the output size is `local_conv`. The tile must not exceed the output size along
    any axis (kernels beyond it would never be used); it need not divide it: the last,
    partial period uses phases 0 .. out % t - 1.
    """
    ndim, geo = _phase_check(x.shape, w.shape, stride, padding, dilation)
    tile = as_tuple(tile, ndim, "tile")
    if tuple(w.shape[:ndim]) != tile:
        raise ValueError(f"w has shape {tuple(w.shape)}, whose leading axes {tuple(w.shape[:ndim])} must equal "
                         f"tile={tile}: w is (*tile, *kernel, C_in, C_out)")
    for axis, (t, o) in enumerate(zip(tile, geo.out_sizes)):
        if t > o:
            raise ValueError(f"tile={tile} exceeds the output size {geo.out_sizes} along spatial axis {axis} "
                             f"({t} > {o}): phases >= {o} would never be used. Use tile <= {o}; "
                             "tile equal to the output size is local_conv")
    return _phase_conv(x, w, tile, geo, fuse_taps=True, precision=precision)


def local_conv(x: jax.Array, w: jax.Array, *, stride: int | Sequence[int] = 1, padding: PaddingLike = "VALID",
               dilation: int | Sequence[int] = 1, precision: lax.PrecisionLike = None) -> jax.Array:
    """Locally connected layer: x (N, *spatial, C_in), w (*out, *kernel, C_in, C_out) -> (N, *out, C_out).

        y[n, i, o] = sum_{a, c} x_pad[n, i*s + a*d, c] * w[i, a, c, o]
    """
    ndim, geo = _phase_check(x.shape, w.shape, stride, padding, dilation)
    if tuple(w.shape[:ndim]) != geo.out_sizes:
        raise ValueError(f"w has shape {tuple(w.shape)}; local_conv needs one kernel per output position, "
                         f"so its leading axes must be the output size {geo.out_sizes}")
    return _phase_conv(x, w, geo.out_sizes, geo, fuse_taps=False, precision=precision)


def _phase_conv(x, w, tile, geo: ConvGeometry, *, fuse_taps: bool, precision) -> jax.Array:
    ndim = len(tile)
    blocks = [ceil(o / t) for o, t in zip(geo.out_sizes, tile)]
    # Block length B along each axis: phase r of block q starts at input q*B + r*s.
    # With a single block any B covering the padded input works; take it whole.
    period = [t * s if q > 1 else n + lo + hi
              for t, s, q, n, (lo, hi) in zip(tile, geo.stride, blocks, x.shape[1:-1], geo.padding)]
    n_blocks = [q + ((t - 1) * s + (k - 1) * d) // b
                for q, t, s, k, d, b in zip(blocks, tile, geo.stride, geo.kernel, geo.dilation, period)]
    # Pad, or crop rows no output reads, to exactly n_blocks * B per axis.
    config = [(0, 0, 0)] + [(lo, nb * b - n - lo, 0) for (lo, _), nb, b, n
                            in zip(geo.padding, n_blocks, period, x.shape[1:-1])] + [(0, 0, 0)]
    xp = lax.pad(x, jnp.zeros((), x.dtype), config)
    xp = xp.reshape(x.shape[0], *itertools.chain(*zip(n_blocks, period)), x.shape[-1])
    # (N, nb_1, B_1, ..., C) -> (B_1, ..., N, nb_1, ..., C): phase axes lead, as matmul batch axes.
    xp = xp.transpose(*(2 + 2 * i for i in range(ndim)), 0, *(1 + 2 * i for i in range(ndim)), 2 * ndim + 1)

    def tap_input(a_tap):
        """Inputs read by kernel tap a_tap at every (phase, block): (*tile, N, *blocks, C)."""
        out = xp
        for axis, a in enumerate(a_tap):
            out = _take_phases(out, axis, ndim, a * geo.dilation[axis], tile[axis], geo.stride[axis],
                               period[axis], blocks[axis])
        return out

    dims = (((2 * ndim + 1,), (ndim,)), (tuple(range(ndim)), tuple(range(ndim))))
    matmul = lambda lhs, rhs: lax.dot_general(lhs, rhs, dims, precision=precision)
    taps = list(itertools.product(*(range(k) for k in geo.kernel)))
    if fuse_taps:
        patches = jnp.concatenate([tap_input(a) for a in taps], axis=-1)
        y = matmul(patches, w.reshape(*tile, -1, w.shape[-1]))
    else:
        tap_term = jax.checkpoint(lambda a, w_tap: matmul(tap_input(a), w_tap), static_argnums=(0,))
        y = sum(tap_term(a, w[(slice(None),) * ndim + a]) for a in taps)
    # (*tile, N, *blocks, C_out) -> (N, blocks_1 * tile_1, ..., C_out), cropped to the output size.
    y = y.transpose(ndim, *itertools.chain(*((ndim + 1 + i, i) for i in range(ndim))), 2 * ndim + 1)
    y = y.reshape(y.shape[0], *(q * t for q, t in zip(blocks, tile)), y.shape[-1])
    return y[(slice(None), *(slice(0, o) for o in geo.out_sizes))]


def _take_phases(arr, axis: int, ndim: int, offset: int, tile: int, stride: int, period: int, blocks: int):
    """Along one spatial axis of a phase-major array, gather input index q*period + r*stride + offset
    for phases r < tile and blocks q < blocks: phase axis `axis` -> tile, block axis -> blocks."""
    block_axis = ndim + 1 + axis
    pieces, r = [], 0
    while r < tile:
        shift = (r * stride + offset) // period  # phases crossing a block boundary read the next block
        r_end = r
        while r_end < tile and (r_end * stride + offset) // period == shift:
            r_end += 1
        start = r * stride + offset - shift * period
        starts, limits, strides = [0] * arr.ndim, list(arr.shape), [1] * arr.ndim
        starts[axis], limits[axis], strides[axis] = start, start + (r_end - r - 1) * stride + 1, stride
        starts[block_axis], limits[block_axis] = shift, shift + blocks
        pieces.append(lax.slice(arr, starts, limits, strides))
        r = r_end
    return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=axis)
