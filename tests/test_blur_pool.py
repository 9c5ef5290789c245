"""Anti-aliased subsampling (Zhang 2019): ops.blur_pool against its NumPy definition on random shapes, the
paper's filter taps, the paper's PyTorch BlurPool, gradients, and the blur-pooled LeNet-5 variants."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import close, compiled
from jax.test_util import check_grads

from cnn_jax import models, ops
from cnn_jax import nn as cnn
from cnn_jax.ops import reference

KEY = jax.random.PRNGKey(0)


def shapes(variables):
    return jax.tree.map(lambda a: a.shape, variables)


def test_filter_taps_are_the_papers():
    papers = {1: [1], 2: [1, 1], 3: [1, 2, 1], 4: [1, 3, 3, 1], 5: [1, 4, 6, 4, 1], 6: [1, 5, 10, 10, 5, 1]}
    for size, taps in papers.items():
        np.testing.assert_allclose(ops.binomial_filter(size), np.array(taps) / sum(taps))
    np.testing.assert_allclose(ops.binomial_filter(7), np.array([1, 6, 15, 20, 15, 6, 1]) / 64)
    for bad in (0, 8, 3.0):
        with pytest.raises(ValueError, match=r"size=.*: the blur filter has 1 to 7 taps"):
            ops.binomial_filter(bad)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_blur_pool_matches_reference_on_random_shapes(rng, ndim):
    for _ in range(6):
        size = int(rng.integers(1, 8))
        stride = tuple(int(s) for s in rng.integers(1, 4, ndim))
        spatial = tuple(int(n) for n in rng.integers(size // 2 + 1, 10 if ndim < 3 else 7, ndim))
        x = rng.normal(size=(2, *spatial, 3))
        for mode in ("REFLECT", "CIRCULAR", "REPLICATE", "ZEROS"):
            got = compiled(ops.blur_pool, jnp.asarray(x, jnp.float32), size=size, stride=stride, pad_mode=mode)
            assert got.shape == (2, *(-(-n // s) for n, s in zip(spatial, stride)), 3)  # ceil(n / stride)
            close(got, reference.blur_pool(x, size, stride, mode))


def test_blur_pool_is_the_papers_pytorch_layer(torch, rng):
    """antialiased-cnns' BlurPool: ReflectionPad2d([(k-1)//2, ceil((k-1)/2)] * 2), then a depthwise conv2d
    with the normalised outer product of the binomial taps at the stride."""
    for size in (2, 3, 4, 5, 7):
        x = rng.normal(size=(2, 11, 12, 4)).astype(np.float32)
        taps = torch.tensor(ops.binomial_filter(size), dtype=torch.float32)
        kernel = (taps[:, None] * taps[None, :])[None, None].repeat(4, 1, 1, 1)
        pads = [(size - 1) // 2, -(-(size - 1) // 2)] * 2
        padded = torch.nn.functional.pad(torch.tensor(x).permute(0, 3, 1, 2), pads, mode="reflect")
        theirs = torch.nn.functional.conv2d(padded, kernel, stride=2, groups=4).permute(0, 2, 3, 1).numpy()
        close(ops.blur_pool(jnp.asarray(x), size, 2), theirs)


def test_blur_pool_keeps_constants_and_size_1_subsamples(rng):
    x = rng.normal(size=(1, 9, 9, 2)).astype(np.float32)
    close(ops.blur_pool(jnp.asarray(x), 1, 2), x[:, ::2, ::2])
    const = jnp.full((1, 8, 8, 1), 3.0)
    for mode in ("REFLECT", "CIRCULAR", "REPLICATE"):  # a low-pass filter passes a constant through
        close(ops.blur_pool(const, 5, 2, mode), np.full((1, 4, 4, 1), 3.0))


def test_blur_pool_grads(rng, x64):
    x = jnp.asarray(rng.normal(size=(2, 7, 6, 3)))
    check_grads(lambda x: ops.blur_pool(x, 3, 2), (x,), order=2, modes=["rev"])


def test_bad_blur_pool_input_names_the_value():
    with pytest.raises(ValueError, match=r"pad_mode='SAME': unknown; valid modes are REFLECT, CIRCULAR"):
        ops.blur_pool(jnp.ones((1, 8, 8, 1)), 3, 2, "SAME")
    with pytest.raises(ValueError, match=r"spatial axis 1 has 2 positions; REFLECT padding by 2"):
        ops.blur_pool(jnp.ones((1, 8, 2, 1)), 5, 2)
    with pytest.raises(ValueError, match=r"stride=0"):
        ops.blur_pool(jnp.ones((1, 8, 8, 1)), 3, 0)


def test_blur_pool_module_takes_any_batch_axes(rng):
    x = jnp.asarray(rng.normal(size=(3, 2, 10, 10, 4)), jnp.float32)
    y = cnn.BlurPool(5, strides=(2, 2)).apply({}, x)  # a sequence: any number of leading batch axes
    close(y[1], ops.blur_pool(x[1], 5, 2))
    assert y.shape == (3, 2, 5, 5, 4)


@pytest.mark.parametrize("pool", ["blurmax", "blurstrided"])
def test_blur_pooled_lenet5_is_the_papers_composition(pool):
    """MaxBlurPool = max over 2x2 at stride 1, then blur_pool; blurred strided conv = conv, ReLU, blur_pool."""
    x = jax.random.normal(KEY, (2, 28, 28, 1))
    model = models.create("lenet5", num_classes=10, pool=pool, blur_size=5)
    variables = model.init(KEY, x)
    captured = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])[1]["intermediates"]
    relu1 = jax.nn.relu(captured["conv1"]["__call__"][0])
    first = ops.max_pool(relu1, 2, stride=1) if pool == "blurmax" else relu1
    close(captured["BlurPool_0"]["__call__"][0], ops.blur_pool(first, 5, 2))
    assert model.apply(variables, x).shape == (2, 10)
    max_pooled = models.create("lenet5", num_classes=10, pool="max").init(KEY, x)["params"]
    assert jax.tree.map(jnp.shape, max_pooled) == jax.tree.map(jnp.shape, variables["params"])  # same 5x5x16


@pytest.mark.parametrize(
    "options",
    [
        dict(name="resnet8"),  # basic blocks, option A shortcuts
        dict(name="resnet8", block="bottleneck", shortcut="B", widths=(8, 8, 8)),
    ],
    ids=["basic_A", "bottleneck_B"],
)
def test_resnet_blur_of_one_tap_is_the_strided_network(options):
    # A 1-tap blur is plain subsampling, and in evaluation mode the norm and ReLU commute with it: the
    # anti-aliased network (stride-1 convolutions, then subsample) computes the published one with the same
    # parameters. Wider filters change the function but not the parameters.
    options = dict(options)
    x = jax.random.normal(KEY, (2, 16, 16, 3))
    strided = models.create(options.pop("name"), num_classes=10, **options)
    variables = jax.jit(strided.init)(KEY, x)
    for size in (1, 3):
        blurred = models.create("resnet8", num_classes=10, blur_size=size, **options)
        assert shapes(jax.eval_shape(blurred.init, KEY, x)) == shapes(variables)
        same = np.allclose(
            jax.jit(blurred.apply)(variables, x), jax.jit(strided.apply)(variables, x), rtol=1e-5, atol=1e-5
        )
        assert same == (size == 1), size


def test_resnet_imagenet_stem_blurs_as_maxblurpool():
    x = jax.random.normal(KEY, (1, 64, 64, 3))
    kwargs = dict(num_classes=10, stage_sizes=(1, 1), widths=(8, 16))
    blurred = models.create("resnet18", blur_size=3, **kwargs)
    variables = jax.jit(blurred.init)(KEY, x)
    capture = functools.partial(blurred.apply, capture_intermediates=True, mutable=["intermediates"])
    captured = jax.jit(capture)(variables, x)[1]["intermediates"]
    stem = jax.nn.relu(captured["stem_norm"]["__call__"][0])
    close(captured["BlurPool_0"]["__call__"][0], ops.blur_pool(ops.max_pool(stem, 2, stride=1), 3, 2))
    assert captured["BlurPool_0"]["__call__"][0].shape == (1, 16, 16, 8)  # as the 3x3/2 max-pool's
    plain = jax.eval_shape(models.create("resnet18", **kwargs).init, KEY, x)
    assert shapes(plain) == shapes(variables)
