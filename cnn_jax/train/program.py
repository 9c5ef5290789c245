"""What every run of one structure shares: the model, the optimizer and the per-device steps, built once.

program = build_program(config, data)          # from a config and its dataset, as the loop does
program = make_program(model, config.optimizer, inputs, num_classes=10, input_shape=(28, 28, 1),
                       total_steps=1000)      # from parts, as tests and benchmarks do
state = program.init(seed)                     # one compiled program for every seed
runner = ShardMapRunner(program.train_step, program.eval_step, devices)
state, metrics = runner.train_step(runner.put_replicated(state), runner.put_replicated(run_values(config)),
                                   *runner.put_batch(x, labels))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cnn_jax import models
from cnn_jax.data import Dataset, steps_per_epoch
from cnn_jax.nn import ConvSpec
from cnn_jax.train.optim import make_optimizer, make_schedule, optimizer_init
from cnn_jax.train.parallel import DETERMINISTIC_OPTIONS, RUNNERS
from cnn_jax.train.state import TrainState, state_initializer
from cnn_jax.train.step import AXIS, InputSpec, make_eval_step, make_train_step


@dataclasses.dataclass(frozen=True)
class Program:
    """A structure's model; `tx(values)`, its optimizer for a run's values; the per-device `train_step(state,
    values, x, labels)` and `eval_step(state, x, labels, mask)` (`step.py`); `init(seed)`, a fresh state."""

    model: nn.Module
    tx: Callable
    train_step: Callable
    eval_step: Callable
    init: Callable[[int], TrainState]


def make_program(
    model: nn.Module,
    optimizer: ml_collections.ConfigDict,
    inputs: InputSpec,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    total_steps: int,
) -> Program:
    """The `Program` of `model` trained with `optimizer` (a config's optimizer section) over `total_steps`, on
    examples of `input_shape` (no batch axis) that `inputs` normalises and augments."""
    tx = make_optimizer(optimizer, total_steps)
    schedule = make_schedule(optimizer, total_steps)
    return Program(
        model,
        tx,
        make_train_step(model, tx, schedule, inputs, num_classes=num_classes),
        make_eval_step(model, inputs, num_classes=num_classes),
        state_initializer(model, optimizer_init(tx), input_shape),
    )


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    """The registry model named by config.model, with its ConvSpec, dtype and BatchNorm synced over AXIS."""
    dtype = jnp.bfloat16 if config.train.dtype == "bfloat16" else None
    return models.create(
        config.model.name,
        num_classes=num_classes,
        conv=ConvSpec(**config.model.conv.to_dict()),
        dtype=dtype,
        norm_axis_name=AXIS,
        **config.model.options.to_dict(),
    )


def schedule_length(config: ml_collections.ConfigDict, data: Dataset) -> tuple[int, int]:
    """(total steps, steps per epoch) of config's training on `data`."""
    per_epoch = steps_per_epoch(len(data.train), config.train.batch_size)
    return config.train.num_steps or per_epoch * config.train.num_epochs, per_epoch


def build_program(config: ml_collections.ConfigDict, data: Dataset) -> Program:
    """The `Program` of config's structure on `data`: its model, optimizer, normalisation and augmentation."""
    augment = config.dataset.augment
    inputs = InputSpec(
        tuple(data.mean.tolist()), tuple(data.std.tolist()), data.scale, augment.crop_padding, augment.flip
    )
    return make_program(
        build_model(config, data.info.num_classes),
        config.optimizer,
        inputs,
        num_classes=data.info.num_classes,
        input_shape=data.input_shape,
        total_steps=schedule_length(config, data)[0],
    )


def compiler_options(config: ml_collections.ConfigDict) -> dict:
    """The XLA options every program of a run compiles with: DETERMINISTIC_OPTIONS for train.deterministic."""
    return dict(DETERMINISTIC_OPTIONS) if config.train.deterministic else {}


def build_runner(config: ml_collections.ConfigDict, data: Dataset, devices: Sequence[jax.Device]):
    """(program, runner): config's program on `data` and its single-run runner on `devices`."""
    program = build_program(config, data)
    runner = RUNNERS[config.train.parallel](
        program.train_step,
        program.eval_step,
        devices,
        config.train.dispatch_form,
        compiler_options=compiler_options(config),
    )
    return program, runner
