"""Are identical runs identical, and what does `train.deterministic` cost? Two runs of one config with it off,
two with it on, each pair from the same seed and flags: whether the pair's metrics.jsonl files agree (timing
fields aside), the largest difference between them in any logged value, and each mode's training images/s.

    python benchmarks/determinism.py                     # 1-D CNN on MNIST-1D, ~1 min on 2 CPU cores
    python benchmarks/determinism.py --config=experiments/configs/lenet5_mnist.py --steps=2000 \\
        --data_dir=DATA_DIR --download_dir=DOWNLOAD_DIR  # LeNet-5 on MNIST, the GPU case

On XLA:CPU both pairs agree bit for bit. On a GPU the plain pair may not (reductions and scatters in arbitrary
order, autotuned algorithms): identical commands on an H200 reached 99% on MNIST at epoch 5 once and at epoch 7
another time. The deterministic pair must agree; its images/s against the plain pair's is the price.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: benchmarks.* import from the repository root

import jax  # noqa: E402

from benchmarks.loop import load_config  # noqa: E402
from cnn_jax.compile_cache import enable_compile_cache  # noqa: E402
from cnn_jax.train import read_metrics, train_and_evaluate  # noqa: E402

TIMING = ("steps_per_s", "images_per_s")


def largest_difference(a: list[dict], b: list[dict]) -> float:
    """The largest |a - b| over every logged number of two runs' records (inf when their records differ in shape)."""
    if [sorted(r) for r in a] != [sorted(r) for r in b]:
        return float("inf")
    return max(
        (abs(x[k] - y[k]) for x, y in zip(a, b) for k in x if k not in TIMING and isinstance(x[k], (int, float))),
        default=0.0,
    )


def pair(config, deterministic: bool, workdir: Path) -> dict:
    """Train the config twice in `workdir`/{0,1}: agreement, largest difference, images/s of each run."""
    config.train.deterministic = deterministic
    records = []
    for i in range(2):
        train_and_evaluate(config, workdir / str(i))
        records.append(read_metrics(workdir / str(i)))
    untimed = [[{k: v for k, v in r.items() if k not in TIMING} for r in run] for run in records]
    return {
        "identical": untimed[0] == untimed[1],
        "largest_difference": largest_difference(*records),
        "images_per_s": [[r for r in run if "images_per_s" in r][-1]["images_per_s"] for run in records],
        "final_test_accuracy": [[r for r in run if "test/accuracy" in r][-1]["test/accuracy"] for run in records],
    }


def main():
    enable_compile_cache()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/configs/cnn1d_mnist1d.py")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--data_dir", help="TFDS data directory (default: a temporary one)")
    parser.add_argument("--download_dir", default="", help="raw dataset files as <dir>/<dataset>/<file>")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    args = parser.parse_args()
    print(f"# {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, {args.config}\n")
    print("| train.deterministic | metrics.jsonl identical | largest difference | images/s (run 1, run 2) |")
    print("|---|---|---:|---|")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(args.config)
        config.dataset.data_dir = args.data_dir or str(Path(tmp) / "tfds")
        config.dataset.download_dir = args.download_dir
        config.train.num_steps, config.train.log_every_steps = args.steps, max(1, args.steps // 20)
        for deterministic in (False, True):
            r = results[str(deterministic)] = pair(config, deterministic, Path(tmp) / str(deterministic))
            rates = ", ".join(f"{x:,.0f}" for x in r["images_per_s"])
            print(f"| {deterministic} | {r['identical']} | {r['largest_difference']:.3g} | {rates} |", flush=True)
    plain, deterministic = (sum(results[k]["images_per_s"]) for k in ("False", "True"))
    print(f"\ndeterministic / plain images/s: {deterministic / plain:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
