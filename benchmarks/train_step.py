"""Images/s of one full train step (forward, backward, SGD-momentum update): cnn_jax's own step as the training
loop runs it, the same network in plain flax.linen + optax, PyTorch eager and torch.compile.

    python benchmarks/train_step.py                      # CPU cases: lenet5, resnet20, batch 128, float32
    python benchmarks/train_step.py --cases gpu          # GPU cases: resnet50 bf16 256 at 224x224, resnet20 f32 and
                                                         # bf16 512, lenet5 f32 128
    python benchmarks/train_step.py --cases gpu --smoke  # wiring check: batch 2, one timed step per variant
    python benchmarks/train_step.py --models resnet20 --variants ours flax --seconds 5 --json /tmp/train_step.json

A case is (model, compute dtype, batch, input shape); parameters stay float32 in every variant, and the
parameter counts of all variants are asserted equal. SGD with momentum 0.9, constant learning rate 0.1.
ours: build_model + make_program + ShardMapRunner on one device, as the training loop builds them
    (config.train.dtype="bfloat16" for the bfloat16 cases), fed uint8
    batches placed on the device once and normalised inside the step.
flax: benchmarks/flax_nets.py (nn.Conv/nn.BatchNorm/nn.max_pool/nn.Dense, `dtype` the compute dtype),
    optax.sgd and jax.jit(step, donate_argnums=0), normalising the same uint8 batch inside the step.
torch: benchmarks/torch_nets.py on CUDA when torch sees a GPU, else on the CPU with one thread per core;
    channels_last memory format, torch.autocast(bfloat16) for the bfloat16 cases, torch.optim.SGD.
torch_compile: the same with torch.compile(net) (default mode); if it fails (e.g. no C++ compiler) the
    table says why.
Each variant runs 3 untimed steps (the first call, compilation included, is the "compile s" column: this
benchmark does not use cnn_jax's compilation cache, so it is always a compilation), then
5 timed chunks of steps, each chunk >= seconds/5, waiting for the device only at the end of a chunk; the
throughput is that of the median chunk.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

# jax and torch share one GPU in this process: allocate on demand instead of taking 75% of it up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run as a script: benchmarks.* imports from the repository root

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlib  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks import flax_nets, torch_nets  # noqa: E402
from cnn_jax.train.config import default_config  # noqa: E402
from cnn_jax.train.parallel import ShardMapRunner  # noqa: E402
from cnn_jax.train.program import build_model, make_program  # noqa: E402
from cnn_jax.train.run_values import run_values  # noqa: E402
from cnn_jax.train.step import InputSpec  # noqa: E402

LR, MOMENTUM = 0.1, 0.9
MEAN, STD, SCALE = 127.5, 64.0, 1 / 255  # normalisation of the uint8 inputs, as InputSpec applies it
VARIANTS = ("ours", "flax", "torch", "torch_compile")
LABELS = {"ours": "ours", "flax": "flax", "torch": "torch", "torch_compile": "torch.compile"}


@dataclasses.dataclass(frozen=True)
class Case:
    model: str
    dtype: str  # compute dtype: float32 | bfloat16
    batch: int
    shape: tuple[int, ...]  # one example, HWC
    classes: int


CASES = {
    "cpu": (Case("lenet5", "float32", 128, (28, 28, 1), 10), Case("resnet20", "float32", 128, (32, 32, 3), 10)),
    "gpu": (
        Case("resnet50", "bfloat16", 256, (224, 224, 3), 1000),
        Case("resnet20", "float32", 512, (32, 32, 3), 10),
        Case("resnet20", "bfloat16", 512, (32, 32, 3), 10),
        Case("lenet5", "float32", 128, (28, 28, 1), 10),
    ),
}


class Bench(NamedTuple):
    step: Callable[[Any], Any]  # state -> state: dispatches one train step, need not wait for it
    state: Any
    sync: Callable[[Any], Any]  # waits until the device has finished the steps dispatched so far
    params: int
    jitted: Any = None  # JAX variants: the jitted step, called as jitted(state, *args)
    args: tuple = ()


def param_count(tree) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


# --- the variants: each builds a Bench for one case and one uint8 batch -------------------------------------------


def ours(case: Case, x: np.ndarray, y: np.ndarray) -> Bench:
    c = default_config()
    c.model.name, c.train.dtype = case.model, case.dtype
    c.optimizer.schedule, c.optimizer.learning_rate = "constant", LR
    channels = x.shape[-1]
    inputs = InputSpec((MEAN,) * channels, (STD,) * channels, SCALE)
    program = make_program(
        build_model(c, case.classes),
        c.optimizer,
        inputs,
        num_classes=case.classes,
        input_shape=x.shape[1:],
        total_steps=1000,
    )
    runner = ShardMapRunner(program.train_step, program.eval_step, jax.devices()[:1])
    host = jax.device_get(program.init(0))
    batch = runner.put_batch(x, y)
    values = runner.put_replicated(run_values(c))
    return Bench(
        lambda state: runner.train_step(state, values, *batch)[0],
        runner.put_replicated(host),
        jax.block_until_ready,
        param_count(host.params),
        runner.train_step,
        (values, *batch),
    )


def plain_flax(case: Case, x: np.ndarray, y: np.ndarray) -> Bench:
    model = flax_nets.NETS[case.model](num_classes=case.classes, dtype=jnp.dtype(case.dtype))
    tx = optax.sgd(LR, momentum=MOMENTUM)
    variables = model.init(jax.random.key(0), jnp.zeros((1, *x.shape[1:])), train=False)
    state = {
        "params": variables["params"],
        "batch_stats": variables.get("batch_stats", {}),
        "opt_state": tx.init(variables["params"]),
    }

    def step(state, images, labels):
        images = (images.astype(jnp.float32) * SCALE - MEAN * SCALE) / (STD * SCALE)

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state["batch_stats"]}, images, train=True, mutable=["batch_stats"]
            )
            logits = logits.astype(jnp.float32)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), (logits, updates)

        (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        deltas, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new = {
            "params": optax.apply_updates(state["params"], deltas),
            "batch_stats": updates.get("batch_stats", {}),
            "opt_state": opt_state,
        }
        return new, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}

    jitted, batch = jax.jit(step, donate_argnums=0), (jax.device_put(x), jax.device_put(y))
    return Bench(
        lambda state: jitted(state, *batch)[0],
        state,
        jax.block_until_ready,
        param_count(state["params"]),
        jitted,
        batch,
    )


def torch_variant(torch: ModuleType, device: Any, case: Case, x: np.ndarray, y: np.ndarray, compiled: bool) -> Bench:
    torch.manual_seed(0)
    net = torch_nets.NETS[case.model](torch, case.classes).to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    forward = torch.compile(net) if compiled else net
    # The NHWC batch seen as NCHW is already in channels_last layout.
    images = torch.from_numpy(x).to(device).permute(0, 3, 1, 2)
    labels = torch.from_numpy(y.astype(np.int64)).to(device)
    cross_entropy, bf16 = torch.nn.functional.cross_entropy, case.dtype == "bfloat16"

    def step(state):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = cross_entropy(forward((images.float() * SCALE - MEAN * SCALE) / (STD * SCALE)), labels)
        loss.backward()
        opt.step()
        return state

    sync = (lambda state: torch.cuda.synchronize()) if device.type == "cuda" else (lambda state: state)
    return Bench(step, None, sync, sum(p.numel() for p in net.parameters()))


# --- timing -------------------------------------------------------------------------------------------------------


def measure(bench: Bench, batch: int, seconds: float, repeats: int) -> tuple[float, float]:
    """(images/s of the median chunk, seconds of the first call); 3 untimed steps first."""

    def timed(steps: int, state) -> tuple[float, Any]:
        start = time.perf_counter()
        for _ in range(steps):
            state = bench.step(state)
        bench.sync(state)
        return time.perf_counter() - start, state

    first, state = timed(1, bench.state)
    _, state = timed(2, state)
    one, state = timed(1, state)
    chunk = max(1, math.ceil(seconds / repeats / one))
    times = []
    for _ in range(repeats):
        elapsed, state = timed(chunk, state)
        times.append(elapsed / chunk)
    return batch / float(np.median(times)), first


def run_case(
    case: Case, variants: list[str], torch: ModuleType | None, device: Any, seconds: float, repeats: int
) -> dict:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (case.batch, *case.shape), dtype=np.uint8)
    y = rng.integers(0, case.classes, case.batch).astype(np.int32)
    builders = {
        "ours": ours,
        "flax": plain_flax,
        "torch": lambda *a: torch_variant(torch, device, *a, compiled=False),
        "torch_compile": lambda *a: torch_variant(torch, device, *a, compiled=True),
    }
    row, counts = dataclasses.asdict(case), {}
    for variant in variants:
        try:
            bench = builders[variant](case, x, y)
            counts[variant] = bench.params
            row[f"{variant}_img_s"], row[f"{variant}_first_call_s"] = measure(bench, case.batch, seconds, repeats)
        except Exception as err:  # torch.compile fails at its first call where it cannot compile (no C++ compiler)
            if variant != "torch_compile":
                raise
            row[f"{variant}_error"] = f"{type(err).__name__}: {err}"
            print(f"{case.model} {case.dtype}: torch.compile failed: {row[f'{variant}_error']}", file=sys.stderr)
    print(f"{case.model} {case.dtype} batch {case.batch}: parameters {counts}", file=sys.stderr)
    assert len(set(counts.values())) <= 1, counts
    row["params"] = counts
    return row


def machine_line(torch: ModuleType | None, device: Any) -> str:
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    jax_device = jax.devices()[0]
    if torch is None:
        torch_part = "torch not installed"
    elif device.type == "cuda":
        torch_part = f"torch {torch.__version__} (CUDA {torch.version.cuda}) on {torch.cuda.get_device_name(device)}"
    else:
        torch_part = f"torch {torch.__version__} on the CPU, {torch.get_num_threads()} threads"
    # platform_version names the CUDA or ROCm build on a GPU; on the CPU it is just "cpu" again.
    backend = " ".join(dict.fromkeys((jax.default_backend(), jax_device.client.platform_version)))
    return (
        f"# {jax_device.device_kind}; host {cpu}, {len(os.sched_getaffinity(0))} cores; jax {jax.__version__}, "
        f"jaxlib {jaxlib.__version__} (backend {backend}), flax {flax.__version__}, optax {optax.__version__}; "
        f"{torch_part}"
    )


def print_table(results: list[dict], variants: list[str]) -> None:
    def speed(r: dict, v: str) -> str:
        if f"{v}_error" in r:  # the first line of the error, kept short and free of table separators
            return "failed: " + r[f"{v}_error"].splitlines()[0].replace("|", "/")[:100]
        if f"{v}_img_s" not in r:
            return ""
        return f"{r[f'{v}_img_s']:.0f}" if r[f"{v}_img_s"] >= 100 else f"{r[f'{v}_img_s']:.3g}"  # smoke: ~1 img/s

    def ratio(r: dict, a: str, b: str) -> str:
        return f"{r[f'{a}_img_s'] / r[f'{b}_img_s']:.2f}" if f"{a}_img_s" in r and f"{b}_img_s" in r else ""

    pairs = [("ours", "flax"), ("ours", "torch"), ("ours", "torch_compile"), ("flax", "torch")]
    pairs = [(a, b) for a, b in pairs if a in variants and b in variants]
    compiled = [v for v in ("ours", "flax", "torch_compile") if v in variants]
    head = [
        "model",
        "dtype",
        "batch",
        *(f"{LABELS[v]} img/s" for v in variants),
        *(f"{LABELS[a]}/{LABELS[b]}" for a, b in pairs),
        *(f"{LABELS[v]} compile s" for v in compiled),
    ]
    print("| " + " | ".join(head) + " |\n|---|---|---:|" + "---:|" * (len(head) - 3))
    for r in results:
        size = "x".join(map(str, r["shape"][:-1]))
        cells = [
            r["model"],
            r["dtype"],
            f"{r['batch']} at {size}",
            *(speed(r, v) for v in variants),
            *(ratio(r, a, b) for a, b in pairs),
            *(f"{r[f'{v}_first_call_s']:.2f}" if f"{v}_first_call_s" in r else "" for v in compiled),
        ]
        print("| " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", choices=list(CASES), default="cpu", help="the CPU-sized or the GPU-sized set")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=sorted({c.model for cs in CASES.values() for c in cs}),
        help="only the cases of these models",
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--batch", type=int, help="override every case's batch size")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per variant (5 chunks)")
    parser.add_argument("--smoke", action="store_true", help="batch 2 and one timed step: check the wiring only")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    args = parser.parse_args()
    cases = [c for c in CASES[args.cases] if not args.models or c.model in args.models]
    batch = 2 if args.smoke else args.batch
    cases = [dataclasses.replace(c, batch=batch) if batch else c for c in cases]
    seconds, repeats = (0.0, 1) if args.smoke else (args.seconds, 5)
    variants = list(args.variants)
    jax.devices()  # initialise jax's backend before torch loads its own GPU libraries
    torch = device = None
    if {"torch", "torch_compile"} & set(variants):
        try:
            import torch
        except ImportError:
            print("torch is not importable: skipping the torch variants", file=sys.stderr)
            variants = [v for v in variants if v not in ("torch", "torch_compile")]
        else:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            if device.type == "cpu":
                torch.set_num_threads(len(os.sched_getaffinity(0)))
    results = [run_case(case, variants, torch, device, seconds, repeats) for case in cases]
    print(machine_line(torch, device) + "\n")
    print_table(results, variants)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine_line(torch, device), "results": results}, out, indent=2)


if __name__ == "__main__":
    main()
