"""flax.linen's own Conv, ConvLocal, ConvTranspose and pooling test cases (tests/linen/linen_linear_test.py,
tests/linen/linen_test.py), run on flax.linen and cnn_jax side by side, with flax's expected values checked exactly.

Where cnn_jax follows another convention on purpose, the case converts with the one-liner from
docs/coming_from_flax_and_pytorch.md, then compares. ConvTranspose takes flax's `transpose_kernel`: with it set,
flax's parameters load unchanged, so its cases run both ways.
"""

import functools

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import close
from jax import lax
from jax.nn import initializers

from cnn_jax import nn as cnn
from cnn_jax import ops
from cnn_jax.nn.conv import with_one_batch_axis
from cnn_jax.ops.shapes import as_tuple

KEY = jax.random.PRNGKey(0)


def local_from_flax(kernel, kernel_size, c_in):
    """ConvLocal's (*out, C_in * prod(kernel), C_out), channel-major -> LocalConv's (*out, *kernel, C_in, C_out)."""
    ndim = len(kernel_size)
    return jnp.moveaxis(kernel.reshape(*kernel.shape[:ndim], c_in, *kernel_size, kernel.shape[-1]), ndim, -2)


def transpose_from_flax(kernel):
    """flax ConvTranspose's default kernel (*kernel, C_in, features) -> cnn_jax's (*kernel, features, C_in)."""
    return jnp.flip(kernel, tuple(range(kernel.ndim - 2))).swapaxes(-1, -2)


