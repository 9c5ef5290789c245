"""Shape, padding and receptive-field arithmetic in plain Python ints.

Usable without JAX. Every convolution-like op validates its arguments here, so
bad input fails with a ValueError naming the argument before anything is traced.

Output size along one axis (Dumoulin & Visin 2016):
    out = floor((n + p_lo + p_hi - d*(k-1) - 1) / s) + 1

Padding modes "CIRCULAR" (periodic) and "REFLECT" pad with values of the input instead of
zeros, by ((span-1)//2, span//2) per axis as flax.linen.Conv does (span = d*(k-1)+1); at stride 1
that is the geometry of "SAME". The ops apply them as an explicit `jnp.pad` before the op.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import NamedTuple, Union

Pair = tuple[int, int]
PaddingLike = Union[str, int, Sequence[int], Sequence[Pair]]
PADDING_MODES = ("VALID", "SAME", "FULL", "CAUSAL", "CIRCULAR", "REFLECT")
# Modes that pad with values of the input: the `jnp.pad` mode of each.
ARRAY_PAD_MODES = {"CIRCULAR": "wrap", "REFLECT": "reflect"}


def as_tuple(value: int | Sequence[int], ndim: int, name: str, minimum: int = 1) -> tuple[int, ...]:
    """An int, or a sequence of `ndim` ints, as a tuple of `ndim` ints >= minimum."""
    values = (value,) * ndim if isinstance(value, int) else tuple(value) if isinstance(value, Sequence) else ()
    if len(values) != ndim or not all(isinstance(v, int) for v in values):
        raise ValueError(f"{name}={value!r}: expected an int or {ndim} ints (one per spatial axis)")
    if any(v < minimum for v in values):
        raise ValueError(f"{name}={value!r}: every entry must be >= {minimum}")
    return values


def effective_kernel_size(kernel: int, dilation: int = 1) -> int:
    """Extent of a dilated kernel: d*(k-1)+1 (a 3-tap kernel with dilation 2 spans 5)."""
    return dilation * (kernel - 1) + 1


def _mode_padding(mode: str, n: int, kernel: int, stride: int, dilation: int, ndim: int) -> Pair:
    span = effective_kernel_size(kernel, dilation)
    if mode == "VALID":
        return (0, 0)
    if mode == "SAME":  # out = ceil(n / s); extra padding goes after, as in TF/XLA
        total = max((-(-n // stride) - 1) * stride + span - n, 0)
        return (total // 2, total - total // 2)
    if mode == "FULL":  # every partial overlap: out = n + span - 1 at stride 1
        return (span - 1, span - 1)
    if mode == "CAUSAL":
        if ndim != 1:
            raise ValueError(f"padding='CAUSAL' is defined for 1-D inputs only, got {ndim} spatial axes")
        return (span - 1, 0)
    if mode in ARRAY_PAD_MODES:  # flax's split: an even span puts the extra row after
        return ((span - 1) // 2, span // 2)
    raise ValueError(
        f"padding={mode!r}: unknown mode; valid modes are {', '.join(PADDING_MODES)}, "
        "an int, or one (lo, hi) pair per spatial axis"
    )


def resolve_padding(
    padding: PaddingLike, in_sizes: Sequence[int], kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> tuple[Pair, ...]:
    """Explicit (lo, hi) padding per spatial axis.

    `padding` is a mode ("VALID", "SAME", "FULL", "CAUSAL" for 1-D, "CIRCULAR", "REFLECT"),
    an int for every side, a sequence of ints (symmetric per axis), or (lo, hi) pairs.
    SAME gives out = ceil(n / stride), with p = (f-1)/2 each side for odd f at stride 1.
    """
    ndim = len(in_sizes)
    if isinstance(padding, str):
        mode = padding.upper()
        return tuple(_mode_padding(mode, n, k, s, d, ndim) for n, k, s, d in zip(in_sizes, kernel, stride, dilation))
    if _is_int(padding):
        pairs = [(padding, padding)] * ndim
    else:
        if not isinstance(padding, Sequence):
            raise ValueError(
                f"padding={padding!r}: expected a mode string, an int, one int per spatial axis "
                "or one (lo, hi) pair of ints per spatial axis"
            )
        if len(padding) != ndim:
            raise ValueError(f"padding={padding!r}: expected {ndim} entries (one per spatial axis)")
        pairs = [_padding_pair(padding, i, e) for i, e in enumerate(padding)]
    if not all(lo >= 0 and hi >= 0 for lo, hi in pairs):
        raise ValueError(
            f"padding={padding!r}: padding amounts must be non-negative ints, "
            "given as an int, one int per axis, or one (lo, hi) pair per axis"
        )
    return tuple((int(lo), int(hi)) for lo, hi in pairs)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _padding_pair(padding, axis: int, entry) -> Pair:
    """Entry `axis` of an explicit padding: an int (both sides) or a (lo, hi) pair of ints."""
    if _is_int(entry):
        return (entry, entry)
    if isinstance(entry, Sequence) and len(entry) == 2 and all(map(_is_int, entry)):
        return tuple(entry)
    raise ValueError(f"padding={padding!r}: entry {axis} ({entry!r}) must be an int or a (lo, hi) pair of ints")


def array_pad_mode(padding: PaddingLike) -> str | None:
    """The `jnp.pad` mode ("wrap", "reflect") of a padding that pads with input values, else None."""
    return ARRAY_PAD_MODES.get(padding.upper()) if isinstance(padding, str) else None


def conv_output_size(n: int, kernel: int, stride: int = 1, padding: int | Pair | str = 0, dilation: int = 1) -> int:
    """Output length along one axis: floor((n + p_lo + p_hi - d(k-1) - 1)/s) + 1.

    `padding` is an int (each side), a (lo, hi) pair, or a mode string.
    Raises ValueError if the dilated kernel does not fit in the padded input.
    """
    ((lo, hi),) = resolve_padding(
        padding if isinstance(padding, str) else [padding], [n], [kernel], [stride], [dilation]
    )
    out = (n + lo + hi - effective_kernel_size(kernel, dilation)) // stride + 1
    if out < 1:
        raise ValueError(
            f"kernel size {kernel} with dilation {dilation} spans {effective_kernel_size(kernel, dilation)}, "
            f"larger than the padded input {n} + {lo} + {hi} = {n + lo + hi}; the output size would be {out}. "
            "Use a smaller kernel or dilation, more padding, or a larger input"
        )
    return out


class ConvGeometry(NamedTuple):
    """Validated per-axis geometry of a convolution-like op."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[Pair, ...]
    out_sizes: tuple[int, ...]


