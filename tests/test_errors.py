"""Bad input fails with a ValueError naming the argument, its value and what is valid, before tracing."""

import jax
import jax.numpy as jnp
import pytest

from cnn_jax import nn as cnn
from cnn_jax import ops

X = jnp.ones((2, 5, 5, 3))
W = jnp.ones((3, 3, 3, 4))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ops.conv(X, jnp.ones((7, 7, 3, 4))), r"kernel size 7 .* larger than the padded input 5 \+ 0 \+ 0 = 5"),
        (lambda: ops.conv(X, W, dilation=3), r"dilation 3 spans 7"),
        (lambda: ops.conv(X, jnp.ones((3, 3, 2, 4))), r"channel mismatch: x has 3 channels .* expects 2"),
        (lambda: ops.conv(jnp.ones((2, 5, 5, 4)), jnp.ones((3, 3, 2, 6)), groups=3), r"groups=3 does not divide the 4"),
        (
            lambda: ops.conv(jnp.ones((2, 5, 5, 4)), jnp.ones((3, 3, 2, 3)), groups=2),
            r"groups=2 does not divide the 3 output",
        ),
        (lambda: ops.conv(X, W, stride=0), r"stride=0: every entry must be >= 1"),
        (lambda: ops.conv(X, W, stride=(1, -1)), r"stride=\(1, -1\)"),
        (lambda: ops.conv(X, W, dilation=0), r"dilation=0"),
        (lambda: ops.conv(X, W, groups=0), r"groups=0"),
        (
            lambda: ops.conv(X, W, padding="HALF"),
            r"padding='HALF': unknown mode; valid modes are VALID, SAME, FULL, CAUSAL, CIRCULAR, REFLECT",
        ),
        (
            lambda: ops.conv(X, W, padding=[None, (1, 2)]),
            r"padding=\[None, \(1, 2\)\]: entry 0 \(None\) must be an int",
        ),
        (lambda: ops.conv(X, W, padding=[1, 1.5]), r"entry 1 \(1.5\) must be an int or a \(lo, hi\) pair"),
        (lambda: ops.conv(X, W, padding=[(1, 2.0), 1]), r"entry 0 \(\(1, 2.0\)\)"),
        (lambda: ops.conv(X, W, padding=1.5), r"padding=1.5: expected a mode string, an int"),
        (lambda: ops.conv(X, W, padding="CIRCULAR", input_dilation=2), r"input_dilation=\(2, 2\): padding with input"),
        (lambda: ops.conv(X, W, input_dilation=0), r"input_dilation=0: every entry must be >= 1"),
        (
            lambda: ops.local_conv(jnp.ones((2, 5, 5, 4)), jnp.ones((3, 3, 3, 3, 2, 3)), groups=2),
            r"groups=2 does not divide the 3 output",
        ),
        (lambda: ops.pool(X, 0.0, jax.lax.add, 2, padding=[None, 1]), r"entry 0 \(None\)"),
        (lambda: ops.conv(X, W, padding="CAUSAL"), r"'CAUSAL' is defined for 1-D inputs only"),
        (lambda: ops.conv(X, W, padding=-1), r"non-negative"),
        (lambda: ops.conv(X, W, padding=((1, 1),)), r"expected 2 entries"),
        (lambda: ops.conv(jnp.ones((5, 5)), W), r"x has shape \(5, 5\) \(rank 2\); expected rank 3, 4 or 5"),
        (lambda: ops.conv(X, jnp.ones((3, 3, 4))), r"w has shape \(3, 3, 4\); .* must have rank 4 \(HWIO\)"),
        (lambda: ops.conv(X, W, stride=(1, 1, 1)), r"expected an int or 2 ints"),
        (lambda: ops.conv(X, W, dilation=None), r"dilation=None: expected an int or 2 ints"),
        (lambda: ops.conv_transpose(jnp.ones((2, 3, 3, 4)), W, input_size=(9, 9)), r"gives conv output \(7, 7\)"),
        (
            lambda: ops.tiled_conv(X, jnp.ones((4, 4, 3, 3, 3, 4)), tile=4),
            r"tile=\(4, 4\) exceeds the output size \(3, 3\)",
        ),
        (lambda: ops.tiled_conv(X, jnp.ones((2, 2, 3, 3, 3, 4)), tile=0), r"tile=0"),
        (
            lambda: ops.tiled_conv(X, jnp.ones((2, 2, 3, 3, 3, 4)), tile=3),
            r"leading axes \(2, 2\) must equal tile=\(3, 3\)",
        ),
        (lambda: ops.tiled_conv(X, W, tile=1), r"must have rank 6"),
        (lambda: ops.local_conv(X, jnp.ones((2, 2, 3, 3, 3, 4))), r"leading axes must be the output size \(3, 3\)"),
        (lambda: ops.local_conv(X, jnp.ones((3, 3, 3, 3, 2, 4))), r"channel mismatch"),
        (lambda: ops.max_pool(X, 6), r"kernel size 6 .* larger than the padded input"),
        (lambda: ops.max_pool(X, 2, padding=2), r"Pad at most 1 per side"),
        (lambda: ops.avg_pool(X, 0), r"window=0"),
        (lambda: ops.lp_pool(X, 2, p=0), r"p=0"),
        (lambda: ops.adaptive_avg_pool(X, 0), r"output_size=0: every entry must be >= 1"),
        (
            lambda: ops.batch_norm_train(X, None, None, jnp.zeros(3), jnp.ones(3), virtual_batch_size=3),
            r"virtual_batch_size=3 must be a positive int dividing the batch size 2",
        ),
        (lambda: ops.batch_norm_train(X, None, None, jnp.zeros(3), jnp.ones(3), momentum=1.5), r"momentum=1.5"),
        (lambda: ops.local_response_norm(X, size=4), r"size=4: .* positive odd int"),
        (lambda: ops.conv_output_size(5, 3, 2, -1), r"non-negative"),
        (lambda: ops.receptive_field([(3, 2, "SAME")]), r"pass input_size"),
        (lambda: ops.receptive_field([(3, 0)]), r"layers\[0\].stride=0"),
        (lambda: cnn.ConvSpec(kind="dilated"), r"kind='dilated': unknown; valid kinds are standard, tiled, local"),
        (lambda: cnn.ConvSpec(kind="tiled", flip=True), r"flip=True is only defined for kind='standard'"),
        (
            lambda: cnn.ConvSpec(padding_mode="wrap"),
            r"padding_mode='wrap': unknown; valid modes are zeros, circular, reflect",
        ),
        (
            lambda: cnn.Conv(4, 3, padding_mode="circular", input_dilation=2).init(jax.random.PRNGKey(0), X),
            r"padding_mode='circular' with input_dilation=2: padding with input values is not defined",
        ),
        (
            lambda: cnn.ConvSpec(kind="local").make(8, 3, feature_group_count=2).init(jax.random.PRNGKey(0), X),
            r"feature_group_count=2 does not divide the 3 input channels",
        ),
        (
            lambda: cnn.Conv(4, 3, mask=jnp.ones((3, 3, 3))).init(jax.random.PRNGKey(0), X),
            r"mask has shape \(3, 3, 3\); it must have the kernel's shape \(3, 3, 3, 4\)",
        ),
        (lambda: cnn.Conv(4, (3, 3, 3)).init(jax.random.PRNGKey(0), X[0]), r"too few axes for kernel_size=\(3, 3, 3\)"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_errors_are_raised_while_tracing_not_by_xla():
    """Under jit the same ValueError comes from the shape checks, before any lowering."""
    with pytest.raises(ValueError, match="channel mismatch"):
        jax.jit(lambda x: ops.conv(x, jnp.ones((3, 3, 2, 4)))).lower(X)


def test_module_errors_name_the_layer_argument():
    with pytest.raises(ValueError, match="tile=\\(8, 8\\) exceeds the output size"):
        cnn.TiledConv(features=2, kernel_size=3, tile=8).init(jax.random.PRNGKey(0), X)
