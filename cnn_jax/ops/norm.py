"""Batch normalisation (Ioffe & Szegedy 2015), synced across devices, and local response normalisation.

Statistics are per channel, over every other axis of channels-last activations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def batch_stats(
    x: jax.Array, *, axis_name: str | None = None, virtual_batch_size: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and biased variance of x (N, ..., C) -> ((C,), (C,)).

    One pass over x, accumulated in float32 (float64 inputs stay float64), with shifted moments:
    E[x - s] and E[(x - s)^2] are reduced together, where s is a per-channel shift near the mean
    (the first example's mean, held constant for differentiation, averaged across devices so that
    every device shifts alike), and var = max(E[(x - s)^2] - E[x - s]^2, 0). The unshifted form,
    E[x^2] - E[x]^2 (flax's default), loses about mean^2 / var of float32's precision, so a channel
    whose mean is large against its spread got a variance made of rounding; the shifted form loses
    (mean - s)^2 / var. A second pass for the squared deviations from the mean would read the
    activations twice, which is what a training step's BatchNorm time is made of on an accelerator.

    With `axis_name` (inside pmap/shard_map) they are the statistics of the global batch
    across all devices on that axis: both moments are averaged in one collective, which is
    exact for equal per-device batches. With `virtual_batch_size` v (ghost batch norm, Hoffer
    et al. 2017) the batch is split into N/v sub-batches, each with its own statistics (and its
    own first example as the shift): shapes (N/v, C). Those are local to a device by definition,
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
        groups = x.reshape(x.shape[0] // virtual_batch_size, virtual_batch_size, -1, x.shape[-1])
        shift = groups[:, 0].mean(1)  # (N/v, C): each virtual batch's first example
        x, axes = groups.reshape(groups.shape[0], -1, x.shape[-1]), 1
        synced = None
    else:
        axes = tuple(range(x.ndim - 1))
        shift = x[0].mean(tuple(range(x.ndim - 2)))  # (C,)
        synced = axis_name
    if synced is not None:
        shift = lax.pmean(shift, synced)
    shift = lax.stop_gradient(shift)
    centred = x - (shift if virtual_batch_size is None else shift[:, None])
    mean, mean_of_squares = centred.mean(axes), jnp.square(centred).mean(axes)
    if synced is not None:
        mean, mean_of_squares = lax.pmean((mean, mean_of_squares), synced)
    # Rounding can make the difference slightly negative for (nearly) constant channels.
    return mean + shift, jnp.maximum(mean_of_squares - jnp.square(mean), 0)


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
