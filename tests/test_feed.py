"""Feeding the steps: dispatch plans, per-epoch row orders, and that neither the placement of the data nor the
number of steps per dispatch changes any number a run produces."""

import types

import jax
import numpy as np
import pytest
from helpers import final_state, flat
from test_train import TIMING, small_config

from cnn_jax.data import Split, process_rows, train_batch_indices
from cnn_jax.train import parallel, read_metrics, train_and_evaluate
from cnn_jax.train.feed import TrainRows, dispatch_plan, eval_rows, prefetched, resident


def test_dispatch_plan_covers_every_step_once_and_stops_at_boundaries():
    plan = dispatch_plan(3, 130, 16, (50, 20))
    steps = [s for first, count in plan for s in range(first, first + count)]
    assert steps == list(range(3, 130))
    assert max(count for _, count in plan) == 16
    boundaries = (20, 40, 50, 60, 80, 100, 120)
    assert not any(first < b < first + count for first, count in plan for b in boundaries)
    assert set(boundaries) | {130} <= {first + count for first, count in plan}
    assert dispatch_plan(10, 10, 4, (5,)) == []


def test_train_rows_are_the_batches_of_train_batch_indices():
    n, batch, seed = 103, 8, 5
    rows = TrainRows(n, batch, seed)
    per_epoch = n // batch
    for first, count in dispatch_plan(0, 3 * per_epoch, 5, (per_epoch,)):
        expected = np.stack([train_batch_indices(n, batch, seed, s) for s in range(first, first + count)])
        np.testing.assert_array_equal(rows(first, count), expected)
    with pytest.raises(ValueError, match="cross the end of epoch 0"):
        rows(per_epoch - 2, 4)


def test_process_rows_slice_the_batch_axis_of_stacked_rows():
    rows = np.arange(24).reshape(3, 8)
    parts = [process_rows(rows, p, 2) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), rows)
    np.testing.assert_array_equal(parts[1][0], [4, 5, 6, 7])


def test_eval_rows_cover_every_example_once_in_dispatches():
    chunks = eval_rows(1003, 240, 2)
    assert [c[0].shape for c in chunks] == [(2, 240), (2, 240), (1, 240)]
    rows = np.concatenate([r.reshape(-1) for r, _ in chunks])
    mask = np.concatenate([m.reshape(-1) for _, m in chunks])
    np.testing.assert_array_equal(np.sort(rows[mask > 0]), np.arange(1003))


def test_prefetched_keeps_order_and_propagates_errors():
    assert list(prefetched(lambda i: i * i, range(7), depth=2)) == [i * i for i in range(7)]

    def fail(i):
        if i == 3:
            raise KeyError("bad item")
        return i

    with pytest.raises(KeyError, match="bad item"):
        list(prefetched(fail, range(6), depth=2))


def test_placement_choices():
    split = Split(np.zeros((10, 4), np.float32), np.zeros(10, np.int32))
    assert resident("device", [split], jax.devices()) and not resident("host", [split], jax.devices())
    assert resident("auto", [split], jax.devices())  # 200 bytes fit anywhere


def test_auto_dispatch_form_follows_the_platform_compiled_for():
    cpu, gpu = jax.devices(), [types.SimpleNamespace(platform="gpu")]
    assert parallel._one_dispatch_each("auto", cpu) and not parallel._one_dispatch_each("auto", gpu)
    assert not parallel._one_dispatch_each("scan", cpu) and parallel._one_dispatch_each("per_step", gpu)
    with pytest.raises(ValueError, match="'loop': valid forms are auto, scan, per_step"):
        parallel._one_dispatch_each("loop", cpu)


@pytest.mark.parametrize(
    "placement, steps_per_dispatch, form",
    [
        ("host", 7, "per_step"),
        ("device", 16, "scan"),
        *(
            pytest.param(*case, marks=pytest.mark.slow)
            for case in [("host", 1, "per_step"), ("device", 3, "auto"), ("host", 7, "scan")]
        ),
    ],
)
def test_placement_and_steps_per_dispatch_do_not_change_the_run(
    tfds_dir, tmp_path, placement, steps_per_dispatch, form
):
    # The reference: resident data, 16 steps per dispatch (the defaults), one program per step (the CPU's
    # "auto"). form="scan" runs the other run's dispatches as one lax.scan each, as accelerators do.
    # 30 steps of 4000/80 = 50 per epoch, so only the end stops a dispatch; logs every 4 steps.
    runs = {}
    scan = form == "scan"
    for name, (where, k, f) in {
        "reference": ("device", 16, "per_step"),
        "other": (placement, steps_per_dispatch, form),
    }.items():
        config = small_config(
            tfds_dir,
            num_steps=30,
            data_placement=where,
            steps_per_dispatch=k,
            dispatch_form=f,
            checkpoint_every_steps=0,
            log_every_steps=4,
        )
        config.dataset.eval_shifts = (3,)
        final = train_and_evaluate(config, tmp_path / name)
        records = [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(tmp_path / name)]
        runs[name] = (flat(final_state(tmp_path / name)), final, records)
    if scan:  # one compiled loop vs separate programs: XLA may fuse differently, so float rounding differs
        np.testing.assert_allclose(runs["other"][0], runs["reference"][0], rtol=1e-5, atol=1e-6)
        assert runs["other"][1] == pytest.approx(runs["reference"][1], abs=2e-3)
    else:
        np.testing.assert_array_equal(runs["other"][0], runs["reference"][0])
        assert runs["other"][1] == runs["reference"][1]
        assert runs["other"][2] == runs["reference"][2]
    assert [r["step"] for r in runs["reference"][2] if "train/loss" in r] == [4, 8, 12, 16, 20, 24, 28, 30]
