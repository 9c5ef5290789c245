"""Every model with BatchNorm computes the same train step on 1, 2 and 8 devices, under shard_map and pmap: its
statistics are those of the global batch (cross-device), whatever the model. float64, so only summation order
differs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import flat

from cnn_jax import models
from cnn_jax.train import make_program
from cnn_jax.train.config import default_config
from cnn_jax.train.parallel import PmapRunner, ShardMapRunner
from cnn_jax.train.run_values import run_values
from cnn_jax.train.step import AXIS, InputSpec

# Small settings where the architecture has them; dropout off (its masks are drawn per device). VGG's ImageNet
# head (7x7x512 -> 4096 dense layers, 100M+ parameters) is swapped for the CIFAR head: BatchNorm is in the
# convolutional stack, which stays as registered.
SMALL = {
    "resnet": dict(widths=(4, 8, 8, 8), stage_sizes=(1, 1, 1, 1)),
    "vgg": dict(dropout=0.0, head="cifar"),
    "googlenet": dict(dropout=0.0),
}
SIZES = {"resnet": 8, "vgg": 32, "googlenet": 32}  # the smallest inputs each family takes
IMAGENET_RESNETS = ("resnet18", "resnet34", "resnet50")


def _family(name: str) -> str:
    return next(f for f in SMALL if name.startswith(f))


def _options(name: str) -> dict:
    options = dict(SMALL[_family(name)])
    if name.startswith("resnet") and name not in IMAGENET_RESNETS:
        options = dict(widths=(4, 8, 8), stage_sizes=(1, 1, 1))
    return options


def batchnorm_models() -> dict[str, list[str]]:
    """Registered models whose variables hold BatchNorm statistics, grouped by the network the test builds from
    them: with the small settings above, e.g. resnet32 is resnet20 and vgg16_bn is vgg16_cifar, so each
    distinct network runs once, on behalf of every name it stands for."""
    groups: dict[str, list[str]] = {}
    for name in models.names():
        if not name.startswith(tuple(SMALL)):
            continue
        model = models.create(name, num_classes=4, **_options(name))
        size = 32 if name in IMAGENET_RESNETS else SIZES[_family(name)]
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
        if "batch_stats" in variables:
            groups.setdefault(repr(model), []).append(name)
    return {names[0]: names for names in groups.values()}


BN_MODELS = batchnorm_models()
FAST = ("resnet20",)  # the default tier; every other BatchNorm network (GoogLeNet: ~1 min) in the slow one


def test_every_family_with_batchnorm_is_covered():
    covered = {name for names in BN_MODELS.values() for name in names}
    assert {"resnet20", "resnet110", "resnet50", "vgg11_bn", "vgg19_cifar", "googlenet"} <= covered
    assert not {"lenet5", "vgg16", "alexnet"} & covered
    assert len(BN_MODELS) < len(covered)  # the grouping did merge identical networks


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=[] if set(FAST) & set(names) else pytest.mark.slow, id="+".join(names))
        for n, names in BN_MODELS.items()
    ],
)
def test_step_is_the_same_on_1_2_and_8_devices_under_both_runners(x64, name):
    size = 32 if name in IMAGENET_RESNETS else SIZES[_family(name)]
    model = models.create(name, num_classes=4, norm_axis_name=AXIS, **_options(name))
    config = default_config()
    inputs = InputSpec((0.5,) * 3, (0.25,) * 3, 1.0)
    program = make_program(model, config.optimizer, inputs, num_classes=4, input_shape=(size, size, 3), total_steps=100)
    rng = np.random.default_rng(0)
    x, labels = rng.random((16, size, size, 3)), rng.integers(0, 4, 16)
    host = jax.tree.map(
        lambda a: np.asarray(a, np.float64) if np.issubdtype(a.dtype, np.floating) else a,
        jax.device_get(program.init(0)),
    )
    results = {}
    for runner_class, counts in ((ShardMapRunner, (1, 2, 8)), (PmapRunner, (2, 8))):
        for n in counts:
            runner = runner_class(program.train_step, program.eval_step, jax.devices()[:n])
            state, values = runner.put_replicated((host, run_values(config)))
            for _ in range(2):
                state, _ = runner.train_step(state, values, *runner.put_batch(x, labels))
            results[runner_class.__name__, n] = flat(runner.host_state(state))
    reference = results["ShardMapRunner", 1]
    assert np.abs(reference - flat(host)).max() > 1e-3  # the state did change
    for key, value in results.items():
        np.testing.assert_allclose(value, reference, rtol=1e-10, atol=1e-10, err_msg=str(key))
