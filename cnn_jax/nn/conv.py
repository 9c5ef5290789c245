"""Flax linen convolution modules over cnn_jax.ops, and ConvSpec, which picks the variant.

Constructor arguments follow flax.linen.Conv. Parameters: "kernel" and "bias".
Bias sharing follows the variant: per channel (Conv), per tile phase (TiledConv),
per output position (LocalConv).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype

from cnn_jax import ops
from cnn_jax.ops.conv import dilated_sizes
from cnn_jax.ops.shapes import PaddingLike, as_tuple, conv_geometry, effective_kernel_size, spatial_ndim

Initializer = Any
IntOrSeq = int | Sequence[int]
# What a forward convolution pads with (PyTorch's padding_mode): the `jnp.pad` mode of each, None for zeros.
CONV_PADDING_MODES = {"zeros": None, "circular": "wrap", "reflect": "reflect"}


def _unshared_kernel_init(ndim: int) -> Initializer:
    # LeCun normal over fan_in = prod(kernel) * C_in, with the position/phase axes as independent batches.
    return nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=tuple(range(ndim)))


@contextlib.contextmanager
def layer_errors(module: nn.Module):
    """Prefix a ValueError raised inside a layer with the layer's path, e.g. "stage3_block1/conv1: ..."."""
    try:
        yield
    except ValueError as error:
        path = "/".join(module.scope.path) if module.scope is not None and module.scope.path else type(module).__name__
        raise ValueError(f"{path}: {error}") from None


def spatial_axes(x: jax.Array, size: IntOrSeq, name: str) -> int:
    """Spatial axes of a layer's input: len(size) for a sequence `size` (any leading batch axes, as flax);
    for an int, from x's rank with one batch axis (NWC, NHWC, NDHWC), or 1-D without one at rank 2."""
    if not isinstance(size, int):
        ndim = len(size)
        if x.ndim < ndim + 1:
            raise ValueError(
                f"x has shape {tuple(x.shape)}, too few axes for {name}={tuple(size)}: expected "
                f"(*batch, {ndim} spatial axes, C)"
            )
        return ndim
    return 1 if x.ndim == 2 else spatial_ndim(x.shape, "x")


def with_one_batch_axis(layer, x: jax.Array, ndim: int) -> jax.Array:
    """layer(x) with x's leading batch axes (none, one or several) merged into one and restored after."""
    batch_shape = x.shape[: x.ndim - ndim - 1]
    y = layer(x.reshape(-1, *x.shape[len(batch_shape) :]))
    return y.reshape(*batch_shape, *y.shape[1:])


class _ConvBase(nn.Module):
    """Common arguments, those of flax.linen.Conv. Inputs are (*batch, *spatial, C_in): with a sequence
    `kernel_size`, any number of leading batch axes, none included (flax merges them the same way);
    with an int, the rank gives the spatial axes (one batch axis; rank 2 is an unbatched 1-D input).
    `mask` multiplies the kernel: the kernel's shape in this layer's layout (flax's rule), or any shape that
    broadcasts to it from the trailing axes, e.g. (C_in, C_out) for a connection table that holds for every
    kernel position, tile phase or output position. The masked weights stay parameters (zero gradient).
    `connections` is such a table, boolean, of the kernel's last two axes' shape ((C_in / groups, C_out) for
    the forward convolutions), held sparsely: the "kernel" parameter holds only the connected weights,
    (*leading kernel axes, connections.sum()) in the table's row-major order (`connected_kernel`), and the
    layer gathers them into the full kernel, zeros elsewhere, for one dense convolution. They start as the
    full kernel's initializer would start them."""

    features: int
    kernel_size: IntOrSeq
    strides: IntOrSeq | None = 1
    padding: PaddingLike = "SAME"
    kernel_dilation: IntOrSeq | None = 1
    feature_group_count: int = 1
    use_bias: bool = True
    mask: jax.Array | None = None
    connections: np.ndarray | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Initializer | None = None
    bias_init: Initializer = nn.initializers.zeros_init()

    def __call__(self, x: jax.Array) -> jax.Array:
        with layer_errors(self):
            return with_one_batch_axis(self.forward, x, spatial_axes(x, self.kernel_size, "kernel_size"))

    # flax reads None for a stride or a dilation as 1.
    @property
    def _strides(self) -> IntOrSeq:
        return 1 if self.strides is None else self.strides

    @property
    def _kernel_dilation(self) -> IntOrSeq:
        return 1 if self.kernel_dilation is None else self.kernel_dilation

    def _in_group(self, channels: int) -> int:
        """Channels per group of the input, once the group count is checked."""
        if channels % self.feature_group_count:
            raise ValueError(
                f"feature_group_count={self.feature_group_count} does not divide the {channels} input channels"
            )
        return channels // self.feature_group_count

    def _kernel(self, shape: tuple[int, ...], default_init: Initializer) -> jax.Array:
        init = self.kernel_init or default_init
        if self.connections is None:
            kernel = self.param("kernel", init, shape, self.param_dtype)
        else:
            table = np.asarray(self.connections)
            if table.dtype != bool or table.shape != shape[-2:]:
                raise ValueError(
                    f"connections has shape {table.shape} and dtype {table.dtype}; it must be a bool table of the "
                    f"kernel's last two axes, shape {shape[-2:]}"
                )

            def connected_init(key: jax.Array, dtype: Any) -> jax.Array:
                # The connected entries of a full kernel drawn as the dense layer draws it (same scale).
                return init(key, shape, dtype).reshape(*shape[:-2], -1)[..., table.ravel()]

            kernel = connected_kernel(self.param("kernel", connected_init, self.param_dtype), table)
        if self.mask is None:
            return kernel
        mask_shape = tuple(self.mask.shape)
        if len(mask_shape) > len(shape) or any(m not in (1, k) for m, k in zip(mask_shape[::-1], shape[::-1])):
            raise ValueError(f"mask has shape {mask_shape}; it must have the kernel's shape {shape} or broadcast to it")
        return kernel * self.mask


