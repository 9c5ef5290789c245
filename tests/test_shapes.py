"""Output-size, padding and receptive-field arithmetic, checked against brute force."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import ops
from cnn_jax.ops import reference
from cnn_jax.ops.shapes import conv_geometry


@pytest.mark.parametrize("mode", ["VALID", "SAME", "FULL"])
def test_output_size_equals_the_size_conv_produces(mode):
    for n, k, s, d in itertools.product(range(1, 9), range(1, 4), range(1, 4), range(1, 3)):
        if d * (k - 1) + 1 > n and mode == "VALID":
            continue
        out = ops.conv_output_size(n, k, s, mode, d)
        assert reference.conv(np.ones((1, n, 1)), np.ones((k, 1, 1)), s, mode, d).shape[1] == out
        if mode == "SAME":
            assert out == -(-n // s)
        if mode == "FULL" and s == 1:
            assert out == n + d * (k - 1)


def test_causal_padding_only_looks_back():
    x = jnp.zeros((1, 8, 1)).at[0, 5, 0].set(1.0)
    y = ops.conv(x, jnp.ones((3, 1, 1)), padding="CAUSAL", dilation=2)
    assert y.shape == x.shape
    assert np.flatnonzero(np.asarray(y[0, :, 0])).tolist() == [5, 7]


def _influence(layers, n, j):
    """Brute force: which outputs of a linear all-ones stack change when input pixel j is set."""
    x = np.zeros((1, n, 1))
    x[0, j, 0] = 1.0
    for k, s, p, d in layers:
        x = reference.conv(x, np.ones((k, 1, 1)), s, p if isinstance(p, str) else [p], d)
    return set(np.flatnonzero(x[0, :, 0]))


STACKS = [
    [(3, 1, 1, 1), (3, 1, 1, 1)],
    [(3, 1, 0, 2)],
    [(5, 2, 2, 1), (3, 2, 1, 1), (3, 1, 0, 1)],
    [(3, 1, 1, 1), (3, 1, 2, 2), (3, 1, 4, 4), (3, 1, 8, 8)],
    [(2, 2, 0, 1), (3, 1, (1, 0), 3), (2, 2, 0, 1)],
    [(3, 2, "SAME", 1), (3, 1, "SAME", 2), (3, 2, "SAME", 1)],
]


@pytest.mark.parametrize("layers", STACKS)
def test_receptive_field_matches_brute_force(layers):
    n = 40
    rf = ops.receptive_field(layers, input_size=n)
    seen = {}
    for j in range(n):
        for u in _influence(layers, n, j):
            seen.setdefault(u, []).append(j)
    for u, inputs in seen.items():
        start, stop = rf.span(u)
        # The brute force sees only real pixels: the span clipped to the input.
        assert (min(inputs), max(inputs)) == (max(start, 0), min(stop, n - 1)), (u, rf)


def test_receptive_field_of_dilation_schedules():
    rf = ops.receptive_field([(3, 1, 0, d) for d in (1, 2, 4, 8)])
    assert rf == ops.ReceptiveField(size=31, stride=1, padding=0)
    assert ops.receptive_field([(3, 1, 1, 1)] * 16).size == 33


def test_geometry_resolves_every_padding_form():
    assert conv_geometry((7,), (3,), 1, [(2, 1)]).padding == ((2, 1),)
    assert conv_geometry((7, 7), (3, 3), 1, (1, 2)).padding == ((1, 1), (2, 2))
    assert conv_geometry((7, 7), (3, 3), 2, "same").padding == ((1, 1), (1, 1))
    assert conv_geometry((8, 8), (3, 3), 2, "SAME").padding == ((0, 1), (0, 1))
