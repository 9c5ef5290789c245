"""Process wall time to 99% MNIST test accuracy with LeNet-5: cnn_jax's training CLI against the same recipe in PyTorch.

    python benchmarks/time_to_accuracy.py --download_dir=../shared/datasets
    python benchmarks/time_to_accuracy.py --download_dir=../shared/datasets --data_dir=/tmp/tfds --stop_at_target
    python benchmarks/time_to_accuracy.py --download_dir=../shared/datasets --who torch --target 0.992

Both run as child processes, one after the other, so process start, imports, data loading and preparation and
compilation all count: each clock starts just before its child is started.
ours: `python -m experiments.train --config=experiments/configs/lenet5_mnist.py` in a temporary workdir, with
    --config.dataset.download_dir; TFDS prepares MNIST from the raw files into a fresh temporary data directory
    (~25 s on 2 CPU cores) unless --data_dir names one to reuse. Its compilation cache ($CNN_JAX_CACHE_DIR) is a
    fresh empty directory: "ours" compiles every program (a cold cache).
ours_warm: the same command again in a new workdir, after "ours": the data directory as "ours" left it (prepared,
    decoded arrays kept) and every program in the compilation cache.
torch: this file re-invoked as a child with the recipe read from the same config (SGD, momentum 0.9, learning rate
    0.05 with a cosine decay to zero over all steps, weight decay 5e-4 added to the gradient as optax's
    add_decayed_weights does, i.e. torch's SGD weight_decay, batch 128, 10 epochs of 468 steps: the last partial
    batch of each epoch is dropped), the LeNet-5 of benchmarks/torch_nets.py (cnn_jax's lenet5), MNIST read from
    the raw idx files in --download_dir, standardised by the training set's mean and std and held on the device
    (CUDA when torch sees a GPU, else the CPU with one thread per core), one randperm per epoch, the test set
    evaluated after every epoch. PyTorch's default initialisation.
Each child appends one JSON record per evaluation to <workdir>/metrics.jsonl; this script polls both files the
same way, every 50 ms, and takes the time to target as when the first record with test/accuracy >= --target
appeared. "total s" is the whole process (with --stop_at_target: until it exited after being terminated).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: benchmarks.* and experiments.* import from the repository root
from cnn_jax.compile_cache import CACHE_DIR_ENV  # noqa: E402  (imports neither jax nor torch)

CONFIG = "experiments/configs/lenet5_mnist.py"
POLL_S = 0.05
WHO = ("ours", "ours_warm", "torch")


# --- the PyTorch child --------------------------------------------------------------------------------------------


def read_idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(bytearray(f.read()), np.uint8, offset=header)  # writable, as torch wants


def torch_child(download_dir: Path, workdir: Path) -> None:
    """Train cnn_jax's LeNet-5 recipe in PyTorch, appending {"step", "epoch", "test/accuracy"} after every epoch."""
    import torch

    from benchmarks.torch_nets import lenet5
    from experiments.configs import lenet5_mnist

    c = lenet5_mnist.get_config()
    o = c.optimizer
    recipe = (
        c.model.name,
        c.model.options.pool,
        o.name,
        o.schedule,
        o.warmup_steps,
        o.nesterov,
        o.clip_norm,
        c.train.label_smoothing,
        c.train.num_steps,
        c.dataset.augment.crop_padding,
        c.dataset.augment.flip,
    )
    if recipe != ("lenet5", "max", "sgd", "cosine", 0, False, 0.0, 0.0, 0, 0, False):
        raise ValueError(f"{CONFIG} changed to {recipe}: update the PyTorch recipe to match")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(c.seed)

    mnist = download_dir / "mnist"
    pixels = {s: read_idx(mnist / f"{s}-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28) for s in ("train", "t10k")}
    labels = {s: read_idx(mnist / f"{s}-labels-idx1-ubyte.gz", 8).astype(np.int64) for s in ("train", "t10k")}
    mean, std = (float(f(pixels["train"] / 255)) for f in (np.mean, np.std))
    x, y = ({s: torch.from_numpy(a[s]).to(device) for s in a} for a in (pixels, labels))
    x = {s: (v.float() / 255 - mean) / std for s, v in x.items()}

    net = lenet5(torch, 10).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=o.learning_rate, momentum=o.momentum, weight_decay=o.weight_decay)
    batch, n = c.train.batch_size, len(y["train"])
    per_epoch = n // batch
    total = per_epoch * c.train.num_epochs
    # optax.cosine_decay_schedule(lr, total): step k trains with lr * (1 + cos(pi k / total)) / 2.
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, total) / total)))
    cross_entropy = torch.nn.functional.cross_entropy
    for epoch in range(1, c.train.num_epochs + 1):
        net.train()
        order = torch.randperm(n, device=device)
        for i in range(per_epoch):
            rows = order[i * batch : (i + 1) * batch]
            loss = cross_entropy(net(x["train"][rows]), y["train"][rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
        net.eval()
        with torch.no_grad():
            eval_batch = c.train.eval_batch_size
            correct = sum(
                int((net(x["t10k"][i : i + eval_batch]).argmax(1) == y["t10k"][i : i + eval_batch]).sum())
                for i in range(0, len(y["t10k"]), eval_batch)
            )
        record = {"step": epoch * per_epoch, "epoch": epoch, "test/accuracy": correct / len(y["t10k"])}
        with (workdir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


# --- the parent: start a child, watch its metrics -----------------------------------------------------------------


def new_records(path: Path, offset: int) -> tuple[list[dict], int]:
    """The complete JSON lines of `path` past byte `offset`, and the offset after them."""
    if not path.exists():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        text = f.read()
    complete = text[: text.rfind(b"\n") + 1]  # a record being written has no newline yet
    return [json.loads(line) for line in complete.splitlines()], offset + len(complete)


def race(who: str, command: list[str], workdir: Path, target: float, stop_at_target: bool, env: dict) -> dict:
    """Run `command`, polling workdir/metrics.jsonl; seconds to the first test/accuracy >= target, and in all."""
    log_path = workdir.parent / f"{who}.log"
    result = {"who": who, "seconds_to_target": None, "accuracy_at_target": None, "final_accuracy": None}
    offset, stopped = 0, False
    with log_path.open("w") as log:
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        while True:
            finished = child.poll() is not None  # before reading, so the last records are not missed
            records, offset = new_records(workdir / "metrics.jsonl", offset)
            for record in records:
                if "test/accuracy" not in record:
                    continue
                result["final_accuracy"] = record["test/accuracy"]
                if result["seconds_to_target"] is None and record["test/accuracy"] >= target:
                    result["seconds_to_target"] = time.perf_counter() - start
                    result["accuracy_at_target"], result["epoch_at_target"] = record["test/accuracy"], record["epoch"]
            if finished:
                break
            if stop_at_target and result["seconds_to_target"] is not None and not stopped:
                child.send_signal(signal.SIGTERM)  # ours checkpoints and stops at the next step
                stopped = True
            time.sleep(POLL_S)
        result["total_seconds"] = time.perf_counter() - start
    if child.returncode != 0 and not stopped:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{who} exited with status {child.returncode}; the end of its output:\n{tail}")
    return result


def machine_line() -> str:
    """Imported only now: jax must not hold the GPU while the children run."""
    from benchmarks.train_step import machine_line as train_step_machine_line
    from cnn_jax.provenance import package_versions

    try:
        import torch
    except ImportError:
        return train_step_machine_line(None, None)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    return train_step_machine_line(torch, device) + f"; tensorflow-datasets {package_versions()['tensorflow-datasets']}"


def fmt(value: float | None, spec: str) -> str:
    return "not reached" if value is None else format(value, spec)


def print_table(results: list[dict], target: float) -> None:
    print(
        f"| who | seconds to {target:.2%} | accuracy then (epoch) | total s | final accuracy |\n"
        "|---|---:|---:|---:|---:|"
    )
    for r in results:
        then = "" if r["accuracy_at_target"] is None else f"{r['accuracy_at_target']:.2%} ({r['epoch_at_target']:g})"
        print(
            f"| {r['who']} | {fmt(r['seconds_to_target'], '.1f')} | {then} | {r['total_seconds']:.1f} "
            f"| {fmt(r['final_accuracy'], '.2%')} |"
        )
    by = {r["who"]: r for r in results}
    if {"ours", "torch"} <= set(by) and by["ours"]["seconds_to_target"] and by["torch"]["seconds_to_target"]:
        print(
            f"\nours/torch: {by['ours']['seconds_to_target'] / by['torch']['seconds_to_target']:.2f}x the time to "
            f"target, {by['ours']['total_seconds'] / by['torch']['total_seconds']:.2f}x the total time"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--download_dir",
        type=Path,
        default=Path("../shared/datasets"),
        help="raw downloads as <dir>/mnist/*-idx*-ubyte.gz",
    )
    parser.add_argument(
        "--data_dir",
        type=Path,
        help="a TFDS data directory to reuse (default: a fresh one, so ours prepares MNIST and the preparation counts)",
    )
    parser.add_argument("--target", type=float, default=0.99, help="test accuracy to reach")
    parser.add_argument("--stop_at_target", action="store_true", help="terminate each child once it reaches target")
    parser.add_argument("--who", nargs="+", choices=WHO, default=list(WHO), help="in this order")
    parser.add_argument(
        "--ours_flag",
        action="append",
        default=[],
        help="one more flag for ours' CLI (repeatable), e.g. --ours_flag=--config.train.dispatch_form=per_step",
    )
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    parser.add_argument("--_torch_child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    download_dir = args.download_dir.resolve()
    if args._torch_child:
        torch_child(download_dir, args._workdir)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="time_to_accuracy_") as tmp:
        data_dir = (args.data_dir or Path(tmp) / "tfds").resolve()
        ours = [
            sys.executable,
            "-m",
            "experiments.train",
            f"--config={CONFIG}",
            f"--config.dataset.download_dir={download_dir}",
            f"--config.dataset.data_dir={data_dir}",
            *args.ours_flag,
        ]
        commands = {
            "ours": [*ours, f"--workdir={tmp}/ours/run"],
            "ours_warm": [*ours, f"--workdir={tmp}/ours_warm/run"],
            "torch": [
                sys.executable,
                str(Path(__file__).resolve()),
                "--_torch_child",
                f"--_workdir={tmp}/torch/run",
                f"--download_dir={download_dir}",
            ],
        }
        for who in args.who:
            workdir = Path(tmp) / who / "run"
            workdir.mkdir(parents=True)
            env = {**os.environ, CACHE_DIR_ENV: f"{tmp}/xla"}  # fresh for "ours", then kept for "ours_warm"
            results.append(race(who, commands[who], workdir, args.target, args.stop_at_target, env))
            print(json.dumps(results[-1]), file=sys.stderr)
    machine = machine_line()
    print(machine + "\n")
    print_table(results, args.target)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine, "target": args.target, "results": results}, out, indent=2)


if __name__ == "__main__":
    main()
