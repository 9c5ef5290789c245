"""Every registered model inside flax NNX code (`models.to_nnx`, over `nnx.bridge.ToNNX`): initialised from
linen variables, trained with `nnx.Optimizer`, its BatchNorm statistics updated, dropout drawn from its
`nnx.Rngs`, evaluated; three SGD steps equal cnn_jax's own step in float64. The docs' NNX example runs too."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import errors, nnx
from helpers import cast_floats, flat

from cnn_jax import models
from cnn_jax.train import make_program
from cnn_jax.train.config import default_config
from cnn_jax.train.parallel import ShardMapRunner
from cnn_jax.train.run_values import run_values
from cnn_jax.train.step import InputSpec, cross_entropy

REPO = Path(__file__).resolve().parents[1]
INPUTS = InputSpec((127.5,), (73.9,), 1 / 255)

# Each family's smallest input and settings (test_device_equivalence's): dropout off, so that the steps compare.
SETTINGS = {
    "lenet5": ((28, 28, 1), {}),
    "cnn1d": ((40,), {}),
    "mlp": ((40,), {}),
    "context_net": ((12, 12, 1), dict(features=4, global_pool=True)),
    "alexnet_cifar": ((16, 16, 1), {}),
    "alexnet": ((64, 64, 1), dict(dropout=0.0)),
    "resnet18": ((32, 32, 1), dict(widths=(4, 8, 8, 8), stage_sizes=(1, 1, 1, 1))),
    "resnet": ((8, 8, 1), dict(widths=(4, 8, 8), stage_sizes=(1, 1, 1))),
    "vgg": ((32, 32, 1), dict(dropout=0.0, head="cifar")),
    "googlenet": ((32, 32, 1), dict(dropout=0.0)),
}
IMAGENET_RESNETS = ("resnet18", "resnet34", "resnet50")
FAST = ("lenet5", "resnet20", "mlp")  # the default tier; every other model (VGG-11: ~30 s) in the slow one


def _settings(name: str) -> tuple[tuple[int, ...], dict]:
    if name in IMAGENET_RESNETS:
        return SETTINGS["resnet18"]
    key = name if name in SETTINGS else next(k for k in ("lenet5", "resnet", "vgg", "alexnet") if name.startswith(k))
    return SETTINGS[key]


def _state(net: nnx.Module, kind: type) -> dict:
    """The bridged module's variables of one kind as arrays, leaves in the order of linen's collection."""
    return nnx.to_pure_dict(nnx.state(net, kind))


def distinct_networks() -> dict[str, list[str]]:
    """Registered names grouped by the network their settings above build (resnet32 is resnet20 there), so each
    distinct network runs once, on behalf of every name it stands for."""
    groups: dict[str, list[str]] = {}
    for name in models.names():
        groups.setdefault(repr(models.create(name, num_classes=4, **_settings(name)[1])), []).append(name)
    return {names[0]: names for names in groups.values()}


NETWORKS = distinct_networks()


def test_every_registered_model_is_covered():
    assert sorted(name for names in NETWORKS.values() for name in names) == models.names()
    assert len(NETWORKS) < len(models.names())  # the grouping did merge identical networks


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=[] if set(FAST) & set(names) else pytest.mark.slow, id="+".join(names))
        for n, names in NETWORKS.items()
    ],
)
def test_three_nnx_sgd_steps_equal_cnn_jax_s_own_step_in_float64(name):
    """nnx.Optimizer over the bridged model, BatchNorm statistics written back by mutable=["batch_stats"],
    against make_program's train step on one device: the same parameters and statistics after three steps."""
    shape, options = _settings(name)
    model = models.create(name, num_classes=4, **options)
    config = default_config()
    config.optimizer.update(momentum=0.9, schedule="constant", learning_rate=0.05)
    program = make_program(model, config.optimizer, INPUTS, num_classes=4, input_shape=shape, total_steps=3)
    rng = np.random.default_rng(0)
    x, labels = rng.integers(0, 256, (8, *shape)).astype(np.uint8), rng.integers(0, 4, 8)
    with jax.enable_x64(True):
        host = cast_floats(jax.device_get(program.init(0)), np.float64)
        values = run_values(config)
        runner = ShardMapRunner(program.train_step, program.eval_step, jax.devices()[:1])
        state, device_values = runner.put_replicated((host, values))
        for _ in range(3):
            state, _ = runner.train_step(state, device_values, *runner.put_batch(x, labels))
        expected = runner.host_state(state)

        net = models.to_nnx(model, {"params": host.params, "batch_stats": host.batch_stats})
        optimizer = nnx.Optimizer(net, program.tx(values), wrt=nnx.Param)
        inputs = INPUTS(jnp.asarray(x), None)

        @nnx.jit
        def train_step(net, optimizer, x, labels):
            def loss_fn(net):
                logits = net(x, train=True, mutable=["batch_stats"])
                return cross_entropy(logits, labels, 4, 0.0).mean()

            loss, grads = nnx.value_and_grad(loss_fn)(net)
            optimizer.update(net, grads)
            return loss

        for _ in range(3):
            train_step(net, optimizer, inputs, jnp.asarray(labels))
    assert np.abs(flat(expected.params) - flat(host.params)).max() > 1e-3  # the steps did move the parameters
    np.testing.assert_allclose(flat(_state(net, nnx.Param)), flat(expected.params), rtol=1e-10, atol=1e-10)
    if expected.batch_stats:
        assert np.abs(flat(expected.batch_stats) - flat(host.batch_stats)).max() > 1e-3
        got = flat(_state(net, nnx.BatchStat))
        np.testing.assert_allclose(got, flat(expected.batch_stats), rtol=1e-10, atol=1e-10)


