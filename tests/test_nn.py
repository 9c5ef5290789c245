"""Flax modules: same numbers as flax.linen where it has the layer, parameter layouts, ConvSpec."""

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import close

from cnn_jax import nn as cnn
from cnn_jax import ops
from cnn_jax.ops import reference

KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(strides=2, padding="VALID"),
        dict(kernel_dilation=2, padding=((1, 2), (0, 1))),
        dict(feature_group_count=3, use_bias=False),
    ],
)
def test_conv_equals_flax_conv(rng, kw):
    x = jnp.asarray(rng.normal(size=(2, 9, 8, 6)), jnp.float32)
    ours, theirs = cnn.Conv(features=6, kernel_size=(3, 2), **kw), flax_nn.Conv(features=6, kernel_size=(3, 2), **kw)
    params = theirs.init(KEY, x)
    assert jax.tree.map(jnp.shape, ours.init(KEY, x)) == jax.tree.map(jnp.shape, params)
    close(ours.apply(params, x), theirs.apply(params, x), rtol=1e-5, atol=1e-5)


def test_tiled_conv_bias_is_per_phase(rng):
    x = jnp.asarray(rng.normal(size=(1, 7, 5, 2)), jnp.float32)
    module = cnn.TiledConv(features=3, kernel_size=3, tile=(2, 3))
    params = module.init(KEY, x)
    bias = jnp.asarray(rng.normal(size=(2, 3, 3)), jnp.float32)
    params = {"params": {**params["params"], "bias": bias}}
    y = module.apply(params, x) - ops.tiled_conv(x, params["params"]["kernel"], tile=(2, 3), padding="SAME")
    for i in range(7):
        for j in range(5):
            close(y[0, i, j], np.asarray(bias[i % 2, j % 3]), rtol=1e-5, atol=1e-5)


def test_local_conv_parameters_are_per_position():
    module = cnn.LocalConv(features=4, kernel_size=3, padding="VALID")
    shapes = jax.tree.map(jnp.shape, module.init(KEY, jnp.ones((1, 8, 7, 2))))
    assert shapes == {"params": {"kernel": (6, 5, 3, 3, 2, 4), "bias": (6, 5, 4)}}


def test_unshared_init_has_lecun_scale():
    kernel = cnn.LocalConv(features=64, kernel_size=3).init(KEY, jnp.ones((1, 16, 16, 32)))["params"]["kernel"]
    np.testing.assert_allclose(np.std(kernel), 1 / np.sqrt(3 * 3 * 32), rtol=0.05)


@pytest.mark.parametrize(
    "spec, module_type",
    [
        (cnn.ConvSpec(), cnn.Conv),
        (cnn.ConvSpec("tiled", tile=3), cnn.TiledConv),
        (cnn.ConvSpec("local"), cnn.LocalConv),
    ],
)
def test_conv_spec_builds_each_kind(spec, module_type):
    module = spec.make(5, 3, strides=2)
    assert type(module) is module_type
    assert module.apply(module.init(KEY, jnp.ones((2, 9, 9, 2))), jnp.ones((2, 9, 9, 2))).shape == (2, 5, 5, 5)


def test_conv_spec_dilation_is_the_default_for_layers():
    assert cnn.ConvSpec(dilation=2).make(4, 3).kernel_dilation == 2
    assert cnn.ConvSpec(dilation=2).make(4, 3, kernel_dilation=1).kernel_dilation == 1


def test_bfloat16_compute_keeps_float32_params(rng):
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
    for kind in ("standard", "tiled", "local"):
        module = cnn.ConvSpec(kind).make(4, 3, dtype=jnp.bfloat16)
        params = module.init(KEY, x)
        assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
        assert module.apply(params, x).dtype == jnp.bfloat16


def test_pool_and_norm_modules(rng):
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
    for module, shape in [
        (cnn.MaxPool(2), (2, 4, 4, 3)),
        (cnn.AvgPool(3, 1, "SAME"), (2, 8, 8, 3)),
        (cnn.LpPool(2), (2, 4, 4, 3)),
        (cnn.GlobalAvgPool(), (2, 3)),
        (cnn.GlobalMaxPool(), (2, 3)),
        (cnn.AdaptiveAvgPool(3), (2, 3, 3, 3)),
        (cnn.AdaptiveMaxPool((1, 2)), (2, 1, 2, 3)),
        (cnn.LocalResponseNorm(), (2, 8, 8, 3)),
    ]:
        assert module.apply({}, x).shape == shape
    variables = cnn.BatchNorm().init(KEY, x, use_running_average=True)
    assert jax.tree.map(jnp.shape, variables) == {
        "params": {"scale": (3,), "bias": (3,)},
        "batch_stats": {"mean": (3,), "var": (3,)},
    }


