"""Training engine: device-count and wrapper equivalence, resume, SIGTERM, NaN stop, multi-process, configs."""

import json
import signal
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import final_state, flat, train_cli

from cnn_jax.data import normalize
from cnn_jax.train import (
    Checkpoints,
    NonFiniteLossError,
    build_model,
    make_program,
    read_metrics,
    train_and_evaluate,
    validate,
)
from cnn_jax.train import program as program_module
from cnn_jax.train.checkpoint import SaveSchedule
from cnn_jax.train.config import default_config
from cnn_jax.train.optim import make_optimizer, make_schedule
from cnn_jax.train.parallel import PmapRunner, ShardMapRunner
from cnn_jax.train.run_values import run_values
from cnn_jax.train.step import InputSpec, cross_entropy
from experiments.configs import cnn1d_mnist1d

REPO = Path(__file__).resolve().parents[1]
TIMING = ("steps_per_s", "images_per_s")


def small_config(tfds_dir, **train):
    c = cnn1d_mnist1d.get_config()
    c.dataset.data_dir = tfds_dir
    c.dataset.augment.crop_padding = 2
    c.model.options.channels = 8
    c.train.batch_size = 80
    c.train.eval_batch_size = 240  # does not divide the 1000 test examples: the last batch is padded
    c.train.num_steps = 20
    c.train.log_every_steps = 5
    c.train.checkpoint_every_steps = 5
    for key, value in train.items():
        c.train[key] = value
    return c


def without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


@pytest.mark.slow
def test_step_is_exact_for_any_device_count_and_both_wrappers(x64):
    # ResNet with cross-device BatchNorm, augmentation and label smoothing, in float64 so that the
    # only differences left are summation order.
    c = default_config()
    c.model.name, c.model.options.widths, c.model.options.stage_sizes = "resnet20", (4, 8, 8), (1, 1, 1)
    c.train.label_smoothing = 0.1
    inputs = InputSpec((0.5,), (0.25,), 1.0, crop_padding=2, flip=True)
    program = make_program(
        build_model(c, 10), c.optimizer, inputs, num_classes=10, input_shape=(12, 12, 1), total_steps=100
    )
    rng = np.random.default_rng(0)
    x, labels = rng.random((32, 12, 12, 1)), rng.integers(0, 10, 32)
    host = jax.tree.map(
        lambda a: np.asarray(a, np.float64) if np.issubdtype(a.dtype, np.floating) else a,
        jax.device_get(program.init(0)),
    )
    results = {}
    for runner_class, counts in ((ShardMapRunner, (1, 2, 4, 8)), (PmapRunner, (8,))):
        for n in counts:
            runner = runner_class(program.train_step, program.eval_step, jax.devices()[:n])
            state, values = runner.put_replicated((host, run_values(c)))
            for _ in range(3):
                state, metrics = runner.train_step(state, values, *runner.put_batch(x, labels))
            results[runner_class.__name__, n] = flat(runner.host_state(state))
    reference = results["ShardMapRunner", 1]
    assert np.abs(reference - flat(host)).max() > 1e-3  # the state did change
    for key, value in results.items():
        np.testing.assert_allclose(value, reference, rtol=1e-12, atol=1e-12, err_msg=str(key))


def test_the_input_and_loss_follow_the_step_s_precision(rng):
    """float32 at least: bfloat16 logits are widened to float32, and under x64 the input and loss are float64, so a
    float64 reference step is float64 throughout."""
    x, labels = rng.integers(0, 256, (4, 3, 3, 2)).astype(np.uint8), rng.integers(0, 5, 4)
    logits = rng.normal(size=(4, 5)) * 30
    mean, std, scale = (100.3, 27.1), (61.7, 9.9), 1 / 255

    def expected_loss(z):
        shifted = z - z.max(1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        targets = np.eye(5)[labels] * 0.9 + 0.1 / 5
        return -(targets * log_probs).sum(1)

    loss = cross_entropy(jnp.asarray(logits, jnp.bfloat16), labels, 5, 0.1)
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, expected_loss(np.asarray(jnp.asarray(logits, jnp.bfloat16), np.float64)), 1e-5)
    with jax.enable_x64(True):
        loss = cross_entropy(jnp.asarray(logits), labels, 5, 0.1)
        inputs = normalize(jnp.asarray(x), jnp.asarray(mean), jnp.asarray(std), scale)
    assert loss.dtype == inputs.dtype == jnp.float64
    np.testing.assert_allclose(loss, expected_loss(logits), rtol=1e-13)
    np.testing.assert_allclose(inputs, (x * scale - np.multiply(mean, scale)) / np.multiply(std, scale), rtol=1e-13)
    assert normalize(jnp.asarray(x), jnp.asarray(mean), jnp.asarray(std), scale).dtype == jnp.float32