def connected_kernel(weights: jax.Array, connections: np.ndarray) -> jax.Array:
    """The full kernel (*lead, *connections.shape) of the connected weights (*lead, connections.sum()), listed
    in the bool table's row-major order, with zeros where `connections` is False: one gather, so the gradient
    reaches exactly the connected weights."""
    table = np.asarray(connections, bool)
    index = np.full(table.size, table.sum())  # an unconnected entry reads the appended zero
    index[table.ravel()] = np.arange(table.sum())
    padded = jnp.concatenate([weights, jnp.zeros((*weights.shape[:-1], 1), weights.dtype)], -1)
    return padded[..., index].reshape(*weights.shape[:-1], *table.shape)


class _ForwardConv(_ConvBase):
    """The forward convolutions (not ConvTranspose). They also take flax's `input_dilation`, input_dilation - 1
    zeros between neighbouring inputs (lax's lhs_dilation), and PyTorch's `padding_mode`: what the padding
    holds, "zeros", "circular" (the input wrapped around: a stride-1 layer is exactly equivariant to
    circular shifts) or "reflect". `padding` still sets how much is padded on each side; under "circular" and
    "reflect", x is padded explicitly and the op runs unpadded."""

    input_dilation: IntOrSeq | None = 1
    padding_mode: str = "zeros"

    @property
    def _input_dilation(self) -> IntOrSeq:
        return 1 if self.input_dilation is None else self.input_dilation

    def _padded(self, x: jax.Array) -> tuple[jax.Array, PaddingLike]:
        """x and the padding left for the op: (x, padding) for "zeros", else (x padded with its own values, 0)."""
        if self.padding_mode not in CONV_PADDING_MODES:
            valid = ", ".join(CONV_PADDING_MODES)
            raise ValueError(f"padding_mode={self.padding_mode!r}: unknown; valid modes are {valid}")
        if self.padding_mode == "zeros":
            return x, self.padding
        ndim = spatial_ndim(x.shape, "x")
        if max(as_tuple(self._input_dilation, ndim, "input_dilation")) > 1:
            raise ValueError(
                f"padding_mode={self.padding_mode!r} with input_dilation={self._input_dilation}: padding with input "
                'values is not defined between dilated inputs; use padding_mode="zeros"'
            )
        kernel = as_tuple(self.kernel_size, ndim, "kernel_size")
        geo = conv_geometry(x.shape[1:-1], kernel, self._strides, self.padding, self._kernel_dilation)
        return jnp.pad(x, ((0, 0), *geo.padding, (0, 0)), mode=CONV_PADDING_MODES[self.padding_mode]), 0

    def _geometry(self, x: jax.Array, padding: PaddingLike):
        ndim = spatial_ndim(x.shape, "x")
        kernel = as_tuple(self.kernel_size, ndim, "kernel_size")
        sizes = dilated_sizes(x.shape[1:-1], padding, self._input_dilation)
        return ndim, kernel, conv_geometry(sizes, kernel, self._strides, padding, self._kernel_dilation)


