"""Run the per-device steps on all devices: `jit(shard_map)` over a 1-D Mesh (default) or `pmap`.

Both runners take process-local host arrays (each process passes only its rows of the global
batch) and keep the train state replicated; `host_state` brings it back as NumPy for checkpoints.

Besides the single `train_step` (benchmarks and tests call it), each runner has the multi-step forms
the loop dispatches, `train_steps[resident]` and `eval_steps[resident]`: `(state, values, *args, count) -> (state,
outputs)`, the first `count` steps of a dispatch whose arguments hold K steps (`train.steps_per_dispatch`;
see `step.stacked_batch`), compiled once for every count; `steps_on_host` brings the outputs back:
- resident=False (streamed): x (K, batch, ...) and labels (K, batch) as the host sends them, the batch
  axis split across devices (`put_batch(..., batch_axis=1)`);
- resident=True: the whole split replicated on every device once (`put_split`), then per dispatch only
  row indices (K, batch) of it (`put_batch(..., batch_axis=1)`), gathered on the device.
A runner built with `batched=True` takes run batches (`run_batch.py`): its programs are vmapped over a leading
run axis of the state and the run values (`put_replicated` of stacked trees), and of the train data, which
gains that axis in front: (R, batch, ...) for `train_step`, (R, K, batch, ...) for a dispatch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import numpy as np
from flax import jax_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cnn_jax.train.step import AXIS, as_stateful, scan_steps, step_of_stack

RESIDENT = (False, True)  # the two placements of a split: streamed from the host, or resident on the devices
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
    """`(state, values, *args, count) -> (state, outputs)` from a per-device `step`: the first `count` steps of a
    dispatch whose arguments are stacked K long. `outputs` is a tuple of trees whose leaves end in a step axis (one tree
    of K steps, or `count` trees of one step each): `steps_on_host` joins them. `compile_(fn)` compiles a
    per-device fn of (state, values, *args, i), i a replicated int32 from `put_index`: the step (per_step) or the count
    (scan). Either way the program does not depend on `count`, so a short dispatch compiles nothing new."""
    if not one_dispatch_each:
        program = compile_(scan_steps(step, resident))

        def scanned(state, values, *args_and_count):
            *args, count = args_and_count
            state, outputs = program(state, values, *args, put_index(count))
            return state, (outputs,)

        return scanned
    one = compile_(step_of_stack(step, resident))

    def run(state, values, *args_and_count):
        *args, count = args_and_count
        outputs = []
        for k in range(count):
            state, out = one(state, values, *args, put_index(k))
            outputs.append(out)
        return state, tuple(outputs)

    return run


def steps_on_host(host_values: Callable, outputs: tuple, count: int) -> dict[str, np.ndarray]:
    """A dispatch's outputs (see `_multi_step`) as NumPy arrays (..., count): its first `count` steps."""
    parts = [host_values(tree) for tree in outputs]
    return {k: np.concatenate([p[k] for p in parts], axis=-1)[..., :count] for k in parts[0]}


def _arg_specs(replicated, stacked: Callable[[int], object], resident: bool, count: int, runs: bool):
    """The in-specs (shard_map) or in-axes (pmap) of a dispatch program's arguments after the state: the run
    values, `count` data arrays, then the step index or count. `stacked(leading)` is the spec of a per-step
    array with `leading` axes before its batch axis: (K, batch) or, per run, (R, K, batch)."""
    per_step = stacked(1 + runs)
    data = (replicated, replicated, per_step) + (per_step,) * (count - 2) if resident else (per_step,) * count
    return (replicated, *data, replicated)


def _run_axes(resident: bool, count: int, runs: bool) -> tuple:
    """`vmap` in_axes of a dispatch program over the run axis: the state and values per run, the data per run
    when `runs` (train: each run's own rows), else shared (evaluation), the index shared."""
    if not runs:
        return (0, 0, *(None,) * (count + resident), None)  # resident: the split, then rows for x and labels
    data = (None, None, 0) + (0,) * (count - 2) if resident else (0,) * count
    return (0, 0, *data, None)


