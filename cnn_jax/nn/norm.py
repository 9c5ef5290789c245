"""Normalisation modules over cnn_jax.ops.norm."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_jax import ops


class BatchNorm(nn.Module):
    """Batch norm over channels-last x. Params "scale", "bias"; collection "batch_stats": "mean", "var".

    With use_running_average=False it normalises with batch statistics (averaged across
    devices on `axis_name`, or per virtual batch of `virtual_batch_size` examples) and
    updates the running averages (call with mutable=["batch_stats"]).
    """

    use_running_average: bool | None = None
    momentum: float = 0.9
    epsilon: float = 1e-5
    axis_name: str | None = None
    virtual_batch_size: int | None = None
    use_scale: bool = True
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        features = (x.shape[-1],)
        scale = self.param("scale", nn.initializers.ones_init(), features, self.param_dtype) if self.use_scale else None
        bias = self.param("bias", nn.initializers.zeros_init(), features, self.param_dtype) if self.use_bias else None
        mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
        var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
        dtype = self.dtype or x.dtype
        if use_running_average:
            return ops.batch_norm(x, mean.value, var.value, scale, bias, epsilon=self.epsilon).astype(dtype)
        # ops.batch_stats accumulates in at least float32, whatever the compute dtype.
        y, new_mean, new_var = ops.batch_norm_train(
            x,
            scale,
            bias,
            mean.value,
            var.value,
            momentum=self.momentum,
            epsilon=self.epsilon,
            virtual_batch_size=self.virtual_batch_size,
            # init usually runs outside pmap/shard_map, where the axis is unbound
            axis_name=None if self.is_initializing() else self.axis_name,
        )
        if not self.is_initializing():
            mean.value, var.value = new_mean, new_var
        return y.astype(dtype)


class LocalResponseNorm(nn.Module):
    """AlexNet's local response normalisation across channels (no parameters)."""

    size: int = 5
    k: float = 2.0
    alpha: float = 1e-4
    beta: float = 0.75

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.local_response_norm(x, size=self.size, k=self.k, alpha=self.alpha, beta=self.beta)
