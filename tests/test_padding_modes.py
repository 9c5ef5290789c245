"""CIRCULAR and REFLECT padding, input dilation, grouped local/tiled convolution, the generic pool and
adaptive pooling: against the NumPy references, PyTorch, and (CIRCULAR) the translation equivariance on the torus."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import close, compiled, f32, random_configs
from jax import lax
from jax.test_util import check_grads

from cnn_jax import models, ops
from cnn_jax import nn as cnn
from cnn_jax.ops import reference
from cnn_jax.ops.shapes import conv_geometry

MODES = ["CIRCULAR", "REFLECT"]


def mode_configs(rng, ndim, count, groups=1):
    """(x_shape, kernel, stride, dilation, cout) with a kernel span at most the input size (as PyTorch's
    reflect padding requires), for CIRCULAR / REFLECT padding."""
    max_size = {1: 10, 2: 7, 3: 5}[ndim]
    for _ in range(count):
        kernel = tuple(int(v) for v in rng.integers(1, 4, ndim))
        dilation = tuple(int(v) for v in rng.integers(1, 3, ndim))
        sizes = tuple(int(rng.integers(d * (k - 1) + 1, max_size + 1)) for k, d in zip(kernel, dilation))
        stride = tuple(int(v) for v in rng.integers(1, 3, ndim))
        cin, cout = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
        yield (int(rng.integers(1, 3)), *sizes, cin), kernel, stride, dilation, cout


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_conv_matches_reference(rng, mode, ndim):
    for i, (x_shape, kernel, stride, dilation, cout) in enumerate(mode_configs(rng, ndim, 6, groups=2)):
        groups = 1 + i % 2
        x, w = rng.normal(size=x_shape), rng.normal(size=(*kernel, x_shape[-1] // groups, cout))
        kw = dict(stride=stride, padding=mode, dilation=dilation, groups=groups)
        close(compiled(ops.conv, *f32(x, w), **kw), reference.conv(x, w, **kw))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ndim", [1, 2])
def test_local_tiled_and_transpose_match_reference(rng, mode, ndim):
    for x_shape, kernel, stride, dilation, cout in mode_configs(rng, ndim, 5):
        kw = dict(stride=stride, padding=mode, dilation=dilation)
        out = conv_geometry(x_shape[1:-1], kernel, **kw).out_sizes
        x = rng.normal(size=x_shape)
        wl = rng.normal(size=(*out, *kernel, x_shape[-1], cout))
        close(compiled(ops.local_conv, *f32(x, wl), **kw), reference.local_conv(x, wl, **kw))
        tile = tuple(int(rng.integers(1, o + 1)) for o in out)
        wt = rng.normal(size=(*tile, *kernel, x_shape[-1], cout))
        close(compiled(ops.tiled_conv, *f32(x, wt), tile=tile, **kw), reference.tiled_conv(x, wt, tile, **kw))
        w, y = rng.normal(size=(*kernel, x_shape[-1], cout)), rng.normal(size=(x_shape[0], *out, cout))
        close(
            compiled(ops.conv_transpose, *f32(y, w), input_size=x_shape[1:-1], **kw),
            reference.conv_transpose(y, w, x_shape[1:-1], **kw),
        )


@pytest.mark.parametrize("mode", MODES)
def test_per_phase_lowering_with_padding_modes_and_groups(rng, mode):
    # The CUDA form of tiled_conv, called directly: the CPU never picks it.
    x, w = rng.normal(size=(2, 7, 6, 4)), rng.normal(size=(2, 2, 3, 2, 2, 6))
    geo = conv_geometry((7, 6), (3, 2), 1, mode, 1)
    xp = jnp.pad(
        jnp.asarray(x, jnp.float32),
        [(0, 0), *geo.padding, (0, 0)],
        mode={"CIRCULAR": "wrap", "REFLECT": "reflect"}[mode],
    )
    got = ops.local._per_phase_conv(
        xp, jnp.asarray(w, jnp.float32), (2, 2), geo._replace(padding=((0, 0), (0, 0))), 2, None
    )
    close(got, reference.tiled_conv(x, w, (2, 2), padding=mode, groups=2))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ndim", [1, 2])
def test_pools_match_reference(rng, mode, ndim):
    for x_shape, window, stride, _, _ in mode_configs(rng, ndim, 5):
        x = rng.normal(size=x_shape)
        xj = jnp.asarray(x, jnp.float32)
        close(
            compiled(ops.max_pool, xj, window=window, stride=stride, padding=mode),
            reference.max_pool(x, window, stride, mode),
        )
        close(
            compiled(ops.avg_pool, xj, window=window, stride=stride, padding=mode, count_include_pad=False),
            reference.avg_pool(x, window, stride, mode, False),
        )
        close(
            compiled(ops.lp_pool, xj, window=window, stride=stride, padding=mode),
            reference.lp_pool(x, window, stride, mode),
            rtol=1e-4,
            atol=1e-5,
        )


def _torch_conv(torch, x, w, stride, dilation, groups, mode, padding):
    """PyTorch's Conv1d/Conv2d on channels-last x and (*kernel, C_in/groups, C_out) w."""
    ndim = x.ndim - 2
    layer = (torch.nn.Conv1d, torch.nn.Conv2d)[ndim - 1](
        x.shape[-1],
        w.shape[-1],
        w.shape[:ndim],
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=False,
        padding_mode=mode.lower(),
    )
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.moveaxis(w, (-1, -2), (0, 1)).copy()))
        y = layer(torch.from_numpy(np.moveaxis(x, -1, 1).copy()))
    return np.moveaxis(y.numpy(), 1, -1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ndim", [1, 2])
def test_conv_matches_pytorch_padding_mode(torch, rng, mode, ndim):
    """Odd kernels: PyTorch's symmetric padding d*(k-1)/2 is the CIRCULAR / REFLECT geometry at any stride."""
    for x_shape, kernel, stride, dilation, cout in mode_configs(rng, ndim, 6, groups=2):
        kernel = tuple(2 * (k // 2) + 1 for k in kernel)
        if any(d * (k - 1) >= n for k, d, n in zip(kernel, dilation, x_shape[1:-1])):
            continue  # PyTorch's reflect padding must be smaller than the input
        x, w = rng.normal(size=x_shape).astype(np.float32), rng.normal(size=(*kernel, x_shape[-1] // 2, cout))
        w = w.astype(np.float32)
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        expected = _torch_conv(torch, x, w, stride, dilation, 2, mode, padding)
        close(
            ops.conv(*f32(x, w), stride=stride, padding=mode, dilation=dilation, groups=2),
            expected,
            rtol=1e-4,
            atol=1e-4,
        )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kernel", [(2, 4), (4, 3)])
def test_even_kernels_match_pytorch_same_padding_mode(torch, rng, mode, kernel):
    """At stride 1, CIRCULAR / REFLECT put an even kernel's extra row after, as PyTorch's padding="same"."""
    x, w = rng.normal(size=(2, 6, 7, 2)).astype(np.float32), rng.normal(size=(*kernel, 2, 3)).astype(np.float32)
    close(ops.conv(*f32(x, w), padding=mode), _torch_conv(torch, x, w, 1, 1, 1, mode, "same"), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_circular_padding_is_exactly_translation_equivariant_on_the_torus(rng, ndim):
    # Small integers: every sum is exact in float32, so equality is bit for bit whatever XLA's summation order.
    x = rng.integers(-4, 5, size=(2, *(5,) * ndim, 3)).astype(np.float32)
    w = rng.integers(-4, 5, size=(*(3,) * ndim, 3, 2)).astype(np.float32)
    wl = rng.integers(-4, 5, size=(*(5,) * ndim, *(3,) * ndim, 3, 2)).astype(np.float32)
    shift, axes = tuple(range(1, ndim + 1)), tuple(range(1, ndim + 1))
    for op in (
        lambda x: ops.conv(x, w, padding="CIRCULAR", dilation=2),
        lambda x: ops.conv_transpose(x[..., :2], w, padding="CIRCULAR"),
        lambda x: ops.max_pool(x, 3, 1, "CIRCULAR"),
        lambda x: ops.lp_pool(x, 2, 1, "CIRCULAR", p=1.0),
    ):
        np.testing.assert_array_equal(op(jnp.roll(x, shift, axes)), jnp.roll(op(jnp.asarray(x)), shift, axes))
    # A locally connected layer is not equivariant, but rolling its kernels along with the input is.
    local = lambda x, w: ops.local_conv(x, w, padding="CIRCULAR")
    np.testing.assert_array_equal(
        local(jnp.roll(x, shift, axes), jnp.roll(wl, shift, tuple(range(ndim)))),
        jnp.roll(local(jnp.asarray(x), jnp.asarray(wl)), shift, axes),
    )


@pytest.mark.parametrize("mode", MODES)
def test_padding_mode_grads(rng, x64, mode):
    x = jnp.asarray(rng.normal(size=(2, 6, 5, 4)))
    w = jnp.asarray(rng.normal(size=(3, 2, 2, 4)))
    wl = jnp.asarray(rng.normal(size=(3, 5, 3, 2, 2, 4)))
    kw = dict(stride=(2, 1), padding=mode, groups=2)
    check_grads(jax.jit(lambda x, w: ops.conv(x, w, **kw)), (x, w), order=1, modes=["fwd", "rev"])
    check_grads(jax.jit(lambda x, w: ops.local_conv(x, w, **kw)), (x, wl), order=1, modes=["fwd", "rev"])
    check_grads(jax.jit(lambda x, w: ops.tiled_conv(x, w, tile=(2, 3), **kw)), (x, wl[:2, :3]), order=1, modes=["rev"])
    y = jnp.asarray(rng.normal(size=(2, 3, 5, 4)))
    check_grads(jax.jit(lambda y, w: ops.conv_transpose(y, w, input_size=(6, 5), **kw)), (y, w), order=1, modes=["rev"])
    check_grads(jax.jit(lambda x: ops.avg_pool(x, 2, 1, mode)), (x,), order=1, modes=["fwd", "rev"])
    check_grads(jax.jit(lambda x: ops.max_pool(x, 3, 2, mode)), (x,), order=1, modes=["rev"])


@pytest.mark.parametrize("ndim", [1, 2])
def test_input_dilation_matches_reference(rng, ndim):
    for x_shape, kernel, stride, dilation, cout in mode_configs(rng, ndim, 6):
        input_dilation = tuple(int(v) for v in rng.integers(1, 4, ndim))
        padding = ["VALID", "SAME", 1, "FULL"][int(rng.integers(4))]
        x, w = rng.normal(size=x_shape), rng.normal(size=(*kernel, x_shape[-1], cout))
        kw = dict(stride=stride, padding=padding, dilation=dilation, input_dilation=input_dilation)
        close(compiled(ops.conv, *f32(x, w), **kw), reference.conv(x, w, **kw))


def test_input_dilation_is_the_transpose_of_a_strided_conv(rng):
    """Input dilation s with FULL padding is the transposed convolution of a stride-s VALID one, flipped."""
    y, w = f32(rng.normal(size=(2, 4, 3, 2)), rng.normal(size=(3, 3, 5, 2)))
    flipped = jnp.flip(w, (0, 1)).swapaxes(-1, -2)
    close(
        ops.conv(y, flipped, input_dilation=2, padding="FULL"), ops.conv_transpose(y, w, stride=2), rtol=1e-5, atol=1e-5
    )


def test_input_dilation_grads(rng, x64):
    x, w = jnp.asarray(rng.normal(size=(2, 4, 5, 2))), jnp.asarray(rng.normal(size=(2, 3, 2, 3)))
    check_grads(
        lambda x, w: ops.conv(x, w, input_dilation=(2, 3), padding="SAME", stride=2),
        (x, w),
        order=1,
        modes=["fwd", "rev"],
    )


@pytest.mark.parametrize("ndim", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_grouped_local_and_tiled_match_reference(rng, ndim):
    for x_shape, kernel, stride, dilation, cout in mode_configs(rng, ndim, 6, groups=3):
        padding = ["VALID", "SAME", 1][int(rng.integers(3))]
        kw = dict(stride=stride, padding=padding, dilation=dilation, groups=3)
        out = conv_geometry(x_shape[1:-1], kernel, stride, padding, dilation).out_sizes
        x = rng.normal(size=x_shape)
        wl = rng.normal(size=(*out, *kernel, x_shape[-1] // 3, cout))
        close(compiled(ops.local_conv, *f32(x, wl), **kw), reference.local_conv(x, wl, **kw))
        tile = tuple(int(rng.integers(1, o + 1)) for o in out)
        wt = rng.normal(size=(*tile, *kernel, x_shape[-1] // 3, cout))
        close(compiled(ops.tiled_conv, *f32(x, wt), tile=tile, **kw), reference.tiled_conv(x, wt, tile, **kw))


def test_grouped_local_with_one_shared_kernel_is_grouped_conv(rng):
    x, w = f32(rng.normal(size=(2, 7, 6, 4)), rng.normal(size=(3, 3, 2, 6)))
    shared = jnp.broadcast_to(w, (5, 4, *w.shape))
    close(ops.local_conv(x, shared, groups=2), ops.conv(x, w, groups=2), rtol=1e-5, atol=1e-5)


def test_grouped_local_grads(rng, x64):
    x, w = jnp.asarray(rng.normal(size=(2, 5, 4, 4))), jnp.asarray(rng.normal(size=(4, 3, 2, 2, 2, 6)))
    check_grads(jax.jit(lambda x, w: ops.local_conv(x, w, groups=2)), (x, w), order=2, modes=["fwd", "rev"])


@pytest.mark.parametrize("ndim", [1, 2])
def test_generic_pool_matches_reference(rng, ndim):
    for x_shape, window, stride, _, _ in mode_configs(rng, ndim, 5):
        padding = ["VALID", "SAME", "CIRCULAR", "REFLECT"][int(rng.integers(4))]
        x = rng.uniform(0.5, 1.5, size=x_shape)
        close(
            ops.pool(jnp.asarray(x, jnp.float32), 1.0, lax.mul, window, stride, padding),
            reference.pool(x, 1.0, np.multiply, window, stride, padding),
            rtol=1e-5,
        )
        close(
            ops.min_pool(jnp.asarray(x, jnp.float32), window, stride, padding),
            reference.pool(x, np.inf, np.minimum, window, stride, padding),
        )


def test_named_pools_are_the_generic_pool(rng):
    x = jnp.asarray(rng.normal(size=(2, 6, 7, 3)), jnp.float32)
    close(ops.max_pool(x, 3, 2, "SAME"), ops.pool(x, -jnp.inf, lax.max, 3, 2, "SAME"))
    close(ops.avg_pool(x, 2), ops.pool(x, 0.0, lax.add, 2) / 4)
    check_grads(jax.jit(lambda x: ops.min_pool(x, 2, 1, 1)), (x,), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


def _torch_adaptive(torch, x, out, kind):
    layer = {"avg": torch.nn.AdaptiveAvgPool2d, "max": torch.nn.AdaptiveMaxPool2d}[kind](out)
    return np.moveaxis(layer(torch.from_numpy(np.moveaxis(x, -1, 1).copy())).numpy(), 1, -1)


@pytest.mark.parametrize(
    "in_size, out_size", [((1, 1), (7, 7)), ((3, 5), (7, 4)), ((4, 2), (8, 6)), ((5, 7), (3, 11)), ((2, 3), (2, 9))]
)
def test_adaptive_pools_match_pytorch_for_any_output_size(torch, rng, in_size, out_size):
    x = rng.normal(size=(2, *in_size, 3)).astype(np.float32)
    close(
        ops.adaptive_avg_pool(jnp.asarray(x), out_size),
        _torch_adaptive(torch, x, out_size, "avg"),
        rtol=1e-5,
        atol=1e-6,
    )
    close(ops.adaptive_max_pool(jnp.asarray(x), out_size), _torch_adaptive(torch, x, out_size, "max"))


def test_adaptive_pools_match_the_cell_formula_on_random_sizes(rng):
    for _ in range(8):
        in_size, out_size = tuple(rng.integers(1, 7, 2)), tuple(int(v) for v in rng.integers(1, 10, 2))
        x = rng.normal(size=(1, *in_size, 2))
        close(
            ops.adaptive_avg_pool(jnp.asarray(x, jnp.float32), out_size), reference.adaptive_pool(x, out_size, np.mean)
        )
        close(
            ops.adaptive_max_pool(jnp.asarray(x, jnp.float32), out_size), reference.adaptive_pool(x, out_size, np.max)
        )


def test_adaptive_pool_upsampling_grads(rng, x64):
    x = jnp.asarray(rng.normal(size=(2, 2, 3, 2)))
    check_grads(jax.jit(lambda x: ops.adaptive_avg_pool(x, (5, 6))), (x,), order=1, modes=["fwd", "rev"])
    check_grads(jax.jit(lambda x: ops.adaptive_max_pool(x, (3, 7))), (x,), order=1, modes=["rev"])


LAYER_MODES = {"circular": "wrap", "reflect": "reflect"}


@pytest.mark.parametrize("mode", LAYER_MODES)
@pytest.mark.parametrize("ndim", [1, 2])
def test_layer_padding_mode_matches_pytorch(torch, rng, mode, ndim):
    """A layer's padding_mode fills whatever padding it has, at any amount and stride, as PyTorch's does:
    here the padding is drawn independently of the kernel, so it is not the CIRCULAR / REFLECT geometry."""
    for x_shape, kernel, stride, dilation, cout in mode_configs(rng, ndim, 6, groups=2):
        padding = tuple(int(rng.integers(0, n)) for n in x_shape[1:-1])  # PyTorch's reflect needs pad < size
        layer = cnn.Conv(
            cout, kernel, stride, padding, dilation, feature_group_count=2, use_bias=False, padding_mode=mode
        )
        x = rng.normal(size=x_shape).astype(np.float32)
        params = jax.jit(layer.init)(jax.random.PRNGKey(0), x)
        w = np.asarray(params["params"]["kernel"])
        close(
            jax.jit(layer.apply)(params, x),
            _torch_conv(torch, x, w, stride, dilation, 2, mode, padding),
            rtol=1e-4,
            atol=1e-4,
        )


@pytest.mark.parametrize("mode", LAYER_MODES)
@pytest.mark.parametrize("kind", ["standard", "tiled", "local"])
def test_every_conv_kind_pads_with_input_values_then_runs_unpadded(rng, mode, kind):
    """Every variant of ConvSpec(padding_mode=...) is its op, unpadded, on x padded explicitly (np.pad) by
    the amounts its `padding` resolves to: modes, ints and (lo, hi) pairs."""
    for x_shape, kernel, stride, padding, dilation, groups, cout in random_configs(rng, 2, 4, groups=True):
        geo = conv_geometry(x_shape[1:-1], kernel, stride, padding, dilation)
        if mode == "reflect" and any(max(p) >= n for p, n in zip(geo.padding, x_shape[1:-1])):
            continue  # reflecting needs a padding smaller than the input
        layer = cnn.ConvSpec(kind, tile=2, padding_mode=mode).make(
            cout, kernel, strides=stride, padding=padding, kernel_dilation=dilation, feature_group_count=groups
        )
        x = rng.normal(size=x_shape)
        params = jax.jit(layer.init)(jax.random.PRNGKey(1), x.astype(np.float32))
        w, b = (np.asarray(params["params"][k], np.float64) for k in ("kernel", "bias"))
        padded = np.pad(x, [(0, 0), *geo.padding, (0, 0)], mode=LAYER_MODES[mode])
        kw = dict(stride=stride, padding="VALID", dilation=dilation, groups=groups)
        if kind == "standard":
            expected = reference.conv(padded, w, **kw) + b
        elif kind == "local":
            expected = reference.local_conv(padded, w, **kw) + b
        else:
            tile = w.shape[:2]
            expected = reference.tiled_conv(padded, w, tile, **kw)
            expected += np.tile(b, (-(-geo.out_sizes[0] // tile[0]), -(-geo.out_sizes[1] // tile[1]), 1))[
                : geo.out_sizes[0], : geo.out_sizes[1]
            ]
        close(jax.jit(layer.apply)(params, x.astype(np.float32)), expected, rtol=1e-4, atol=1e-4)


def test_padding_mode_layer_grads(rng, x64):
    x = jnp.asarray(rng.normal(size=(2, 5, 6, 3)))
    layer = cnn.Conv(4, (3, 2), (2, 1), ((2, 1), (0, 1)), padding_mode="reflect", param_dtype=jnp.float64)
    params = layer.init(jax.random.PRNGKey(0), x)
    check_grads(jax.jit(lambda p, x: layer.apply(p, x)), (params, x), order=1, modes=["fwd", "rev"])


def test_circular_resnet_is_invariant_to_circular_shifts_by_its_total_stride(rng):
    """ResNet-8 subsamples by 4: under padding_mode="circular" every layer commutes with a circular shift by a
    multiple of 4, so the logits (after global average pooling) do not change; with zero padding they do."""
    x = rng.normal(size=(2, 16, 16, 1)).astype(np.float32)
    shifted = np.roll(x, (4, -8), (1, 2))
    differences = {}
    for mode in ("zeros", "circular"):
        model = models.create("resnet8", num_classes=10, conv=cnn.ConvSpec(padding_mode=mode))
        params = jax.jit(model.init)(jax.random.PRNGKey(0), x)
        apply = jax.jit(model.apply)
        differences[mode] = float(np.abs(apply(params, shifted) - apply(params, x)).max())
    assert differences["circular"] < 1e-5 < 1e-2 < differences["zeros"], differences
