"""Tiled and locally connected convolution: references, identities, flax.linen.ConvLocal, gradients."""

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import close, compiled, f32, random_configs
from jax.test_util import check_grads

from cnn_jax import ops
from cnn_jax.ops import local, reference
from cnn_jax.ops.shapes import conv_geometry


@pytest.mark.parametrize("ndim", [1, *(pytest.param(n, marks=pytest.mark.slow) for n in (2, 3))])
def test_tiled_matches_reference_on_random_shapes(rng, ndim):
    for x_shape, kernel, stride, padding, dilation, _, cout in random_configs(rng, ndim, 20):
        out = conv_geometry(x_shape[1:-1], kernel, stride, padding, dilation).out_sizes
        tile = tuple(int(rng.integers(1, o + 1)) for o in out)
        x, w = rng.normal(size=x_shape), rng.normal(size=(*tile, *kernel, x_shape[-1], cout))
        kw = dict(stride=stride, padding=padding, dilation=dilation)
        close(compiled(ops.tiled_conv, *f32(x, w), tile=tile, **kw), reference.tiled_conv(x, w, tile, **kw))


@pytest.mark.parametrize("ndim", [1, *(pytest.param(n, marks=pytest.mark.slow) for n in (2, 3))])
def test_per_phase_lowering_of_tiled_conv_matches_reference_on_random_shapes(rng, ndim):
    # The form chosen for large layers with tiles of 2 when lowering for CUDA; called directly here, since
    # the CPU never picks it (tests/test_lowering.py checks the choice).
    for x_shape, kernel, stride, padding, dilation, _, cout in random_configs(rng, ndim, 15):
        geo = conv_geometry(x_shape[1:-1], kernel, stride, padding, dilation)
        tile = tuple(int(rng.integers(1, min(o, 3) + 1)) for o in geo.out_sizes)
        x, w = rng.normal(size=x_shape), rng.normal(size=(*tile, *kernel, x_shape[-1], cout))
        kw = dict(stride=stride, padding=padding, dilation=dilation)
        close(
            compiled(local._per_phase_conv, *f32(x, w), tile=tile, geo=geo, groups=1, precision=None),
            reference.tiled_conv(x, w, tile, **kw),
        )


@pytest.mark.parametrize("ndim", [1, *(pytest.param(n, marks=pytest.mark.slow) for n in (2, 3))])
def test_local_matches_reference_on_random_shapes(rng, ndim):
    for x_shape, kernel, stride, padding, dilation, _, cout in random_configs(rng, ndim, 15):
        out = conv_geometry(x_shape[1:-1], kernel, stride, padding, dilation).out_sizes
        x, w = rng.normal(size=x_shape), rng.normal(size=(*out, *kernel, x_shape[-1], cout))
        kw = dict(stride=stride, padding=padding, dilation=dilation)
        close(compiled(ops.local_conv, *f32(x, w), **kw), reference.local_conv(x, w, **kw))


KW = dict(stride=(2, 1), padding="SAME", dilation=(1, 2))


def test_tile_one_is_conv(rng):
    x, w = f32(rng.normal(size=(2, 11, 10, 3)), rng.normal(size=(3, 3, 3, 4)))
    close(ops.tiled_conv(x, w[None, None], tile=1, **KW), ops.conv(x, w, **KW), rtol=1e-5, atol=1e-5)


def test_tile_equal_to_output_is_local_conv(rng):
    x = jnp.asarray(rng.normal(size=(2, 11, 10, 3)), jnp.float32)
    out = conv_geometry((11, 10), (3, 3), **KW).out_sizes
    w = jnp.asarray(rng.normal(size=(*out, 3, 3, 3, 4)), jnp.float32)
    close(ops.tiled_conv(x, w, tile=out, **KW), ops.local_conv(x, w, **KW), rtol=1e-5, atol=1e-5)


def test_local_with_one_shared_kernel_is_conv(rng):
    x, w = f32(rng.normal(size=(2, 11, 10, 3)), rng.normal(size=(3, 3, 3, 4)))
    out = conv_geometry((11, 10), (3, 3), **KW).out_sizes
    shared = jnp.broadcast_to(w, (*out, *w.shape))
    close(ops.local_conv(x, shared, **KW), ops.conv(x, w, **KW), rtol=1e-5, atol=1e-5)


