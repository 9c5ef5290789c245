"""Does the training loop keep the device fed? Training images/s of the whole loop against its bare step.

    python benchmarks/loop.py                      # 1-D CNN on MNIST-1D, batch 100 (~1 min on 2 CPU cores)
    python benchmarks/loop.py --config=experiments/configs/lenet5_mnist.py --batch=128 \\
        --download_dir=../shared/datasets          # LeNet-5 on MNIST, the GPU goal's case

"bare step": the loop's own per-device step (`runner.train_step`, one dispatch per step) on one batch
already on the device, dispatched back to back and synchronised once per timed chunk. "loop": the
whole `train_and_evaluate` over `--steps` steps (the evaluation only at the end), its images/s as the
loop reports it (from the first log record on, so compilation is excluded), for several settings of
`train.data_placement`, `train.steps_per_dispatch` and checkpointing, the defaults first. Checkpointing:
"default" (the config's: in the background, by time), "end" (only after the last step, which the rate does not
include) or "epoch" (a checkpoint at every epoch's end, the old default: 40 steps on MNIST-1D). The ratio
loop / bare step is the fraction of the step's speed the loop delivers; `host, 1` is the loop as it was
before dispatches of several steps and resident data (a host gather and transfer every step).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from cnn_jax.compile_cache import enable_compile_cache
from cnn_jax.data import steps_per_epoch
from cnn_jax.train import read_metrics, train_and_evaluate
from cnn_jax.train.feed import PLACEMENTS
from cnn_jax.train.loop import load_data
from cnn_jax.train.parallel import DISPATCH_FORMS
from cnn_jax.train.program import build_runner
from cnn_jax.train.run_values import run_values

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTING = ("default", "end", "epoch")
SETTINGS = [
    ("device", 16, "auto", "default"),
    ("device", 16, "auto", "end"),
    ("device", 16, "auto", "epoch"),
    ("device", 64, "auto", "end"),
    ("device", 1, "auto", "end"),
    ("host", 16, "auto", "end"),
    ("host", 1, "auto", "end"),
]


def setting(text: str) -> tuple[str, int, str, str]:
    """'device:16' -> ("device", 16, "auto", "default"); 'device:16:scan:end' -> ("device", 16, "scan", "end"): a
    data placement, steps per dispatch, dispatch form and checkpointing."""
    parts = text.split(":")
    parts += ["auto", "default"][len(parts) - 2 :]
    placement, k, form, checkpoints = parts if len(parts) == 4 else ("", "", "", "")
    if (
        placement not in PLACEMENTS
        or not k.isdigit()
        or int(k) < 1
        or form not in DISPATCH_FORMS
        or checkpoints not in CHECKPOINTING
    ):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected PLACEMENT:K[:FORM[:CHECKPOINTS]] with PLACEMENT in {PLACEMENTS}, K >= 1, "
            f"FORM in {DISPATCH_FORMS}, CHECKPOINTS in {CHECKPOINTING}"
        )
    return placement, int(k), form, checkpoints


def load_config(path: str):
    spec = importlib.util.spec_from_file_location("bench_config", REPO / path if not Path(path).is_absolute() else path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def bare_step_images_per_s(config, seconds: float = 3.0, repeats: int = 5) -> float:
    """Median images/s of the loop's own step on one resident batch, no host work between steps."""
    data = load_data(config)
    program, runner = build_runner(config, data, jax.devices())
    batch = runner.put_batch(data.train.inputs[: config.train.batch_size], data.train.labels[: config.train.batch_size])
    state, values = runner.put_replicated((jax.device_get(program.init(config.seed)), run_values(config)))
    for _ in range(3):
        state, metrics = runner.train_step(state, values, *batch)
    jax.block_until_ready(metrics)
    start, chunk = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / repeats / 4:  # size the chunks
        state, metrics = runner.train_step(state, values, *batch)
        chunk += 1
    jax.block_until_ready(metrics)
    chunk = max(1, int(chunk * 4 * (seconds / repeats) / max(time.perf_counter() - start, 1e-9) / 4))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(chunk):
            state, metrics = runner.train_step(state, values, *batch)
        jax.block_until_ready(metrics)
        times.append((time.perf_counter() - start) / chunk)
    return config.train.batch_size / float(np.median(times))


def loop_images_per_s(config, workdir: Path) -> float:
    train_and_evaluate(config, workdir)
    return [r for r in read_metrics(workdir) if "images_per_s" in r][-1]["images_per_s"]


def main():
    enable_compile_cache()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/configs/cnn1d_mnist1d.py")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--data_dir", help="TFDS data directory (default: a temporary one)")
    parser.add_argument("--download_dir", default="", help="raw dataset files as <dir>/<dataset>/<file>")
    parser.add_argument(
        "--settings",
        nargs="+",
        type=setting,
        default=SETTINGS,
        metavar="PLACEMENT:K[:FORM[:CHECKPOINTS]]",
        help="loop settings to time, e.g. device:16 device:16:scan:end host:1 (default: %(default)s)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the table gives their median")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(args.config)
        config.dataset.data_dir = args.data_dir or str(Path(tmp) / "tfds")
        config.dataset.download_dir = args.download_dir
        config.train.batch_size, config.train.num_steps = args.batch, args.steps
        config.train.log_every_steps = max(1, args.steps // 10)
        config.train.eval_every_epochs = 10**6  # evaluate only at the end: this measures training
        bare = bare_step_images_per_s(config)
        per_epoch = steps_per_epoch(len(load_data(config).train), args.batch)
        every = {"default": config.train.checkpoint_every_steps, "end": args.steps, "epoch": per_epoch}
        rows = []
        for placement, k, form, checkpoints in args.settings:
            config.train.data_placement, config.train.steps_per_dispatch = placement, k
            config.train.dispatch_form, config.train.checkpoint_every_steps = form, every[checkpoints]
            runs = [
                loop_images_per_s(config, Path(tmp) / f"{placement}_{k}_{form}_{checkpoints}_{i}")
                for i in range(args.repeats)
            ]
            loop = float(np.median(runs))
            rows.append(
                {
                    "placement": placement,
                    "steps_per_dispatch": k,
                    "form": form,
                    "checkpoints": checkpoints,
                    "loop_img_s": loop,
                    "ratio": loop / bare,
                    "ratios": [r / bare for r in runs],
                }
            )
    device = jax.devices()[0]
    print(
        f"# {args.config}, batch {args.batch}, {args.steps} steps; {len(jax.devices())} x {device.device_kind} "
        f"({jax.default_backend()}), jax {jax.__version__}\n"
    )
    print(f"bare step: {bare:.0f} images/s\n")
    print(f"Loop: the median of {args.repeats} runs per setting.\n")
    print(
        "| data placement | steps per dispatch | dispatch form | checkpoints | loop img/s | loop / bare step "
        "| each run |"
    )
    print("|---|---:|---|---|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['placement']} | {r['steps_per_dispatch']} | {r['form']} | {r['checkpoints']} "
            f"| {r['loop_img_s']:.0f} | **{r['ratio']:.2f}** | {' / '.join(f'{v:.2f}' for v in r['ratios'])} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"bare_img_s": bare, "loop": rows}, indent=2))


if __name__ == "__main__":
    main()