class Conv(_ForwardConv):
    """Standard (shared-weight) convolution: x (*batch, *spatial, C_in) -> (*batch, *out, features).

    kernel (*kernel_size, C_in / feature_group_count, features), bias (features,).
    `flip=True` makes it a true convolution instead of a cross-correlation. `input_dilation`
    spaces the inputs (lax's lhs_dilation), as flax.linen.Conv.
    """

    flip: bool = False

    @nn.compact
    def forward(self, x: jax.Array) -> jax.Array:
        x, padding = self._padded(x)
        kernel_size = as_tuple(self.kernel_size, spatial_ndim(x.shape, "x"), "kernel_size")
        kernel = self._kernel(
            (*kernel_size, self._in_group(x.shape[-1]), self.features), nn.initializers.lecun_normal()
        )
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = ops.conv(
            x,
            kernel,
            stride=self._strides,
            padding=padding,
            dilation=self._kernel_dilation,
            groups=self.feature_group_count,
            flip=self.flip,
            input_dilation=self._input_dilation,
            precision=self.precision,
        )
        return y if bias is None else y + bias


class TiledConv(_ForwardConv):
    """Tiled convolution (Ngiam et al. 2010): kernels shared with period `tile` over output positions.

    kernel (*tile, *kernel_size, C_in / feature_group_count, features), bias (*tile, features):
    one per tile phase.
    """

    tile: IntOrSeq = 2
    fit_tile: bool = False  # shrink the tile to the output size along axes where the output is smaller

    @nn.compact
    def forward(self, x: jax.Array) -> jax.Array:
        x, padding = self._padded(x)
        ndim, kernel_size, geo = self._geometry(x, padding)
        tile = as_tuple(self.tile, ndim, "tile")
        if self.fit_tile:
            tile = tuple(min(t, o) for t, o in zip(tile, geo.out_sizes))
        kernel = self._kernel(
            (*tile, *kernel_size, self._in_group(x.shape[-1]), self.features), _unshared_kernel_init(ndim)
        )
        bias = self.param("bias", self.bias_init, (*tile, self.features), self.param_dtype) if self.use_bias else None
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = ops.tiled_conv(
            x,
            kernel,
            tile=tile,
            stride=self._strides,
            padding=padding,
            dilation=self._kernel_dilation,
            groups=self.feature_group_count,
            input_dilation=self._input_dilation,
            precision=self.precision,
        )
        if bias is None:
            return y
        reps = [-(-o // t) for o, t in zip(geo.out_sizes, tile)]
        bias = jnp.tile(bias, (*reps, 1))[tuple(slice(0, o) for o in geo.out_sizes)]
        return y + bias


class LocalConv(_ForwardConv):
    """Locally connected layer: a separate kernel and bias at every output position.

    kernel (*out_sizes, *kernel_size, C_in / feature_group_count, features), bias (*out_sizes, features).
    flax.linen.ConvLocal computes the same with kernel (*out_sizes, C_in * prod(kernel_size), features),
    channel-major, and no groups (docs/coming_from_flax_and_pytorch.md converts).
    """

    @nn.compact
    def forward(self, x: jax.Array) -> jax.Array:
        x, padding = self._padded(x)
        ndim, kernel_size, geo = self._geometry(x, padding)
        kernel = self._kernel(
            (*geo.out_sizes, *kernel_size, self._in_group(x.shape[-1]), self.features), _unshared_kernel_init(ndim)
        )
        bias = (
            self.param("bias", self.bias_init, (*geo.out_sizes, self.features), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = ops.local_conv(
            x,
            kernel,
            stride=self._strides,
            padding=padding,
            dilation=self._kernel_dilation,
            groups=self.feature_group_count,
            input_dilation=self._input_dilation,
            precision=self.precision,
        )
        return y if bias is None else y + bias


class ConvTranspose(_ConvBase):
    """Transposed convolution: the input gradient of `Conv` with the same arguments, as a layer.

    x (*batch, *spatial, C_in) -> (*batch, *out, features), where `out` is the input size of the
    forward convolution (`input_size`; by default the smallest one, or spatial * strides for SAME,
    CIRCULAR and REFLECT). kernel (*kernel_size, features / feature_group_count, C_in): the forward
    convolution's kernel, as flax.linen.ConvTranspose with transpose_kernel=True.

    `transpose_kernel` is flax's argument, for flax code and parameters. None (the default) keeps the
    conventions above. True or False says the layer is flax's ConvTranspose with that argument:
      - the kernel (and `mask`, `connections`) has flax's layout: True, (*kernel_size, features, C_in), the
        layout above; False, flax's default (*kernel_size, C_in, features), the kernel flax slides over the
        stride-dilated input (the forward kernel flipped in space, its channel axes swapped; no groups);
      - the kernel starts as flax's does (LeCun normal with the fan-in over axis -2 of that layout);
      - an explicit `padding` is flax's, that of the stride-dilated input, and sets the output size (no
        `input_size`). "SAME" and "VALID" mean the same in both conventions, and "CIRCULAR" stays the exact
        adjoint: flax's differs by a circular shift, at stride > 1 and for even kernels with True
        (docs/coming_from_flax_and_pytorch.md).
    flax's parameters then load unchanged and give flax's output.
    """

    input_size: Sequence[int] | None = None
    transpose_kernel: bool | None = None

    @nn.compact
    def forward(self, x: jax.Array) -> jax.Array:
        ndim = spatial_ndim(x.shape, "x")
        kernel_size = as_tuple(self.kernel_size, ndim, "kernel_size")
        kernel = self._forward_kernel(kernel_size, x.shape[-1])
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        padding, input_size, zeros = self._forward_padding(x.shape[1:-1], kernel_size)
        y = ops.conv_transpose(
            x,
            kernel,
            stride=self._strides,
            padding=padding,
            dilation=self._kernel_dilation,
            groups=self.feature_group_count,
            input_size=input_size,
            precision=self.precision,
        )
        if any(lo or hi for lo, hi in zeros):
            y = jnp.pad(y, ((0, 0), *zeros, (0, 0)))
        return y if bias is None else y + bias

    def _forward_kernel(self, kernel_size: tuple[int, ...], in_features: int) -> jax.Array:
        """The forward convolution's kernel (*kernel_size, features / groups, C_in), from the parameter held in
        the layout `transpose_kernel` names."""
        groups = self.feature_group_count
        if self.features % groups:
            raise ValueError(f"feature_group_count={groups} does not divide features={self.features}")
        if not (self.transpose_kernel is None or isinstance(self.transpose_kernel, bool)):
            raise ValueError(
                f"transpose_kernel={self.transpose_kernel!r}: expected None (cnn_jax's conventions) or a bool "
                "(flax.linen.ConvTranspose's)"
            )
        if self.transpose_kernel is False and groups != 1:
            raise ValueError(
                f"transpose_kernel=False with feature_group_count={groups}: flax's default layout has no groups "
                "(flax.linen.ConvTranspose has none); use transpose_kernel=True or None"
            )
        forward_shape = (*kernel_size, self.features // groups, in_features)
        shape = (*kernel_size, in_features, self.features) if self.transpose_kernel is False else forward_shape
        self._check_given_kernel(shape)
        if self.transpose_kernel is None:
            init = nn.initializers.lecun_normal(in_axis=-1, out_axis=-2)  # fan-in prod(kernel) * C_in
        else:
            init = nn.initializers.lecun_normal()  # flax's: fan-in over axis -2 of its layout
        kernel = self._kernel(shape, init)
        if self.transpose_kernel is False:
            return jnp.flip(kernel, tuple(range(len(kernel_size)))).swapaxes(-1, -2)
        return kernel

    def _check_given_kernel(self, shape: tuple[int, ...]) -> None:
        """A clear error for a given kernel in another layout than `transpose_kernel` says (flax's own names
        only the shapes)."""
        if self.connections is not None or not self.has_variable("params", "kernel"):
            return
        given = tuple(self.get_variable("params", "kernel").shape)
        if given == shape:
            return
        k = len(shape) - 2
        layouts = {
            None: "cnn_jax's (*kernel_size, features / feature_group_count, C_in)",
            True: "flax's transpose_kernel=True (*kernel_size, features / feature_group_count, C_in)",
            False: "flax's default (*kernel_size, C_in, features)",
        }
        hint = ""
        if given[:k] == shape[:k] and given[k:] == shape[k:][::-1] and self.feature_group_count == 1:
            other = "transpose_kernel=False" if self.transpose_kernel is not False else "transpose_kernel=True"
            hint = f"; a kernel of shape {given} is in the other layout: pass {other}"
        raise ValueError(
            f"kernel has shape {given}; with transpose_kernel={self.transpose_kernel!r} it must have shape "
            f"{shape}, {layouts[self.transpose_kernel]}{hint}"
        )

    def _forward_padding(self, in_sizes: Sequence[int], kernel_size: tuple[int, ...]):
        """The forward convolution's padding and input size for ops.conv_transpose, and the (lo, hi) zero rows
        flax's explicit padding adds beyond them, per axis."""
        ndim = len(kernel_size)
        if self.transpose_kernel is None or isinstance(self.padding, str):
            return self.padding, self.input_size, ((0, 0),) * ndim
        if self.input_size is not None:
            raise ValueError(
                f"input_size={tuple(self.input_size)} with transpose_kernel={self.transpose_kernel} and "
                f"padding={self.padding!r}: flax's explicit padding sets the output size; drop input_size"
            )
        return _flax_transpose_padding(
            self.padding,
            in_sizes,
            kernel_size,
            as_tuple(self._strides, ndim, "strides"),
            as_tuple(self._kernel_dilation, ndim, "kernel_dilation"),
        )


def _flax_transpose_padding(
    padding: PaddingLike,
    in_sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...], tuple[tuple[int, int], ...]]:
    """flax.linen.ConvTranspose's explicit padding as cnn_jax's: (forward padding, forward input size, zeros).

    flax pads the stride-dilated input (n - 1) * s + 1 by (a, b) and slides the kernel (span d*(k-1)+1) over
    it: out = (n - 1) * s + a + b - span + 2. That is the adjoint of the forward convolution of an input of
    that size padded by (span - 1 - a, span - 1 - b); where a or b exceeds span - 1, flax's outermost
    a - (span - 1) rows see only padding, zeros here, and the forward padding on that side is 0.
    """
    pairs = nn.linear.canonicalize_padding(padding, len(kernel))
    forward, sizes, zeros = [], [], []
    for axis, (n, k, s, d, (a, b)) in enumerate(zip(in_sizes, kernel, strides, dilation, pairs)):
        span = effective_kernel_size(k, d)
        out = (n - 1) * s + a + b - span + 2
        if out < 1:
            raise ValueError(
                f"padding={padding!r} gives spatial axis {axis} the output size {out} (flax's ConvTranspose: "
                f"(n - 1) * stride + lo + hi - span + 2, n={n}, stride={s}, span={span}); it must be >= 1"
            )
        lo, hi = span - 1 - a, span - 1 - b
        forward.append((max(lo, 0), max(hi, 0)))
        zeros.append((max(-lo, 0), max(-hi, 0)))
        sizes.append(out - zeros[-1][0] - zeros[-1][1])
    return tuple(forward), tuple(sizes), tuple(zeros)


CONV_KINDS = ("standard", "tiled", "local")


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """Which convolution a model builds, so one config value swaps it in every layer.

    kind: "standard" (shared weights), "tiled" (shared with period `tile`) or "local" (unshared).
        In a model, a layer whose output is smaller than the tile gets the output size as its
        tile (a 1x1 output has one kernel), so one tile fits every layer.
    dilation: the kernel dilation of layers that do not set their own.
    flip: true convolution instead of cross-correlation (standard only).
    padding_mode: what every padded convolution pads with, "zeros", "circular" or "reflect" (PyTorch's
        padding_mode); each layer keeps its own padding amounts.
    """

    kind: str = "standard"
    tile: IntOrSeq = 2
    dilation: IntOrSeq = 1
    flip: bool = False
    padding_mode: str = "zeros"

    def __post_init__(self):
        if self.kind not in CONV_KINDS:
            raise ValueError(f"ConvSpec kind={self.kind!r}: unknown; valid kinds are {', '.join(CONV_KINDS)}")
        if self.padding_mode not in CONV_PADDING_MODES:
            raise ValueError(
                f"ConvSpec padding_mode={self.padding_mode!r}: unknown; valid modes are {', '.join(CONV_PADDING_MODES)}"
            )
        if self.flip and self.kind != "standard":
            raise ValueError(f"ConvSpec flip=True is only defined for kind='standard', not {self.kind!r}")

    def make(
        self,
        features: int,
        kernel_size: IntOrSeq,
        *,
        strides: IntOrSeq = 1,
        padding: PaddingLike = "SAME",
        kernel_dilation: IntOrSeq | None = None,
        feature_group_count: int = 1,
        **kwargs,
    ) -> nn.Module:
        """Build the module of this kind; every kind takes `feature_group_count`."""
        common = dict(
            features=features,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            kernel_dilation=self.dilation if kernel_dilation is None else kernel_dilation,
            feature_group_count=feature_group_count,
            padding_mode=self.padding_mode,
            **kwargs,
        )
        if self.kind == "standard":
            return Conv(flip=self.flip, **common)
        if self.kind == "tiled":
            return TiledConv(tile=self.tile, fit_tile=True, **common)
        return LocalConv(**common)
