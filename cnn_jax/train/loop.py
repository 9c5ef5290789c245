"""`train_and_evaluate(config, workdir)`: one run; `train_runs(runs)`: many, as run batches. Top to bottom.

Each run writes its own run directory (`run_dir.py`): config.json, provenance.json, metrics.jsonl,
TensorBoard events, checkpoints and final.json. A run directory that already holds checkpoints resumes from
the latest one and reproduces the uninterrupted run: batches, augmentation and dropout are pure functions of
(seed, step). SIGTERM or SIGUSR1 saves a checkpoint of every run and returns; a non-finite loss stops its run
when the losses next come back from the device (at the next log record or checkpoint), before any checkpoint
of the bad state is written, and the other runs of its batch go on.

`train_runs` groups the runs by structure (`run_values.structure_key`) and resume step; each group trains as
one or more run batches (`run_batch.py`) that share the data, the model and the compiled programs. Steps run
`train.steps_per_dispatch` at a time, fed from splits held on the devices where they fit (`train/feed.py`); a
dispatch never crosses an epoch end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging

from cnn_jax.analysis import params_and_macs
from cnn_jax.data import Dataset, RecordSplit, Split, load_dataset, load_files_dataset, shift_width
from cnn_jax.programs import CompiledPrograms
from cnn_jax.train.checkpoint import CheckpointSaveError, CheckpointsDamagedError, SaveSchedule
from cnn_jax.train.config import reads_files, validate
from cnn_jax.train.feed import Feed, TrainRows, device_memory, dispatch_plan, eval_rows, pad_steps, resident
from cnn_jax.train.metrics import Progress
from cnn_jax.train.parallel import RUNNERS
from cnn_jax.train.program import Program, build_program, compiler_options, schedule_length
from cnn_jax.train.run_batch import RunBatch, group_runs, runs_that_fit, vmapped
from cnn_jax.train.run_dir import FINAL_FILE, RunDir
from cnn_jax.train.run_lock import RunLockedError
from cnn_jax.train.run_values import run_values, structure_key


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def load_data(config: ml_collections.ConfigDict) -> Dataset:
    d = config.dataset
    if reads_files(config):
        return load_files_dataset(
            d.name,
            image_folder=d.image_folder,
            data_dir=d.data_dir or None,
            image_size=d.image_size,
            eval_resize=d.eval_resize,
            flip=d.augment.flip,
            readers=d.readers,
            on_corrupt=d.on_corrupt,
        )
    return load_dataset(
        d.name,
        data_dir=d.data_dir or None,
        download_dir=d.download_dir or None,
        permute_positions=d.permute_positions,
        permutation_seed=d.permutation_seed,
        test_shift=d.test_shift,
    )


class _Preemption:
    """Remembers a SIGTERM or SIGUSR1 (SLURM's warning before a time limit or preemption) so the loop can
    checkpoint and stop at the next dispatch boundary."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.requested, self.signal_name = False, "a signal to another process"
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _handle(self, signum, frame):
        self.requested, self.signal_name = True, signal.Signals(signum).name
        logging.warning("%s: saving a checkpoint and stopping after this dispatch", self.signal_name)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _agreed(*flags: bool) -> tuple[bool, ...]:
    """Each flag, true if it is true on any process: every process must stop or save at the same step."""
    if jax.process_count() == 1:
        return flags
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(np.array(flags))
    return tuple(bool(v) for v in np.asarray(gathered).reshape(-1, len(flags)).any(axis=0))


def evaluate(batch: RunBatch, states, values, feed: Feed, batch_size: int, batches_per_dispatch: int, active) -> list:
    """Each active run's accuracy and mean loss over a whole split (None for the others); the padded last batch
    is masked out."""
    totals = {"correct": 0.0, "loss": 0.0, "count": 0.0}
    chunks = eval_rows(len(feed.split), batch_size, batches_per_dispatch)
    length = len(chunks[0][0])  # every dispatch as long as the first, so the last compiles nothing new
    for (rows, _), args in zip(chunks, feed(pad_steps(chunk, length) for chunk in chunks)):
        outputs = batch.evaluate(states, values, args, len(rows), resident=feed.resident, active=active)
        for k, v in batch.host_steps(outputs, len(rows)).items():
            totals[k] = totals[k] + np.sum(v, axis=-1, dtype=np.float64)
    results = []
    for i, on in enumerate(active):
        if not on:
            results.append(None)
            continue
        correct, loss, count = (float(totals[k][i]) for k in ("correct", "loss", "count"))
        if int(count) != len(feed.split):
            raise AssertionError(f"evaluated {count} examples, the test split has {len(feed.split)}")
        results.append({"test/accuracy": correct / count, "test/loss": loss / count})
    return results


class _TrainMetrics:
    """Per-step train metrics of the dispatches not yet logged, for every run of a batch. They stay on the
    device until a record is written or a checkpoint is about to be, so the host never waits on the device it
    just fed; the losses are checked for NaN/inf as they arrive."""

    LAST = ("learning_rate",)  # a record gives the value at its step; the others average since the last record

    def __init__(self, batch: RunBatch, first_step: int):
        self._batch, self._first = batch, first_step  # steps are counted from 1: `first` is done next
        self._on_device, self._host = [], {}

    def add(self, outputs, count: int) -> None:
        """A dispatch's outputs, of which the first `count` steps are real."""
        self._on_device.append((outputs, count))

    def fetch(self) -> list[tuple[int, float] | None]:
        """Bring the pending metrics to the host; for each run, (step, loss) of its first non-finite loss."""
        for outputs, count in self._on_device:
            for k, v in self._batch.host_steps(outputs, count).items():
                self._host[k] = np.concatenate([self._host[k], v], axis=1) if k in self._host else v
        self._on_device = []
        bad = []
        for losses in self._host.get("loss", np.zeros((self._batch.runs, 0))):
            steps = np.flatnonzero(~np.isfinite(losses))
            bad.append((self._first + int(steps[0]), float(losses[steps[0]])) if steps.size else None)
        return bad

    def take(self, through: int) -> list[dict[str, float]]:
        """Each run's record of the fetched steps up to step `through`, which are then dropped."""
        count = through - self._first + 1
        records = [
            {
                f"train/{k}": float(v[i, count - 1] if k in self.LAST else np.mean(v[i, :count]))
                for k, v in self._host.items()
            }
            for i in range(self._batch.runs)
        ]
        self._host = {k: v[:, count:] for k, v in self._host.items()}
        self._first = through + 1
        return records


def _non_finite_message(step: int, loss: float, run: RunDir) -> str:
    return (
        f"training loss is {loss} at step {step}; stopped. The last good checkpoint is step "
        f"{run.checkpoints.latest_step} in {run.path / 'checkpoints'} (intact). Lower "
        f"config.optimizer.learning_rate, add warmup (config.optimizer.warmup_steps) or clipping "
        f"(config.optimizer.clip_norm), then rerun with the same --workdir to resume from it."
    )


@dataclasses.dataclass
class Outcome:
    """How a run of `train_runs` ended: `final`, its test metrics ({} when stopped by a signal before the end),
    or `error`, why it stopped: NonFiniteLossError, CheckpointSaveError, CheckpointsDamagedError, RunLockedError
    (another process trains it), ValueError (its directory holds another config's run)."""

    workdir: Path
    final: dict[str, float] | None = None
    error: Exception | None = None


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | Path, devices: Sequence[jax.Device] | None = None
) -> dict[str, float]:
    """Train config.model on config.dataset on `devices` (default: all); return the final test metrics
    ({} when stopped by SIGTERM or SIGUSR1). Raises the error that stopped it (`Outcome.error`)."""
    (outcome,) = train_runs([(config, workdir)], devices)
    if outcome.error:
        raise outcome.error
    return outcome.final


