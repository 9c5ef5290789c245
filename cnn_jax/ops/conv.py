"""Convolution in 1, 2 and 3 spatial dimensions, channels-last (NWC/NHWC/NDHWC, kernels WIO/HWIO/DHWIO)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from cnn_jax.ops.shapes import (
    ConvGeometry,
    PaddingLike,
    array_pad_mode,
    as_tuple,
    conv_geometry,
    effective_kernel_size,
    resolve_padding,
    spatial_ndim,
)

_DIMENSION_NUMBERS = {
    1: ("NWC", "WIO", "NWC"),
    2: ("NHWC", "HWIO", "NHWC"),
    3: ("NDHWC", "DHWIO", "NDHWC"),
}


def dimension_numbers(ndim: int) -> tuple[str, str, str]:
    """lax dimension numbers for channels-last activations and kernels with `ndim` spatial axes."""
    return _DIMENSION_NUMBERS[ndim]


def check_channels(x_shape: Sequence[int], w_shape: Sequence[int], groups: int, layout: str) -> None:
    """Validate the channel counts of x (N, *spatial, C_in) against w (..., C_in/groups, C_out)."""
    as_tuple(groups, 1, "groups")
    c_in, c_w, c_out = x_shape[-1], w_shape[-2], w_shape[-1]
    if c_in % groups:
        raise ValueError(f"groups={groups} does not divide the {c_in} input channels of x")
    if c_w * groups != c_in:
        raise ValueError(
            f"channel mismatch: x has {c_in} channels but w (shape {tuple(w_shape)}, layout {layout}) "
            f"expects {c_w} per group x groups={groups} = {c_w * groups}"
        )
    if c_out % groups:
        raise ValueError(f"groups={groups} does not divide the {c_out} output channels of w")


def conv_check(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    stride,
    padding,
    dilation,
    groups: int = 1,
    input_dilation: int | Sequence[int] = 1,
) -> ConvGeometry:
    """Validate conv arguments (shapes only, no tracing) and return the geometry.

    With `input_dilation`, the geometry is that of the dilated input, (n-1)*input_dilation + 1 per axis.
    """
    ndim = spatial_ndim(x_shape, "x")
    layout = dimension_numbers(ndim)[1]
    if len(w_shape) != ndim + 2:
        raise ValueError(
            f"w has shape {tuple(w_shape)}; for x of rank {len(x_shape)} it must have rank {ndim + 2} ({layout})"
        )
    check_channels(x_shape, w_shape, groups, layout)
    return conv_geometry(
        dilated_sizes(x_shape[1:-1], padding, input_dilation), w_shape[:ndim], stride, padding, dilation
    )


def dilated_sizes(sizes: Sequence[int], padding: PaddingLike, input_dilation: int | Sequence[int]) -> list[int]:
    """Spatial sizes after `input_dilation` - 1 zeros go between neighbouring inputs: (n-1)*d + 1 per axis."""
    input_dilation = as_tuple(input_dilation, len(sizes), "input_dilation")
    if array_pad_mode(padding) and max(input_dilation) > 1:
        raise ValueError(
            f"padding={padding!r} with input_dilation={input_dilation}: padding with input values "
            "is defined for undilated inputs only; dilate and pad explicitly (jnp.pad) instead"
        )
    return [(n - 1) * d + 1 for n, d in zip(sizes, input_dilation)]


def dilate_input(x: jax.Array, input_dilation: int | Sequence[int]) -> jax.Array:
    """x (N, *spatial, C) with input_dilation - 1 zeros between neighbours along each spatial axis."""
    dilation = as_tuple(input_dilation, x.ndim - 2, "input_dilation")
    return lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *((0, 0, d - 1) for d in dilation), (0, 0, 0)])


def pad_with_input_values(x: jax.Array, geo: ConvGeometry, padding: PaddingLike) -> tuple[jax.Array, ConvGeometry]:
    """For "CIRCULAR" / "REFLECT" padding, x (N, *spatial, C) padded explicitly and the geometry then unpadded.

    Every other padding is returned unchanged, for the op itself to apply (as zeros, or -inf in max pooling).
    """
    mode = array_pad_mode(padding)
    if mode is None:
        return x, geo
    x = jnp.pad(x, [(0, 0), *geo.padding, (0, 0)], mode=mode)
    return x, geo._replace(padding=((0, 0),) * len(geo.padding))


class _Lowering(NamedTuple):
    out_sizes: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    precision: Any
    input_dilation: tuple[int, ...]


def _xla_conv(x, w, stride, pads, cfg: _Lowering) -> jax.Array:
    return lax.conv_general_dilated(
        x,
        w,
        stride,
        pads,
        lhs_dilation=cfg.input_dilation,
        rhs_dilation=cfg.dilation,
        dimension_numbers=dimension_numbers(len(stride)),
        feature_group_count=cfg.groups,
        precision=cfg.precision,
    )


def _padded_then_sliced(x, w, cfg: _Lowering) -> jax.Array:
    """Stride-1 unpadded conv computed with one extra zero row/column per axis, sliced off."""
    ones = (1,) * len(cfg.out_sizes)
    y = _xla_conv(x, w, ones, ((0, 1),) * len(ones), cfg)
    return y[(slice(None), *(slice(0, o) for o in cfg.out_sizes))]


# XLA:CPU has a slow path for stride-1 convolutions with no padding at all. Measured
# (benchmarks/ops.py, docs/performance.md): the kernel gradient is 1.6-2.4x faster computed
# from the padded-then-sliced form in every case tried; the forward pass is 2-5x faster that
# way from 32 output channels up, but up to 2x slower below. So the forward pass picks by
# output channels, and the JVP routes the kernel tangent (hence, transposed, the kernel
# gradient) through the padded form; the input gradient is the same speed either way.
_PAD_FORWARD_FROM_CHANNELS = 32


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _unpadded_stride1_conv(x, w, cfg: _Lowering) -> jax.Array:
    if w.shape[-1] >= _PAD_FORWARD_FROM_CHANNELS:
        return _padded_then_sliced(x, w, cfg)
    return _xla_conv(x, w, (1,) * len(cfg.out_sizes), ((0, 0),) * len(cfg.out_sizes), cfg)


@_unpadded_stride1_conv.defjvp
def _unpadded_stride1_conv_jvp(cfg, primals, tangents):
    x, w = primals
    x_dot, w_dot = tangents
    ones, zeros = (1,) * len(cfg.out_sizes), ((0, 0),) * len(cfg.out_sizes)
    y_dot = _xla_conv(x_dot, w, ones, zeros, cfg) + _padded_then_sliced(x, w_dot, cfg)
    return _unpadded_stride1_conv(x, w, cfg), y_dot


def _cpu_conv(x: jax.Array, w: jax.Array, geo: ConvGeometry, cfg: _Lowering) -> jax.Array:
    """The XLA:CPU lowering: the two workarounds below, else the plain convolution."""
    pads = geo.padding
    if _strided_kernel_exceeds_input(x.shape[1:-1], geo):
        # XLA:CPU (jaxlib 0.10.2) aborts compiling the input gradient of a strided convolution whose
        # kernel only fits thanks to the padding; padding explicitly first compiles fine.
        x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
        pads = ((0, 0),) * len(pads)
    if all(p == (0, 0) for p in pads) and all(s == 1 for s in geo.stride):
        return _unpadded_stride1_conv(x, w, cfg)
    return _xla_conv(x, w, geo.stride, pads, cfg)


def _strided_kernel_exceeds_input(sizes: Sequence[int], geo: ConvGeometry) -> bool:
    spans = [effective_kernel_size(k, d) for k, d in zip(geo.kernel, geo.dilation)]
    return any(s > 1 for s in geo.stride) and any(n < e for n, e in zip(sizes, spans))


def _lowered_conv(
    x: jax.Array, w: jax.Array, geo: ConvGeometry, groups: int, precision, input_dilation: tuple[int, ...]
) -> jax.Array:
    """XLA's own convolution, except on XLA:CPU where `_cpu_conv` differs from it.

    The choice is made when the program is lowered for a platform (`lax.platform_dependent`), not
    from the host's default backend, so a program exported or compiled for a GPU or TPU holds only
    the plain convolution. Input-dilated convolutions are not what the workarounds were measured on,
    so they always get the plain one.
    """
    cfg = _Lowering(geo.out_sizes, geo.dilation, groups, precision, input_dilation)
    unpadded_stride1 = all(p == (0, 0) for p in geo.padding) and all(s == 1 for s in geo.stride)
    plain = functools.partial(_xla_conv, stride=geo.stride, pads=geo.padding, cfg=cfg)
    if max(input_dilation) > 1 or not (unpadded_stride1 or _strided_kernel_exceeds_input(x.shape[1:-1], geo)):
        return plain(x, w)
    return lax.platform_dependent(x, w, cpu=functools.partial(_cpu_conv, geo=geo, cfg=cfg), default=plain)


def conv(
    x: jax.Array,
    w: jax.Array,
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    flip: bool = False,
    input_dilation: int | Sequence[int] = 1,
    precision: lax.PrecisionLike = None,
) -> jax.Array:
    """Convolution of x (N, *spatial, C_in) with w (*kernel, C_in/groups, C_out) -> (N, *out, C_out).

    Cross-correlation by default, as in every deep-learning library:
        y[n, i, o] = sum_{a, c} x_pad[n, i*s + a*d, c] * w[a, c, o]
    `flip=True` flips the kernel over its spatial axes, which is the convolution of
    signal processing. `groups == C_in` is depthwise.

    Args:
      padding: "VALID", "SAME", "FULL", "CAUSAL" (1-D), "CIRCULAR" (periodic: exact translation
        equivariance on the torus at stride 1), "REFLECT" (mirror without repeating the edge, as
        PyTorch's padding_mode="reflect"), an int, one int per axis or one (lo, hi) pair per axis.
      input_dilation: insert input_dilation - 1 zeros between neighbouring inputs before padding
        (lax's lhs_dilation; a fractionally strided convolution). Not with CIRCULAR / REFLECT.
    """
    ndim = spatial_ndim(x.shape, "x")
    geo = conv_check(x.shape, w.shape, stride, padding, dilation, groups, input_dilation)
    x, geo = pad_with_input_values(x, geo, padding)
    if flip:
        w = jnp.flip(w, axis=tuple(range(ndim)))
    return _lowered_conv(x, w, geo, groups, precision, as_tuple(input_dilation, ndim, "input_dilation"))


def conv_transpose(
    y: jax.Array,
    w: jax.Array,
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    flip: bool = False,
    input_size: Sequence[int] | None = None,
    precision: lax.PrecisionLike = None,
) -> jax.Array:
    """Transpose (adjoint) of `conv` in its input: y (N, *out, C_out) -> (N, *input_size, C_in).

    `w` is the kernel of the forward convolution (*kernel, C_in/groups, C_out), and all
    arguments are those of that convolution, so conv_transpose(g, w, ...) is exactly the
    input gradient of conv(x, w, ...) for output gradient g (the "deconvolution" layer).
    With stride > 1 several input sizes give the same output size: `input_size` picks
    one; by default the smallest for explicit and VALID/FULL/CAUSAL padding, and
    out * stride for SAME, CIRCULAR and REFLECT.

    For CIRCULAR padding this is the periodic adjoint: what would land in the padding wraps
    around onto the other end (REFLECT: is mirrored back). flax.linen.ConvTranspose with
    padding="CIRCULAR" agrees up to a circular shift: none at stride 1 for its default kernel layout, one
    at stride > 1 and, with transpose_kernel=True, for an even kernel span
    (docs/coming_from_flax_and_pytorch.md).
    """
    ndim = spatial_ndim(y.shape, "y")
    if len(w.shape) != ndim + 2:
        raise ValueError(f"w has shape {tuple(w.shape)}; for y of rank {y.ndim} it must have rank {ndim + 2}")
    if y.shape[-1] != w.shape[-1]:
        raise ValueError(
            f"channel mismatch: y has {y.shape[-1]} channels but w (shape {tuple(w.shape)}) "
            f"has {w.shape[-1]} output channels"
        )
    out_sizes = y.shape[1:-1]
    if input_size is None:
        input_size = _smallest_input_size(out_sizes, w.shape[:ndim], stride, padding, dilation)
    x_shape = (y.shape[0], *as_tuple(tuple(input_size), ndim, "input_size"), w.shape[-2] * groups)
    geo = conv_check(x_shape, w.shape, stride, padding, dilation, groups)
    if geo.out_sizes != tuple(out_sizes):
        raise ValueError(
            f"input_size={tuple(input_size)} gives conv output {geo.out_sizes}, "
            f"not the spatial size {tuple(out_sizes)} of y"
        )
    forward = lambda x: conv(
        x, w, stride=stride, padding=padding, dilation=dilation, groups=groups, flip=flip, precision=precision
    )
    (x,) = jax.linear_transpose(forward, jax.ShapeDtypeStruct(x_shape, y.dtype))(y)
    return x


def _smallest_input_size(out_sizes, kernel, stride, padding, dilation) -> tuple[int, ...]:
    ndim = len(out_sizes)
    stride, dilation = as_tuple(stride, ndim, "stride"), as_tuple(dilation, ndim, "dilation")
    if isinstance(padding, str) and (padding.upper() == "SAME" or array_pad_mode(padding)):
        return tuple(o * s for o, s in zip(out_sizes, stride))
    # Other paddings do not depend on the input size, so any size resolves them.
    pads = resolve_padding(padding, [1] * ndim, kernel, stride, dilation)
    sizes = tuple(
        (o - 1) * s + effective_kernel_size(k, d) - lo - hi
        for o, k, s, d, (lo, hi) in zip(out_sizes, kernel, stride, dilation, pads)
    )
    if min(sizes) < 1:
        raise ValueError(
            f"no input size gives output {tuple(out_sizes)} with kernel {tuple(kernel)} and padding {padding!r}"
        )
    return sizes
