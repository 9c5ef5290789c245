"""Per-layer summary of a model, like torchinfo: output shape, parameters, multiply-adds,
receptive field, effective stride and effective padding, with totals and XLA's FLOP count."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_jax import nn as cnn
from cnn_jax import ops
from cnn_jax.analysis.receptive_field import Field, trace_receptive_fields


@dataclasses.dataclass(frozen=True)
class LayerRow:
    path: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int  # multiply-adds per example, analytic
    field: Field | None


@dataclasses.dataclass(frozen=True)
class Summary:
    rows: list[LayerRow]
    params: int
    macs: int
    xla_flops: float  # XLA's cost analysis of the jitted forward pass, per example

    def to_markdown(self) -> str:
        lines = [
            "| layer | type | output | params | MACs | RF | stride | padding |",
            "|---|---|---|---:|---:|---|---|---|",
        ]
        for r in self.rows:
            rf = (
                (
                    "x".join(str(f.size) for f in r.field),
                    "x".join(str(f.stride) for f in r.field),
                    "x".join(str(f.padding) for f in r.field),
                )
                if r.field
                else ("", "", "")
            )
            lines.append(
                f"| {r.path} | {r.kind} | {'x'.join(map(str, r.output_shape[1:]))} | {r.params:,} | "
                f"{r.macs:,} | {rf[0]} | {rf[1]} | {rf[2]} |"
            )
        lines.append(
            f"\nTotal: {self.params:,} parameters, {self.macs:,} multiply-adds per example: "
            f"{2 * self.macs:.4g} FLOPs analytic, {self.xla_flops:.4g} by XLA's cost analysis of the "
            "jitted forward pass."
        )
        return "\n".join(lines)


_LEAVES = (
    cnn.Conv,
    cnn.TiledConv,
    cnn.LocalConv,
    cnn.ConvTranspose,
    nn.Dense,
    cnn.BatchNorm,
    cnn.LocalResponseNorm,
    cnn.MaxPool,
    cnn.AvgPool,
    cnn.LpPool,
    cnn.GlobalAvgPool,
    cnn.GlobalMaxPool,
    cnn.AdaptiveAvgPool,
    cnn.AdaptiveMaxPool,
    cnn.BlurPool,
    cnn.TrainableSubsampling,
)


def _layer_calls(
    model: nn.Module, x: jax.Array | jax.ShapeDtypeStruct
) -> tuple[dict, list[tuple[nn.Module, int, tuple, tuple]]]:
    """The model's abstract variables, and each leaf layer's call in eval mode as (module, multiply-adds per
    example, input shape, output shape), traced without compiling."""
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
    calls = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, _LEAVES) and context.method_name == "__call__":
            calls.append((context.module, args[0].shape, out.shape))
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
    params = variables.get("params", {})
    rows = []
    for module, in_shape, out_shape in calls:
        tree = params
        for name in module.path:
            tree = tree.get(name, {}) if isinstance(tree, dict) else {}
        kernel = tree.get("kernel") if isinstance(tree, dict) else None
        rows.append((module, tree, _macs(module, kernel, in_shape, out_shape), tuple(out_shape)))
    return variables, rows


def _size(tree) -> int:
    return sum(p.size for p in jax.tree.leaves(tree))


def params_and_macs(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, int]:
    """(parameters, multiply-adds per example) of `model` on inputs of shape input_shape (no batch axis):
    the totals of `summarize`, traced abstractly, without compiling or tracing receptive fields."""
    # An abstract input: a concrete jnp.zeros would compile a program of its own.
    variables, rows = _layer_calls(model, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    return _size(variables.get("params", {})), sum(macs for _, _, macs, _ in rows)


def summarize(model: nn.Module, input_shape: Sequence[int]) -> Summary:
    """Summary of `model` on one example of shape input_shape (no batch axis), in eval mode."""
    x = jnp.zeros((1, *input_shape))
    variables, calls = _layer_calls(model, x)
    _, fields = trace_receptive_fields(model, input_shape)
    rows = [
        LayerRow(
            "/".join(module.path),
            type(module).__name__,
            out_shape,
            _size(tree),
            macs,
            fields.get(f"{type(model).__name__}/{'/'.join(module.path)}"),
        )
        for module, tree, macs, out_shape in calls
    ]
    flops = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x).compile().cost_analysis()
    flops = flops[0] if isinstance(flops, list) else flops
    return Summary(rows, _size(variables["params"]), sum(r.macs for r in rows), float(flops.get("flops", float("nan"))))


def _macs(module, kernel, in_shape, out_shape) -> int:
    """Multiply-adds per example: every output value of a convolution-like layer is one dot product over its
    kernel window (ops.conv_macs), whether its kernel is shared, tiled or one per position; under a connection
    table, over its connected channel pairs only (LeCun et al. count LeNet-5's C3 so, as 150,000 multiply-adds,
    plus one addition per output value for the bias: their 151,600 connections)."""
    if kernel is None:
        return 0
    if isinstance(module, nn.Dense):
        return kernel.size
    ndim = len(out_shape) - 2
    # A transposed convolution does one kernel's worth per input position (scattered), the others per output.
    positions = in_shape[1:-1] if isinstance(module, cnn.ConvTranspose) else out_shape[1:-1]
    if module.connections is not None:  # kernel (*lead, *window, connected pairs)
        return ops.conv_macs(positions, kernel.shape[-1 - ndim : -1], 1, kernel.shape[-1])
    return ops.conv_macs(positions, kernel.shape[-2 - ndim : -2], kernel.shape[-2], kernel.shape[-1])


def compare_conv_variants(
    name: str, input_shape: Sequence[int], num_classes: int, specs: dict[str, cnn.ConvSpec] | None = None
) -> str:
    """Markdown table of parameters, multiply-adds and receptive field of one architecture
    built with each convolution variant (default: standard, tiled 2 and 4, local, dilation 2)."""
    from cnn_jax import models

    specs = specs or {
        "standard": cnn.ConvSpec(),
        "tiled t=2": cnn.ConvSpec("tiled", tile=2),
        "tiled t=4": cnn.ConvSpec("tiled", tile=4),
        "locally connected": cnn.ConvSpec("local"),
        "dilation 2": cnn.ConvSpec(dilation=2),
    }
    lines = [
        f"| {name} {'x'.join(map(str, input_shape))} | params | x standard | MACs | receptive field |",
        "|---|---:|---:|---:|---|",
    ]
    base = None
    for label, spec in specs.items():
        try:
            summary = summarize(models.create(name, num_classes=num_classes, conv=spec), input_shape)
        except ValueError as error:  # e.g. a dilation whose kernels no longer fit
            lines.append(f"| {label} | n/a: {error} | | | |")
            continue
        base = base or summary.params
        field = next((r.field for r in reversed(summary.rows) if r.field), None)
        lines.append(
            f"| {label} | {summary.params:,} | {summary.params / base:.1f} | {summary.macs:,} | "
            f"{'x'.join(str(f.size) for f in field) if field else ''} |"
        )
    return "\n".join(lines)