def _small_net(name: str, rngs: nnx.Rngs | None = None):
    shape, options = _settings(name)
    model = models.create(name, num_classes=4, **{**options, **({"dropout": 0.5} if "dropout" in options else {})})
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, *shape)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    return model, variables, models.to_nnx(model, variables, rngs=rngs), x


def test_dropout_draws_a_fresh_key_from_the_module_s_rngs_and_eval_mode_is_linen_s():
    model, variables, net, x = _small_net("alexnet", nnx.Rngs(dropout=7))
    first, second = net(x, train=True), net(x, train=True)
    assert not np.allclose(first, second)  # a new dropout key each call
    _, _, again, _ = _small_net("alexnet", nnx.Rngs(dropout=7))
    np.testing.assert_array_equal(again(x, train=True), first)  # the same stream, the same masks
    np.testing.assert_array_equal(net(x, train=False), model.apply(variables, x, train=False))


def test_a_batchnorm_training_call_writes_its_statistics_back_only_when_mutable():
    model, variables, net, x = _small_net("resnet20")
    with pytest.raises(errors.ModifyScopeVariableError, match="batch_stats"):
        net(x, train=True)
    net(x, train=True, mutable=["batch_stats"])
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_array_equal(flat(_state(net, nnx.BatchStat)), flat(updates["batch_stats"]))
    assert np.abs(flat(updates["batch_stats"]) - flat(variables["batch_stats"])).max() > 1e-3


def test_cross_device_batchnorm_under_nnx_shard_map_uses_the_global_batch():
    """norm_axis_name="batch": on 4 devices under nnx.shard_map, the statistics are those of the whole batch."""
    shape, options = _settings("resnet20")
    model = models.create("resnet20", num_classes=4, norm_axis_name="batch", **options)
    single = models.create("resnet20", num_classes=4, **options)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, *shape)), jnp.float32)
    variables = jax.jit(single.init)(jax.random.key(0), x)
    net = models.to_nnx(model, variables)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("batch",))
    P = jax.sharding.PartitionSpec

    @nnx.shard_map(mesh=mesh, in_specs=(P(), P("batch")), out_specs=P("batch"))
    def train_call(net, x):
        return net(x, train=True, mutable=["batch_stats"])

    logits = train_call(net, x)
    expected, updates = single.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(flat(_state(net, nnx.BatchStat)), flat(updates["batch_stats"]), rtol=1e-5, atol=1e-6)


def test_the_docs_nnx_example_runs():
    page = (REPO / "docs" / "coming_from_flax_and_pytorch.md").read_text()
    section = page[page.index("## In flax NNX code") :]
    code = section[
        section.index("```python\n") + len("```python\n") : section.index("\n```", section.index("```python"))
    ]
    namespace: dict = {}
    exec(compile(code, "coming_from_flax_and_pytorch.md", "exec"), namespace)
    assert namespace["accuracy"] >= 0.0 and np.isfinite(namespace["loss"])
