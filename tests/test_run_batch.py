"""Run batches: every run of a batch is the run trained alone (float64 exactly, float32 closely), in its own
run directory, and a batch resumes, skips finished runs and survives one run's non-finite loss."""

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest
from helpers import final_state, flat, train_cli
from test_train import TIMING, small_config

from cnn_jax import models
from cnn_jax.data import Split
from cnn_jax.models.layers import Layers, Norm
from cnn_jax.train import (
    Checkpoints,
    NonFiniteLossError,
    make_program,
    read_metrics,
    train_and_evaluate,
    train_runs,
)
from cnn_jax.train.config import default_config
from cnn_jax.train.feed import Feed, TrainRows
from cnn_jax.train.parallel import PmapRunner, ShardMapRunner
from cnn_jax.train.run_batch import RunBatch, group_runs, runs_that_fit, vmapped
from cnn_jax.train.run_values import run_values, stack_values, structure_key
from cnn_jax.train.step import AXIS, InputSpec

REPO = Path(__file__).resolve().parents[1]


class ConvNormDropout(nn.Module):
    """A small network with what a run batch must keep apart per run: BatchNorm statistics (averaged over the
    devices) and dropout masks."""

    num_classes: int = 10
    layers: Layers = Layers(norm=Norm("batch", AXIS))

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(self.layers.norm_layer(train, "norm")(self.layers.conv_layer(4, 3, padding=1, name="conv")(x)))
        x = nn.Dropout(0.3, deterministic=not train)(x.reshape(len(x), -1))
        return self.layers.dense(self.num_classes, name="fc")(x)


def _members() -> list:
    """3 seeds x 2 learning rates, SGD with momentum, warmup, cosine decay and label smoothing."""
    configs = []
    for seed in (0, 1, 2):
        for lr in (0.1, 0.03):
            c = default_config()
            c.seed, c.optimizer.learning_rate, c.optimizer.warmup_steps = seed, lr, 2
            c.train.label_smoothing = 0.1
            configs.append(c)
    return configs


def _train(batch: RunBatch, configs, host_states, split, dispatches: int, per_dispatch: int):
    """`dispatches` train dispatches of `per_dispatch` steps of the runs of `batch` on `split` (resident), each
    on its own rows; (the runs' host states, their per-step metrics (runs, steps), their eval sums)."""
    states, values = batch.put(host_states, [run_values(c) for c in configs])
    feed = Feed(batch.runner, split, resident=True, apart=not batch.vmapped)
    rows = [TrainRows(len(split), 16, c.seed) for c in configs]
    active = [True] * len(configs)
    metrics = []
    for first in range(0, dispatches * per_dispatch, per_dispatch):
        (args,) = feed([(np.stack([r(first, per_dispatch) for r in rows]),)])
        states, outputs = batch.train(states, values, args, per_dispatch, resident=True, active=active)
        metrics.append(batch.host_steps(outputs, per_dispatch))
    eval_feed = Feed(batch.runner, split, resident=True)
    (args,) = eval_feed([(np.arange(32, dtype=np.int32).reshape(2, 16), np.ones((2, 16), np.float32))])
    sums = batch.host_steps(batch.evaluate(states, values, args, 2, resident=True, active=active), 2)
    steps = {k: np.concatenate([m[k] for m in metrics], axis=1) for k in metrics[0]}
    return batch.host_states(states), steps, sums


MODELS = {
    "resnet": lambda: models.create(
        "resnet20", num_classes=10, norm_axis_name=AXIS, widths=(4, 8, 8), stage_sizes=(1, 1, 1)
    ),
    "dropout": ConvNormDropout,
}


