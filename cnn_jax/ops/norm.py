"""Batch normalisation (Ioffe & Szegedy 2015), synced across devices, and local response normalisation.

Statistics are per channel, over every other axis of channels-last activations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# The shift's subsample: every 11th position (a prime, so no map width of 2^k * {1, 3, 7} aliases it).
SHIFT_STRIDE = 11


def batch_stats(
    x: jax.Array, *, axis_name: str | None = None, virtual_batch_size: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and biased variance of x (N, ..., C) -> ((C,), (C,)).

    One read of x, accumulated in float32 (float64 inputs stay float64), with shifted moments:
    E[x - s] and E[(x - s)^2] are reduced together, where s is a per-channel shift near the mean,
    and var = max(E[(x - s)^2] - E[x - s]^2, 0). Rounding costs that difference about
    (1 + (mean - s)^2 / var) of float32's precision, against 1 for two-pass statistics (a second read,
    for the squared deviations from the mean: a training step's BatchNorm time on an accelerator is
    its reads). The unshifted form, E[x^2] - E[x]^2 (flax's default), loses mean^2 / var.

    s is the mean of a strided subsample: every SHIFT_STRIDE-th position of x flattened to (positions, C)
    (a smaller stride below 8 * SHIFT_STRIDE positions, so that at least 8 are sampled), averaged across
    devices so that all shift alike; held constant for differentiation. For a subsample holding a fraction f
    of the positions, (mean - s)^2 <= var / f (Cauchy-Schwarz), so the loss is at most 1 + SHIFT_STRIDE,
    and near 1 unless the batch's spread sits on the sampled positions; reading 1 / SHIFT_STRIDE of x
    costs a fraction of a read. A stride coprime to the usual map widths (powers of 2 times 1, 3, 7)
    samples every column, borders included, in proportion.

    With `axis_name` (inside pmap/shard_map) they are the statistics of the global batch
    across all devices on that axis: both moments are averaged in one collective, which is
    exact for equal per-device batches. With `virtual_batch_size` v (ghost batch norm, Hoffer
    et al. 2017) the batch is split into N/v sub-batches, each with its own statistics (and its
    own subsample as the shift): shapes (N/v, C). Those are local to a device by definition,
    so `axis_name` is ignored then.
    """
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if virtual_batch_size is not None:
        if not (
            isinstance(virtual_batch_size, int) and virtual_batch_size > 0 and x.shape[0] % virtual_batch_size == 0
        ):
            raise ValueError(
                f"virtual_batch_size={virtual_batch_size!r} must be a positive int dividing the batch size {x.shape[0]}"
            )
        groups, synced = x.shape[0] // virtual_batch_size, None
    else:
        groups, synced = 1, axis_name
    rows = x.reshape(groups, -1, x.shape[-1])  # (groups, positions, C)
    stride = min(SHIFT_STRIDE, max(1, rows.shape[1] // 8))
    shift = rows[:, ::stride].mean(1, keepdims=True)  # (groups, 1, C)
    if synced is not None:
        shift = lax.pmean(shift, synced)
    shift = lax.stop_gradient(shift)
    centred = rows - shift
    mean, mean_of_squares = centred.mean(1), jnp.square(centred).mean(1)
    if synced is not None:
        mean, mean_of_squares = lax.pmean((mean, mean_of_squares), synced)
    # Rounding can make the difference slightly negative for (nearly) constant channels.
    mean, var = mean + shift[:, 0], jnp.maximum(mean_of_squares - jnp.square(mean), 0)
    return (mean, var) if virtual_batch_size is not None else (mean[0], var[0])


def batch_norm(
    x: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    scale: jax.Array | None = None,
    bias: jax.Array | None = None,
    *,
    epsilon: float = 1e-5,
) -> jax.Array:
    """(x - mean) / sqrt(var + epsilon) * scale + bias, per channel (last axis of x).

    mean and var are (C,), or (G, C) for G virtual batches of x's leading axis.
    """
    # One per-channel factor (rsqrt * scale), applied to the centred x: one fused pass over the tensor. Folding
    # the mean into an offset too (x * factor + offset) is one op fewer, but its gradient for the factor is
    # sum(dy * x) - mean * sum(dy), which cancels in float32 when the mean is large against the spread: GoogLeNet's
    # float32 gradients were 19% off float64's (docs/training.md). Centred, it is sum(dy * (x - mean)).
    factor = lax.rsqrt(var + epsilon)
    if scale is not None:
        factor = factor * scale
    if mean.ndim == 2:  # (G, C): one row of statistics per virtual batch of x's leading axis
        stat_shape = (mean.shape[0],) + (1,) * (x.ndim - 1) + (mean.shape[-1],)
        groups = x.reshape(mean.shape[0], -1, *x.shape[1:])
        y = ((groups - mean.reshape(stat_shape)) * factor.reshape(stat_shape)).reshape(x.shape)
    else:
        y = (x - mean) * factor
    return y if bias is None else y + bias


def batch_norm_train(
    x: jax.Array,
    scale: jax.Array | None,
    bias: jax.Array | None,
    running_mean: jax.Array,
    running_var: jax.Array,
    *,
    momentum: float = 0.9,
    epsilon: float = 1e-5,
    axis_name: str | None = None,
    virtual_batch_size: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training-mode batch norm: normalise with batch statistics and update the running averages.

    Returns (y, new_running_mean, new_running_var) with new = momentum * old + (1 - momentum) * batch
    (Flax's convention; PyTorch's momentum is 1 - this one). The running variance is the biased
    batch variance, as in Flax. Virtual batches contribute the mean of their statistics,
    averaged over `axis_name` too, so every replica keeps the same running averages.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum={momentum!r} must be in [0, 1]")
    mean, var = batch_stats(x, axis_name=axis_name, virtual_batch_size=virtual_batch_size)
    y = batch_norm(x, mean, var, scale, bias, epsilon=epsilon)
    batch_mean, batch_var = (mean, var) if mean.ndim == 1 else (mean.mean(0), var.mean(0))
    if virtual_batch_size is not None and axis_name is not None:
        batch_mean, batch_var = lax.pmean((batch_mean, batch_var), axis_name)
    batch_mean, batch_var = lax.stop_gradient(batch_mean), lax.stop_gradient(batch_var)
    new_mean = momentum * running_mean + (1 - momentum) * batch_mean
    new_var = momentum * running_var + (1 - momentum) * batch_var
    return y, new_mean, new_var


def local_response_norm(
    x: jax.Array, *, size: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75
) -> jax.Array:
    """Local response normalisation across channels (Krizhevsky et al. 2012, sec. 3.3):

        b_c = a_c / (k + alpha * sum_{|j - c| <= size // 2} a_j^2) ** beta

    with AlexNet's constants as defaults. PyTorch's LocalResponseNorm divides alpha by size.
    """
    if not (isinstance(size, int) and size > 0 and size % 2 == 1):
        raise ValueError(f"size={size!r}: the channel window must be a positive odd int (AlexNet uses 5)")
    half = size // 2
    window = (1,) * (x.ndim - 1) + (size,)
    # A concrete (NumPy) initial value lets JAX recognise the windowed sum, which has a gradient rule.
    sum_sq = lax.reduce_window(
        x * x, np.zeros((), x.dtype), lax.add, window, (1,) * x.ndim, ((0, 0),) * (x.ndim - 1) + ((half, half),)
    )
    return x / (k + alpha * sum_sq) ** beta