def test_run_is_the_same_on_1_and_8_devices_and_under_pmap(tfds_dir, tmp_path):
    # float32: 20 steps of SGD keep the runs within 1e-5 of each other (measured ~2e-7).
    runs = {}
    for name, parallel, devices in (
        ("one", "shard_map", jax.devices()[:1]),
        ("eight", "shard_map", None),
        ("pmap", "pmap", None),
    ):
        final = train_and_evaluate(small_config(tfds_dir, parallel=parallel), tmp_path / name, devices=devices)
        runs[name] = (flat(final_state(tmp_path / name)), final)
    for name in ("eight", "pmap"):
        np.testing.assert_allclose(runs[name][0], runs["one"][0], rtol=1e-5, atol=1e-5)
        assert runs[name][1]["test/accuracy"] == pytest.approx(runs["one"][1]["test/accuracy"], abs=2e-3)


def test_evaluation_covers_the_test_split_once(tfds_dir, tmp_path):
    final = train_and_evaluate(small_config(tfds_dir, num_steps=5), tmp_path)
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records if "test/accuracy" in r] == [5]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["train"]["eval_batch_size"] == 240
    provenance = json.loads((tmp_path / "provenance.json").read_text())  # details: test_run_dir.py
    assert len(provenance["commit"]) == 40 and provenance["versions"]["flax"] and provenance["device_count"] == 8
    assert provenance["end"] >= provenance["start"]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # Recompute the accuracy over all 1000 test examples in one batch, with the saved parameters.
    from cnn_jax.train.loop import load_data

    c = small_config(tfds_dir)
    data = load_data(c)
    model = build_model(c, 10)
    state = final_state(tmp_path)
    inputs = InputSpec(tuple(data.mean.tolist()), tuple(data.std.tolist()), data.scale)
    logits = model.apply({"params": state["params"]}, inputs(data.test.inputs, None))
    assert final["test/accuracy"] == pytest.approx(float(np.mean(np.argmax(logits, -1) == data.test.labels)))


def test_bfloat16_compute_keeps_float32_parameters(tfds_dir, tmp_path):
    config = small_config(tfds_dir, dtype="bfloat16", num_steps=10)
    # ResNet's layers take their spatial rank from the input: here a 1-D ResNet on MNIST-1D signals.
    config.model.name, config.model.options = "resnet20", {"widths": (4, 8, 8), "stage_sizes": (1, 1, 1)}
    final = train_and_evaluate(config, tmp_path / "bf16")
    state = final_state(tmp_path / "bf16")
    assert {x.dtype for x in jax.tree.leaves(state["params"])} == {np.dtype(np.float32)}
    assert 0.1 < final["test/accuracy"] <= 1 and np.isfinite(final["test/loss"])


def _start_and_signal(workdir, tfds_dir, flags: list[str], sig: int) -> tuple[int, str]:
    """Start a CLI run, send `sig` once it has logged 3 records and written a checkpoint, return its exit code and
    stderr."""
    process = subprocess.Popen(train_cli(workdir, tfds_dir, *flags), cwd=REPO, stderr=subprocess.PIPE, text=True)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 120

    def started() -> bool:
        saved = [p for p in workdir.glob("checkpoints/*") if p.name.isdigit()]
        return metrics.exists() and len(metrics.read_text().splitlines()) >= 3 and bool(saved)

    while not started():
        assert time.time() < deadline and process.poll() is None, process.stderr.read() if process.poll() else ""
        time.sleep(0.2)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


