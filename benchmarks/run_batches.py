"""Many runs in one program: what a run batch saves, on whatever device this runs on.

    python benchmarks/run_batches.py                  # both parts on the CPU, about 3 minutes on 2 cores
    python benchmarks/run_batches.py --part step --models lenet5 --runs 1 8 --batch 128   # the GPU goal's case

step: images/s of R runs' train steps, all runs counted, one batch each already on the device, for one model:
    "vmap" is the step vmapped over a run axis (`ShardMapRunner(..., batched=True)`, one program for all R runs),
    "sequential" the single-run step called once per run (what the runs taking turns on one program cost). The
    ratio to one run's images/s says how much of the device one run leaves idle; vmap / sequential is the
    measurement behind `train.run_form=auto` (docs/performance.md).
sweep: the wall time of `python -m experiments.sweep` over --seeds of the 1-D CNN on MNIST-1D (--steps steps
    each, evaluation at the end) with --runs_per_program=1 (one process and program per run, as before run
    batches) against --runs_per_program=R (one process), each in a fresh study directory, first with an empty
    compilation cache ("cold"), then again with the cache that run left ("warm").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: experiments.* import from the repository root

import jax  # noqa: E402
import numpy as np  # noqa: E402

from cnn_jax.compile_cache import CACHE_DIR_ENV, enable_compile_cache  # noqa: E402
from cnn_jax.train.config import default_config  # noqa: E402
from cnn_jax.train.parallel import ShardMapRunner  # noqa: E402
from cnn_jax.train.program import build_model, make_program  # noqa: E402
from cnn_jax.train.run_values import run_values, stack_values  # noqa: E402
from cnn_jax.train.step import InputSpec  # noqa: E402

SHAPES = {"cnn1d": (40,), "lenet5": (28, 28, 1), "resnet8": (28, 28, 1), "resnet20": (32, 32, 3)}


def _seconds_per_call(fn, state, seconds: float) -> float:
    """Median seconds of one call of state -> fn(state) over 5 chunks, the device waited on once a chunk."""
    for _ in range(3):
        state = fn(state)
    jax.block_until_ready(state)
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 20:  # size the chunks
        state = fn(state)
        calls += 1
    jax.block_until_ready(state)
    chunk = max(1, calls * 4)  # a chunk of about seconds / 5
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(chunk):
            state = fn(state)
        jax.block_until_ready(state)
        times.append((time.perf_counter() - start) / chunk)
    return float(np.median(times))


def step_images_per_s(model: str, runs: int, batch: int, seconds: float) -> dict[str, float]:
    """{"vmap": ..., "sequential": ...}: images/s of `runs` runs' steps (all runs counted) in each form."""
    config = default_config()
    config.model.name, config.optimizer.schedule = model, "constant"
    shape = SHAPES[model]
    program = make_program(
        build_model(config, 10), config.optimizer, InputSpec((0.5,), (0.25,), 1 / 255), num_classes=10,
        input_shape=shape, total_steps=10**6,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    x, labels = rng.integers(0, 256, (batch, *shape), np.uint8), rng.integers(0, 10, batch).astype(np.int32)
    configs = [config.copy_and_resolve_references() for _ in range(runs)]
    for seed, c in enumerate(configs):
        c.seed = seed
    hosts = [jax.device_get(program.init(c.seed)) for c in configs]
    devices = jax.devices()[:1]
    results = {}

    single = ShardMapRunner(program.train_step, program.eval_step, devices)
    data = single.put_batch(x, labels)
    values = [single.put_replicated(run_values(c)) for c in configs]
    states = [single.put_replicated(h) for h in hosts]
    turns = lambda states: [single.train_step(s, v, *data)[0] for s, v in zip(states, values)]  # noqa: E731
    results["sequential"] = runs * batch / _seconds_per_call(turns, states, seconds)
    if runs > 1:
        batched = ShardMapRunner(program.train_step, program.eval_step, devices, batched=True)
        stacked = batched.put_batch(np.stack([x] * runs), np.stack([labels] * runs), batch_axis=1)
        together = batched.put_replicated(jax.tree.map(lambda *a: np.stack(a), *hosts))
        all_values = batched.put_replicated(stack_values([run_values(c) for c in configs]))
        step = lambda state: batched.train_step(state, all_values, *stacked)[0]  # noqa: E731
        results["vmap"] = runs * batch / _seconds_per_call(step, together, seconds)
    return results


def sweep_seconds(runs_per_program: int, seeds: int, steps: int, data_dir: str, cache: str, study: str) -> float:
    """Wall time of experiments.sweep over `seeds` seeds of the 1-D CNN with --runs_per_program."""
    command = [
        sys.executable,
        "-m",
        "experiments.sweep",
        "--config=experiments/configs/cnn1d_mnist1d.py",
        f"--study_dir={study}",
        f"--seeds={','.join(map(str, range(seeds)))}",
        f"--runs_per_program={runs_per_program}",
        f"--set=dataset.data_dir={data_dir}",
        f"--set=train.num_steps={steps}",
        f"--set=train.log_every_steps={steps}",
    ]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, env={**os.environ, CACHE_DIR_ENV: cache})
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("step", "sweep"), action="append")
    parser.add_argument("--models", nargs="+", default=["cnn1d", "lenet5"], choices=list(SHAPES))
    parser.add_argument("--runs", nargs="+", type=int, default=[1, 3, 8])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per measurement")
    parser.add_argument("--seeds", type=int, default=3, help="sweep: seeds of the 1-D CNN")
    parser.add_argument("--steps", type=int, default=600, help="sweep: steps per run")
    parser.add_argument("--data_dir", help="sweep: a TFDS data directory to reuse (default: a temporary one)")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    args = parser.parse_args()
    parts = args.part or ["step", "sweep"]
    device = jax.devices()[0]
    print(f"# {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}\n")
    results = {}
    if "step" in parts:
        enable_compile_cache()
        print(f"## One train step of R runs, batch {args.batch} each: images/s, all runs counted\n")
        print("| model | runs | sequential | vmap | vmap / sequential | vmap / one run |")
        print("|---|---:|---:|---:|---:|---:|")
        results["step"] = []
        for model in args.models:
            one = None
            for runs in args.runs:
                r = step_images_per_s(model, runs, args.batch, args.seconds)
                one = one or r["sequential"]
                vmap = r.get("vmap")
                cells = [f"{r['sequential']:.0f}", f"{vmap:.0f}" if vmap else "", "", ""]
                if vmap:
                    cells[2:] = [f"**{vmap / r['sequential']:.2f}**", f"{vmap / one:.2f}"]
                print(f"| {model} | {runs} | " + " | ".join(cells) + " |", flush=True)
                results["step"].append({"model": model, "runs": runs, **r})
    if "sweep" in parts:
        with tempfile.TemporaryDirectory(prefix="run_batches_") as tmp:
            data_dir = args.data_dir or f"{tmp}/tfds"
            print(f"\n## experiments.sweep: {args.seeds} seeds x {args.steps} steps of the 1-D CNN, wall s\n")
            print("| runs per program | cold cache | warm cache |")
            print("|---:|---:|---:|")
            sweep_seconds(1, 1, 10, data_dir, f"{tmp}/warmup_cache", f"{tmp}/warmup")  # prepare MNIST-1D
            results["sweep"] = {}
            for per_program in (1, args.seeds):
                cache = f"{tmp}/cache{per_program}"
                times = [sweep_seconds(per_program, args.seeds, args.steps, data_dir, cache, f"{tmp}/{per_program}_{w}")
                         for w in ("cold", "warm")]  # fmt: skip
                results["sweep"][per_program] = times
                print(f"| {per_program} | {times[0]:.1f} | {times[1]:.1f} |", flush=True)
            (one_cold, one_warm), (many_cold, many_warm) = results["sweep"][1], results["sweep"][args.seeds]
            print(
                f"\n--runs_per_program={args.seeds} / =1: {many_cold / one_cold:.2f} cold, "
                f"{many_warm / one_warm:.2f} warm"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
