"""`train_and_evaluate(config, workdir)`: the whole run, top to bottom.

config.json, metrics.jsonl, TensorBoard events and checkpoints go to `workdir`. A workdir that already
holds checkpoints resumes from the latest one and reproduces the uninterrupted run: batches, augmentation
and dropout are pure functions of (seed, step). SIGTERM saves a checkpoint and returns; a non-finite
loss raises NonFiniteLossError when the losses next come back from the device (at the next log record or
checkpoint), before any checkpoint of the bad state is written.

Steps run `train.steps_per_dispatch` at a time in one compiled program, fed from splits held on the
devices where they fit (`train/feed.py`); a dispatch never crosses an epoch end or a checkpoint step.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from cnn_jax import models
from cnn_jax.analysis import params_and_macs
from cnn_jax.config_tree import flatten
from cnn_jax.data import Dataset, Split, load_dataset, shift_width, steps_per_epoch
from cnn_jax.nn import ConvSpec
from cnn_jax.train.checkpoint import Checkpoints
from cnn_jax.train.config import validate
from cnn_jax.train.feed import Feed, TrainRows, dispatch_plan, eval_rows, resident
from cnn_jax.train.metrics import MetricWriter, Progress
from cnn_jax.train.optim import make_optimizer, make_schedule
from cnn_jax.train.parallel import RUNNERS
from cnn_jax.train.state import create_state
from cnn_jax.train.step import AXIS, InputSpec, make_eval_step, make_train_step

FINAL_FILE = "final.json"  # written once, when the run is finished


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def build_model(config: ml_collections.ConfigDict, num_classes: int):
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


def build_runner(config: ml_collections.ConfigDict, data: Dataset, total_steps: int, devices: Sequence[jax.Device]):
    """(model, optimizer, runner): the train and eval steps of config on `data`, compiled for `devices`."""
    model = build_model(config, data.info.num_classes)
    tx = make_optimizer(config.optimizer, total_steps)
    augment = config.dataset.augment
    inputs = InputSpec(
        tuple(data.mean.tolist()), tuple(data.std.tolist()), data.scale, augment.crop_padding, augment.flip
    )
    train_step = make_train_step(
        model,
        tx,
        inputs,
        num_classes=data.info.num_classes,
        label_smoothing=config.train.label_smoothing,
        seed=config.seed,
    )
    eval_step = make_eval_step(model, inputs, num_classes=data.info.num_classes)
    return model, tx, RUNNERS[config.train.parallel](train_step, eval_step, devices, config.train.dispatch_form)


def load_data(config: ml_collections.ConfigDict) -> Dataset:
    d = config.dataset
    return load_dataset(
        d.name,
        data_dir=d.data_dir or None,
        download_dir=d.download_dir or None,
        permute_positions=d.permute_positions,
        permutation_seed=d.permutation_seed,
        test_shift=d.test_shift,
    )


class _Preemption:
    """Remembers a SIGTERM so the loop can checkpoint and stop at the next step boundary."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        logging.warning("SIGTERM: saving a checkpoint and stopping after this step")
        self.requested = True

    def agreed(self) -> bool:
        """Whether any process was asked to stop (every process must stop at the same step)."""
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        return bool(multihost_utils.process_allgather(np.array(self.requested)).any())

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def evaluate(runner, state, feed: Feed, batch_size: int, batches_per_dispatch: int) -> dict[str, float]:
    """Accuracy and mean loss over a whole split; the padded last batch is masked out."""
    totals = {"correct": 0.0, "loss": 0.0, "count": 0.0}
    for args in feed(eval_rows(len(feed.split), batch_size, batches_per_dispatch)):
        sums = runner.host_values(runner.eval_steps[feed.resident](state, *args)[1])
        for k, v in sums.items():
            totals[k] += float(np.sum(v, dtype=np.float64))
    if int(totals["count"]) != len(feed.split):
        raise AssertionError(f"evaluated {totals['count']} examples, the test split has {len(feed.split)}")
    return {"test/accuracy": totals["correct"] / totals["count"], "test/loss": totals["loss"] / totals["count"]}