def _multi_step_forms(
    compile_, arg_specs, train_step, eval_step, devices, put_index, form: str, batched: bool
) -> tuple[dict, dict]:
    """The runner's `train_steps` and `eval_steps`, keyed by resident; `compile_(fn, arg_specs(resident, count,
    runs), donate)` compiles a per-device fn of (state, values, *data, i) for the runner's wrapper (shard_map
    specs or pmap axes; i: a replicated int32). `batched`: vmapped over a leading run axis of the state, the
    values and the train data."""
    each = _one_dispatch_each(form, devices)

    def forms(step, count, runs, donate, name):
        def compile_form(fn, resident):
            if batched:
                fn = jax.vmap(fn, in_axes=_run_axes(resident, count, runs))
            return compile_(_named(fn, name), arg_specs(resident, count, runs), donate)

        return {r: _multi_step(functools.partial(compile_form, resident=r), step, r, each, put_index) for r in RESIDENT}

    # Train data is per run (each run's own rows); evaluation data is the same for every run.
    train = forms(train_step, TRAIN_ARGS, batched, True, "train_dispatch")
    return train, forms(as_stateful(eval_step), EVAL_ARGS, False, False, "eval_dispatch")


def _named(fn: Callable, name: str) -> Callable:
    """fn under `name`, the name its compiled program has in logs, profiles and the compilation cache."""

    @functools.wraps(fn)
    def named(*args):
        return fn(*args)

    named.__name__ = named.__qualname__ = name
    return named


# XLA's compiler options for bit-identical reruns on GPUs (`train.deterministic`): deterministic reductions and
# scatters, and only deterministic algorithms when autotuning. XLA:CPU is deterministic already and ignores them.
DETERMINISTIC_OPTIONS = {"xla_gpu_deterministic_ops": True}


class ShardMapRunner:
    """Global arrays over Mesh(devices, ("batch",)), all devices by default; the state replicated, batches
    split along their batch axis. `dispatch_form`: how a dispatch runs its steps, one of DISPATCH_FORMS.
    `batched`: the dispatch programs take a run batch (a leading run axis on the state, the values and the
    train data; see `run_batch.py`). `compiler_options`: XLA options every program compiles with (for
    example DETERMINISTIC_OPTIONS)."""

    def __init__(
        self,
        train_step: Callable,
        eval_step: Callable,
        devices: Sequence[jax.Device] | None = None,
        dispatch_form: str = "auto",
        batched: bool = False,
        compiler_options: dict | None = None,
    ):
        devices = list(devices or jax.devices())
        self.mesh = Mesh(np.array(devices), (AXIS,))
        self._replicated = NamedSharding(self.mesh, P())

        def compile_(fn, arg_specs, donate):
            # check_vma=False keeps pmap's autodiff semantics: gradients stay per-device until the step's own
            # pmean. With it on, JAX would psum the gradient of the replicated params itself.
            return jax.jit(
                jax.shard_map(fn, mesh=self.mesh, in_specs=(P(), *arg_specs), out_specs=(P(), P()), check_vma=False),
                donate_argnums=0 if donate else (),
                compiler_options=compiler_options,
            )

        def arg_specs(resident, count, runs):
            return _arg_specs(P(), lambda leading: P(*(None,) * leading, AXIS), resident, count, runs)

        # Step indices placed once: converting a NumPy scalar on every call costs as much as a small step.
        put_index = functools.cache(lambda k: self.put_split(np.int32(k))[0])
        single = jax.vmap(train_step) if batched else train_step
        per_run = P(*(None,) * batched, AXIS)
        self.train_step = compile_(_named(single, "train_step"), (P(), *(per_run,) * TRAIN_ARGS), True)
        self.train_steps, self.eval_steps = _multi_step_forms(
            compile_, arg_specs, train_step, eval_step, devices, put_index, dispatch_form, batched
        )

    def put_replicated(self, tree):
        """A tree of host arrays (a state, run values), every process passing the same, on every device."""
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self._replicated, np.asarray(x)), tree)

    def host_state(self, state):
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state)

    def host_values(self, tree):
        """Replicated outputs (metrics, eval sums) as NumPy arrays."""
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)

    def put_batch(self, *arrays: np.ndarray, batch_axis: int = 0):
        """This process's rows of a global batch, split across the devices along `batch_axis`: (local batch, ...)
        for a step, (K, local batch, ...) for a dispatch of K steps (1), (R, K, local batch, ...) for a run batch's
        dispatch (2)."""
        sharding = NamedSharding(self.mesh, P(*(None,) * batch_axis, AXIS))
        return tuple(jax.make_array_from_process_local_data(sharding, a) for a in arrays)

    def put_split(self, *arrays: np.ndarray):
        """Whole arrays, every process passing the same, replicated on every device."""
        return tuple(jax.make_array_from_process_local_data(self._replicated, a) for a in arrays)