def circular_transpose_shift(in_sizes, kernel, strides, dilation, transpose_kernel) -> tuple[int, ...]:
    """flax's CIRCULAR ConvTranspose = jnp.roll(cnn_jax's, -shift): flax pads the VALID transposed output to
    whole periods and folds it, cnn_jax is the exact adjoint of the CIRCULAR convolution; they differ by where
    the first tap lands (docs/coming_from_flax_and_pytorch.md)."""
    shifts = []
    for n, k, s, d in zip(in_sizes, kernel, strides, dilation):
        span, period = d * (k - 1) + 1, n * s
        size_diff = -max(span - s, 0) % (2 * period)  # flax's padding of the VALID output, split below
        flax_left = size_diff // 2 if transpose_kernel else (size_diff + 1) // 2
        shifts.append((-((span - 1) // 2) - flax_left) % period)
    return tuple(shifts)


def both(flax_module, ours_module, x, convert=lambda p: p):
    """Outputs of flax's module (its own init) and ours on flax's parameters, converted."""
    y_flax, variables = flax_module.init_with_output(KEY, x)
    params = {"params": convert(dict(variables["params"]))}
    return y_flax, ours_module.apply(params, x), variables


ONES = dict(kernel_init=initializers.ones, bias_init=initializers.ones)


# --- linen_linear_test.py: Conv ---------------------------------------------------------------------------------


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("x_shape, y_shape", [((1, 8, 3), (1, 6, 4)), ((2, 5, 8, 3), (2, 5, 6, 4)), ((8, 3), (6, 4))])
def test_conv_batch_layouts(use_bias, x_shape, y_shape):
    kw = dict(features=4, use_bias=use_bias, kernel_size=(3,), padding="VALID", **ONES)
    y_flax, y_ours, variables = both(fnn.Conv(**kw), cnn.Conv(**kw), jnp.ones(x_shape))
    assert variables["params"]["kernel"].shape == (3, 3, 4)
    for y in (y_flax, y_ours):
        np.testing.assert_array_equal(y, np.full(y_shape, 10.0 if use_bias else 9.0))


def test_single_input_masked_conv():
    kw = dict(features=4, kernel_size=(3,), padding="VALID", mask=jnp.tril(jnp.ones((3, 3, 4))), **ONES)
    expected = np.tile([10.0, 7.0, 4.0, 1.0], (6, 1))
    for y in both(fnn.Conv(**kw), cnn.Conv(**kw), jnp.ones((8, 3)))[:2]:
        np.testing.assert_array_equal(y, expected)


def test_group_conv():
    kw = dict(features=4, kernel_size=(3,), feature_group_count=2, padding="VALID", **ONES)
    y_flax, y_ours, variables = both(fnn.Conv(**kw), cnn.Conv(**kw), jnp.ones((1, 8, 4)))
    assert variables["params"]["kernel"].shape == (3, 2, 4)
    for y in (y_flax, y_ours):
        np.testing.assert_array_equal(y, np.full((1, 6, 4), 7.0))


@pytest.mark.parametrize("x_shape", [(1, 8, 2), (8, 2)])
def test_conv_local(x_shape):
    kw = dict(features=4, kernel_size=(3,), padding="VALID", **ONES)
    y_flax, y_ours, variables = both(
        fnn.ConvLocal(**kw),
        cnn.LocalConv(**kw),
        jnp.ones(x_shape),
        lambda p: {**p, "kernel": local_from_flax(p["kernel"], (3,), 2)},
    )
    assert variables["params"]["kernel"].shape == (6, 3 * 2, 4)
    for y in (y_flax, y_ours):
        np.testing.assert_array_equal(y, np.full((*x_shape[:-2], 6, 4), 7.0))


@pytest.mark.parametrize("module", ["Conv", "ConvLocal"])
@pytest.mark.parametrize("kernel_size", [1, 2, 3, pytest.param(9, marks=pytest.mark.slow)])
def test_circular_conv_constant(module, kernel_size):
    """An all-ones kernel on an all-ones input: C_in * prod(kernel) everywhere, in 1-D and 2-D."""
    ours_module = {"Conv": cnn.Conv, "ConvLocal": cnn.LocalConv}[module]
    for x_shape in [(3, 1, 3), (1, 8, 1), (3, 16, 3), (1, 14, 5, 5), (3, 6, 10, 1)]:
        ndim = len(x_shape) - 2
        kw = dict(
            features=2,
            kernel_size=(kernel_size,) * ndim,
            padding="CIRCULAR",
            kernel_init=initializers.ones,
            bias_init=initializers.zeros,
        )
        y_flax, variables = getattr(fnn, module)(**kw).init_with_output(KEY, jnp.ones(x_shape))
        y_ours, ours_variables = ours_module(**kw).init_with_output(KEY, jnp.ones(x_shape))
        expected = np.full((*x_shape[:-1], 2), kernel_size**ndim * x_shape[-1])
        np.testing.assert_array_equal(y_flax, expected)
        np.testing.assert_array_equal(y_ours, expected)
        if module == "ConvLocal":  # same parameter count, our layout
            flax_kernel = variables["params"]["kernel"]
            assert (
                ours_variables["params"]["kernel"].shape
                == local_from_flax(flax_kernel, (kernel_size,) * ndim, x_shape[-1]).shape
            )


def _custom(module, ours_module, x, kernel, convert=lambda k: k, **kw):
    """Both modules with a given flax-layout kernel and zero bias, on integer inputs given as in flax's tests."""
    x = jnp.asarray(x, jnp.float32)
    flax_layer = module(kernel_init=lambda *_: jnp.asarray(kernel, jnp.float32), bias_init=initializers.zeros, **kw)
    y_flax, variables = flax_layer.init_with_output(KEY, x)
    params = {"params": {**variables["params"], "kernel": convert(variables["params"]["kernel"])}}
    return y_flax, ours_module(**kw).apply(params, x)


X5 = np.expand_dims(np.arange(1, 6), (0, 2))
X3x3 = np.expand_dims(np.arange(1, 10).reshape(3, 3), (0, 3))
CROSS = np.expand_dims(np.array(((0, 1, 0), (1, 2, 1), (0, 1, 0))), (2, 3))
K121 = np.expand_dims(np.array((1, 2, 1)), (1, 2))


@pytest.mark.parametrize(
    "kw, expected",
    [
        (dict(strides=(3,), padding="CIRCULAR"), (5 + 2 * 1 + 2, 3 + 2 * 4 + 5)),
        (dict(kernel_dilation=(3,), padding="CIRCULAR"), (3 + 2 + 4, 4 + 4 + 5, 5 + 6 + 1, 1 + 8 + 2, 2 + 10 + 3)),
        (dict(strides=(2,), padding="REFLECT"), (2 + 2 * 1 + 2, 2 + 2 * 3 + 4, 4 + 2 * 5 + 4)),
    ],
)
def test_conv_1d_custom(kw, expected):
    for y in _custom(fnn.Conv, cnn.Conv, X5, K121, features=1, kernel_size=(3,), **kw):
        np.testing.assert_array_equal(y, np.expand_dims(expected, (0, 2)))


@pytest.mark.parametrize(
    "padding, expected",
    [
        (
            "CIRCULAR",
            (
                (2 * 1 + 7 + 2 + 4 + 3, 2 * 2 + 8 + 3 + 5 + 1, 2 * 3 + 9 + 1 + 6 + 2),
                (2 * 4 + 1 + 5 + 7 + 6, 2 * 5 + 2 + 6 + 8 + 4, 2 * 6 + 3 + 4 + 9 + 5),
                (2 * 7 + 4 + 8 + 1 + 9, 2 * 8 + 5 + 9 + 2 + 7, 2 * 9 + 6 + 7 + 3 + 8),
            ),
        ),
        (
            "REFLECT",
            (
                (2 * 1 + 4 + 2 + 4 + 2, 2 * 2 + 5 + 3 + 5 + 1, 2 * 3 + 6 + 2 + 6 + 2),
                (2 * 4 + 1 + 5 + 7 + 5, 2 * 5 + 2 + 6 + 8 + 4, 2 * 6 + 3 + 5 + 9 + 5),
                (2 * 7 + 4 + 8 + 8 + 4, 2 * 8 + 5 + 9 + 5 + 7, 2 * 9 + 6 + 8 + 6 + 8),
            ),
        ),
    ],
)
def test_conv_2d_custom(padding, expected):
    for y in _custom(fnn.Conv, cnn.Conv, X3x3, CROSS, features=1, kernel_size=(3, 3), padding=padding):
        np.testing.assert_array_equal(y, np.expand_dims(expected, (0, 3)))


def test_circular_conv_local_custom():
    to_ours_1d = lambda k: local_from_flax(k, (3,), 1)
    kernel = np.expand_dims(np.array(((-1, 2, 3), (4, 5, 6))), (2,))
    for y in _custom(
        fnn.ConvLocal,
        cnn.LocalConv,
        X5,
        kernel,
        to_ours_1d,
        features=1,
        kernel_size=(3,),
        strides=(3,),
        padding="CIRCULAR",
    ):
        np.testing.assert_array_equal(y, np.expand_dims((-1 * 5 + 2 * 1 + 3 * 2, 4 * 3 + 5 * 4 + 6 * 5), (0, 2)))
    kernel = np.expand_dims(np.array(((1, 2, 1), (3, 4, 5), (-1, 1, 2), (2, 3, 4), (-1, -2, -3))), (2,))
    expected = (
        3 + 2 * 1 + 4,
        3 * 4 + 4 * 2 + 5 * 5,
        -1 * 5 + 1 * 3 + 2 * 1,
        2 * 1 + 3 * 4 + 4 * 2,
        -1 * 2 + -2 * 5 + -3 * 3,
    )
    for y in _custom(
        fnn.ConvLocal,
        cnn.LocalConv,
        X5,
        kernel,
        to_ours_1d,
        features=1,
        kernel_size=(3,),
        kernel_dilation=(3,),
        padding="CIRCULAR",
    ):
        np.testing.assert_array_equal(y, np.expand_dims(expected, (0, 2)))
    centre = np.arange(2, 11).reshape(3, 3)
    kernel = np.broadcast_to(np.squeeze(CROSS, (2, 3)), (3, 3, 3, 3)).copy()
    kernel[:, :, 1, 1] = centre
    expected = [
        [
            centre[i, j] * X3x3[0, i, j, 0]
            + (
                np.roll(X3x3[0, ..., 0], 1, 0)
                + np.roll(X3x3[0, ..., 0], -1, 0)
                + np.roll(X3x3[0, ..., 0], 1, 1)
                + np.roll(X3x3[0, ..., 0], -1, 1)
            )[i, j]
            for j in range(3)
        ]
        for i in range(3)
    ]
    for y in _custom(
        fnn.ConvLocal,
        cnn.LocalConv,
        X3x3,
        kernel.reshape(3, 3, 9, 1),
        lambda k: local_from_flax(k, (3, 3), 1),
        features=1,
        kernel_size=(3, 3),
        padding="CIRCULAR",
    ):
        np.testing.assert_array_equal(y, np.expand_dims(expected, (0, 3)))


def test_causal_conv1d():
    kw = dict(features=4, kernel_size=(3,), padding="CAUSAL", **ONES)
    expected = np.array([5.0, 9.0] + [13.0] * 6)[None, :, None].repeat(4, -1)
    for y in both(fnn.Conv(**kw), cnn.Conv(**kw), jnp.ones((1, 8, 4)))[:2]:
        np.testing.assert_array_equal(y, expected)


# --- linen_linear_test.py: ConvTranspose ------------------------------------------------------------------------

VALID_TRANSPOSE = np.array([4.0, 7.0] + [10.0] * 6 + [7.0, 4.0])[:, None].repeat(4, -1)


def from_flax_transpose(p):
    """flax ConvTranspose's default parameters as cnn_jax's default (transpose_kernel=None) layout."""
    return {**p, "kernel": transpose_from_flax(p["kernel"])}


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("x_shape", [(1, 8, 3), (2, 5, 8, 3), (8, 3)])
def test_conv_transpose(use_bias, x_shape):
    kw = dict(features=4, use_bias=use_bias, kernel_size=(3,), padding="VALID", **ONES)
    y_flax, y_ours, variables = both(
        fnn.ConvTranspose(**kw), cnn.ConvTranspose(transpose_kernel=False, **kw), jnp.ones(x_shape)
    )
    y_converted = cnn.ConvTranspose(**kw).apply({"params": from_flax_transpose(variables["params"])}, jnp.ones(x_shape))
    assert variables["params"]["kernel"].shape == (3, 3, 4)
    expected = np.broadcast_to(VALID_TRANSPOSE - (0 if use_bias else 1), (*x_shape[:-2], 10, 4))
    for y in (y_flax, y_ours, y_converted):
        np.testing.assert_array_equal(y, expected)


def test_single_input_masked_conv_transpose():
    """The mask in flax's layout with transpose_kernel=False; converted with the kernel in cnn_jax's."""
    mask = jnp.tril(jnp.ones((3, 3, 4)))
    expected = np.array([[4.0, 3, 2, 1], [7, 5, 3, 1]] + [[10, 7, 4, 1]] * 6 + [[7, 5, 3, 1], [4, 3, 2, 1]])
    kw = dict(features=4, kernel_size=(3,), padding="VALID", **ONES)
    x = jnp.ones((8, 3))
    y_flax, y_ours, variables = both(
        fnn.ConvTranspose(mask=mask, **kw), cnn.ConvTranspose(mask=mask, transpose_kernel=False, **kw), x
    )
    ours_init = cnn.ConvTranspose(mask=mask, transpose_kernel=False, **kw).init_with_output(KEY, x)[0]
    converted = cnn.ConvTranspose(mask=transpose_from_flax(mask), **kw)
    y_converted = converted.apply({"params": from_flax_transpose(variables["params"])}, x)
    for y in (y_flax, y_ours, ours_init, y_converted):
        np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 9])
def test_circular_conv_transpose_constant(kernel_size):
    for x_shape in [(3, 1, 3), (1, 8, 1), (3, 16, 3), (1, 14, 5, 5), (3, 6, 10, 1)]:
        ndim = len(x_shape) - 2
        kw = dict(
            features=2,
            kernel_size=(kernel_size,) * ndim,
            padding="CIRCULAR",
            kernel_init=initializers.ones,
            bias_init=initializers.zeros,
        )
        expected = np.full((*x_shape[:-1], 2), kernel_size**ndim * x_shape[-1])
        for module in (
            fnn.ConvTranspose(**kw),
            cnn.ConvTranspose(**kw),
            cnn.ConvTranspose(transpose_kernel=False, **kw),
        ):
            y, variables = module.init_with_output(KEY, jnp.ones(x_shape))
            np.testing.assert_array_equal(y, expected)
        assert variables["params"]["kernel"].shape == (*kw["kernel_size"], x_shape[-1], 2)  # flax's layout


def test_circular_conv_transpose_with_vmap():
    for module in (fnn.ConvTranspose, cnn.ConvTranspose):
        layer = module(features=5, kernel_size=(3,), padding="CIRCULAR")
        out, variables = layer.init_with_output(KEY, jnp.ones((1, 32, 2)))
        assert out.shape == (1, 32, 5)
        assert jax.vmap(layer.apply, in_axes=(None, 0))(variables, jnp.ones((8, 32, 2))).shape == (8, 32, 5)


FlaxLayoutConvTranspose = functools.partial(cnn.ConvTranspose, transpose_kernel=False)


@pytest.mark.parametrize("ours", [FlaxLayoutConvTranspose, cnn.ConvTranspose], ids=["flax layout", "converted"])
def test_circular_conv_transpose_custom(ours):
    convert = (lambda k: k) if ours is FlaxLayoutConvTranspose else transpose_from_flax
    # Stride 3: flax's result, and ours rolled by the documented alignment shift (ours is the exact adjoint).
    expected = np.expand_dims(np.outer(np.arange(1, 6), (1, 2, 1)).ravel(), (0, 2))
    y_flax, y_ours = _custom(
        fnn.ConvTranspose, ours, X5, K121, convert, features=1, kernel_size=(3,), strides=(3,), padding="CIRCULAR"
    )
    np.testing.assert_array_equal(y_flax, expected)
    shift = circular_transpose_shift((5,), (3,), (3,), (1,), False)
    assert shift != (0,)
    np.testing.assert_array_equal(jnp.roll(y_ours, -shift[0], 1), expected)
    # Stride 1: the same numbers.
    for y in _custom(fnn.ConvTranspose, ours, X3x3, CROSS, convert, features=1, kernel_size=(3, 3), padding="CIRCULAR"):
        np.testing.assert_array_equal(y, np.expand_dims(((18, 21, 24), (27, 30, 33), (36, 39, 42)), (0, 3)))
    x, kernel = np.expand_dims(((1, 2), (3, 4)), (0, 3)), np.expand_dims(((1, 2), (3, 4)), (2, 3))
    x, layer = jnp.asarray(x, jnp.float32), dict(features=1, kernel_size=(2, 2), padding="CIRCULAR")
    y_flax, variables = fnn.ConvTranspose(
        kernel_init=lambda *_: jnp.asarray(kernel, jnp.float32), bias_init=initializers.ones, **layer
    ).init_with_output(KEY, x)
    y_ours = ours(**layer).apply(
        {"params": {**variables["params"], "kernel": convert(variables["params"]["kernel"])}}, x
    )
    for y in (y_flax, y_ours):
        np.testing.assert_array_equal(y, np.expand_dims(((21, 23), (29, 31)), (0, 3)))


@pytest.mark.parametrize("use_bias", [True, False])
def test_transpose_kernel_conv_transpose(use_bias):
    """flax's case on both (kernel (*kernel, features, C_in), output (1, 30, 30, 4)); the same parameters
    as flax's init, and flax's numbers after the documented circular shift."""
    kw = dict(features=4, use_bias=use_bias, strides=2, kernel_size=(6, 6), padding="CIRCULAR", transpose_kernel=True)
    x = jax.random.normal(KEY, (1, 15, 15, 3))
    y_flax, variables = fnn.ConvTranspose(**kw).init_with_output(KEY, x)
    y_ours, ours_variables = cnn.ConvTranspose(**kw).init_with_output(KEY, x)
    for v, y in ((variables, y_flax), (ours_variables, y_ours)):
        assert v["params"]["kernel"].shape == (6, 6, 4, 3)
        assert y.shape == (1, 30, 30, 4)
    assert jax.tree.all(jax.tree.map(lambda a, b: (a == b).all(), variables, ours_variables))
    shift = circular_transpose_shift((15, 15), (6, 6), (2, 2), (1, 1), True)
    close(jnp.roll(y_ours, [-s for s in shift], (1, 2)), y_flax, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "module",
    [
        (fnn.Conv, cnn.Conv),
        (fnn.ConvLocal, cnn.LocalConv),
        (fnn.ConvTranspose, cnn.ConvTranspose, FlaxLayoutConvTranspose),
    ],
)
def test_int_kernel_equality(module):
    for m in module:
        x = jnp.ones((8, 3))
        params_int, params_seq = m(features=4, kernel_size=3).init(KEY, x), m(features=4, kernel_size=(3,)).init(KEY, x)
        assert jax.tree.all(jax.tree.map(lambda a, b: (a == b).all(), params_int, params_seq))


@pytest.mark.parametrize(
    "pad, rank, expected",
    [
        ("SAME", 2, ((1, 1), (1, 1))),
        (2, 3, ((2, 2),) * 3),
        ([1, (2, 3)], 2, ((1, 1), (2, 3))),
        ((2, 2), 3, None),
        ((2, 2), 1, None),
        ([None, (1, 2)], 2, None),
    ],
)
def test_canonicalize_padding(pad, rank, expected):
    """flax's canonicalize_padding cases, through resolve_padding (3x3 kernel, so SAME is 1 per side)."""
    args = ([5] * rank, [3] * rank, [1] * rank, [1] * rank)
    if expected is None:
        with pytest.raises(ValueError):
            fnn.linear.canonicalize_padding(pad, rank)
        with pytest.raises(ValueError, match="padding="):
            ops.resolve_padding(pad, *args)
    else:
        assert ops.resolve_padding(pad, *args) == expected


# --- random layers: flax and cnn_jax on the same parameters ----------------------------------------------------

CONV_CASES = [
    dict(kernel_size=(3, 2), padding="SAME"),
    dict(kernel_size=(3, 3), strides=2, padding="CIRCULAR"),
    dict(kernel_size=(2, 4), kernel_dilation=(2, 1), padding="REFLECT"),
    dict(kernel_size=(3, 3), input_dilation=(2, 1), padding=((1, 2), (0, 1))),
    dict(kernel_size=(3,), feature_group_count=3, padding="CAUSAL"),
    dict(kernel_size=(2, 2, 2), strides=(1, 2, 1), padding="CIRCULAR"),
    dict(kernel_size=(3, 2), strides=None, kernel_dilation=None, input_dilation=None),  # flax: None means 1
]


@pytest.mark.parametrize("kw", CONV_CASES)
@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
def test_conv_equals_flax_on_random_parameters(rng, kw, batch):
    x = jnp.asarray(rng.normal(size=(*batch, *(7, 6, 5)[: len(kw["kernel_size"])], 6)), jnp.float32)
    y_flax, y_ours, _ = both(fnn.Conv(features=6, **kw), cnn.Conv(features=6, **kw), x)
    close(y_ours, y_flax, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=(3, 2), padding="SAME"),
        dict(kernel_size=(3, 3), strides=2, padding="CIRCULAR"),
        dict(kernel_size=(2, 3), kernel_dilation=(1, 2), padding="REFLECT"),
        dict(kernel_size=(3,), padding="CAUSAL"),
        dict(kernel_size=(3, 2), input_dilation=(2, 1), padding=((1, 2), (0, 1))),
        dict(kernel_size=(2,), strides=2, input_dilation=3, padding=((2, 1),)),
        dict(kernel_size=(3, 2), strides=None, kernel_dilation=None, input_dilation=None, padding="VALID"),
    ],
)
@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_local_conv_equals_flax_conv_local(rng, kw, batch):
    ndim = len(kw["kernel_size"])
    x = jnp.asarray(rng.normal(size=(*batch, *(7, 6)[:ndim], 3)), jnp.float32)
    convert = lambda p: {**p, "kernel": local_from_flax(p["kernel"], kw["kernel_size"], 3)}
    y_flax, y_ours, _ = both(fnn.ConvLocal(features=4, **kw), cnn.LocalConv(features=4, **kw), x, convert)
    close(y_ours, y_flax, rtol=1e-5, atol=1e-5)