def train_runs(
    runs: Sequence[tuple[ml_collections.ConfigDict, str | Path]],
    devices: Sequence[jax.Device] | None = None,
    *,
    runs_per_program: int | None = None,
) -> list[Outcome]:
    """Train every (config, workdir) in `runs` on `devices` (default: all), as few programs as their structure
    allows: runs that differ only in their values (`run_values.py`) and resume from the same step train as one
    run batch of at most `runs_per_program` runs (None: as many as the devices' memory holds). Finished runs
    are left as they are; a run another process holds is skipped (its outcome says by whom). Returns each
    run's outcome, in order; stops after the current batch's checkpoint on SIGTERM or SIGUSR1. Logs the XLA
    programs compiled and the time each took.
    """
    if runs_per_program is not None and runs_per_program < 1:
        raise ValueError(f"runs_per_program={runs_per_program} must be a positive number (or None: as many as fit)")
    devices = list(devices or jax.devices())
    dirs = [RunDir(config, workdir) for config, workdir in runs]
    for run in dirs:
        validate(run.config, device_count=len(devices), process_count=jax.process_count())
    outcomes = [Outcome(run.path) for run in dirs]
    for run, outcome in zip(dirs, outcomes):
        if run.finished:  # its files stay as they are
            outcome.final = run.final()
            logging.info("%s is a finished run (%s); nothing to do", run.path, FINAL_FILE)
    todo = [i for i, run in enumerate(dirs) if not run.finished]
    preemption = _Preemption()
    data_sets: dict[str, Dataset] = {}
    try:
        todo = [i for i in todo if _lock(dirs[i], outcomes[i])]
        with CompiledPrograms() as programs:
            try:
                for group in group_runs([structure_key(dirs[i].config) for i in todo]):
                    members = [todo[g] for g in group]
                    runs_of_group = ([dirs[i] for i in members], [outcomes[i] for i in members])
                    if _train_group(*runs_of_group, devices, runs_per_program, data_sets, preemption):
                        break
            finally:
                if programs.records:
                    logging.info("XLA programs compiled or loaded: %s", programs.summary())
    finally:
        preemption.restore()
        for i in todo:
            dirs[i].close()
    return outcomes


