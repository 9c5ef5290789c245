"""Run the per-device steps on all devices: `jit(shard_map)` over a 1-D Mesh (default) or `pmap`.

Both runners take process-local host batches (each process passes only its rows of the global
batch) and keep the train state replicated; `host_state` brings it back as NumPy for checkpoints.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np
from flax import jax_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cnn_jax.train.step import AXIS


class ShardMapRunner:
    """Global arrays over Mesh(devices, ("batch",)), all devices by default; the state replicated, batches
    split along axis 0."""

    def __init__(self, train_step: Callable, eval_step: Callable, devices: Sequence[jax.Device] | None = None):
        self.mesh = Mesh(np.array(devices or jax.devices()), (AXIS,))
        self._replicated = NamedSharding(self.mesh, P())
        self._split = NamedSharding(self.mesh, P(AXIS))
        # check_vma=False keeps pmap's autodiff semantics: gradients stay per-device until the step's own
        # pmean. With it on, JAX would psum the gradient of the replicated params itself.
        self.train_step = jax.jit(jax.shard_map(train_step, mesh=self.mesh, in_specs=(P(), P(AXIS), P(AXIS)),
                                                out_specs=(P(), P()), check_vma=False), donate_argnums=0)
        self.eval_step = jax.jit(jax.shard_map(eval_step, mesh=self.mesh, in_specs=(P(), P(AXIS), P(AXIS), P(AXIS)),
                                               out_specs=P()))

    def put_state(self, state):
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self._replicated, np.asarray(x)), state)

    def host_state(self, state):
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state)

    def put_batch(self, *arrays: np.ndarray):
        return tuple(jax.make_array_from_process_local_data(self._split, a) for a in arrays)


class PmapRunner:
    """`jax.pmap` over the local devices (all of them unless `devices` is given); the state carries a
    leading local-device axis."""

    def __init__(self, train_step: Callable, eval_step: Callable, devices: Sequence[jax.Device] | None = None):
        self._devices = list(devices or jax.local_devices())
        self.train_step = jax.pmap(train_step, axis_name=AXIS, donate_argnums=0, devices=self._devices)
        self.eval_step = jax.pmap(eval_step, axis_name=AXIS, devices=self._devices)

    def put_state(self, state):
        return jax_utils.replicate(state, self._devices)

    def host_state(self, state):
        return jax.tree.map(np.asarray, jax_utils.unreplicate(state))

    def put_batch(self, *arrays: np.ndarray):
        return tuple(a.reshape(len(self._devices), -1, *a.shape[1:]) for a in arrays)


RUNNERS = {"shard_map": ShardMapRunner, "pmap": PmapRunner}