@pytest.mark.parametrize(
    "model, runner_class, devices",
    [
        # The default tier: a network with BatchNorm and dropout on 1 and 2 devices; the ResNet and pmap: slow.
        ("dropout", ShardMapRunner, 1),
        ("dropout", ShardMapRunner, 2),
        pytest.param("resnet", ShardMapRunner, 1, marks=pytest.mark.slow),
        pytest.param("resnet", ShardMapRunner, 2, marks=pytest.mark.slow),
        pytest.param("resnet", PmapRunner, 2, marks=pytest.mark.slow),
        pytest.param("dropout", PmapRunner, 2, marks=pytest.mark.slow),
    ],
    ids=["dropout-shard_map-1", "dropout-shard_map-2", "resnet-shard_map-1", "resnet-shard_map-2", "resnet-pmap-2",
         "dropout-pmap-2"],
)  # fmt: skip
def test_every_run_of_a_vmapped_batch_is_the_run_trained_alone_float64(x64, model, runner_class, devices):
    configs = _members()
    program = make_program(
        MODELS[model](),
        configs[0].optimizer,
        InputSpec((0.5,) * 3, (0.25,) * 3, 1.0, crop_padding=1, flip=True),
        num_classes=10,
        input_shape=(8, 8, 3),
        total_steps=20,
    )
    rng = np.random.default_rng(0)
    split = Split(rng.random((64, 8, 8, 3)), rng.integers(0, 10, 64).astype(np.int32))
    to64 = lambda tree: jax.tree.map(lambda a: a.astype(np.float64) if a.dtype == np.float32 else a, tree)  # noqa: E731
    hosts = [to64(jax.device_get(program.init(c.seed))) for c in configs]
    on = jax.devices()[:devices]
    make = lambda runs, batched: RunBatch(  # noqa: E731
        runner_class, program.train_step, program.eval_step, on, "per_step", runs=runs, vmapped=batched
    )
    states, steps, sums = _train(make(len(configs), True), configs, hosts, split, dispatches=2, per_dispatch=2)
    assert np.ptp([flat(s.params).sum() for s in states]) > 1e-3  # the runs did differ
    for i, (config, host) in enumerate(zip(configs, hosts)):
        (alone,), alone_steps, alone_sums = _train(make(1, False), [config], [host], split, 2, 2)
        np.testing.assert_allclose(flat(states[i]), flat(alone), rtol=1e-10, atol=1e-10, err_msg=str(i))
        for k, v in alone_steps.items():
            np.testing.assert_allclose(steps[k][i], v[0], rtol=1e-10, atol=1e-10, err_msg=k)
        for k, v in alone_sums.items():
            np.testing.assert_allclose(sums[k][i], v[0], rtol=1e-10, atol=1e-10, err_msg=k)


def _batch_configs(tfds_dir, **train):
    """Three 1-D CNN runs: two seeds, and the second seed again at another learning rate."""
    configs = []
    for seed, lr in ((0, 0.01), (1, 0.01), (1, 0.003)):
        c = small_config(tfds_dir, num_steps=30, **train)
        c.seed, c.optimizer.learning_rate = seed, lr
        configs.append(c)
    return configs