TRANSPOSE_CASES = [
    dict(kernel_size=(3, 2), strides=2, padding="SAME"),
    dict(kernel_size=(4, 3), strides=(2, 3), padding="VALID"),
    dict(kernel_size=(3, 3), kernel_dilation=2, padding="SAME"),
    dict(kernel_size=(4, 3), strides=(2, 1), padding="CIRCULAR"),
    dict(kernel_size=(5,), strides=3, kernel_dilation=2, padding="CIRCULAR"),
    dict(kernel_size=(4, 2), strides=(2, 1), padding=1),
    dict(kernel_size=(3, 3), strides=2, kernel_dilation=(1, 2), padding=((0, 2), (4, 6))),  # 6 > span - 1
    dict(kernel_size=(3,), strides=3, padding=((-1, 1),)),  # flax crops
    dict(kernel_size=(3, 2), strides=None, kernel_dilation=None, padding="SAME"),
]


def circular_aligned(y_ours, x, kw, transpose_kernel):
    """Ours rolled onto flax's CIRCULAR alignment (no change for other paddings)."""
    if kw["padding"] != "CIRCULAR":
        return y_ours
    ndim = len(kw["kernel_size"])
    strides = as_tuple(kw.get("strides", 1), ndim, "strides")
    dilation = as_tuple(kw.get("kernel_dilation", 1), ndim, "kernel_dilation")
    shift = circular_transpose_shift(x.shape[1:-1], kw["kernel_size"], strides, dilation, transpose_kernel)
    return jnp.roll(y_ours, [-s for s in shift], tuple(range(1, ndim + 1)))


