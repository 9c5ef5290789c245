"""Run the per-device steps on all devices: `jit(shard_map)` over a 1-D Mesh (default) or `pmap`.

Both runners take process-local host arrays (each process passes only its rows of the global
batch) and keep the train state replicated; `host_state` brings it back as NumPy for checkpoints.

Besides the single `train_step` (benchmarks and tests call it), each runner has the multi-step forms
the loop dispatches, `train_steps[resident]` and `eval_steps[resident]`: `(state, *args) -> (state,
outputs stacked along a last axis K)`, for a dispatch of K steps (see `step.stacked_batch`):
- resident=False (streamed): x (K, batch, ...) and labels (K, batch) as the host sends them, the batch
  axis split across devices (`put_stacked`);
- resident=True: the whole split replicated on every device once (`put_split`), then per dispatch only
  row indices (K, batch) of it (`put_stacked`), gathered on the device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import jax_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cnn_jax.train.step import AXIS, as_stateful, scan_steps, stack_length, step_of_stack

TRAIN_ARGS, EVAL_ARGS = 2, 3  # per-step batch arguments: (x, labels) and (x, labels, mask)


DISPATCH_FORMS = ("auto", "scan", "per_step")


def _one_dispatch_each(form: str, devices: Sequence[jax.Device]) -> bool:
    """Whether a dispatch's K steps run as K programs rather than one `lax.scan`: form "per_step" or "scan",
    or "auto": K programs on CPU devices, one scan on accelerators.

    XLA:CPU runs the body of a while loop several times slower than the same computation compiled on its
    own (its matmuls ~4x; the 1-D CNN's step ~8x: benchmarks/loop.py, docs/performance.md), and a dispatch
    from Python costs it little next to a step. On an H200 the opposite holds: LeNet-5's loop ran at 0.36 of
    its bare step with one scan per dispatch and 0.22 with one program per step. "auto" follows the platform
    of the devices the runner compiles for, not the host's default backend.
    """
    if form not in DISPATCH_FORMS:
        raise ValueError(f"dispatch form {form!r}: valid forms are {', '.join(DISPATCH_FORMS)}")
    return devices[0].platform == "cpu" if form == "auto" else form == "per_step"


def _multi_step(
    compile_: Callable, step: Callable, resident: bool, one_dispatch_each: bool, put_index: Callable[[int], jax.Array]
) -> Callable:
    """`(state, *args) -> (state, outputs stacked (..., K))` from a per-device `step`; `compile_(fn, with_k)`
    compiles a per-device fn of (state, *args) or, with_k, of (state, *args, k), k from `put_index`."""
    if not one_dispatch_each:
        # Outputs are scalars per step, so scan's stacking axis K is the last (after pmap's device axis).
        return compile_(scan_steps(step, resident), False)
    one = compile_(step_of_stack(step, resident), True)

    def run(state, *args):
        outputs = []
        for k in range(stack_length(resident, args)):
            state, out = one(state, *args, put_index(k))
            outputs.append(out)
        return state, jax.tree.map(lambda *o: jnp.stack(o, axis=-1), *outputs)

    return run


def _multi_step_forms(compile_, data_args, train_step, eval_step, devices, put_index, form) -> tuple[dict, dict]:
    """The runner's `train_steps` and `eval_steps`, keyed by resident; `compile_(fn, data_args(resident, count,
    with_k), donate)` compiles a per-device fn for the runner's wrapper (shard_map specs or pmap axes)."""
    each = _one_dispatch_each(form, devices)

    def forms(step, count, donate):
        return {
            r: _multi_step(lambda fn, k, r=r: compile_(fn, data_args(r, count, k), donate), step, r, each, put_index)
            for r in (False, True)
        }

    return forms(train_step, TRAIN_ARGS, True), forms(as_stateful(eval_step), EVAL_ARGS, False)


class ShardMapRunner:
    """Global arrays over Mesh(devices, ("batch",)), all devices by default; the state replicated, batches
    split along their batch axis. `dispatch_form`: how a dispatch runs its steps, one of DISPATCH_FORMS."""

    def __init__(
        self,
        train_step: Callable,
        eval_step: Callable,
        devices: Sequence[jax.Device] | None = None,
        dispatch_form: str = "auto",
    ):
        devices = list(devices or jax.devices())
        self.mesh = Mesh(np.array(devices), (AXIS,))
        self._replicated = NamedSharding(self.mesh, P())
        self._split = NamedSharding(self.mesh, P(AXIS))
        self._stacked = NamedSharding(self.mesh, P(None, AXIS))

        def compile_(fn, data_specs, donate):
            # check_vma=False keeps pmap's autodiff semantics: gradients stay per-device until the step's own
            # pmean. With it on, JAX would psum the gradient of the replicated params itself.
            return jax.jit(
                jax.shard_map(fn, mesh=self.mesh, in_specs=(P(), *data_specs), out_specs=(P(), P()), check_vma=False),
                donate_argnums=0 if donate else (),
            )

        def stacked_specs(resident, count, with_k):
            stacked = P(None, AXIS)
            specs = (P(), P(), stacked) + (stacked,) * (count - 2) if resident else (stacked,) * count
            return specs + ((P(),) if with_k else ())

        # Step indices placed once: converting a NumPy scalar on every call costs as much as a small step.
        put_index = functools.cache(lambda k: self.put_split(np.int32(k))[0])
        self.train_step = compile_(train_step, (P(AXIS),) * TRAIN_ARGS, True)
        self.train_steps, self.eval_steps = _multi_step_forms(
            compile_, stacked_specs, train_step, eval_step, devices, put_index, dispatch_form
        )

    def put_state(self, state):
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self._replicated, np.asarray(x)), state)

    def host_state(self, state):
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state)

    def host_values(self, tree):
        """Replicated outputs (metrics, eval sums) as NumPy arrays."""
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)

    def put_batch(self, *arrays: np.ndarray):
        return tuple(jax.make_array_from_process_local_data(self._split, a) for a in arrays)

    def put_stacked(self, *arrays: np.ndarray):
        """(K, local batch, ...) arrays, split across devices along axis 1."""
        return tuple(jax.make_array_from_process_local_data(self._stacked, a) for a in arrays)

    def put_split(self, *arrays: np.ndarray):
        """Whole arrays, every process passing the same, replicated on every device."""
        return tuple(jax.make_array_from_process_local_data(self._replicated, a) for a in arrays)


class PmapRunner:
    """`jax.pmap` over the local devices (all of them unless `devices` is given); the state carries a
    leading local-device axis. `dispatch_form`: how a dispatch runs its steps, one of DISPATCH_FORMS."""

    def __init__(
        self,
        train_step: Callable,
        eval_step: Callable,
        devices: Sequence[jax.Device] | None = None,
        dispatch_form: str = "auto",
    ):
        self._devices = list(devices or jax.local_devices())

        def compile_(fn, in_axes, donate):
            return jax.pmap(
                fn, axis_name=AXIS, in_axes=(0, *in_axes), donate_argnums=0 if donate else (), devices=self._devices
            )

        def stacked_axes(resident, count, with_k):
            # put_stacked gives (K, devices, batch/devices, ...): mapped over axis 1. Resident splits carry a
            # leading device axis from put_split.
            axes = (0, 0, 1) + (1,) * (count - 2) if resident else (1,) * count
            return axes + ((0,) if with_k else ())

        put_index = functools.cache(lambda k: self.put_split(np.int32(k))[0])
        self.train_step = compile_(train_step, (0,) * TRAIN_ARGS, True)
        self.train_steps, self.eval_steps = _multi_step_forms(
            compile_, stacked_axes, train_step, eval_step, self._devices, put_index, dispatch_form
        )

    def put_state(self, state):
        return jax_utils.replicate(state, self._devices)

    def host_state(self, state):
        return jax.tree.map(np.asarray, jax_utils.unreplicate(state))

    def host_values(self, tree):
        """Outputs that agree across devices (metrics, eval sums) as NumPy arrays, from the first device."""
        return jax.tree.map(lambda x: np.asarray(x[0]), tree)

    def put_batch(self, *arrays: np.ndarray):
        return tuple(a.reshape(len(self._devices), -1, *a.shape[1:]) for a in arrays)

    def put_stacked(self, *arrays: np.ndarray):
        return tuple(a.reshape(a.shape[0], len(self._devices), -1, *a.shape[2:]) for a in arrays)

    def put_split(self, *arrays: np.ndarray):
        return tuple(jax_utils.replicate(a, self._devices) for a in arrays)


RUNNERS = {"shard_map": ShardMapRunner, "pmap": PmapRunner}
