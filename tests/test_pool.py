"""Pooling against the NumPy definitions, the arg-max routing of max-pool gradients, adaptive pooling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import close, random_configs
from jax.test_util import check_grads

from cnn_jax import ops
from cnn_jax.ops import reference
from cnn_jax.ops.shapes import conv_geometry


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_pools_match_reference_on_random_shapes(rng, ndim):
    for x_shape, window, stride, padding, dilation, _, _ in random_configs(rng, ndim, 15):
        geo = conv_geometry(x_shape[1:-1], window, stride, padding)
        if dilation != (1,) * ndim or any(max(p) >= k for p, k in zip(geo.padding, window)):
            continue  # pooling windows are undilated, and must each hold a real input
        x = rng.normal(size=x_shape)
        xj = jnp.asarray(x, jnp.float32)
        close(ops.max_pool(xj, window, stride, padding), reference.max_pool(x, window, stride, padding))
        for include in (True, False):
            close(
                ops.avg_pool(xj, window, stride, padding, include),
                reference.avg_pool(x, window, stride, padding, include),
            )
        close(
            ops.lp_pool(xj, window, stride, padding, p=3.0),
            reference.lp_pool(x, window, stride, padding, 3.0),
            rtol=1e-4,
            atol=1e-5,
        )


@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_a_sequence_window_takes_any_batch_axes(rng, batch):
    """flax's rule: len(window) spatial axes after any number of batch axes, none included; the NumPy
    definitions on the batch axes merged into one."""
    for x_shape, window, stride, padding, dilation, _, _ in random_configs(rng, 2, 8):
        geo = conv_geometry(x_shape[1:-1], window, stride, padding)
        if dilation != (1, 1) or any(max(p) >= k for p, k in zip(geo.padding, window)):
            continue
        x = rng.normal(size=(*batch, *x_shape[1:]))
        merged = x.reshape(-1, *x_shape[1:])
        unmerge = lambda y: y.reshape(*batch, *y.shape[1:])  # noqa: E731
        xj = jnp.asarray(x, jnp.float32)
        close(ops.max_pool(xj, window, stride, padding), unmerge(reference.max_pool(merged, window, stride, padding)))
        close(
            ops.pool(xj, 1.0, jax.lax.mul, window, stride, padding),
            unmerge(reference.pool(merged, 1.0, np.multiply, window, stride, padding)),
            rtol=1e-4,
        )
        for include in (True, False):
            expected = reference.avg_pool(merged, window, stride, padding, include)
            close(ops.avg_pool(xj, window, stride, padding, include), unmerge(expected))
        close(
            ops.lp_pool(xj, window, stride, padding, p=3.0),
            unmerge(reference.lp_pool(merged, window, stride, padding, 3.0)),
            rtol=1e-4,
            atol=1e-5,
        )
    with pytest.raises(ValueError, match=r"too few axes for window=\(2, 2\): expected \(\*batch, 2 spatial axes, C\)"):
        ops.max_pool(jnp.ones((4, 4)), (2, 2))


def test_stride_defaults_to_window():
    assert ops.max_pool(jnp.ones((1, 8, 8, 1)), 2).shape == (1, 4, 4, 1)


def test_l2_pool_is_root_sum_of_squares():
    x = jnp.array([[3.0, 4.0], [0.0, 0.0]])[None, :, :, None]
    np.testing.assert_allclose(ops.lp_pool(x, 2)[0, 0, 0, 0], 5.0)


@pytest.mark.parametrize("transform", [lambda f: f, jax.jit])
def test_max_pool_gradient_routes_to_the_argmax(rng, transform):
    x = jnp.asarray(rng.permutation(36).reshape(1, 6, 6, 1), jnp.float32)
    grad = transform(jax.grad(lambda x: ops.max_pool(x, 2).sum()))(x)
    expected = np.zeros((6, 6))
    for i in range(3):
        for j in range(3):
            block = np.asarray(x[0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, 0])
            a, b = np.unravel_index(block.argmax(), block.shape)
            expected[2 * i + a, 2 * j + b] = 1
    np.testing.assert_array_equal(grad[0, :, :, 0], expected)


def test_lp_pool_gradient_is_finite_at_zero():
    assert np.isfinite(jax.grad(lambda x: ops.lp_pool(x, 2).sum())(jnp.zeros((1, 4, 4, 1)))).all()


@pytest.mark.parametrize(
    "in_size, out_size",
    [((7, 9), (3, 4)), ((8, 8), (4, 2)), ((5, 5), (5, 5)), ((6, 3), 1), ((1, 1), (7, 7)), ((3, 4), (5, 8))],
)
def test_adaptive_pools(rng, in_size, out_size):
    x = rng.normal(size=(2, *in_size, 3))
    close(ops.adaptive_avg_pool(jnp.asarray(x, jnp.float32), out_size), reference.adaptive_pool(x, out_size, np.mean))
    close(ops.adaptive_max_pool(jnp.asarray(x, jnp.float32), out_size), reference.adaptive_pool(x, out_size, np.max))


def test_global_pools(rng):
    x = rng.normal(size=(2, 5, 4, 3, 6))
    close(ops.global_avg_pool(jnp.asarray(x, jnp.float32)), x.mean((1, 2, 3)))
    close(ops.global_max_pool(jnp.asarray(x, jnp.float32)), x.max((1, 2, 3)))
    assert ops.global_avg_pool(jnp.ones((2, 5, 3)), keepdims=True).shape == (2, 1, 3)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: ops.max_pool(x, 2, 1, "SAME"),
        lambda x: ops.avg_pool(x, 3, 2, 1, False),
        lambda x: ops.lp_pool(x, 2),
        lambda x: ops.adaptive_avg_pool(x, (2, 3)),
        lambda x: ops.adaptive_max_pool(x, 3),
        ops.global_avg_pool,
    ],
)
def test_pool_grads(rng, x64, fn):
    x = jnp.asarray(rng.normal(size=(2, 6, 7, 2)))
    check_grads(fn, (x,), order=1, modes=["fwd", "rev"])
    jax.jit(jax.grad(lambda x: fn(x).sum()))(x)  # under jit too, where the window's initial value is traced


@pytest.mark.parametrize("shape, window", [((2, 10, 10, 3), 2), ((2, 11, 9, 3), (2, 3)), ((3, 7, 2), 3)])
def test_trainable_subsampling_is_a_weighted_window_sum(rng, shape, window):
    """LeNet-5's S2/S4: coefficient * (sum over each VALID window, stride = window; remainders dropped) + bias,
    computed as a reshape; checked against the NumPy pooling definition."""
    from cnn_jax import nn as cnn

    x = rng.normal(size=shape).astype(np.float32)
    layer = cnn.TrainableSubsampling(window)
    variables = layer.init(jax.random.PRNGKey(0), x)
    coefficient = rng.normal(size=shape[-1]).astype(np.float32)
    bias = rng.normal(size=shape[-1]).astype(np.float32)
    got = layer.apply({"params": {"coefficient": coefficient, "bias": bias}}, x)
    windows = window if isinstance(window, tuple) else (window,) * (len(shape) - 2)
    close(got, reference.avg_pool(x, windows) * np.prod(windows) * coefficient + bias)
    close(layer.apply(variables, x), reference.avg_pool(x, windows))  # it starts as average pooling