class PmapRunner:
    """`jax.pmap` over the local devices (all of them unless `devices` is given); the state carries a
    leading local-device axis. `dispatch_form`: how a dispatch runs its steps, one of DISPATCH_FORMS.
    `batched`: as for ShardMapRunner. `compiler_options` must be empty: jax.pmap takes none."""

    def __init__(
        self,
        train_step: Callable,
        eval_step: Callable,
        devices: Sequence[jax.Device] | None = None,
        dispatch_form: str = "auto",
        batched: bool = False,
        compiler_options: dict | None = None,
    ):
        if compiler_options:
            raise ValueError(f"compiler_options={compiler_options}: jax.pmap takes none; use ShardMapRunner")
        self._devices = list(devices or jax.local_devices())

        def compile_(fn, in_axes, donate):
            return jax.pmap(
                fn, axis_name=AXIS, in_axes=(0, *in_axes), donate_argnums=0 if donate else (), devices=self._devices
            )

        def arg_axes(resident, count, runs):
            # put_batch gives (K, devices, batch/devices, ...) (or (R, K, devices, ...)): mapped over the axis
            # before the batch. Replicated arrays (put_split, put_replicated) carry a leading device axis.
            return _arg_specs(0, lambda leading: leading, resident, count, runs)

        put_index = functools.cache(lambda k: self.put_split(np.int32(k))[0])
        single = jax.vmap(train_step) if batched else train_step
        self.train_step = compile_(_named(single, "train_step"), (0, *(int(batched),) * TRAIN_ARGS), True)
        self.train_steps, self.eval_steps = _multi_step_forms(
            compile_, arg_axes, train_step, eval_step, self._devices, put_index, dispatch_form, batched
        )

    def put_replicated(self, tree):
        """A tree of host arrays (a state, run values), with a leading axis of local devices."""
        return jax_utils.replicate(tree, self._devices)

    def host_state(self, state):
        return jax.tree.map(np.asarray, jax_utils.unreplicate(state))

    def host_values(self, tree):
        """Outputs that agree across devices (metrics, eval sums) as NumPy arrays, from the first device."""
        return jax.tree.map(lambda x: np.asarray(x[0]), tree)

    def put_batch(self, *arrays: np.ndarray, batch_axis: int = 0):
        """As ShardMapRunner.put_batch: the batch axis split into (devices, batch / devices)."""
        return tuple(
            a.reshape(*a.shape[:batch_axis], len(self._devices), -1, *a.shape[batch_axis + 1 :]) for a in arrays
        )

    def put_split(self, *arrays: np.ndarray):
        return tuple(jax_utils.replicate(a, self._devices) for a in arrays)


RUNNERS = {"shard_map": ShardMapRunner, "pmap": PmapRunner}