@pytest.mark.parametrize("kw", TRANSPOSE_CASES)
@pytest.mark.parametrize("transpose_kernel", [True, False])
def test_conv_transpose_equals_flax(rng, kw, transpose_kernel):
    """flax's parameters, unchanged, with the same `transpose_kernel`: flax's initial parameters, output and
    gradients in the parameters and the input (CIRCULAR: after the documented shift)."""
    ndim = len(kw["kernel_size"])
    x = jnp.asarray(rng.normal(size=(2, *(5, 4)[:ndim], 3)), jnp.float32)
    layer = dict(features=4, transpose_kernel=transpose_kernel, **kw)
    flax_layer, ours = fnn.ConvTranspose(**layer), cnn.ConvTranspose(**layer)
    y_flax, _, variables = both(flax_layer, ours, x)
    assert jax.tree.all(jax.tree.map(lambda a, b: (a == b).all(), variables, ours.init(KEY, x)))
    aligned = lambda v, x: circular_aligned(ours.apply(v, x), x, kw, transpose_kernel)  # noqa: E731
    close(aligned(variables, x), y_flax, rtol=1e-5, atol=1e-5)
    loss = lambda apply: lambda v, x: jnp.sum(jnp.sin(apply(v, x)))  # noqa: E731
    grads = [jax.grad(loss(apply), (0, 1))(variables, x) for apply in (aligned, flax_layer.apply)]
    jax.tree.map(lambda a, b: close(a, np.asarray(b), rtol=1e-5, atol=1e-5), *grads)