def _lock(run: RunDir, outcome: Outcome) -> bool:
    """Take the run's lock (process 0 for all processes, which then agree); False, with the outcome's error
    naming the holder, if another process holds it."""
    try:
        run.lock()
        held = None
    except RunLockedError as err:
        held = err
    if jax.process_count() > 1:  # every process of this run follows process 0's answer
        from jax.experimental import multihost_utils

        if bool(multihost_utils.broadcast_one_to_all(np.array(held is not None))) and held is None:
            held = RunLockedError(f"{run.path} is held by another process (process 0 of this run says so)")
    if held is not None:
        outcome.error = held
        logging.error("%s", held)
    return held is None


def _train_group(runs, outcomes, devices, runs_per_program, data_sets, preemption) -> bool:
    """Train runs of one structure: resume each, then in batches of one resume step that fit; True if stopped
    by a signal."""
    config = runs[0].config
    data_key = json.dumps(config.dataset.to_dict(), sort_keys=True)
    if data_key not in data_sets:
        data_sets[data_key] = load_data(config)
    data = data_sets[data_key]
    program = build_program(config, data)
    resumed = []  # (run, outcome, host state, step)
    for run, outcome in zip(runs, outcomes):
        try:
            resumed.append((run, outcome, *run.resume(jax.device_get(program.init(run.config.seed)))))
        except (ValueError, CheckpointsDamagedError) as err:  # another config's run, or no checkpoint restores
            outcome.error = err
            logging.error("%s", err)
    for group in group_runs([step for *_, step in resumed]):
        members = [resumed[g] for g in group]
        limit = runs_per_program or _runs_in_memory(program, [m[0] for m in members], data, devices) or len(members)
        for first in range(0, len(members), limit):
            if _train_batch(members[first : first + limit], program, data, devices, preemption):
                return True
    return False


def _runs_in_memory(program: Program, runs: Sequence[RunDir], data: Dataset, devices, memory: int | None = None):
    """How many of `runs` one batch holds in the devices' memory (`run_batch.runs_that_fit`; `memory` overrides
    the devices' own figure); None where the devices report no memory size (XLA:CPU). Measures the single-run
    step's temporaries by compiling it (a program of its own, for accelerators only)."""
    memory = memory or device_memory(devices)
    if memory is None:
        return None
    config = runs[0].config
    state = jax.eval_shape(program.init, 0)
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    runner = RUNNERS[config.train.parallel](
        program.train_step, program.eval_step, devices, compiler_options=compiler_options(config)
    )
    local = config.train.batch_size // jax.process_count()
    shapes = (
        jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), state),
        run_values(config),
        np.zeros((local, *data.train.example_shape), data.train.dtype),
        np.zeros((local,), np.int32),
    )
    host = runner.put_replicated(shapes[:2])
    step = runner.train_step.lower(*host, *runner.put_batch(*shapes[2:])).compile()
    return runs_that_fit(
        state_bytes,
        step.memory_analysis().temp_size_in_bytes,
        memory,
        vmapped(config.train.run_form, devices, len(runs)),
    )


