"""What an accelerator compiles, checked on the CPU: programs lowered for CUDA (`jax.export`) hold none of the
XLA:CPU workarounds of `ops.conv`, which are chosen when lowering for the CPU only."""

import math
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import pytest

from benchmarks.flax_nets import FlaxResNet50
from cnn_jax import models, ops
from cnn_jax import nn as cnn

OPS = ("stablehlo.pad", "stablehlo.convolution")


def op_counts(fn, *args, platform: str) -> dict[str, int]:
    text = jax.export.export(jax.jit(fn), platforms=[platform])(*args).mlir_module()
    return {op: text.count(op) for op in OPS}


def resnet50_gradient_counts(model, platform: str) -> dict[str, int]:
    x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.bfloat16)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False))

    def loss(params, batch_stats, x):
        logits, _ = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])
        return logits.astype(jnp.float32).sum()

    return op_counts(jax.grad(loss), variables["params"], variables["batch_stats"], x, platform=platform)


def test_resnet50_gradient_for_cuda_holds_no_more_pads_and_convolutions_than_plain_flax():
    ours = resnet50_gradient_counts(models.create("resnet50", num_classes=1000, dtype=jnp.bfloat16), "cuda")
    flax = resnet50_gradient_counts(FlaxResNet50(num_classes=1000, dtype=jnp.bfloat16), "cuda")
    assert flax["stablehlo.convolution"] > 100  # the network's forward and backward convolutions
    assert ours["stablehlo.pad"] <= flax["stablehlo.pad"], (ours, flax)
    assert ours["stablehlo.convolution"] <= flax["stablehlo.convolution"], (ours, flax)


def test_the_cpu_lowering_of_the_same_gradient_keeps_its_workaround():
    # The padded-then-sliced form of unpadded stride-1 convolutions (the 1x1 convolutions here): the
    # platform choice, not the model, is what the CUDA test above sees.
    model = models.create("resnet50", num_classes=1000, dtype=jnp.bfloat16)
    assert (
        resnet50_gradient_counts(model, "cpu")["stablehlo.pad"]
        > resnet50_gradient_counts(model, "cuda")["stablehlo.pad"]
    )


@pytest.mark.parametrize("platform, pads", [("cuda", 0), ("cpu", 1)])
def test_strided_conv_whose_kernel_exceeds_the_input_pads_explicitly_only_for_the_cpu(platform, pads):
    # The XLA:CPU crash guard (docs/performance.md): a 2x3 kernel, stride 2, padding 1 on a 6x2 input.
    x, w = jnp.ones((1, 6, 2, 1)), jnp.ones((2, 3, 1, 1))
    grad = jax.grad(lambda x: ops.conv(x, w, stride=2, padding=1).sum())
    assert op_counts(grad, x, platform=platform)["stablehlo.pad"] == pads


@pytest.mark.parametrize("batch, tile, convolutions", [(256, 2, 4), (4, 2, 0), (256, 4, 0)])
def test_tiled_conv_for_cuda_uses_per_phase_convolutions_only_where_they_measured_faster(batch, tile, convolutions):
    # Forward pass only: 4 strided convolutions at t=2 on a GPU-sized layer; the patch form (a dot_general,
    # no convolution) on small layers and larger tiles. The CPU always gets the patch form.
    x = jax.ShapeDtypeStruct((batch, 32, 32, 64), jnp.float32)
    w = jax.ShapeDtypeStruct((tile, tile, 3, 3, 64, 64), jnp.float32)
    tiled = lambda x, w: ops.tiled_conv(x, w, tile=tile, padding="SAME")
    assert op_counts(tiled, x, w, platform="cuda")["stablehlo.convolution"] == convolutions
    assert op_counts(tiled, x, w, platform="cpu")["stablehlo.convolution"] == 0


def full_size_reductions(text: str, whole: Callable[[list[int]], bool]) -> dict[str, set[str]]:
    """Each reduction of a StableHLO module whose operand's dimensions are `whole` (a whole activation), mapped
    to the whole-activation reductions among its operand's ancestors."""
    defs: dict[str, tuple[str, list[str], str]] = {}
    for line in text.splitlines():
        match = re.match(r"\s*(%[\w.]+)(?::\d+)? = ([\w.]+)(.*)", line)
        if match:
            name, op, rest = match.groups()
            defs[name] = (op, [u.split("#")[0] for u in re.findall(r"%[\w.#]+", rest.split(" loc(")[0])], rest)

    def operand_dims(rest: str) -> list[int]:
        return [int(d) for d in re.search(r": \(tensor<((?:\d+x)*)\w+>", rest).group(1).split("x")[:-1]]

    full = {name for name, (op, _, rest) in defs.items() if op == "stablehlo.reduce" and whole(operand_dims(rest))}

    def ancestors(name: str) -> set[str]:
        seen, todo = set(), list(defs[name][1])
        while todo:
            value = todo.pop()
            if value in seen or value not in defs:
                continue
            seen.add(value)
            todo.extend(defs[value][1])
        return seen

    return {name: ancestors(name) & full for name in full}


@pytest.mark.parametrize("virtual_batch_size", [None, 2])
def test_batchnorm_statistics_for_cuda_read_the_activations_in_one_pass(virtual_batch_size):
    # Shifted moments: E[x - s] and E[(x - s)^2] side by side, neither waiting for a reduction over the whole
    # activation (the shift is a reduction over a strided subsample of it); XLA fuses the two into one pass.
    layer = cnn.BatchNorm(use_running_average=False, virtual_batch_size=virtual_batch_size)
    x = jnp.zeros((8, 4, 4, 16), jnp.bfloat16)
    variables = layer.init(jax.random.key(0), x)
    text = jax.export.export(jax.jit(lambda v, x: layer.apply(v, x, mutable=["batch_stats"])), platforms=["cuda"])(
        variables, x
    ).mlir_module()
    reductions = full_size_reductions(text, lambda dims: math.prod(dims) == x.size)
    assert len(reductions) == 2 and not any(reductions.values()), reductions


def test_resnet50_step_for_cuda_reduces_its_activations_no_more_often_than_plain_flax():
    def reductions(model) -> int:
        x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.bfloat16)
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False))

        def loss(params, batch_stats, x):
            logits, _ = model.apply(
                {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
            )
            return logits.astype(jnp.float32).sum()

        exported = jax.export.export(jax.jit(jax.grad(loss)), platforms=["cuda"])
        text = exported(variables["params"], variables["batch_stats"], x).mlir_module()
        return len(full_size_reductions(text, lambda dims: len(dims) == 4 and dims[0] == 2))

    ours = reductions(models.create("resnet50", num_classes=1000, dtype=jnp.bfloat16))
    flax = reductions(FlaxResNet50(num_classes=1000, dtype=jnp.bfloat16))
    assert flax > 100 and ours <= flax, (ours, flax)