@pytest.mark.parametrize(
    "sig, by_time",
    [
        pytest.param(signal.SIGTERM, False, marks=pytest.mark.slow),
        pytest.param(signal.SIGKILL, False, marks=pytest.mark.slow),
        pytest.param(signal.SIGUSR1, True, marks=pytest.mark.slow),
        # SIGKILL with checkpoints by time in the default tier: test_run_batch.py (a killed batch of two runs).
        pytest.param(signal.SIGKILL, True, marks=pytest.mark.slow),
    ],
    ids=["SIGTERM", "SIGKILL", "SIGUSR1-by-time", "SIGKILL-by-time"],
)
def test_interrupted_run_resumes_and_reproduces_the_uninterrupted_one(tfds_dir, tmp_path, sig, by_time):
    # by_time: checkpoints every 0.2 s of training (written in the background), so at whatever dispatch end
    # the clock says; else every 50 steps.
    steps = ["--config.train.num_steps=600"]
    if by_time:
        steps += ["--config.train.checkpoint_every_steps=0", "--config.train.checkpoint_every_seconds=0.2"]
    returncode, stderr = _start_and_signal(tmp_path / "killed", tfds_dir, steps, sig)
    stopped_at = Checkpoints(tmp_path / "killed" / "checkpoints", 3).latest_step
    if sig != signal.SIGKILL:  # a clean stop with a checkpoint at the step it stopped
        assert returncode == 0 and f"stopped by {sig.name}" in stderr, stderr
        assert 30 <= stopped_at < 600
    else:  # killed outright: the last completed checkpoint is still readable
        assert returncode == -signal.SIGKILL
        assert stopped_at < 600 and (by_time or stopped_at % 50 == 0)
    subprocess.run(train_cli(tmp_path / "killed", tfds_dir, *steps), cwd=REPO, check=True, capture_output=True)
    subprocess.run(train_cli(tmp_path / "straight", tfds_dir, *steps), cwd=REPO, check=True, capture_output=True)
    np.testing.assert_array_equal(flat(final_state(tmp_path / "killed")), flat(final_state(tmp_path / "straight")))
    killed, straight = read_metrics(tmp_path / "killed"), read_metrics(tmp_path / "straight")
    assert [r["step"] for r in killed] == [r["step"] for r in straight]
    # Train records average the steps since the previous record, so only the one whose window the
    # restart cut may differ; everything else, evaluations included, is identical.
    cut = -(-stopped_at // 10) * 10
    assert [r for r in without_timing(killed) if r["step"] != cut] == [
        r for r in without_timing(straight) if r["step"] != cut
    ]
    assert not list((tmp_path / "killed" / "checkpoints").glob("*tmp*"))  # a save cut short is cleaned up


def test_checkpoints_by_steps_or_by_time(tfds_dir, tmp_path):
    # 20 steps in dispatches of 4 (checkpoint_every_steps=5 would split them at 5, 10, ...): by steps, at every
    # multiple of 5; by time with a long interval, only at the end; with an interval shorter than a dispatch, at
    # every dispatch end (the last 3 kept).
    for name, every_steps, every_seconds, expected in (
        ("steps", 5, 300.0, [10, 15, 20]),
        ("rarely", 0, 300.0, [20]),
        ("often", 0, 1e-9, [12, 16, 20]),
    ):
        config = small_config(
            tfds_dir, steps_per_dispatch=4, checkpoint_every_steps=every_steps, checkpoint_every_seconds=every_seconds
        )
        train_and_evaluate(config, tmp_path / name)
        assert Checkpoints(tmp_path / name / "checkpoints", 3).all_steps() == expected, name


def test_save_schedule():
    now = [0.0]
    by_time = SaveSchedule(0, 10.0, clock=lambda: now[0])
    now[0] = 9.9
    assert not by_time.due(7)
    now[0] = 10.0
    assert by_time.due(8)
    by_time.saved()
    now[0] = 19.0
    assert not by_time.due(9)
    by_steps = SaveSchedule(5, 10.0, clock=lambda: now[0])
    now[0] = 1000.0
    assert [s for s in range(1, 12) if by_steps.due(s)] == [5, 10]


def test_resuming_with_another_config_is_refused(tfds_dir, tmp_path):
    config = small_config(tfds_dir, num_steps=5)
    train_and_evaluate(config, tmp_path)
    config.optimizer.learning_rate = 0.5
    with pytest.raises(ValueError, match=r"another config \(optimizer.learning_rate: 0.01 -> 0.5\)"):
        train_and_evaluate(config, tmp_path)


def test_rerunning_a_finished_run_leaves_it_as_it_is(tfds_dir, tmp_path):
    config = small_config(tfds_dir, num_steps=5)
    final = train_and_evaluate(config, tmp_path)
    written = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    config.dataset.data_dir = str(tmp_path / "nowhere")  # a location field: the data is not even loaded
    assert train_and_evaluate(config, tmp_path) == final
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == written


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tfds_dir, tmp_path):
    config = small_config(tfds_dir, checkpoint_every_steps=1)
    config.optimizer.name, config.optimizer.schedule = "sgd", "constant"
    config.optimizer.learning_rate, config.optimizer.warmup_steps = 1e32, 3  # lr 0, 3e31, 6e31, ...
    with pytest.raises(NonFiniteLossError, match=r"loss is (nan|inf) at step \d+.*last good checkpoint is step \d+"):
        train_and_evaluate(config, tmp_path)
    checkpoints = Checkpoints(tmp_path / "checkpoints", 3)
    last = checkpoints.latest_step
    assert last is not None and last <= 3
    assert np.isfinite(flat(checkpoints.restore(None)["params"])).all()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("optimizer.name", "rmsprop", "valid values are sgd, adam, adamw"),
        ("optimizer.schedule", "linear", "valid values are constant, cosine, step"),
        ("train.parallel", "xmap", "valid values are shard_map, pmap"),
        ("train.dtype", "float16", "valid values are float32, bfloat16"),
        ("model.name", "resnet21", "valid values are .*resnet20"),
        ("model.conv.kind", "dilated", "valid values are standard, tiled, local"),
        ("model.conv.padding_mode", "wrap", "valid values are zeros, circular, reflect"),
        ("dataset.source", "disk", "valid values are auto, memory, files"),
        ("train.batch_size", 100, "not divisible by the 8 devices; use a multiple of 8"),
        ("train.batch_size", -8, "must be a positive number"),
        ("optimizer.learning_rate", 0.0, "must be a positive number"),
        ("train.label_smoothing", 1.0, r"must be in \[0, 1\)"),
        ("dataset.augment.flip", True, "flip changes the label of 'mnist1d'"),
    ],
)
def test_bad_config_values_are_rejected_with_the_valid_choices(field, value, message):
    config = cnn1d_mnist1d.get_config()
    section, *rest = field.split(".")
    target = config[section]
    for key in rest[:-1]:
        target = target[key]
    target[rest[-1]] = value
    with pytest.raises(ValueError, match=f"config.{field}={value!r}.*" + message):
        validate(config, device_count=8)