def test_tiled_with_equal_phases_is_conv(rng):
    x, w = f32(rng.normal(size=(2, 12, 12, 3)), rng.normal(size=(3, 3, 3, 4)))
    close(
        ops.tiled_conv(x, jnp.broadcast_to(w, (3, 2, *w.shape)), tile=(3, 2), padding=1),
        ops.conv(x, w, padding=1),
        rtol=1e-5,
        atol=1e-5,
    )


def test_local_conv_matches_flax_conv_local(rng):
    x = jnp.asarray(rng.normal(size=(2, 9, 8, 3)), jnp.float32)
    layer = flax_nn.ConvLocal(features=4, kernel_size=(3, 2), strides=(2, 1), padding="VALID", use_bias=False)
    params = layer.init(jax.random.PRNGKey(0), x)
    flax_kernel = params["params"]["kernel"]  # (*out, C_in * kh * kw, C_out), patch features channel-major
    out = flax_kernel.shape[:2]
    ours = flax_kernel.reshape(*out, 3, 3, 2, 4).transpose(0, 1, 3, 4, 2, 5)
    close(ops.local_conv(x, ours, stride=(2, 1)), layer.apply(params, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op, lead", [("tiled", (2, 3)), ("local", None)])
def test_grads(rng, x64, op, lead):
    x = jnp.asarray(rng.normal(size=(2, 7, 6, 2)))
    kw = dict(stride=(1, 2), padding=1, dilation=(2, 1))
    out = conv_geometry((7, 6), (2, 3), **kw).out_sizes
    w = jnp.asarray(rng.normal(size=(*(lead or out), 2, 3, 2, 3)))
    fn = (
        (lambda x, w: ops.tiled_conv(x, w, tile=lead, **kw))
        if op == "tiled"
        else (lambda x, w: ops.local_conv(x, w, **kw))
    )
    check_grads(jax.jit(fn), (x, w), order=2, modes=["fwd", "rev"])


def test_jit_and_vmap(rng):
    """vmap over a leading axis equals a loop: the ops carry no hidden batch-size assumptions."""
    x = jnp.asarray(rng.normal(size=(3, 2, 8, 7, 2)), jnp.float32)
    wt = jnp.asarray(rng.normal(size=(2, 2, 3, 3, 2, 4)), jnp.float32)
    wl = jnp.asarray(rng.normal(size=(6, 5, 3, 3, 2, 4)), jnp.float32)
    for fn in (
        lambda x: ops.tiled_conv(x, wt, tile=2),
        lambda x: ops.local_conv(x, wl),
        lambda x: ops.lp_pool(x, 2),
        lambda x: ops.adaptive_avg_pool(x, 3),
        lambda x: ops.batch_norm_train(x, None, None, jnp.zeros(2), jnp.ones(2))[0],
    ):
        batched = jax.vmap(jax.jit(fn))(x)
        close(batched, jnp.stack([fn(row) for row in x]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["tiled", "local"])
def test_input_dilation_is_the_op_on_the_zero_spaced_input(rng, op):
    # input_dilation d puts d - 1 zeros between neighbouring inputs, then the op runs as usual (lax's
    # lhs_dilation, as in ops.conv): checked against the NumPy reference on the spaced-out input.
    x = rng.normal(size=(2, 4, 5, 3))
    spaced = np.zeros((2, 7, 13, 3))
    spaced[:, ::2, ::3] = x
    kw = dict(stride=(1, 2), padding=((1, 0), (2, 1)), dilation=(2, 1))
    out = conv_geometry(spaced.shape[1:3], (2, 3), **kw).out_sizes
    if op == "tiled":
        w = rng.normal(size=(2, 2, 2, 3, 3, 4))
        close(
            ops.tiled_conv(*f32(x, w), tile=2, input_dilation=(2, 3), **kw),
            reference.tiled_conv(spaced, w, (2, 2), **kw),
        )
    else:
        w = rng.normal(size=(*out, 2, 3, 3, 4))
        close(ops.local_conv(*f32(x, w), input_dilation=(2, 3), **kw), reference.local_conv(spaced, w, **kw))