def test_conv_transpose_module_is_the_adjoint_of_conv(rng):
    y = jnp.asarray(rng.normal(size=(2, 4, 4, 6)), jnp.float32)
    module = cnn.ConvTranspose(features=3, kernel_size=3, strides=2, padding="SAME", use_bias=False)
    params = module.init(KEY, y)
    kernel = params["params"]["kernel"]
    assert kernel.shape == (3, 3, 3, 6)
    x_like = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
    # <conv(x), y> == <x, conv_transpose(y)>: the defining property of the adjoint.
    lhs = jnp.vdot(ops.conv(x_like, kernel, stride=2, padding="SAME"), y)
    rhs = jnp.vdot(x_like, module.apply(params, y))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4)


def flax_conv_transpose_reference(x, w, strides, dilation, padding):
    """flax.linen.ConvTranspose by its definition: each input scattered through the forward kernel w
    (*kernel, features, C_in) at i * s + tap * d (the VALID output, (n - 1) * s + span long), then padded by
    (a - (span - 1), b - (span - 1)) on each axis: zeros where positive, cropped where negative."""
    ndim = x.ndim - 2
    spans = [d * (k - 1) + 1 for k, d in zip(w.shape[:ndim], dilation)]
    full = reference.conv_transpose(
        x, w, [(n - 1) * s + span for n, s, span in zip(x.shape[1:-1], strides, spans)], strides, "VALID", dilation
    )
    for axis, ((a, b), span) in enumerate(zip(padding, spans), start=1):
        lo, hi = a - (span - 1), b - (span - 1)
        widths = [(0, 0)] * full.ndim
        widths[axis] = (max(lo, 0), max(hi, 0))
        full = np.pad(full, widths)
        full = np.take(full, range(max(-lo, 0), full.shape[axis] - max(-hi, 0)), axis=axis)
    return full


@pytest.mark.parametrize("transpose_kernel", [True, False])
def test_conv_transpose_takes_flax_padding_and_layout(rng, transpose_kernel):
    """With transpose_kernel set, explicit padding is flax's (of the stride-dilated input; beyond span - 1 and
    negative included) and the kernel and mask are in flax's layout for that value: the NumPy definition."""
    for _ in range(8):
        ndim = int(rng.integers(1, 3))
        kernel, strides, dilation = (tuple(int(v) for v in rng.integers(1, 4, ndim)) for _ in range(3))
        spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
        padding = tuple((int(rng.integers(-1, span + 2)), int(rng.integers(-1, span + 2))) for span in spans)
        x = rng.normal(size=(2, *rng.integers(2, 6, ndim), 3))
        if any(
            (n - 1) * s + a + b - span + 2 < 1 for n, s, (a, b), span in zip(x.shape[1:-1], strides, padding, spans)
        ):
            continue  # an empty output
        forward = rng.normal(size=(*kernel, 4, 3))  # the forward convolution's kernel (*kernel, features, C_in)
        scatter = np.flip(forward, tuple(range(ndim))).swapaxes(-1, -2)  # flax's default layout
        mask = (rng.random(forward.shape if transpose_kernel else scatter.shape) < 0.7).astype(np.float64)
        masked = forward * mask if transpose_kernel else np.flip(scatter * mask, tuple(range(ndim))).swapaxes(-1, -2)
        expected = flax_conv_transpose_reference(x, masked, strides, dilation, padding)
        module = cnn.ConvTranspose(
            4,
            kernel,
            strides,
            padding,
            dilation,
            use_bias=False,
            mask=jnp.asarray(mask, jnp.float32),
            transpose_kernel=transpose_kernel,
        )
        kernel_param = forward if transpose_kernel else scatter
        got = jax.jit(module.apply)(
            {"params": {"kernel": jnp.asarray(kernel_param, jnp.float32)}}, jnp.asarray(x, jnp.float32)
        )
        close(got, expected, rtol=1e-4, atol=1e-4)


def test_conv_spec_fits_the_tile_to_small_outputs():
    module = cnn.ConvSpec("tiled", tile=4).make(3, 3, padding="VALID")
    variables = module.init(KEY, jnp.ones((1, 4, 9, 2)))  # output 2 x 7: tile (2, 4)
    assert variables["params"]["kernel"].shape == (2, 4, 3, 3, 2, 3)
    with pytest.raises(ValueError, match="exceeds the output size"):
        cnn.TiledConv(features=3, kernel_size=3, tile=4, padding="VALID").init(KEY, jnp.ones((1, 4, 9, 2)))


