"""Receptive field, effective stride and effective padding of a model, from the program it traces to.

The model's forward pass (eval mode) is traced to a jaxpr, and the receptive field of every
array with the input's spatial layout is propagated through it (Araujo et al., Distill 2019):
convolutions, windowed reductions (pooling, and window sums written as a reshape that splits each
spatial axis into (windows, window) followed by a sum over the window axes), pads and strided slices
are layers; element-wise
operations, normalisation and channel concatenation take the union of their inputs' fields
(residual and Inception branches). The answer is the field of the last spatial map before
the spatial layout ends (global pooling, flattening), or of the output for dense prediction.
Nothing is tabulated per model: any architecture built from these operations is covered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.extend import core

from cnn_jax.ops.shapes import ReceptiveField

Field = tuple[ReceptiveField, ...]  # one per spatial axis

_WINDOWED = ("reduce_window_max", "reduce_window_sum", "reduce_window_min", "reduce_window")


def model_receptive_field(model: nn.Module, input_shape: Sequence[int]) -> Field:
    """Per spatial axis: (size, stride, padding) at the model's last spatial feature map.

    input_shape excludes the batch axis, e.g. (224, 224, 3). Tiled and locally connected
    variants have the geometry of the standard convolution, so that program is analysed.
    """
    return trace_receptive_fields(model, input_shape)[0]


def trace_receptive_fields(model: nn.Module, input_shape: Sequence[int]) -> tuple[Field, dict[str, Field]]:
    """The model's receptive field and, per module path ("ResNet/stage1_block1/conv1"), the field of
    the last spatial array that module produced."""
    layers = model.layers
    if layers.conv.kind != "standard":
        model = model.clone(layers=dataclasses.replace(layers, conv=dataclasses.replace(layers.conv, kind="standard")))
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(x.shape)))
    closed = jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, x)
    ndim = len(input_shape) - 1
    identity = tuple(ReceptiveField(1, 1, 0) for _ in range(ndim))
    tracer = _Tracer(ndim)
    env = {var: None for var in closed.jaxpr.invars}
    env[closed.jaxpr.invars[-1]] = identity
    outputs = tracer.walk(closed.jaxpr, env)
    result = outputs[0] if outputs and outputs[0] is not None else tracer.last_spatial
    if result is None:
        raise ValueError("the model's output does not depend on its input through spatial operations")
    return result, tracer.by_module


def _module_path(eqn) -> str:
    """Flax puts "Model/child/grandchild/grandchild.method" on the name stack; drop the method."""
    parts = str(eqn.source_info.name_stack).split("/")
    return "/".join(parts[:-1] if parts and "." in parts[-1] else parts)


def _layer(field: Field, kernel, stride, padding_lo, dilation) -> Field:
    return tuple(f.then(k, s, lo, d) for f, k, s, lo, d in zip(field, kernel, stride, padding_lo, dilation))


def _union(fields: list[Field]) -> Field:
    merged = []
    for axis_fields in zip(*fields):
        if len({f.stride for f in axis_fields}) != 1:
            raise ValueError(f"branches with different effective strides meet: {axis_fields}")
        padding = max(f.padding for f in axis_fields)
        end = max(f.size - 1 - f.padding for f in axis_fields)
        merged.append(ReceptiveField(end + padding + 1, axis_fields[0].stride, padding))
    return tuple(merged)


class _Tracer:
    def __init__(self, ndim: int):
        self.ndim = ndim
        self.last_spatial: Field | None = None  # the field of the last spatial map consumed by a non-spatial op
        self.by_module: dict[str, Field] = {}  # module path -> field of the last spatial array it produced
        # A spatial array reshaped to (N, o_1, k_1, ..., o_n, k_n, C): its field and the windows (k_1, ..., k_n).
        self.split: dict[core.Var, tuple[Field, tuple[int, ...]]] = {}

    def walk(self, jaxpr, env) -> list:
        read = lambda v: None if isinstance(v, core.Literal) else env.get(v)
        for eqn in jaxpr.eqns:
            fields = [read(v) for v in eqn.invars]
            for var, field in zip(eqn.outvars, self.rule(eqn, fields)):
                env[var] = field
                if field is not None:
                    self.by_module[_module_path(eqn)] = field
        return [read(v) for v in jaxpr.outvars]

    def rule(self, eqn, fields: list) -> list:
        if eqn.primitive.name == "reduce_sum" and eqn.invars[0] in self.split:
            field, windows = self.split[eqn.invars[0]]
            if tuple(eqn.params["axes"]) == tuple(range(2, 2 * self.ndim + 1, 2)):
                return [_layer(field, windows, windows, [0] * self.ndim, [1] * self.ndim)]
        if eqn.primitive.name == "reshape" and fields[0] is not None:
            windows = self._windows(eqn.invars[0].aval.shape, eqn.outvars[0].aval.shape)
            if windows:
                self.split[eqn.outvars[0]] = (fields[0], windows)
        tracked = [(v, f) for v, f in zip(eqn.invars, fields) if f is not None]
        if not tracked:
            return [None] * len(eqn.outvars)
        if eqn.primitive.name == "cond":
            # The branches of `lax.platform_dependent` (ops.conv's XLA:CPU and plain lowerings) compute one
            # function, so any of them has its geometry; the last is the plain one.
            branch = eqn.params["branches"][-1].jaxpr
            return self.walk(branch, dict(zip(branch.invars, fields[1:])))
        sub = _sub_jaxpr(eqn)
        if sub is not None:
            return self.walk(sub, dict(zip(sub.invars, fields)))
        name, params = eqn.primitive.name, eqn.params
        field = tracked[0][1]
        spatial = slice(1, 1 + self.ndim)
        if name == "conv_general_dilated" and fields[0] is not None:
            if any(d != 1 for d in params["lhs_dilation"]):
                raise ValueError("transposed convolutions (lhs_dilation) are not supported")
            rhs_spec = params["dimension_numbers"].rhs_spec
            kernel = [eqn.invars[1].aval.shape[a] for a in rhs_spec[2:]]
            lows = [lo for lo, _ in params["padding"]]
            return [_layer(fields[0], kernel, params["window_strides"], lows, params["rhs_dilation"])]
        if name in _WINDOWED:
            lows = [lo for lo, _ in params["padding"]][spatial]
            return [
                _layer(
                    field,
                    params["window_dimensions"][spatial],
                    params["window_strides"][spatial],
                    lows,
                    params["window_dilation"][spatial],
                )
            ] * len(eqn.outvars)
        if name == "pad" and fields[0] is not None:
            config = params["padding_config"][spatial]
            if any(interior for _, _, interior in config):
                raise ValueError("interior padding (input dilation) is not supported")
            return [_layer(field, [1] * self.ndim, [1] * self.ndim, [lo for lo, _, _ in config], [1] * self.ndim)]
        if name == "slice":
            starts = params["start_indices"][spatial]
            strides = (params["strides"] or (1,) * len(params["start_indices"]))[spatial]
            return [_layer(field, [1] * self.ndim, strides, [-s for s in starts], [1] * self.ndim)]
        out_shape = eqn.outvars[0].aval.shape
        keeps_layout = all(len(o.aval.shape) == self.ndim + 2 for o in eqn.outvars) and all(
            v.aval.shape[spatial] == out_shape[spatial] for v, _ in tracked
        )
        if keeps_layout and name not in ("transpose", "reshape"):
            return [_union([f for _, f in tracked])] * len(eqn.outvars)
        self.last_spatial = _union([f for _, f in tracked])
        return [None] * len(eqn.outvars)

    def _windows(self, before: tuple[int, ...], after: tuple[int, ...]) -> tuple[int, ...] | None:
        """k_1..k_n if a reshape takes (N, s_1, ..., s_n, C) to (N, s_1/k_1, k_1, ..., s_n/k_n, k_n, C)."""
        if len(before) != self.ndim + 2 or len(after) != 2 * self.ndim + 2:
            return None
        if (before[0], before[-1]) != (after[0], after[-1]):
            return None
        pairs = [after[1 + 2 * i : 3 + 2 * i] for i in range(self.ndim)]
        if any(o * k != s for (o, k), s in zip(pairs, before[1:-1])):
            return None
        return tuple(k for _, k in pairs)


def _sub_jaxpr(eqn):
    """The inner jaxpr of call-like primitives (jit, custom_jvp_call, checkpoint, ...), if its inputs match."""
    for value in eqn.params.values():
        inner = value.jaxpr if isinstance(value, core.ClosedJaxpr) else value
        if isinstance(inner, core.Jaxpr) and len(inner.invars) == len(eqn.invars):
            return inner
    return None
