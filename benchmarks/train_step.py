"""Images/s of one full train step (forward, backward, SGD-momentum update) on the CPU, batch 128, float32:
cnn_jax's own step as the training loop runs it, the same network in plain flax.linen + optax, and PyTorch eager.

    python benchmarks/train_step.py                          # lenet5 and resnet20 (~75 s on 2 CPU cores)
    python benchmarks/train_step.py --models resnet20 --json /tmp/train_step.json

ours: build_model + make_optimizer + create_state + make_train_step + ShardMapRunner on one device, fed
uint8 batches placed on the device once. flax: nn.Conv/nn.BatchNorm/nn.max_pool/nn.Dense, optax.sgd and
jax.jit(step, donate_argnums=0), normalising the same uint8 batch inside the step. torch: torch.nn in NCHW,
torch.optim.SGD, 2 threads. Each variant runs 3 untimed steps (the first call, compilation included, is the "compile s" column), then
5 timed chunks of steps, each chunk >= 0.6 s; the throughput is that of the median chunk.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

BATCH, LR, MOMENTUM, CLASSES = 128, 0.1, 0.9, 10
SHAPES = {"lenet5": (28, 28, 1), "resnet20": (32, 32, 3)}
MEAN, STD, SCALE = 127.5, 64.0, 1 / 255   # normalisation of the uint8 inputs, as InputSpec applies it


# --- the plain flax networks --------------------------------------------------------------------

class FlaxLeNet5(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.max_pool(nn.relu(nn.Conv(6, (5, 5), padding="SAME")(x)), (2, 2), (2, 2))
        x = nn.max_pool(nn.relu(nn.Conv(16, (5, 5), padding="VALID")(x)), (2, 2), (2, 2))
        x = nn.relu(nn.Dense(120)(x.reshape(x.shape[0], -1)))
        return nn.Dense(CLASSES)(nn.relu(nn.Dense(84)(x)))


class FlaxBasicBlock(nn.Module):
    features: int
    stride: int

    @nn.compact
    def __call__(self, x, train: bool):
        bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)
        y = nn.Conv(self.features, (3, 3), self.stride, padding="SAME", use_bias=False)(x)
        y = bn()(nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False)(nn.relu(bn()(y))))
        if x.shape[-1] != self.features:   # option A: subsample, zero-pad the channels
            x = x[:, ::self.stride, ::self.stride]
            extra = self.features - x.shape[-1]
            x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
        return nn.relu(y + x)


class FlaxResNet20(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(16, (3, 3), padding="SAME", use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x))
        for stage, width in enumerate((16, 32, 64)):
            for b in range(3):
                x = FlaxBasicBlock(width, 2 if stage and not b else 1)(x, train)
        return nn.Dense(CLASSES)(x.mean((1, 2)))


def param_count(tree) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


# --- the three train steps: each returns (step_once(state) -> state, state, parameter count) ------------

def ours(name: str, x: np.ndarray, y: np.ndarray):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # for experiments.configs
    from experiments.configs import base
    from cnn_jax.train.loop import build_model
    from cnn_jax.train.optim import make_optimizer
    from cnn_jax.train.parallel import ShardMapRunner
    from cnn_jax.train.state import create_state
    from cnn_jax.train.step import InputSpec, make_eval_step, make_train_step
    c = base.get_config()
    c.model.name = name
    c.optimizer.schedule, c.optimizer.learning_rate = "constant", LR
    model = build_model(c, CLASSES)
    tx = make_optimizer(c.optimizer, 1000)
    channels = x.shape[-1]
    inputs = InputSpec((MEAN,) * channels, (STD,) * channels, SCALE)
    train_step = make_train_step(model, tx, inputs, num_classes=CLASSES, label_smoothing=0.0, seed=0)
    runner = ShardMapRunner(train_step, make_eval_step(model, inputs, num_classes=CLASSES), jax.devices()[:1])
    host = jax.device_get(create_state(model, tx, x.shape[1:], 0))
    batch = runner.put_batch(x, y)
    return lambda state: jax.block_until_ready(runner.train_step(state, *batch))[0], runner.put_state(host), \
        param_count(host.params)


def plain_flax(name: str, x: np.ndarray, y: np.ndarray):
    model = FlaxLeNet5() if name == "lenet5" else FlaxResNet20()
    tx = optax.sgd(LR, momentum=MOMENTUM)
    variables = model.init(jax.random.key(0), jnp.zeros((1, *x.shape[1:])), train=False)
    state = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {}),
             "opt_state": tx.init(variables["params"])}

    def step(state, images, labels):
        images = (images.astype(jnp.float32) * SCALE - MEAN * SCALE) / (STD * SCALE)

        def loss_fn(params):
            logits, updates = model.apply({"params": params, "batch_stats": state["batch_stats"]}, images,
                                          train=True, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), (logits, updates)

        (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        deltas, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new = {"params": optax.apply_updates(state["params"], deltas),
               "batch_stats": updates.get("batch_stats", {}), "opt_state": opt_state}
        return new, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}

    jitted, batch = jax.jit(step, donate_argnums=0), (jax.device_put(x), jax.device_put(y))
    return lambda state: jax.block_until_ready(jitted(state, *batch))[0], state, param_count(state["params"])


def torch_net(torch, name: str):
    tnn, F = torch.nn, torch.nn.functional
    if name == "lenet5":
        return tnn.Sequential(tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
                              tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
                              tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, 10))

    class Block(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.stride, self.extra = stride, cout - cin
            self.c1, self.b1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False), tnn.BatchNorm2d(cout)
            self.c2, self.b2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False), tnn.BatchNorm2d(cout)

        def forward(self, x):
            y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            if self.extra:
                x = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
            return F.relu(y + x)

    blocks = [Block(cin, cout, 2 if cin != cout else 1)
              for cin, cout in [(16, 16)] * 3 + [(16, 32)] + [(32, 32)] * 2 + [(32, 64)] + [(64, 64)] * 2]
    return tnn.Sequential(tnn.Conv2d(3, 16, 3, padding=1, bias=False), tnn.BatchNorm2d(16), tnn.ReLU(), *blocks,
                          tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(64, 10))


def torch_eager(torch, name: str, x: np.ndarray, y: np.ndarray):
    net = torch_net(torch, name).train()
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    images, labels = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y.astype(np.int64))
    cross_entropy = torch.nn.functional.cross_entropy

    def step_once(state):
        opt.zero_grad(set_to_none=True)
        loss = cross_entropy(net((images.float() * SCALE - MEAN * SCALE) / (STD * SCALE)), labels)
        loss.backward()
        opt.step()
        return state
    return step_once, None, sum(p.numel() for p in net.parameters())


# --- timing -------------------------------------------------------------------------------------

def measure(step_once: Callable, state, seconds: float = 3.0, repeats: int = 5) -> tuple[float, float]:
    """(images/s of the median chunk, seconds of the first call); 3 untimed steps first."""
    start = time.perf_counter()
    state = step_once(state)
    first = time.perf_counter() - start
    for _ in range(2):
        state = step_once(state)
    start = time.perf_counter()
    state = step_once(state)
    chunk = max(1, math.ceil(seconds / repeats / (time.perf_counter() - start)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(chunk):
            state = step_once(state)
        times.append((time.perf_counter() - start) / chunk)
    return BATCH / float(np.median(times)), first


def machine_line(torch) -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        cpu = "?"
    import flax
    return (f"# {platform.processor() or platform.machine()}, {cpu}, {len(os.sched_getaffinity(0))} cores; "
            f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}, "
            f"torch {torch.__version__ if torch else 'not installed'}; backend {jax.default_backend()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    args = parser.parse_args()
    try:
        import torch
        torch.set_num_threads(2)
    except ImportError:
        torch = None
        print("torch is not importable: skipping the torch column")
    rng = np.random.default_rng(0)
    results = []
    for name in args.models:
        x = rng.integers(0, 256, (BATCH, *SHAPES[name]), dtype=np.uint8)
        y = rng.integers(0, CLASSES, BATCH).astype(np.int32)
        row, counts = {"model": name}, {}
        for variant, build in [("ours", ours), ("flax", plain_flax)] + (
                [("torch", lambda n, x, y: torch_eager(torch, n, x, y))] if torch else []):
            step_once, state, counts[variant] = build(name, x, y)
            row[f"{variant}_img_s"], row[f"{variant}_first_call_s"] = measure(step_once, state)
        print(f"{name}: parameters {counts}")
        assert counts["ours"] == counts["flax"], counts
        row["params"] = counts
        results.append(row)
    print(machine_line(torch) + "\n")
    print("| model | ours img/s | flax img/s | torch img/s | ours/flax | ours/torch | flax/torch "
          "| ours compile s | flax compile s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        t = r.get("torch_img_s")
        ratio = lambda a, b: "" if a is None or b is None else f"{a / b:.2f}"
        print(f"| {r['model']} | {r['ours_img_s']:.0f} | {r['flax_img_s']:.0f} | {'' if t is None else f'{t:.0f}'} "
              f"| {ratio(r['ours_img_s'], r['flax_img_s'])} | {ratio(r['ours_img_s'], t)} "
              f"| {ratio(r['flax_img_s'], t)} | {r['ours_first_call_s']:.2f} | {r['flax_first_call_s']:.2f} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine_line(torch), "results": results}, out, indent=2)


if __name__ == "__main__":
    main()
