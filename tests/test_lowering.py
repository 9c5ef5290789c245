"""What an accelerator compiles, checked on the CPU: programs lowered for CUDA (`jax.export`) hold none of the
XLA:CPU workarounds of `ops.conv`, which are chosen when lowering for the CPU only."""

import jax
import jax.numpy as jnp
import pytest

from benchmarks.flax_nets import FlaxResNet50
from cnn_jax import models, ops

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