def _train_batch(members: list[tuple], program: Program, data: Dataset, devices, preemption) -> bool:
    """Train one run batch, members (run directory, outcome, host state, step), all from the same step, to the
    end; True if stopped by a signal (see the module docstring)."""
    runs, outcomes, host_states, starts = (list(column) for column in zip(*members))
    start, config = starts[0], runs[0].config
    total_steps, per_epoch = schedule_length(config, data)
    count_runs = len(runs)
    batch = RunBatch(
        RUNNERS[config.train.parallel],
        program.train_step,
        program.eval_step,
        devices,
        config.train.dispatch_form,
        runs=count_runs,
        vmapped=vmapped(config.train.run_form, devices, count_runs),
        compiler_options=compiler_options(config),
    )
    params, macs = params_and_macs(program.model, data.input_shape)  # for final.json and the study tables
    names = [f"{run.path}: " if count_runs > 1 else "" for run in runs]
    logging.info(
        "%s from step %d: %d run%s in one %s program (config.json, metrics.jsonl, %s, checkpoints/, tensorboard/)",
        ", ".join(str(run.path) for run in runs),
        start,
        count_runs,
        "s" * (count_runs > 1),
        "vmapped" if batch.vmapped else "single-run",
        FINAL_FILE,
    )
    for run in runs:
        run.begin(start, devices)
    states, values = batch.put(host_states, [run_values(run.config) for run in runs])
    active = [True] * count_runs

    def fail(i: int, step: int, error: Exception) -> None:
        """Stop run i alone: its outcome, failed.json and the log say why; its checkpoints stay as they are."""
        active[i] = False
        outcomes[i].error = error
        runs[i].record_failure(step, str(error))
        logging.error("%s%s", names[i], error)

    schedule_saves = SaveSchedule(config.train.checkpoint_every_steps, config.train.checkpoint_every_seconds)
    log_every, eval_every_epochs = config.train.log_every_steps, config.train.eval_every_epochs
    on_device = resident(config.train.data_placement, (data.train, data.test), devices)
    seeds = [run.config.seed for run in runs]
    train_feed = Feed(batch.runner, data.train, resident=on_device, apart=not batch.vmapped, seeds=seeds)
    test_feed = Feed(batch.runner, data.test, resident=on_device)
    eval_batch = config.train.eval_batch_size
    # Resident: the whole test split in one dispatch. Streamed: about as many examples as a train dispatch.
    eval_dispatch = (
        len(data.test) if on_device else max(1, config.train.steps_per_dispatch * config.train.batch_size // eval_batch)
    )
    steps_per_dispatch = config.train.steps_per_dispatch
    plan = dispatch_plan(start, total_steps, steps_per_dispatch, (per_epoch, schedule_saves.every_steps))
    rows = [TrainRows(len(data.train), config.train.batch_size, run.config.seed) for run in runs]
    progress = Progress(total_steps, start, config.train.batch_size * count_runs, enabled=runs[0].leader)
    pending, finals, throughput = _TrainMetrics(batch, start + 1), [None] * count_runs, None

    def stop_non_finite() -> None:
        for i, bad in enumerate(pending.fetch()):
            if bad and active[i]:
                fail(i, bad[0], NonFiniteLossError(_non_finite_message(*bad, runs[i])))

    def evaluate_all(feed: Feed) -> list:
        return evaluate(batch, states, values, feed, eval_batch, eval_dispatch, active)

    from_files = isinstance(data.train, RecordSplit)

    def reading_rate() -> float | None:
        return data.train.images_per_s if from_files else None

    if from_files:
        logging.info(
            "reading %s from files: %d reader threads per process decode each dispatch's %d images, up to %d "
            "dispatches ahead of the devices (the first before step 1)",
            data.name,
            data.train.readers,
            steps_per_dispatch * config.train.batch_size * count_runs // jax.process_count(),
            train_feed.depth,
        )
    # Every dispatch holds steps_per_dispatch steps' rows (a short one padded), so one program runs them all;
    # a batch's rows are (runs, steps, batch).
    chunks = train_feed(
        ((np.stack([pad_steps((r(*chunk),), steps_per_dispatch)[0] for r in rows]),) for chunk in plan),
        epochs=(first // per_epoch for first, _ in plan),
    )
    try:
        for (first, count), args in zip(plan, chunks):
            if not any(active):  # every run of the batch failed
                break
            states, outputs = batch.train(states, values, args, count, resident=on_device, active=active)
            pending.add(outputs, count)
            done = first + count
            log_steps = [*range((first // log_every + 1) * log_every, done + 1, log_every)]
            if done == total_steps and total_steps not in log_steps:
                log_steps.append(total_steps)
            if log_steps:
                stop_non_finite()
                if not any(active):
                    break
                steps_per_s, _, _ = progress.rates(done)
                # The program's images/s, every run of the batch counted: the speed this model trains at here
                # (a run's own progress is this / runs_in_program).
                throughput = steps_per_s * config.train.batch_size * count_runs
                for step in log_steps:
                    records = pending.take(step)
                    for run, record, on in zip(runs, records, active):
                        if on:
                            run.writer.write(
                                step, epoch=step / per_epoch, steps_per_s=steps_per_s, images_per_s=throughput, **record
                            )
                shown = records[active.index(True)]
                progress.update(
                    done, input_images_per_s=reading_rate(), loss=shown["train/loss"], accuracy=shown["train/accuracy"]
                )
            if (done % per_epoch == 0 and done // per_epoch % eval_every_epochs == 0) or done == total_steps:
                finals = evaluate_all(test_feed)
                for i, final in enumerate(finals):
                    if final:
                        runs[i].writer.write(done, epoch=done / per_epoch, **final)
                        progress.message(
                            f"{names[i]}epoch {done / per_epoch:g}: test accuracy {final['test/accuracy']:.4f}, "
                            f"loss {final['test/loss']:.4f}"
                        )
            stop, save = _agreed(preemption.requested, schedule_saves.due(done))
            if save or done == total_steps or stop:
                stop_non_finite()
                for i, state in enumerate(batch.host_states(states)):
                    if active[i]:
                        try:
                            runs[i].save(done, state)
                        except CheckpointSaveError as err:
                            fail(i, done, err)
                schedule_saves.saved()
            if stop:
                for i, run in enumerate(runs):
                    try:
                        run.checkpoints.wait()
                    except CheckpointSaveError as err:
                        if active[i]:
                            fail(i, done, err)
                    outcomes[i].final = {} if active[i] else None
                logging.warning(
                    "stopped by %s at step %d; rerun with the same workdir to resume", preemption.signal_name, done
                )
                return True
        if not any(active):
            return False
        with _phase("final evaluation"):  # done at the last step already, unless it resumed from there
            finals = finals if all(f or not on for f, on in zip(finals, active)) else evaluate_all(test_feed)
        finals = [final if on else None for final, on in zip(finals, active)]  # a run may have failed since
        for shift in config.dataset.eval_shifts:
            with _phase(f"evaluation at shift {shift}"):
                shifted = Feed(
                    batch.runner, Split(shift_width(data.test.inputs, shift), data.test.labels), resident=on_device
                )
                for final, result in zip(finals, evaluate_all(shifted)):
                    if final:
                        final[f"test/accuracy@shift={shift}"] = result["test/accuracy"]
        for i, final in enumerate(finals):
            if not final:
                continue
            try:
                runs[i].finish(
                    {
                        "step": total_steps,
                        **final,
                        "params": params,
                        "macs": macs,
                        "images_per_s": throughput,
                        "runs_in_program": count_runs,
                        # corrupt images replaced by this process since it started (dataset.on_corrupt="skip")
                        **(
                            {
                                "skipped_images": data.train.skipped + data.test.skipped,
                                "input_images_per_s": reading_rate(),
                            }
                            if from_files
                            else {}
                        ),
                    }
                )
            except CheckpointSaveError as err:  # the last checkpoint did not reach the disk: not finished
                fail(i, total_steps, err)
                continue
            outcomes[i].final = final
            shifted = "".join(f", {k.split('@')[1]} {v:.4f}" for k, v in final.items() if "@shift=" in k)
            progress.message(
                f"final test accuracy {final['test/accuracy']:.4f}{shifted}, loss {final['test/loss']:.4f}; "
                f"run directory {runs[i].path}"
            )
        return False
    finally:
        chunks.close()  # a stop before the end leaves prefetched batches (and their thread) behind
        progress.close()


@contextlib.contextmanager
def _phase(name: str):
    """Log the start and duration of one step of a run's end, so a run that stalls there shows where."""
    logging.info("end of run: %s", name)
    start = time.perf_counter()
    yield
    logging.info("end of run: %s took %.1f s", name, time.perf_counter() - start)