class _TrainMetrics:
    """Per-step train metrics of the dispatches not yet logged. They stay on the device until a record is
    written or a checkpoint is about to be, so the host never waits on the device it just fed; the
    losses are checked for NaN/inf as they arrive."""

    def __init__(self, runner, first_step: int):
        self._runner, self._first = runner, first_step  # steps are counted from 1: `first` is done next
        self._on_device, self._host = [], {}

    def add(self, metrics) -> None:
        self._on_device.append(metrics)

    def fetch(self, checkpoints: Checkpoints, workdir: Path) -> None:
        """Bring the pending metrics to the host; raise NonFiniteLossError at the first bad step."""
        for metrics in self._runner.host_values(self._on_device):
            for k, v in metrics.items():
                self._host.setdefault(k, []).extend(np.asarray(v).reshape(-1).tolist())
        self._on_device = []
        bad = np.flatnonzero(~np.isfinite(self._host.get("loss", [])))
        if bad.size:
            step, loss = self._first + int(bad[0]), self._host["loss"][bad[0]]
            raise NonFiniteLossError(
                f"training loss is {loss} at step {step}; stopped. The last good checkpoint is step "
                f"{checkpoints.latest_step} in {workdir / 'checkpoints'} (intact). Lower "
                f"config.optimizer.learning_rate, add warmup (config.optimizer.warmup_steps) or clipping "
                f"(config.optimizer.clip_norm), then rerun with the same --workdir to resume from it."
            )

    def take_mean(self, through: int) -> dict[str, float]:
        """Means over the fetched steps up to step `through`, which are then dropped."""
        count = through - self._first + 1
        means = {f"train/{k}": float(np.mean(v[:count])) for k, v in self._host.items()}
        self._host = {k: v[count:] for k, v in self._host.items()}
        self._first = through + 1
        return means


_LOCATION_FIELDS = ("dataset.data_dir", "dataset.download_dir")  # may differ between machines


