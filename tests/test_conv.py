"""conv and conv_transpose against the NumPy definitions, gradients and the backprop identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import close, compiled, f32, random_configs
from jax.test_util import check_grads

from cnn_jax import ops
from cnn_jax.ops import reference


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_conv_matches_reference_on_random_shapes(rng, ndim):
    for x_shape, kernel, stride, padding, dilation, groups, cout in random_configs(rng, ndim, 25, groups=True):
        x = rng.normal(size=x_shape)
        w = rng.normal(size=(*kernel, x_shape[-1] // groups, cout))
        flip = bool(rng.integers(2))
        kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, flip=flip)
        close(compiled(ops.conv, *f32(x, w), **kw), reference.conv(x, w, **kw))


def test_im2col_is_the_loop_definition(rng):
    for x_shape, kernel, stride, padding, dilation, _, cout in random_configs(rng, 2, 10):
        x, w = rng.normal(size=x_shape), rng.normal(size=(*kernel, x_shape[-1], cout))
        np.testing.assert_allclose(
            reference.conv_im2col(x, w, stride, padding, dilation),
            reference.conv(x, w, stride, padding, dilation),
            atol=1e-12,
        )


def test_depthwise(rng):
    x, w = rng.normal(size=(2, 7, 7, 4)), rng.normal(size=(3, 3, 1, 8))
    y = ops.conv(jnp.asarray(x), jnp.asarray(w), padding="SAME", groups=4)
    for c in range(4):  # channel c feeds outputs 2c and 2c+1 only
        close(y[..., 2 * c : 2 * c + 2], reference.conv(x[..., c : c + 1], w[..., 2 * c : 2 * c + 2], padding="SAME"))


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_conv_transpose_matches_scatter_reference(rng, ndim):
    for x_shape, kernel, stride, padding, dilation, _, cout in random_configs(rng, ndim, 10):
        w = rng.normal(size=(*kernel, x_shape[-1], cout))
        geo = ops.shapes.conv_geometry(x_shape[1:-1], kernel, stride, padding, dilation)
        y = rng.normal(size=(x_shape[0], *geo.out_sizes, cout))
        got = compiled(
            ops.conv_transpose,
            *f32(y, w),
            stride=stride,
            padding=padding,
            dilation=dilation,
            input_size=x_shape[1:-1],
        )
        close(got, reference.conv_transpose(y, w, x_shape[1:-1], stride, padding, dilation))


def test_conv_transpose_default_size_inverts_the_shape():
    y = jnp.ones((1, 4, 4, 2))
    w = jnp.ones((3, 3, 5, 2))
    assert ops.conv_transpose(y, w, stride=2, padding="SAME").shape == (1, 8, 8, 5)
    assert ops.conv_transpose(y, w, stride=2).shape == (1, 9, 9, 5)
    assert ops.conv_transpose(y, w, stride=1, padding="FULL").shape == (1, 2, 2, 5)


def test_conv_transpose_is_the_input_gradient(rng):
    x = jnp.asarray(rng.normal(size=(2, 9, 8, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 2, 3, 4)), jnp.float32)
    kw = dict(stride=(2, 3), padding=((1, 0), (2, 1)), dilation=(1, 2))
    y, vjp = jax.vjp(lambda x: ops.conv(x, w, **kw), x)
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    close(ops.conv_transpose(g, w, input_size=(9, 8), **kw), vjp(g)[0], rtol=1e-5, atol=1e-5)


def test_gradient_identities(rng):
    """Kernel gradient = cross-correlation of the input with the output gradient; input gradient =
    full convolution of the output gradient with the flipped kernel (channels swapped)."""
    x = jnp.asarray(rng.normal(size=(3, 8, 7, 2)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 2, 2, 4)), jnp.float32)
    y, vjp = jax.vjp(lambda x, w: ops.conv(x, w), x, w)
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    dx, dw = vjp(g)
    # dW[a, b, c, o] = sum_{n,i,j} x[n, i+a, j+b, c] g[n, i, j, o]: batch becomes the contracted channel.
    dw_by_xcorr = ops.conv(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3)).transpose(1, 2, 0, 3)
    close(dw, dw_by_xcorr, rtol=1e-4, atol=1e-4)
    dx_by_full_conv = ops.conv(g, w.transpose(0, 1, 3, 2), padding="FULL", flip=True)
    close(dx, dx_by_full_conv, rtol=1e-5, atol=1e-5)
    close(dx, ops.conv_transpose(g, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(stride=2, padding="SAME"), dict(dilation=2, padding="FULL"), dict(groups=2, padding=1, flip=True)],
)
def test_conv_grads(rng, x64, kw):
    x, w = jnp.asarray(rng.normal(size=(2, 7, 6, 4))), jnp.asarray(rng.normal(size=(3, 2, 4 // kw.get("groups", 1), 4)))
    check_grads(lambda x, w: ops.conv(x, w, **kw), (x, w), order=2, modes=["fwd", "rev"])
    y = jnp.asarray(rng.normal(size=ops.conv(x, w, **kw).shape))
    check_grads(lambda y, w: ops.conv_transpose(y, w, input_size=(7, 6), **kw), (y, w), order=1, modes=["rev"])


def test_conv_is_jit_and_vmap_safe(rng):
    x, w = jnp.asarray(rng.normal(size=(4, 2, 9, 3)), jnp.float32), jnp.asarray(rng.normal(size=(3, 3, 5)), jnp.float32)
    per_row = jax.vmap(jax.jit(lambda x: ops.conv(x, w, padding="CAUSAL")))(x)
    close(per_row, np.stack([reference.conv(np.asarray(r), np.asarray(w), padding="CAUSAL") for r in x]))


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_kernel_gradient_is_xcol_times_output_gradient(rng, ndim):
    """dW_row = G_row X_col^T on random shapes: the im2col form of the kernel-gradient identity."""
    for x_shape, kernel, stride, padding, dilation, _, cout in random_configs(rng, ndim, 8):
        x = rng.normal(size=x_shape)
        w = jnp.asarray(rng.normal(size=(*kernel, x_shape[-1], cout)), jnp.float32)
        kw = dict(stride=stride, padding=padding, dilation=dilation)
        y, vjp = jax.vjp(jax.jit(lambda w: ops.conv(jnp.asarray(x, jnp.float32), w, **kw)), w)
        g = rng.normal(size=y.shape)
        x_col = reference.im2col(x, kernel, **kw)
        close(vjp(jnp.asarray(g, jnp.float32))[0], (x_col @ g.reshape(-1, cout)).reshape(w.shape), rtol=1e-4, atol=1e-4)