@pytest.mark.parametrize("kind", ["tiled", "local"])
def test_conv_spec_groups_every_kind(rng, kind):
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 4)), jnp.float32)
    module = cnn.ConvSpec(kind, tile=2).make(6, 3, feature_group_count=2, use_bias=False)
    params = module.init(KEY, x)
    kernel = params["params"]["kernel"]
    assert kernel.shape[-2:] == (2, 6)
    # Inputs of group 1 never reach outputs of group 0.
    y0 = module.apply(params, x.at[..., 2:].set(0.0))[..., :3]
    close(module.apply(params, x)[..., :3], np.asarray(y0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "module",
    [
        cnn.Conv(4, (3, 2)),
        cnn.LocalConv(4, (3, 2), padding="CIRCULAR"),
        cnn.TiledConv(4, (3, 2), tile=2),
        cnn.ConvTranspose(4, (3, 2), strides=2),
        cnn.MaxPool((2, 2)),
        cnn.AdaptiveAvgPool((3, 3)),
    ],
)
def test_modules_take_any_number_of_batch_axes(rng, module):
    """No batch axis and several: the same numbers as one batch axis, as flax's layers."""
    x = jnp.asarray(rng.normal(size=(2, 3, 6, 5, 2)), jnp.float32)
    variables = module.init(KEY, x[0])
    flat = module.apply(variables, x.reshape(6, 6, 5, 2))
    close(module.apply(variables, x), np.asarray(flat).reshape(2, 3, *flat.shape[1:]), rtol=1e-6, atol=1e-6)
    close(module.apply(variables, x[0, 0]), np.asarray(flat[0]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("make", "axes"),  # the kernel's last two axes: (C_in, C_out), or (C_out, C_in) for ConvTranspose
    [
        (lambda **table: cnn.Conv(4, (3, 2), padding="VALID", **table), (3, 4)),
        (lambda **table: cnn.TiledConv(4, (3, 2), tile=2, **table), (3, 4)),
        (lambda **table: cnn.LocalConv(4, (3, 2), **table), (3, 4)),
        (lambda **table: cnn.ConvTranspose(4, (3, 2), strides=2, **table), (4, 3)),
    ],
    ids=["conv", "tiled", "local", "transpose"],
)
def test_a_connection_table_holds_only_the_connected_weights(rng, make, axes):
    """`connections` computes the layer masked by the same table (`mask`) from the same initial weights and
    gives the connected weights the masked kernel's gradients, while holding only those weights."""
    x = jnp.asarray(rng.normal(size=(2, 6, 5, 3)), jnp.float32)
    table = rng.random(axes) < 0.5
    table[0, 0] = True
    sparse, masked = make(connections=table), make(mask=jnp.asarray(table, jnp.float32))
    p_sparse, p_masked = sparse.init(KEY, x)["params"], masked.init(KEY, x)["params"]
    full = p_masked["kernel"]
    assert p_sparse["kernel"].shape == (*full.shape[:-2], table.sum())
    close(cnn.connected_kernel(p_sparse["kernel"], table), np.asarray(full * table), rtol=0, atol=0)
    loss = lambda module: lambda p: jnp.sum(jnp.sin(module.apply({"params": p}, x)))  # noqa: E731
    close(sparse.apply({"params": p_sparse}, x), np.asarray(masked.apply({"params": p_masked}, x)))
    g_sparse, g_masked = jax.grad(loss(sparse))(p_sparse), jax.grad(loss(masked))(p_masked)
    close(g_sparse["kernel"], np.asarray(g_masked["kernel"]).reshape(*full.shape[:-2], -1)[..., table.ravel()])
    close(g_sparse["bias"], np.asarray(g_masked["bias"]))
    with pytest.raises(ValueError, match=rf"connections has shape \({axes[1]}, {axes[0]}\) and dtype bool; it must"):
        make(connections=table.T).init(KEY, x)
    with pytest.raises(ValueError, match=r"connections has shape .* and dtype int64; it must be a bool table"):
        make(connections=table.astype(int)).init(KEY, x)


def test_conv_mask_and_input_dilation(rng):
    x = jnp.asarray(rng.normal(size=(2, 5, 5, 3)), jnp.float32)
    mask = jnp.asarray(rng.integers(0, 2, size=(3, 3, 3, 4)), jnp.float32)
    module = cnn.Conv(4, (3, 3), mask=mask, input_dilation=2, use_bias=False)
    params = module.init(KEY, x)
    kernel = params["params"]["kernel"]
    close(
        module.apply(params, x),
        np.asarray(ops.conv(x, kernel * mask, padding="SAME", input_dilation=2)),
        rtol=1e-5,
        atol=1e-5,
    )
    assert module.apply(params, x).shape == (2, 9, 9, 4)
