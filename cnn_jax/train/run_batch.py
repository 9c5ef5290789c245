"""A run batch: several runs of one structure (`run_values.structure_key`) trained by one compiled program.

Runs that differ only in their values (seeds, learning rates, ...: `run_values.py`) share the step's program,
because the step takes the values as arguments. A batch trains them in one of two forms (`train.run_form`):

- "vmap": the step is vmapped over a leading run axis of the state, the values and the training rows, so one
  dispatch advances every run: a batched computation (a vmapped convolution is a grouped one). BatchNorm
  statistics stay per run and are averaged across devices per run, so each run's math is its own.
- "sequential": each dispatch runs the single-run program once per run, each on its own state. Nothing is
  batched, but the runs share the process, the loaded data and the compiled programs.

"auto" picks per platform, from measurements (docs/performance.md, "Many runs in one program"): sequential on
CPU devices, where XLA:CPU's batched step was slower than the runs one after another (1.24x for the 1-D CNN,
2.9x for LeNet-5, 3 runs); vmap on GPUs and TPUs, where one small run leaves the device idle between launches.
A batch of one run always uses the single-run program.

    batch = RunBatch(ShardMapRunner, train_step, eval_step, devices, runs=3, vmapped=False)
    states, values = batch.put(host_states, [run_values(c) for c in configs])
    states, outputs = batch.train(states, values, args, count, resident=True)
    batch.host_steps(outputs, count)["loss"]  # (3, count)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import jax
import numpy as np

from cnn_jax.train.parallel import steps_on_host
from cnn_jax.train.run_values import stack_values

RUN_FORMS = ("auto", "vmap", "sequential")


def vmapped(form: str, devices: Sequence[jax.Device], runs: int) -> bool:
    """Whether a batch of `runs` runs on `devices` trains as one vmapped program (see the module docstring)."""
    if form not in RUN_FORMS:
        raise ValueError(f"run form {form!r}: valid forms are {', '.join(RUN_FORMS)}")
    if runs == 1:
        return False
    return devices[0].platform != "cpu" if form == "auto" else form == "vmap"


def group_runs(keys: Sequence[Hashable]) -> list[list[int]]:
    """The indices of runs with equal keys (structure, resume step), grouped; groups in order of their first
    run, runs in their own order. A grid whose runs differ in shape-changing values is split here, not refused."""
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def runs_that_fit(state_bytes: int, step_bytes: int, memory_bytes: int | None, vmapped: bool) -> int | None:
    """How many runs a batch can hold in `memory_bytes` of device memory (None: no limit known, as on XLA:CPU).

    A rough budget, not a measurement: 60% of the memory (the rest is left to resident data, which takes up to
    a quarter, and to XLA's own buffers). A vmapped batch needs, per run, its state twice (the state and the
    new state or gradients) and the step's temporaries (`step_bytes`: activations); runs taking turns keep
    every state on the device but need the step's temporaries and a second state only once."""
    if memory_bytes is None:
        return None
    budget = int(0.6 * memory_bytes)
    if vmapped:
        return max(1, budget // (2 * state_bytes + step_bytes))
    return max(1, (budget - step_bytes - state_bytes) // state_bytes)


class RunBatch:
    """The device side of a run batch: its states, values and dispatches, in either form.

    Arguments as for the runners (`parallel.py`, `compiler_options` included), plus `runs` (R) and `vmapped`.
    States and outputs are opaque to the caller: `host_states` and `host_steps` return them per run. In the
    sequential form, runs not `active` (stopped by a non-finite loss) are skipped; in the vmapped form they are
    computed and ignored.
    """

    def __init__(
        self,
        runner_class: Callable,
        train_step: Callable,
        eval_step: Callable,
        devices: Sequence[jax.Device],
        dispatch_form: str,
        *,
        runs: int,
        vmapped: bool,
        compiler_options: dict | None = None,
    ):
        self.runner = runner_class(
            train_step, eval_step, devices, dispatch_form, batched=vmapped, compiler_options=compiler_options
        )
        self.runs, self.vmapped = runs, vmapped

    def put(self, host_states: Sequence, values: Sequence[dict]) -> tuple:
        """The runs' host states and values on the devices."""
        if self.vmapped:
            stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *host_states)
            return self.runner.put_replicated(stacked), self.runner.put_replicated(stack_values(list(values)))
        return [self.runner.put_replicated(s) for s in host_states], [self.runner.put_replicated(v) for v in values]

    def host_states(self, states) -> list:
        """Each run's state as NumPy arrays."""
        if self.vmapped:
            host = self.runner.host_state(states)
            return [jax.tree.map(lambda x, i=i: x[i], host) for i in range(self.runs)]
        return [self.runner.host_state(s) for s in states]

    def train(self, states, values, args, count: int, *, resident: bool, active: Sequence[bool]):
        """One train dispatch of `count` steps for every run: (states, outputs). `args` as a `Feed` places
        them: one stack (vmapped) or one per run."""
        program = self.runner.train_steps[resident]
        if self.vmapped:
            return program(states, values, *args, count)
        states, outputs = list(states), [None] * self.runs
        for i in np.flatnonzero(active):
            states[i], outputs[i] = program(states[i], values[i], *args[i], count)
        return states, outputs

    def evaluate(self, states, values, args, count: int, *, resident: bool, active: Sequence[bool]):
        """One eval dispatch of `count` batches, the same for every run: its outputs."""
        program = self.runner.eval_steps[resident]
        if self.vmapped:
            return program(states, values, *args, count)[1]
        return [program(states[i], values[i], *args, count)[1] if active[i] else None for i in range(self.runs)]

    def host_steps(self, outputs, count: int) -> dict[str, np.ndarray]:
        """A dispatch's outputs as NumPy arrays (R, count); NaN for runs that were skipped."""
        if self.vmapped:
            return steps_on_host(self.runner.host_values, outputs, count)
        per_run = [None if o is None else steps_on_host(self.runner.host_values, o, count) for o in outputs]
        ran = next(p for p in per_run if p is not None)
        return {k: np.stack([np.full(count, np.nan) if p is None else p[k] for p in per_run]) for k in ran}
