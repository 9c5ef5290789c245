"""Pure-function layers of convolutional networks: NHWC activations, HWIO kernels, no state."""

from cnn_jax.ops.conv import conv, conv_transpose
from cnn_jax.ops.local import local_conv, tiled_conv
from cnn_jax.ops.norm import batch_norm, batch_norm_train, batch_stats, local_response_norm
from cnn_jax.ops.pool import (
    adaptive_avg_pool,
    adaptive_max_pool,
    avg_pool,
    binomial_filter,
    blur_pool,
    global_avg_pool,
    global_max_pool,
    lp_pool,
    max_pool,
    min_pool,
    pool,
)
from cnn_jax.ops.shapes import (
    Layer,
    ReceptiveField,
    conv_macs,
    conv_output_size,
    conv_params,
    effective_kernel_size,
    receptive_field,
    resolve_padding,
)

__all__ = [
    "conv",
    "conv_transpose",
    "local_conv",
    "tiled_conv",
    "pool",
    "max_pool",
    "min_pool",
    "avg_pool",
    "blur_pool",
    "binomial_filter",
    "lp_pool",
    "global_avg_pool",
    "global_max_pool",
    "adaptive_avg_pool",
    "adaptive_max_pool",
    "batch_norm",
    "batch_norm_train",
    "batch_stats",
    "local_response_norm",
    "Layer",
    "ReceptiveField",
    "conv_output_size",
    "conv_macs",
    "conv_params",
    "effective_kernel_size",
    "receptive_field",
    "resolve_padding",
]