def test_bad_config_from_the_command_line_exits_with_the_message(tmp_path, tfds_dir):
    result = subprocess.run(
        train_cli(tmp_path, tfds_dir, "--config.optimizer.name=rmsprop"), cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "config.optimizer.name='rmsprop': unknown; valid values are sgd, adam, adamw" in result.stderr


def test_a_url_workdir_is_refused_before_anything_is_written():
    with pytest.raises(ValueError, match="workdir gs://bucket/run is a URL; it must be a filesystem path"):
        train_and_evaluate(cnn1d_mnist1d.get_config(), "gs://bucket/run")


def test_schedules():
    config = default_config()
    c = config.optimizer
    c.learning_rate, c.warmup_steps = 1.0, 10
    c.schedule = "cosine"
    cosine = make_schedule(c, 110)
    values = run_values(config)
    assert [float(cosine(s, values)) for s in (0, 5, 10)] == pytest.approx([0.0, 0.5, 1.0])
    assert float(cosine(60, values)) == pytest.approx(0.5) and float(cosine(110, values)) == pytest.approx(
        0.0, abs=1e-7
    )
    c.schedule, c.decay_boundaries, c.decay_factor, c.warmup_steps = "step", (0.5, 0.75), 0.1, 0
    step = make_schedule(c, 100)
    values = run_values(config)
    assert [float(step(s, values)) for s in (20, 49, 50, 74, 75)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def _optax_schedule(c, total_steps: int) -> optax.Schedule:
    """The schedule as optax's own schedules build it, with every value a Python constant."""
    lr, warmup = c.learning_rate, c.warmup_steps
    rest = max(total_steps - warmup, 1)
    if c.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif c.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, rest)
    else:
        main = optax.piecewise_constant_schedule(
            lr, {int(b * total_steps) - warmup: c.decay_factor for b in c.decay_boundaries}
        )
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


@pytest.mark.parametrize("kind", ["constant", "cosine", "step"])
@pytest.mark.parametrize("warmup", [0, 7])
def test_schedules_with_traced_values_are_optax_schedules(kind, warmup):
    config = default_config()
    c = config.optimizer
    c.schedule, c.warmup_steps, c.learning_rate, c.decay_factor = kind, warmup, 0.3, 0.2
    ours, reference = jax.jit(make_schedule(c, 100)), _optax_schedule(c, 100)
    values = run_values(config)
    for count in range(0, 101):
        assert float(ours(count, values)) == pytest.approx(float(reference(count)), rel=1e-6, abs=1e-9), count


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_optimizers_apply_weight_decay_and_clipping(name):
    config = default_config()
    c = config.optimizer
    c.name, c.schedule, c.learning_rate, c.momentum, c.weight_decay, c.clip_norm = name, "constant", 0.1, 0.0, 0.5, 1.0
    tx = make_optimizer(c, 10)(run_values(config))
    params = {"w": jax.numpy.ones(4)}
    updates, _ = tx.update({"w": jax.numpy.zeros(4)}, tx.init(params), params)
    assert float(updates["w"][0]) < 0  # decay alone shrinks the weights
    huge = {"w": jax.numpy.full(4, 1e6)}
    updates, _ = tx.update(huge, tx.init(params), params)
    if name == "sgd":  # clipped to norm 1 before the step, plus the coupled decay
        assert float(optax.tree.norm(updates)) == pytest.approx(
            0.1 * float(optax.tree.norm({"w": jax.numpy.full(4, 0.5) + 0.5})), rel=1e-5
        )


def test_deterministic_compiles_every_program_with_xla_s_options(tfds_dir, tmp_path, monkeypatch):
    # XLA:CPU is deterministic either way: the same numbers. On a GPU, benchmarks/accelerator.sh checks that two
    # deterministic runs write identical metrics.jsonl files, and what it costs.
    plain = train_and_evaluate(small_config(tfds_dir), tmp_path / "plain")
    same = train_and_evaluate(small_config(tfds_dir, deterministic=True), tmp_path / "deterministic")
    assert without_timing([same]) == without_timing([plain])
    assert without_timing(read_metrics(tmp_path / "deterministic")) == without_timing(read_metrics(tmp_path / "plain"))
    # The options reach the compiler: one XLA does not know fails the run's first compilation.
    monkeypatch.setattr(program_module, "DETERMINISTIC_OPTIONS", {"xla_no_such_option": True})
    with pytest.raises(Exception, match="No such compile option: 'xla_no_such_option'"):
        train_and_evaluate(small_config(tfds_dir, deterministic=True), tmp_path / "unknown")


def test_deterministic_needs_shard_map():
    config = small_config("", deterministic=True, parallel="pmap")
    with pytest.raises(ValueError, match="deterministic=True needs config.train.parallel='shard_map' .*pmap takes no"):
        validate(config, device_count=8)