@pytest.mark.parametrize("kw", [c for c in TRANSPOSE_CASES if isinstance(c["padding"], str)])
@pytest.mark.parametrize("transpose_kernel", [True, False])
def test_conv_transpose_in_cnn_jax_layout_equals_flax(rng, kw, transpose_kernel):
    """The default (transpose_kernel=None) on flax's parameters converted as the docs say."""
    ndim = len(kw["kernel_size"])
    x = jnp.asarray(rng.normal(size=(2, *(5, 4)[:ndim], 3)), jnp.float32)
    convert = (lambda p: p) if transpose_kernel else from_flax_transpose
    y_flax, y_ours, _ = both(
        fnn.ConvTranspose(features=4, transpose_kernel=transpose_kernel, **kw),
        cnn.ConvTranspose(features=4, **kw),
        x,
        convert,
    )
    close(circular_aligned(y_ours, x, kw, transpose_kernel), y_flax, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k, s, a, b", [(3, 2, 1, 2), (4, 1, 0, 3), (3, 3, 2, 2), (5, 2, 1, 1)])
def test_conv_transpose_explicit_padding_converts(rng, k, s, a, b):
    """flax pads the transposed convolution by (a, b); cnn_jax's default, the forward convolution by
    (span-1-a, span-1-b). With transpose_kernel set, ours takes flax's (a, b) as it is."""
    x = jnp.asarray(rng.normal(size=(2, 5, 2)), jnp.float32)
    layer = dict(features=3, kernel_size=(k,), strides=(s,))
    y_flax, variables = fnn.ConvTranspose(padding=((a, b),), transpose_kernel=True, **layer).init_with_output(KEY, x)
    ours = cnn.ConvTranspose(padding=((k - 1 - a, k - 1 - b),), input_size=y_flax.shape[1:-1], **layer)
    close(ours.apply(variables, x), y_flax, rtol=1e-5, atol=1e-5)
    drop_in = cnn.ConvTranspose(padding=((a, b),), transpose_kernel=True, **layer)
    close(drop_in.apply(variables, x), y_flax, rtol=1e-5, atol=1e-5)


def test_conv_transpose_rejects_what_flax_layout_cannot_mean():
    """A kernel in the other layout, a transpose_kernel that is not a bool, groups in flax's default layout,
    input_size next to flax's explicit padding and an empty output each get a ValueError that says why."""
    x = jnp.ones((2, 8, 3))
    flax_default, ours_default = fnn.ConvTranspose(4, (3,)).init(KEY, x), cnn.ConvTranspose(4, (3,)).init(KEY, x)
    for transpose_kernel, variables, message in [
        (
            None,
            flax_default,
            r"shape \(3, 3, 4\); with transpose_kernel=None it must have shape \(3, 4, 3\), cnn_jax's",
        ),
        (True, flax_default, r"\(3, 3, 4\); with transpose_kernel=True .* pass transpose_kernel=False"),
        (False, ours_default, r"\(3, 4, 3\); with .* shape \(3, 3, 4\), flax's default .* pass transpose_kernel=True"),
    ]:
        with pytest.raises(ValueError, match=message):
            cnn.ConvTranspose(4, (3,), transpose_kernel=transpose_kernel).apply(variables, x)
    for module, x, message in [
        (cnn.ConvTranspose(4, (3,), transpose_kernel="yes"), x, r"transpose_kernel='yes': expected None .* or a bool"),
        (cnn.ConvTranspose(4, (3,), transpose_kernel=False, feature_group_count=2), jnp.ones((2, 8, 4)), "no groups"),
        (cnn.ConvTranspose(4, (3,), transpose_kernel=True, padding=1, input_size=(9,)), x, r"input_size=\(9,\) .*drop"),
        (cnn.ConvTranspose(4, (5,), transpose_kernel=True, padding=((0, -1),)), x[:, :1], r"output size -4 .*>= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            module.init(KEY, x)


def test_local_conv_initialisation_is_per_position():
    """ConvLocal's default init counts every output position in the fan-in; ours counts one position's inputs.
    kernel_init=lecun_normal() on our layout gives flax's scale."""
    x = jnp.ones((1, 12, 12, 16))
    theirs = fnn.ConvLocal(features=32, kernel_size=(3, 3), padding="SAME").init(KEY, x)["params"]["kernel"]
    ours = cnn.LocalConv(features=32, kernel_size=(3, 3)).init(KEY, x)["params"]["kernel"]
    flax_like = cnn.LocalConv(features=32, kernel_size=(3, 3), kernel_init=fnn.initializers.lecun_normal()).init(
        KEY, x
    )["params"]["kernel"]
    np.testing.assert_allclose(np.std(ours), 1 / np.sqrt(9 * 16), rtol=0.05)
    np.testing.assert_allclose(np.std(theirs), 1 / np.sqrt(144 * 9 * 16), rtol=0.05)
    np.testing.assert_allclose(np.std(flax_like), np.std(theirs), rtol=0.05)


# --- linen_test.py: pooling --------------------------------------------------------------------------------------


@pytest.mark.parametrize("strides", [(1, 1), None])
@pytest.mark.parametrize("batch", [(1,), (), (2, 3)])
def test_pool_custom_reduce(batch, strides):
    """flax's case (batch (1,), strides (1, 1)), the same without a batch axis and with two (flax's rule: rank
    len(window) + 1 is one unbatched input), and with strides=None (1 in flax). cnn.pool takes flax's call as it
    is; ops.pool the documented conversion (its stride defaults to the window)."""
    x = jnp.full((*batch, 3, 3, 1), 2.0)
    mul_reduce = lambda x, y: x * y
    for y in (
        fnn.pooling.pool(x, 1.0, mul_reduce, (2, 2), strides, "VALID"),
        cnn.pool(x, 1.0, mul_reduce, (2, 2), strides, "VALID"),
        ops.pool(x, 1.0, mul_reduce, (2, 2), strides or 1, "VALID"),
    ):
        np.testing.assert_array_equal(y, np.full((*batch, 2, 2, 1), 2.0**4))


@pytest.mark.parametrize(
    "x_shape, window_shape, strides, padding, message",
    [
        ((3, 3), (2, 2), (1, 1), "VALID", r"too few axes for window=\(2, 2\): expected \(\*batch, 2 spatial axes"),
        ((1, 3, 3, 1), (2, 2), (1, 1, 1), "VALID", r"stride=\(1, 1, 1\): expected an int or 2 ints"),
        ((1, 3, 3, 1), (2, 2), (1, 1), ((1, 1),), r"padding=\(\(1, 1\),\): expected 2 entries"),
        ((1, 3, 3, 1), (2, 2), (1, 1), "HALF", r"padding='HALF': unknown mode; valid modes are VALID, SAME"),
        ((1, 3, 3, 1), (4, 4), (1, 1), "VALID", r"spatial axis 0: kernel size 4 .* larger than the padded input 3"),
        # flax gives `init` for a window of padding alone; cnn_jax's pooling requires a real input in each.
        ((1, 3, 3, 1), (2, 2), (1, 1), ((2, 2), (0, 0)), r"pads spatial axis 0 by \(2, 2\) .* Pad at most 1 per side"),
    ],
    ids=["too few axes", "strides length", "padding length", "padding mode", "window over input", "padding only"],
)
def test_pool_rejects_bad_input(x_shape, window_shape, strides, padding, message):
    """Here flax's pool stops at an assert or inside lax, or returns an empty output or windows of padding alone;
    cnn.pool raises a ValueError that names the value and what would be valid."""
    with pytest.raises(ValueError, match=message):
        cnn.pool(jnp.ones(x_shape), 0.0, lax.add, window_shape, strides, padding)


AVG_GRAD = np.array([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("batch", [(1,), ()])
def test_avg_pool(count_include_pad, batch):
    """Pooling stride defaults to 1 in flax and to the window in cnn_jax: strides=1 converts."""
    x = jnp.full((*batch, 3, 3, 1), 2.0)
    pools = [
        lambda x: fnn.avg_pool(x, (2, 2), count_include_pad=count_include_pad),
        lambda x: ops.avg_pool(x, (2, 2), 1, count_include_pad=count_include_pad),
        lambda x: cnn.AvgPool((2, 2), strides=1, count_include_pad=count_include_pad).apply({}, x),
    ]
    for pool in pools:
        np.testing.assert_array_equal(pool(x), np.full((*batch, 2, 2, 1), 2.0))
        grad = jax.grad(lambda x: pool(x).sum())(x)
        np.testing.assert_array_equal(grad, AVG_GRAD.reshape(*batch, 3, 3, 1))


def test_max_pool():
    x = jnp.arange(9).reshape((1, 3, 3, 1)).astype(jnp.float32)
    for pool in (lambda x: fnn.max_pool(x, (2, 2)), lambda x: ops.max_pool(x, (2, 2), 1)):
        np.testing.assert_array_equal(pool(x), np.array([[4.0, 5.0], [7.0, 8.0]]).reshape(1, 2, 2, 1))
        grad = jax.grad(lambda x: pool(x).sum())(x)
        np.testing.assert_array_equal(grad, np.array([[0.0, 0, 0], [0, 1, 1], [0, 1, 1]]).reshape(1, 3, 3, 1))


@pytest.mark.parametrize(
    "count_include_pad, expected", [(True, [10 / 4, 6 / 4, 7 / 4, 4 / 4]), (False, [10 / 4, 6 / 2, 7 / 2, 4 / 1])]
)
def test_avg_pool_padding_same(count_include_pad, expected):
    x = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape((1, 2, 2, 1))
    for y in (
        fnn.avg_pool(x, (2, 2), padding="SAME", count_include_pad=count_include_pad),
        ops.avg_pool(x, (2, 2), 1, "SAME", count_include_pad),
    ):
        np.testing.assert_allclose(y, np.reshape(expected, (1, 2, 2, 1)), rtol=1e-7)


@pytest.mark.parametrize("x_shape, y_shape", [((1, 8, 32, 32, 3), (1, 8, 16, 16, 3)), ((32, 32, 3), (16, 16, 3))])
def test_pooling_batch_dims(x_shape, y_shape):
    x = jnp.zeros(x_shape)
    assert fnn.max_pool(x, (2, 2), (2, 2)).shape == y_shape
    assert ops.max_pool(x, (2, 2), (2, 2)).shape == y_shape
    assert cnn.MaxPool((2, 2), (2, 2)).apply({}, x).shape == y_shape
    assert cnn.AvgPool((2, 2)).apply({}, x).shape == y_shape  # the stride defaults to the window


@pytest.mark.parametrize(
    "window, strides, padding",
    [((2, 2), (1, 1), "VALID"), ((3, 2), (2, 1), "SAME"), ((3, 3), (2, 2), ((1, 1), (0, 2))), ((2,), (2,), "VALID")],
)
@pytest.mark.parametrize("batch", [(2,), (), (2, 3)])
def test_pools_equal_flax_on_random_inputs(rng, window, strides, padding, batch):
    """The ops and cnn.pool on flax's inputs (any batch axes before len(window) spatial axes): flax's outputs and
    gradients."""
    x = jnp.asarray(rng.normal(size=(*batch, *(7, 6)[: len(window)], 3)), jnp.float32)
    args = (window, strides, padding)
    pairs = [
        (lambda x: ops.pool(x, 0.0, lax.add, *args), lambda x: fnn.pooling.pool(x, 0.0, lax.add, *args)),
        (lambda x: cnn.pool(x, 0.0, lax.add, *args), lambda x: fnn.pooling.pool(x, 0.0, lax.add, *args)),
        (lambda x: ops.max_pool(x, *args), lambda x: fnn.max_pool(x, *args)),
        (lambda x: ops.min_pool(x, *args), lambda x: fnn.pooling.min_pool(x, *args)),
        (lambda x: ops.avg_pool(x, *args, True), lambda x: fnn.avg_pool(x, *args, True)),
        (lambda x: ops.avg_pool(x, *args, False), lambda x: fnn.avg_pool(x, *args, False)),
    ]
    loss = lambda pool: lambda x: jnp.sum(jnp.sin(pool(x)))  # noqa: E731
    for ours, theirs in pairs:
        if len(batch) > 1 and not isinstance(padding, str):
            # flax's pool pads only one batch axis (its explicit padding fails on more): give it one.
            theirs = functools.partial(with_one_batch_axis, theirs, ndim=len(window))
        close(ours(x), theirs(x))
        close(jax.grad(loss(ours))(x), jax.grad(loss(theirs))(x))