def _check_same_config(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """Resuming with other settings would splice two different runs together: refuse."""
    saved_path = workdir / "config.json"
    if not saved_path.exists():
        return
    saved = flatten(json.loads(saved_path.read_text()))
    current = flatten(json.loads(config.to_json()))
    changed = [
        f"{k}: {saved.get(k)!r} -> {current.get(k)!r}"
        for k in sorted(set(saved) | set(current))
        if k not in _LOCATION_FIELDS and saved.get(k) != current.get(k)
    ]
    if changed:
        raise ValueError(
            f"{workdir} holds checkpoints of a run with another config ({'; '.join(changed)}); "
            f"rerun with the same settings to resume, or use a new --workdir"
        )


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | Path, devices: Sequence[jax.Device] | None = None
) -> dict[str, float]:
    """Train config.model on config.dataset on `devices` (default: all); return the final test metrics
    ({} when stopped by SIGTERM)."""
    if "://" in str(workdir):  # Path() would quietly turn gs://b/run into the local directory gs:/b/run
        raise ValueError(
            f"workdir {workdir!s} is a URL; it must be a filesystem path every process can write "
            f"(for a bucket, mount it, e.g. with gcsfuse, and pass the mount point)"
        )
    workdir = Path(workdir)
    devices = list(devices or jax.devices())
    validate(config, device_count=len(devices), process_count=jax.process_count())
    leader = jax.process_index() == 0
    if (workdir / FINAL_FILE).exists():  # finished: its files stay as they are
        _check_same_config(config, workdir)
        logging.info("%s is a finished run (%s); nothing to do", workdir, FINAL_FILE)
        return {k: v for k, v in json.loads((workdir / FINAL_FILE).read_text()).items() if k.startswith("test/")}
    data = load_data(config)
    per_epoch = steps_per_epoch(len(data.train), config.train.batch_size)
    total_steps = config.train.num_steps or per_epoch * config.train.num_epochs
    model, tx, runner = build_runner(config, data, total_steps, devices)
    params, macs = params_and_macs(model, data.input_shape)  # for final.json and the study tables
    schedule = make_schedule(config.optimizer, total_steps)

    workdir.mkdir(parents=True, exist_ok=True)
    logging.info("run directory %s: config.json, metrics.jsonl, %s, checkpoints/, tensorboard/", workdir, FINAL_FILE)
    checkpoints = Checkpoints(workdir / "checkpoints", config.train.keep_checkpoints)
    writer = MetricWriter(workdir, enabled=leader)
    host_state = jax.device_get(create_state(model, tx, data.input_shape, config.seed))
    if checkpoints.latest_step is not None:
        _check_same_config(config, workdir)
        host_state = checkpoints.restore(host_state)
        logging.info("resuming from step %d in %s", checkpoints.latest_step, workdir)
    start = int(host_state.step)
    writer.truncate_after(start)
    if leader:
        (workdir / "config.json").write_text(config.to_json(indent=2))
    state = runner.put_state(host_state)

    checkpoint_every = config.train.checkpoint_every_steps or per_epoch
    log_every, eval_every_epochs = config.train.log_every_steps, config.train.eval_every_epochs
    on_device = resident(config.train.data_placement, (data.train, data.test), devices)
    train_feed, test_feed = (Feed(runner, split, resident=on_device) for split in (data.train, data.test))
    eval_batch = config.train.eval_batch_size
    # Resident: the whole test split in one dispatch. Streamed: about as many examples as a train dispatch.
    eval_dispatch = (
        len(data.test) if on_device else max(1, config.train.steps_per_dispatch * config.train.batch_size // eval_batch)
    )
    plan = dispatch_plan(start, total_steps, config.train.steps_per_dispatch, (per_epoch, checkpoint_every))
    rows = TrainRows(len(data.train), config.train.batch_size, config.seed)
    progress = Progress(total_steps, start, config.train.batch_size, enabled=leader)
    preemption = _Preemption()
    pending, final, throughput = _TrainMetrics(runner, start + 1), None, None
    batches = train_feed((rows(*chunk),) for chunk in plan)
    result = None
    try:
        for (first, count), args in zip(plan, batches):
            state, metrics = runner.train_steps[on_device](state, *args)
            pending.add(metrics)
            done = first + count
            log_steps = [*range((first // log_every + 1) * log_every, done + 1, log_every)]
            if done == total_steps and total_steps not in log_steps:
                log_steps.append(total_steps)
            if log_steps:
                pending.fetch(checkpoints, workdir)
                steps_per_s, throughput, _ = progress.rates(done)
                for step in log_steps:
                    means = pending.take_mean(step)
                    writer.write(
                        step,
                        epoch=step / per_epoch,
                        learning_rate=float(schedule(step - 1)),
                        steps_per_s=steps_per_s,
                        images_per_s=throughput,
                        **means,
                    )
                progress.update(done, loss=means["train/loss"], accuracy=means["train/accuracy"])
            if (done % per_epoch == 0 and done // per_epoch % eval_every_epochs == 0) or done == total_steps:
                final = evaluate(runner, state, test_feed, eval_batch, eval_dispatch)
                writer.write(done, epoch=done / per_epoch, **final)
                progress.message(
                    f"epoch {done / per_epoch:g}: test accuracy {final['test/accuracy']:.4f}, "
                    f"loss {final['test/loss']:.4f}"
                )
            stop = preemption.agreed()
            if done % checkpoint_every == 0 or done == total_steps or stop:
                pending.fetch(checkpoints, workdir)
                checkpoints.save(done, runner.host_state(state))
            if stop:
                logging.warning("stopped by SIGTERM at step %d; rerun with the same workdir to resume", done)
                return {}
        with _phase("final evaluation"):
            final = final or evaluate(runner, state, test_feed, eval_batch, eval_dispatch)
        for shift in config.dataset.eval_shifts:
            with _phase(f"evaluation at shift {shift}"):
                shifted = Feed(
                    runner, Split(shift_width(data.test.inputs, shift), data.test.labels), resident=on_device
                )
                final[f"test/accuracy@shift={shift}"] = evaluate(runner, state, shifted, eval_batch, eval_dispatch)[
                    "test/accuracy"
                ]
        if leader:
            record = {"step": total_steps, **final, "params": params, "macs": macs, "images_per_s": throughput}
            (workdir / FINAL_FILE).write_text(json.dumps(record) + "\n")
        shifted = "".join(f", {k.split('@')[1]} {v:.4f}" for k, v in final.items() if "@shift=" in k)
        result = (
            f"final test accuracy {final['test/accuracy']:.4f}{shifted}, loss {final['test/loss']:.4f}; "
            f"run directory {workdir}"
        )
        return final
    finally:
        batches.close()  # a stop before the end leaves prefetched batches (and their thread) behind
        progress.close()
        preemption.restore()
        writer.close()
        with _phase("closing checkpoints"):
            checkpoints.close()
        if result:  # the run's last line
            progress.message(result)


@contextlib.contextmanager
def _phase(name: str):
    """Log the start and duration of one step of a run's end, so a run that stalls there shows where."""
    logging.info("end of run: %s", name)
    start = time.perf_counter()
    yield
    logging.info("end of run: %s took %.1f s", name, time.perf_counter() - start)
