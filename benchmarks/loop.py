"""Does the training loop keep the device fed? Training images/s of the whole loop against its bare step.

    python benchmarks/loop.py                      # 1-D CNN on MNIST-1D, batch 100 (~1 min on 2 CPU cores)
    python benchmarks/loop.py --config=experiments/configs/lenet5_mnist.py --batch=128 \\
        --download_dir=../shared/datasets          # LeNet-5 on MNIST, the GPU goal's case

"bare step": the loop's own per-device step (`runner.train_step`, one dispatch per step) on one batch
already on the device, dispatched back to back and synchronised once per timed chunk. "loop": the
whole `train_and_evaluate` over `--steps` steps (the evaluation only at the end), its images/s as the
loop reports it (from the first log record on, so compilation is excluded), for several settings of
`train.data_placement` and `train.steps_per_dispatch`, the defaults first. The ratio loop / bare step
is the fraction of the step's speed the loop delivers; `host, 1` is the loop as it was before
dispatches of several steps and resident data (a host gather and transfer every step).
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

from cnn_jax.train import read_metrics, train_and_evaluate
from cnn_jax.train.feed import PLACEMENTS
from cnn_jax.train.loop import build_runner, load_data
from cnn_jax.train.parallel import DISPATCH_FORMS
from cnn_jax.train.state import create_state

REPO = Path(__file__).resolve().parents[1]
SETTINGS = [
    ("device", 16, "auto"),
    ("device", 64, "auto"),
    ("device", 1, "auto"),
    ("host", 16, "auto"),
    ("host", 1, "auto"),
]


def setting(text: str) -> tuple[str, int, str]:
    """'device:16' -> ("device", 16, "auto"); 'device:16:scan' -> ("device", 16, "scan"): a data placement,
    steps per dispatch and dispatch form."""
    parts = text.split(":") + (["auto"] if text.count(":") == 1 else [])
    placement, k, form = parts if len(parts) == 3 else ("", "", "")
    if placement not in PLACEMENTS or not k.isdigit() or int(k) < 1 or form not in DISPATCH_FORMS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected PLACEMENT:K[:FORM] with PLACEMENT in {PLACEMENTS}, K >= 1, FORM in {DISPATCH_FORMS}"
        )
    return placement, int(k), form


def load_config(path: str):
    spec = importlib.util.spec_from_file_location("bench_config", REPO / path if not Path(path).is_absolute() else path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def bare_step_images_per_s(config, seconds: float = 3.0, repeats: int = 5) -> float:
    """Median images/s of the loop's own step on one resident batch, no host work between steps."""
    data = load_data(config)
    model, tx, runner = build_runner(config, data, 10**6, jax.devices())
    batch = runner.put_batch(data.train.inputs[: config.train.batch_size], data.train.labels[: config.train.batch_size])
    state = runner.put_state(jax.device_get(create_state(model, tx, data.input_shape, config.seed)))
    for _ in range(3):
        state, metrics = runner.train_step(state, *batch)
    jax.block_until_ready(metrics)
    start, chunk = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / repeats / 4:  # size the chunks
        state, metrics = runner.train_step(state, *batch)
        chunk += 1
    jax.block_until_ready(metrics)
    chunk = max(1, int(chunk * 4 * (seconds / repeats) / max(time.perf_counter() - start, 1e-9) / 4))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(chunk):
            state, metrics = runner.train_step(state, *batch)
        jax.block_until_ready(metrics)
        times.append((time.perf_counter() - start) / chunk)
    return config.train.batch_size / float(np.median(times))


def loop_images_per_s(config, workdir: Path) -> float:
    train_and_evaluate(config, workdir)
    return [r for r in read_metrics(workdir) if "images_per_s" in r][-1]["images_per_s"]


def main():
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
        metavar="PLACEMENT:K[:FORM]",
        help="loop settings to time, e.g. device:16 device:16:scan host:1 (default: %(default)s)",
    )
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(args.config)
        config.dataset.data_dir = args.data_dir or str(Path(tmp) / "tfds")
        config.dataset.download_dir = args.download_dir
        config.train.batch_size, config.train.num_steps = args.batch, args.steps
        config.train.log_every_steps = max(1, args.steps // 10)
        config.train.eval_every_epochs = 10**6  # evaluate only at the end: this measures training
        config.train.checkpoint_every_steps = args.steps
        bare = bare_step_images_per_s(config)
        rows = []
        for placement, k, form in args.settings:
            config.train.data_placement, config.train.steps_per_dispatch = placement, k
            config.train.dispatch_form = form
            loop = loop_images_per_s(config, Path(tmp) / f"{placement}_{k}_{form}")
            rows.append(
                {
                    "placement": placement,
                    "steps_per_dispatch": k,
                    "form": form,
                    "loop_img_s": loop,
                    "ratio": loop / bare,
                }
            )
    device = jax.devices()[0]
    print(
        f"# {args.config}, batch {args.batch}, {args.steps} steps; {len(jax.devices())} x {device.device_kind} "
        f"({jax.default_backend()}), jax {jax.__version__}\n"
    )
    print(f"bare step: {bare:.0f} images/s\n")
    print("| data placement | steps per dispatch | dispatch form | loop img/s | loop / bare step |")
    print("|---|---:|---|---:|---:|")
    for r in rows:
        print(
            f"| {r['placement']} | {r['steps_per_dispatch']} | {r['form']} | {r['loop_img_s']:.0f} "
            f"| **{r['ratio']:.2f}** |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"bare_img_s": bare, "loop": rows}, indent=2))


if __name__ == "__main__":
    main()
