"""The worked examples of classic lecture material (quoted in DESIGN.md), reproduced exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import nn as cnn
from cnn_jax import ops
from cnn_jax.ops import reference

X = np.arange(9.0).reshape(3, 3)
K = np.array([[0.0, 1.0], [2.0, 3.0]])


def conv2d(x, k, **kw):
    """Single-channel 2-D helper: (H, W) x (kh, kw) -> (H', W')."""
    return np.asarray(
        ops.conv(jnp.asarray(x, jnp.float32)[None, :, :, None], jnp.asarray(k, jnp.float32)[:, :, None, None], **kw)
    )[0, :, :, 0]


def test_cross_correlation():
    np.testing.assert_array_equal(conv2d(X, K), [[19, 25], [37, 43]])


def test_padding_and_stride():
    np.testing.assert_array_equal(conv2d(X, K, padding=1, stride=(3, 2)), [[0, 8], [6, 8]])


def test_two_input_channels():
    x = jnp.stack([X, X + 1], -1)[None].astype(jnp.float32)
    w = jnp.stack([K, K + 1], -1)[..., None].astype(jnp.float32)
    np.testing.assert_array_equal(np.asarray(ops.conv(x, w))[0, :, :, 0], [[56, 72], [104, 120]])


EDGE = np.array([[1, 0, -1]] * 3, float)


def test_vertical_edge_filter():
    image = [
        [3, 0, 1, 2, 7, 4],
        [1, 5, 8, 9, 3, 1],
        [2, 7, 2, 5, 1, 3],
        [0, 1, 3, 1, 7, 8],
        [4, 2, 1, 6, 2, 8],
        [2, 4, 5, 2, 3, 9],
    ]
    np.testing.assert_array_equal(
        conv2d(image, EDGE), [[-5, -4, 0, 8], [-10, -2, 2, 3], [0, -2, -4, -7], [-3, -2, -3, -16]]
    )


def test_edge_detection_on_step_image():
    image = np.zeros((6, 6))
    image[:, :3] = 10
    np.testing.assert_array_equal(conv2d(image, EDGE), [[0, 30, 30, 0]] * 4)


def test_true_convolution_flips_the_kernel():
    np.testing.assert_array_equal(conv2d(X, K, flip=True), conv2d(X, K[::-1, ::-1]))
    np.testing.assert_array_equal(conv2d(X, K, flip=True), [[5, 11], [23, 29]])


def pool2d(fn, x, **kw):
    return np.asarray(fn(jnp.asarray(x, jnp.float32)[None, :, :, None], **kw))[0, :, :, 0]


def test_max_and_average_pooling():
    np.testing.assert_array_equal(
        pool2d(ops.max_pool, [[1, 3, 2, 1], [2, 9, 1, 1], [1, 3, 2, 3], [5, 6, 1, 2]], window=2, stride=2),
        [[9, 2], [6, 3]],
    )
    np.testing.assert_array_equal(
        pool2d(ops.avg_pool, [[1, 3, 2, 1], [2, 9, 1, 1], [1, 4, 2, 3], [5, 6, 1, 2]], window=2, stride=2),
        [[3.75, 1.25], [4, 2]],
    )
    np.testing.assert_array_equal(pool2d(ops.max_pool, X, window=2, stride=1), [[4, 5], [7, 8]])


@pytest.mark.parametrize("n, k, s, p, expected", [(32, 5, 1, 0, 28), (5, 3, 2, 1, 3), (6, 3, 2, 1, 3)])
def test_output_size_formula(n, k, s, p, expected):
    assert ops.conv_output_size(n, k, s, p) == expected


def test_seven_5x5_layers_take_32_to_4():
    n = 32
    for _ in range(7):
        n = ops.conv_output_size(n, 5)
    assert n == 4


def test_same_padding_for_odd_kernels():
    for f in (1, 3, 5, 7):
        assert ops.resolve_padding("SAME", [10], [f], [1], [1]) == (((f - 1) // 2, (f - 1) // 2),)


def test_im2col_shapes():
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(1, 5, 5, 3)), rng.normal(size=(3, 3, 3, 32))
    x_col = reference.im2col(x, (3, 3))
    w_row = w.reshape(-1, 32).T
    assert w_row.shape == (32, 27) and x_col.shape == (27, 9)
    np.testing.assert_allclose(reference.conv_im2col(x, w), reference.conv(x, w), atol=1e-12)


def test_parameter_count_and_cost():
    assert ops.conv_params((5, 5), 3, 10) == 10 * 5 * 5 * 3 + 10
    module = cnn.Conv(features=10, kernel_size=5)
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
    assert sum(p.size for p in jax.tree.leaves(params)) == 760
    assert ops.conv_macs((64, 64), (5, 5), 100, 100) == 1_024_000_000


def test_receptive_fields():
    assert ops.receptive_field([(3, 1), (3, 1)]).size == 5
    assert ops.receptive_field([ops.Layer(3, dilation=2)]).size == 5
