"""Shared test utilities: random convolution configurations and float32 comparison."""

import functools
import itertools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cnn_jax.ops.shapes import conv_geometry
from cnn_jax.train import Checkpoints

F32 = dict(rtol=2e-5, atol=2e-5)
# The [test] extra installs PyTorch's CPU build on Python 3.11 only (newer Pythons would get a CUDA build of
# several GB); CI's Python 3.11 lane runs every PyTorch reference.
TORCH_MISSING = "PyTorch is not installed (the [test] extra installs it on Python 3.11); CI runs these on 3.11"


def f32(*arrays) -> list:
    """The arrays as float32 JAX arrays (the NumPy references keep float64)."""
    return [jnp.asarray(a, jnp.float32) for a in arrays]


def compiled(fn, *arrays, **options):
    """fn(*arrays, **options) as one jitted program (the options fixed, not traced).

    Called eagerly, an op runs primitive by primitive and XLA compiles each one for its shapes: on random shapes
    about 13 programs per call, against 1 jitted (5.7x the time on 2 cores). Users run the ops jitted too."""
    return jax.jit(functools.partial(fn, **options))(*arrays)


def close(actual, expected, **tol):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, **(tol or F32))


def random_configs(rng, ndim, count, *, groups=False, max_size=None):
    """Yield (x_shape, kernel, stride, padding, dilation, groups) that give a non-empty output."""
    max_size = max_size or {1: 12, 2: 9, 3: 6}[ndim]
    paddings = ["VALID", "SAME", "FULL", 1, "explicit"] + (["CAUSAL"] if ndim == 1 else [])
    produced = 0
    for _ in itertools.count():
        sizes = tuple(int(v) for v in rng.integers(1, max_size + 1, ndim))
        kernel = tuple(int(v) for v in rng.integers(1, 4, ndim))
        stride = tuple(int(v) for v in rng.integers(1, 3, ndim))
        dilation = tuple(int(v) for v in rng.integers(1, 3, ndim))
        padding = paddings[rng.integers(len(paddings))]
        if padding == "explicit":
            padding = tuple((int(a), int(b)) for a, b in rng.integers(0, 3, (ndim, 2)))
        g = int(rng.choice([1, 2, 3])) if groups else 1
        cin = g * int(rng.integers(1, 3))
        cout = g * int(rng.integers(1, 3))
        try:
            conv_geometry(sizes, kernel, stride, padding, dilation)
        except ValueError:
            continue
        yield (int(rng.integers(1, 3)), *sizes, cin), kernel, stride, padding, dilation, g, cout
        produced += 1
        if produced == count:
            return


def train_cli(workdir, tfds_dir, *flags) -> list[str]:
    """experiments.train on a small MNIST-1D CNN (batch 80: divides among 1, 2, 4 or 8 devices)."""
    return [
        sys.executable,
        "-m",
        "experiments.train",
        "--config=experiments/configs/cnn1d_mnist1d.py",
        f"--workdir={workdir}",
        f"--config.dataset.data_dir={tfds_dir}",
        "--config.model.options.channels=8",
        "--config.train.batch_size=80",
        "--config.train.eval_batch_size=200",
        "--config.train.log_every_steps=10",
        "--config.train.checkpoint_every_steps=50",
        *flags,
    ]


def sweep_cli(study_dir, *flags) -> list[str]:
    """experiments.sweep over the MNIST-1D CNN's config into `study_dir`."""
    return [
        sys.executable,
        "-m",
        "experiments.sweep",
        "--config=experiments/configs/cnn1d_mnist1d.py",
        f"--study_dir={study_dir}",
        *flags,
    ]


def final_state(workdir):
    return Checkpoints(Path(workdir) / "checkpoints", 3).restore(None)


def cast_floats(tree, dtype):
    """The tree with its floating-point leaves as NumPy arrays of `dtype` (integers, e.g. step counts, as they are)."""
    return jax.tree.map(lambda a: np.asarray(a, dtype) if np.issubdtype(a.dtype, np.floating) else a, tree)


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


# For processes that run at the same time as others: XLA:CPU's collectives among the tests' 8 host devices wait
# for all 8 device threads, and two such processes on 2 cores can starve a rendezvous past its 40 s abort.
ONE_DEVICE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
