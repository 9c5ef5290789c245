"""Batch norm (including across 8 devices and with virtual batches) and local response normalisation."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import close
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

from cnn_jax import nn as cnn
from cnn_jax import ops
from cnn_jax.ops import reference


def test_batch_norm_train_matches_reference(rng):
    x = rng.normal(2.0, 3.0, size=(8, 5, 4, 3))
    scale, bias = rng.normal(size=3), rng.normal(size=3)
    y, mean, var = ops.batch_norm_train(
        *(jnp.asarray(a, jnp.float32) for a in (x, scale, bias)), jnp.zeros(3), jnp.ones(3), momentum=0.9
    )
    close(y, reference.batch_norm(x, scale, bias), rtol=1e-4, atol=1e-4)
    close(mean, 0.1 * x.mean((0, 1, 2)), rtol=1e-5, atol=1e-5)
    close(var, 0.9 + 0.1 * x.var((0, 1, 2)), rtol=1e-5, atol=1e-5)


def test_inference_mode_uses_given_statistics(rng):
    x = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    y = ops.batch_norm(x, jnp.array([1.0, 0, 0]), jnp.array([4.0, 1, 1]), epsilon=0.0)
    close(y[:, 0], (np.asarray(x[:, 0]) - 1) / 2)


def test_virtual_batches_have_their_own_statistics(rng):
    x = rng.normal(size=(12, 3, 2))
    y, mean, _ = ops.batch_norm_train(
        jnp.asarray(x, jnp.float32), None, None, jnp.zeros(2), jnp.ones(2), momentum=0.0, virtual_batch_size=4
    )
    for g in range(3):
        close(y[4 * g : 4 * g + 4], reference.batch_norm(x[4 * g : 4 * g + 4], 1.0, 0.0), rtol=1e-4, atol=1e-4)
    close(mean, x.reshape(3, -1, 2).mean(1).mean(0))


def test_batch_norm_across_eight_devices_equals_whole_batch(rng):
    assert jax.device_count() == 8, "conftest sets --xla_force_host_platform_device_count=8"
    x = jnp.asarray(rng.normal(1.0, 2.0, size=(32, 6, 6, 4)), jnp.float32)
    scale, bias = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)
    state = (jnp.zeros(4), jnp.ones(4))
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    sharded = jax.jit(
        jax.shard_map(
            lambda x: ops.batch_norm_train(x, scale, bias, *state, axis_name="batch"),
            mesh=mesh,
            in_specs=P("batch"),
            out_specs=(P("batch"), P(), P()),
        )
    )
    whole = ops.batch_norm_train(x, scale, bias, *state)
    for a, b in zip(sharded(x), whole):
        close(a, np.asarray(b), rtol=1e-5, atol=1e-5)
    per_device = ops.batch_norm_train(x[:4], scale, bias, *state)[0]
    assert not np.allclose(per_device, whole[0][:4], atol=1e-3), "unsynced statistics should differ"


def _adversarial_channels(case: str, rng) -> np.ndarray:
    """32 examples of 4x4x6 where shifted one-pass moments can cancel: float32 values, as float64."""
    x = rng.normal(0.0, 1e-2, (32, 4, 4, 6))
    if case == "mean large against the spread":
        x += 1e3
    elif case == "first example far above the rest":
        x[0] += 50
    elif case == "first example dead, the rest near 5":
        x, x[0] = rng.normal(5.0, 0.1, x.shape), 0.0
    elif case == "near-constant channel":
        x = rng.normal(3.0, 1e-5, x.shape)
    elif case == "one device's examples unlike the other's":
        x[16:] += 20
    return x.astype(np.float32).astype(np.float64)


def _variance_error(var: np.ndarray, exact: np.ndarray) -> float:
    return float((np.abs(np.asarray(var, np.float64) - exact) / exact).max())


@pytest.mark.parametrize("virtual_batch_size", [None, 16])
@pytest.mark.parametrize(
    "case",
    [
        "mean large against the spread",
        "first example far above the rest",
        "first example dead, the rest near 5",
        "near-constant channel",
        "one device's examples unlike the other's",
    ],
)
def test_float32_statistics_are_as_accurate_as_two_pass(rng, case, virtual_batch_size):
    # float64 statistics of the same float32 values are exact here; NumPy's two-pass float32 variance,
    # mean((x - mean(x))^2), is the accuracy to match, within 4x. The last case splits the batch over 2 devices.
    x = _adversarial_channels(case, rng)
    groups = x.reshape(-1, 16 * (virtual_batch_size or 32), 6)  # (virtual batches, values per channel, C)
    exact = groups.var(1)
    x32 = groups.astype(np.float32)
    two_pass = np.square(x32 - x32.mean(1, keepdims=True)).mean(1)
    if case.startswith("one device's"):
        stats = jax.shard_map(
            lambda x: ops.batch_stats(x, axis_name="batch", virtual_batch_size=virtual_batch_size),
            mesh=Mesh(np.array(jax.devices()[:2]), ("batch",)),
            in_specs=P("batch"),
            out_specs=P() if virtual_batch_size is None else P("batch"),
        )
    else:
        stats = partial(ops.batch_stats, virtual_batch_size=virtual_batch_size)
    mean, var = jax.jit(stats)(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(
        np.reshape(mean, exact.shape), groups.mean(1), rtol=1e-6, atol=1e-6 * np.sqrt(exact).max()
    )
    error = _variance_error(np.reshape(var, exact.shape), exact)
    assert error <= 4 * max(_variance_error(two_pass, exact), 1e-7), (error, _variance_error(two_pass, exact))


def test_batch_norm_module_under_pmap(rng):
    x = jnp.asarray(rng.normal(size=(8, 4, 3, 3, 2)), jnp.float32)  # 8 devices x 4 examples
    module = cnn.BatchNorm(axis_name="batch")
    variables = module.init(jax.random.PRNGKey(0), x[0], use_running_average=False)
    y, updates = jax.pmap(
        lambda x: module.apply(variables, x, use_running_average=False, mutable=["batch_stats"]), axis_name="batch"
    )(x)
    close(
        y.reshape(32, 3, 3, 2), reference.batch_norm(np.asarray(x).reshape(32, 3, 3, 2), 1.0, 0.0), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(updates["batch_stats"]["mean"][0], updates["batch_stats"]["mean"][7])
    y_eval = module.apply({**variables, **jax.tree.map(lambda a: a[0], updates)}, x[0], use_running_average=True)
    assert y_eval.shape == x[0].shape


def test_local_response_norm_matches_reference(rng):
    x = rng.normal(size=(2, 4, 4, 9)) * 10
    close(ops.local_response_norm(jnp.asarray(x, jnp.float32)), reference.local_response_norm(x), rtol=1e-5)
    close(
        ops.local_response_norm(jnp.asarray(x, jnp.float32), size=3, k=1.0, alpha=0.1, beta=0.5),
        reference.local_response_norm(x, 3, 1.0, 0.1, 0.5),
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, s, b: ops.batch_norm_train(x, s, b, jnp.zeros(3), jnp.ones(3))[0],
        lambda x, s, b: ops.batch_norm_train(x, s, b, jnp.zeros(3), jnp.ones(3), virtual_batch_size=2)[0],
        lambda x, s, b: ops.local_response_norm(x * s + b, size=3, alpha=0.5),
    ],
)
def test_norm_grads(rng, x64, fn):
    args = (
        jnp.asarray(rng.normal(size=(4, 3, 2, 3))),
        jnp.asarray(rng.normal(size=3)),
        jnp.asarray(rng.normal(size=3)),
    )
    check_grads(fn, args, order=1, modes=["fwd", "rev"])
    jax.jit(jax.grad(lambda *a: fn(*a).sum()))(*args)  # under jit too, where constants are traced