@pytest.mark.parametrize("form, placement", [("vmap", "host"), ("sequential", "device")])
def test_a_batch_writes_each_run_as_the_run_trained_alone_float32(tfds_dir, tmp_path, form, placement):
    # float32: the vmapped step batches its convolutions and matmuls, so its sums may round differently from the
    # single-run program's: within 1e-5 after 30 steps of Adam (measured ~1e-7). Taking turns on the
    # single-run program is the same computation: bit for bit. Each form with one of the data placements.
    configs = _batch_configs(tfds_dir, run_form=form, data_placement=placement)
    outcomes = train_runs([(c, tmp_path / "batch" / str(i)) for i, c in enumerate(configs)])
    assert all(o.final and not o.error for o in outcomes)
    for i, config in enumerate(configs):
        alone, batched = tmp_path / "alone" / str(i), tmp_path / "batch" / str(i)
        final = train_and_evaluate(config, alone)
        layout = lambda d: sorted([p.name for p in d.iterdir()] + [p.name for p in (d / "checkpoints").iterdir()])  # noqa: E731
        assert layout(alone) == layout(batched) and "provenance.json" in layout(batched)
        records = [[{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(d)] for d in (alone, batched)]
        assert json.loads((batched / "config.json").read_text()) == json.loads((alone / "config.json").read_text())
        if form == "sequential":
            np.testing.assert_array_equal(flat(final_state(batched)), flat(final_state(alone)))
            assert outcomes[i].final == final and records[0] == records[1]
        else:
            np.testing.assert_allclose(flat(final_state(batched)), flat(final_state(alone)), rtol=1e-5, atol=1e-5)
            assert outcomes[i].final == pytest.approx(final, abs=2e-3)
            assert [r["step"] for r in records[0]] == [r["step"] for r in records[1]]


def test_a_partly_finished_batch_trains_only_the_rest(tfds_dir, tmp_path, caplog):
    configs = _batch_configs(tfds_dir)
    runs = [(c, tmp_path / str(i)) for i, c in enumerate(configs)]
    train_runs(runs[1:2])
    written = {p: p.read_bytes() for p in (tmp_path / "1").rglob("*") if p.is_file()}
    with caplog.at_level("INFO"):
        outcomes = train_runs(runs)
    assert f"{tmp_path / '1'} is a finished run" in caplog.text
    assert f"{tmp_path / '0'}, {tmp_path / '2'} from step 0: 2 runs in one" in caplog.text
    assert {p: p.read_bytes() for p in (tmp_path / "1").rglob("*") if p.is_file()} == written
    assert all(o.final for o in outcomes)


@pytest.mark.parametrize("form", ["vmap", "sequential"])
def test_one_runs_non_finite_loss_leaves_the_others_finishing(tfds_dir, tmp_path, form):
    configs = _batch_configs(tfds_dir, checkpoint_every_steps=1, run_form=form)
    bad = configs[1]
    bad.optimizer.schedule, bad.optimizer.warmup_steps, bad.optimizer.learning_rate = "constant", 3, 1e32
    for c in configs:  # one structure: the same schedule kind and warmup for all, the values differ
        c.optimizer.schedule, c.optimizer.warmup_steps = "constant", 3
    outcomes = train_runs([(c, tmp_path / str(i)) for i, c in enumerate(configs)])
    assert isinstance(outcomes[1].error, NonFiniteLossError) and outcomes[1].final is None
    assert "training loss is" in str(outcomes[1].error)
    failed = json.loads((tmp_path / "1" / "failed.json").read_text())
    assert failed["error"] == str(outcomes[1].error) and not (tmp_path / "1" / "final.json").exists()
    last = Checkpoints(tmp_path / "1" / "checkpoints", 3).latest_step
    assert last is not None and last < failed["step"]
    assert np.isfinite(flat(final_state(tmp_path / "1")["params"])).all()
    for i in (0, 2):
        assert outcomes[i].final and (tmp_path / str(i) / "final.json").exists()


def test_a_killed_batch_resumes_every_run_to_the_same_results(tfds_dir, tmp_path):
    # Two runs (workdirs a and b) in one process, checkpointing in the background every 0.2 s.
    flags = [
        "--config.train.num_steps=300",
        "--config.train.checkpoint_every_steps=0",
        "--config.train.checkpoint_every_seconds=0.2",
        "--run_overrides=" + json.dumps([{"seed": "0"}, {"seed": "1", "optimizer.learning_rate": "0.005"}]),
    ]

    def command(name):
        return [*train_cli(tmp_path / name / "a", tfds_dir, *flags), f"--workdir={tmp_path / name / 'b'}"]

    process = subprocess.Popen(command("killed"), cwd=REPO, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not all(any(p.name.isdigit() for p in (tmp_path / "killed" / r / "checkpoints").glob("*")) for r in "ab"):
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # As if b's last save had not finished: the runs resume from different steps, so as two batches.
    b = Checkpoints(tmp_path / "killed" / "b" / "checkpoints", 3)
    if len(b.all_steps()) > 1:
        shutil.rmtree(tmp_path / "killed" / "b" / "checkpoints" / str(b.latest_step))
    stopped = {r: Checkpoints(tmp_path / "killed" / r / "checkpoints", 3).latest_step for r in "ab"}
    assert all(0 < s < 300 for s in stopped.values()), stopped
    for name in ("killed", "straight"):
        subprocess.run(command(name), cwd=REPO, check=True, capture_output=True)
    for r in "ab":
        killed, straight = tmp_path / "killed" / r, tmp_path / "straight" / r
        np.testing.assert_array_equal(flat(final_state(killed)), flat(final_state(straight)))
        final = lambda d: {k: v for k, v in json.loads((d / "final.json").read_text()).items() if k != "images_per_s"}  # noqa: E731
        assert final(killed) == final(straight)


def test_structure_splits_runs_and_values_do_not():
    base = default_config()
    other_seed, other_lr, other_model, no_momentum = (base.copy_and_resolve_references() for _ in range(4))
    other_seed.seed, other_lr.optimizer.learning_rate = 3, 0.5
    other_model.model.name, no_momentum.optimizer.momentum = "resnet20", 0.0
    keys = [structure_key(c) for c in (base, other_seed, other_lr, other_model, no_momentum)]
    assert keys[0] == keys[1] == keys[2] and len({keys[0], keys[3], keys[4]}) == 3
    assert group_runs([(k, 0) for k in keys] + [(keys[0], 50)]) == [[0, 1, 2], [3], [4], [5]]


def test_run_forms_and_memory_budget():
    cpu = jax.devices()[:1]
    assert not vmapped("auto", cpu, 3) and vmapped("vmap", cpu, 3) and not vmapped("vmap", cpu, 1)
    with pytest.raises(ValueError, match="run form 'batched': valid forms are auto, vmap, sequential"):
        vmapped("batched", cpu, 2)
    assert runs_that_fit(100, 1000, None, True) is None
    assert runs_that_fit(100, 1000, 10_000, True) == 5  # 6000 // (200 + 1000)
    assert runs_that_fit(100, 1000, 10_000, False) == 49  # (6000 - 1000 - 100) // 100
    assert runs_that_fit(10**9, 10**9, 10_000, False) == 1  # never less than one run


@pytest.mark.parametrize("runner_class", [ShardMapRunner, PmapRunner])
def test_a_batched_runner_steps_every_run_as_the_single_run_step(runner_class):
    # The single step of a batched runner, as docs/training.md shows it for a loop of one's own.
    configs = _members()[:3]
    program = make_program(
        ConvNormDropout(), configs[0].optimizer, InputSpec((0.5,) * 3, (0.25,) * 3, 1.0), num_classes=10,
        input_shape=(6, 6, 3), total_steps=10,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    x, labels = rng.random((3, 16, 6, 6, 3)).astype(np.float32), rng.integers(0, 10, (3, 16)).astype(np.int32)
    hosts = [jax.device_get(program.init(c.seed)) for c in configs]
    devices = jax.devices()[:2]
    batched = runner_class(program.train_step, program.eval_step, devices, batched=True)
    states = batched.put_replicated(jax.tree.map(lambda *a: np.stack(a), *hosts))
    values = batched.put_replicated(stack_values([run_values(c) for c in configs]))
    states, metrics = batched.train_step(states, values, *batched.put_batch(x, labels, batch_axis=1))
    together = batched.host_state(states)
    single = runner_class(program.train_step, program.eval_step, devices)
    for i, (config, host) in enumerate(zip(configs, hosts)):
        state, value = single.put_replicated((host, run_values(config)))
        state, alone = single.train_step(state, value, *single.put_batch(x[i], labels[i]))
        np.testing.assert_allclose(
            flat(jax.tree.map(lambda a: a[i], together)), flat(single.host_state(state)), rtol=1e-5, atol=1e-6
        )
        assert float(batched.host_values(metrics)["loss"][i]) == pytest.approx(
            float(single.host_values(alone)["loss"]), rel=1e-5
        )


def test_auto_batches_hold_as_many_runs_as_the_memory_budget_allows(tfds_dir, tmp_path):
    # XLA:CPU reports no memory size: no limit. With one given, the single-run step is compiled to measure it.
    from cnn_jax.train.loop import _runs_in_memory, load_data
    from cnn_jax.train.program import build_program
    from cnn_jax.train.run_dir import RunDir

    configs = _batch_configs(tfds_dir, run_form="vmap")
    data = load_data(configs[0])
    program = build_program(configs[0], data)
    runs = [RunDir(c, tmp_path / str(i)) for i, c in enumerate(configs)]
    devices = jax.devices()[:1]
    assert _runs_in_memory(program, runs, data, devices) is None
    fits = [_runs_in_memory(program, runs, data, devices, memory=m) for m in (10**6, 10**7, 10**8)]
    assert 1 <= fits[0] < fits[1] < fits[2], fits
    assert not list(tmp_path.iterdir())  # nothing written