def conv_geometry(
    in_sizes: Sequence[int],
    kernel: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
) -> ConvGeometry:
    """Validate stride/dilation/padding for spatial sizes `in_sizes` and a kernel, and derive output sizes."""
    ndim = len(in_sizes)
    kernel = as_tuple(tuple(kernel), ndim, "kernel size")
    stride = as_tuple(stride, ndim, "stride")
    dilation = as_tuple(dilation, ndim, "dilation")
    pads = resolve_padding(padding, in_sizes, kernel, stride, dilation)
    out = []
    for axis, (n, k, s, d, (lo, hi)) in enumerate(zip(in_sizes, kernel, stride, dilation, pads)):
        try:
            out.append(conv_output_size(n, k, s, (lo, hi), d))
        except ValueError as e:
            raise ValueError(f"spatial axis {axis}: {e}") from None
    return ConvGeometry(kernel, stride, dilation, pads, tuple(out))


def spatial_ndim(shape: Sequence[int], name: str = "x") -> int:
    """Number of spatial axes of a channels-last activation (NWC, NHWC or NDHWC)."""
    if len(shape) not in (3, 4, 5):
        raise ValueError(
            f"{name} has shape {tuple(shape)} (rank {len(shape)}); expected rank 3, 4 or 5: NWC, NHWC or NDHWC"
        )
    return len(shape) - 2


def conv_macs(
    out_sizes: Sequence[int], kernel: Sequence[int], in_channels: int, out_channels: int, groups: int = 1
) -> int:
    """Multiply-adds of one convolution per example: positions * prod(kernel) * c_in/groups * c_out."""
    return prod(out_sizes) * prod(kernel) * (in_channels // groups) * out_channels


def conv_params(kernel: Sequence[int], in_channels: int, out_channels: int, groups: int = 1, bias: bool = True) -> int:
    """Trainable parameters of a standard convolution: K filters of F x F x D/groups, plus K biases."""
    return prod(kernel) * (in_channels // groups) * out_channels + (out_channels if bias else 0)


class Layer(NamedTuple):
    """One convolution or pooling layer along one axis, for receptive-field arithmetic."""

    kernel: int
    stride: int = 1
    padding: int | Pair | str = 0
    dilation: int = 1


class ReceptiveField(NamedTuple):
    """Receptive field of a stack along one axis (Araujo et al., Distill 2019).

    Output unit u sees input indices span(u) = [u*stride - padding, u*stride - padding + size - 1].
    """

    size: int
    stride: int
    padding: int

    def span(self, u: int) -> tuple[int, int]:
        start = u * self.stride - self.padding
        return start, start + self.size - 1

    def then(self, kernel: int, stride: int = 1, padding_lo: int = 0, dilation: int = 1) -> ReceptiveField:
        """The field after one more layer: r + d(k - 1) S, S s, P + p S (S, P: this field's stride, padding)."""
        return ReceptiveField(
            self.size + (effective_kernel_size(kernel, dilation) - 1) * self.stride,
            self.stride * stride,
            self.padding + padding_lo * self.stride,
        )


def receptive_field(layers: Sequence[Layer | tuple], input_size: int | None = None) -> ReceptiveField:
    """Receptive field size, effective stride and effective (left) padding of a layer stack.

        r = 1 + sum_l (d_l(k_l - 1)) * prod_{i<l} s_i,  S = prod_l s_l,  P = sum_l p_l * prod_{i<l} s_i

    Layers are `Layer`s or (kernel, stride, padding, dilation) tuples. Mode-string
    padding is resolved per layer; SAME at stride > 1 depends on the input size,
    so pass `input_size` then.
    """
    rf = ReceptiveField(1, 1, 0)
    n = input_size
    for i, layer in enumerate(layers):
        k, s, p, d = Layer(*layer)
        for field, value in (("kernel", k), ("stride", s), ("dilation", d)):
            as_tuple(value, 1, f"layers[{i}].{field}")
        if isinstance(p, str) and p.upper() == "SAME" and s > 1 and n is None:
            raise ValueError(
                f"layers[{i}] has padding='SAME' with stride {s}: its padding depends on the "
                "input size, so pass input_size"
            )
        ((lo, hi),) = resolve_padding(p if isinstance(p, str) else [p], [n or 1], [k], [s], [d])
        if n is not None:
            n = conv_output_size(n, k, s, (lo, hi), d)
        rf = rf.then(k, s, lo, d)
    return rf
