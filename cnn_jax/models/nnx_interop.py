"""cnn_jax's linen models inside flax NNX code, through flax's own bridge (`flax.nnx.bridge.ToNNX`).

    model = models.create("resnet20", num_classes=10)
    variables = jax.jit(model.init)(jax.random.key(0), x)     # or models.from_torch_state_dict(...)
    net = to_nnx(model, variables, rngs=nnx.Rngs(dropout=1))
    optimizer = nnx.Optimizer(net, optax.sgd(0.1, momentum=0.9), wrt=nnx.Param)
    logits = net(x, train=True, mutable=["batch_stats"])     # a training call: BatchNorm statistics update
    logits = net(x, train=False)                             # evaluation: running statistics, no dropout

The wrapped module is the linen model, computed by the same code: the bridge holds its variables as NNX
state (`nnx.Param` for "params", `nnx.BatchStat` for "batch_stats") and calls `model.apply` on them. Two
things differ from a native NNX module:
- the mode is linen's `train=` argument, not `nnx.Module.train()` / `.eval()`;
- a training call of a model with BatchNorm passes `mutable=["batch_stats"]` (or `mutable=True`), so the
  bridge writes the updated statistics back; without it the call raises flax's ModifyScopeVariableError
  ("collection batch_stats is immutable").
Dropout keys come from the `dropout` stream of the module's `nnx.Rngs`, a fresh key each call.
A cross-device BatchNorm (`models.create(..., norm_axis_name="batch")`) averages over that axis under
`nnx.shard_map` (or `jax.shard_map` / `pmap`), as in cnn_jax's own step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
from flax import nnx
from flax.nnx.bridge import variables as bridge_variables


def to_nnx(model: nn.Module, variables: Mapping[str, Any], *, rngs: nnx.Rngs | None = None) -> nnx.bridge.ToNNX:
    """`model` holding `variables` as an NNX module (`nnx.bridge.ToNNX`), ready to call, split and optimise.

    Args:
      model: a linen model, e.g. `models.create(name, ...)`.
      variables: its linen variables, {"params": ..., "batch_stats": ...} as `model.init` or
        `models.from_torch_state_dict` return them.
      rngs: the streams the model draws from when called, e.g. `nnx.Rngs(dropout=0)` for dropout.

    Returns:
      The bridge module, with the same state `nnx.bridge.lazy_init` would create, filled with `variables`.
      Unlike `lazy_init`, which runs the model's initialisation eagerly, op by op (minutes for GoogLeNet on
      a CPU), this takes variables made anywhere: a jitted `model.init`, a checkpoint, converted weights.
    """
    wrapped = nnx.bridge.ToNNX(model, rngs=rngs)
    for name, value in bridge_variables.linen_vars_to_nnx_attrs(dict(variables)).items():
        setattr(wrapped, name, nnx.data(value))
    return wrapped
