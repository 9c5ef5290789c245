"""Shared test utilities: random convolution configurations and float32 comparison."""
import itertools

import numpy as np

from cnn_jax.ops.shapes import conv_geometry

F32 = dict(rtol=2e-5, atol=2e-5)


def close(actual, expected, **tol):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, **(tol or F32))


def random_configs(rng, ndim, count, *, groups=False, max_size=None):
    """Yield (x_shape, kernel, stride, padding, dilation, groups) that give a non-empty output."""
    max_size = max_size or {1: 12, 2: 9, 3: 6}[ndim]
    paddings = ["VALID", "SAME", "FULL", 1, "explicit"] + (["CAUSAL"] if ndim == 1 else [])
    produced = 0
    for _ in itertools.count():
        sizes = tuple(int(v) for v in rng.integers(1, max_size + 1, ndim))
        kernel = tuple(int(v) for v in rng.integers(1, 4, ndim))
        stride = tuple(int(v) for v in rng.integers(1, 3, ndim))
        dilation = tuple(int(v) for v in rng.integers(1, 3, ndim))
        padding = paddings[rng.integers(len(paddings))]
        if padding == "explicit":
            padding = tuple((int(a), int(b)) for a, b in rng.integers(0, 3, (ndim, 2)))
        g = int(rng.choice([1, 2, 3])) if groups else 1
        cin = g * int(rng.integers(1, 3))
        cout = g * int(rng.integers(1, 3))
        try:
            conv_geometry(sizes, kernel, stride, padding, dilation)
        except ValueError:
            continue
        yield (int(rng.integers(1, 3)), *sizes, cin), kernel, stride, padding, dilation, g, cout
        produced += 1
        if produced == count:
            return
