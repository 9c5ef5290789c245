"""Where a train step's compile time goes: tracing, lowering and XLA's compilation, ours against plain flax.

    python benchmarks/compile_time.py                      # CPU cases (lenet5, resnet20 float32)
    python benchmarks/compile_time.py --cases gpu --models lenet5 resnet20

For each case of benchmarks/train_step.py and each JAX variant (ours: the loop's step; flax: plain
flax.linen + optax), the seconds of `jitted.trace(...)`, `.lower()` and `.compile()` for the default
backend, each from a fresh jitted function and without the persistent compilation cache (the median of
--repeats), and what the lowered program holds: its StableHLO lines and the ops that differ between the
two (`stablehlo.case` from `lax.platform_dependent`, all-reduces from the step's `pmean`s, pads, while
loops). --export PLATFORM also counts them in the program exported for PLATFORM (e.g. cuda), which shows on
the CPU what a GPU would compile.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: benchmarks.* import from the repository root

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.train_step import CASES, Case, ours, plain_flax  # noqa: E402

VARIANTS = {"ours": ours, "flax": plain_flax}
OPS = ("stablehlo.case", "stablehlo.all_reduce", "stablehlo.pad", "stablehlo.while", "stablehlo.convolution")


def op_counts(text: str) -> dict[str, int]:
    """How many of OPS a StableHLO module's text holds, and its number of lines."""
    return {"lines": text.count("\n"), **{op.split(".")[1]: len(re.findall(rf"\b{op}\b", text)) for op in OPS}}


def phases(variant: str, case: Case, repeats: int) -> dict[str, float]:
    """Median seconds of trace, lower and compile of the variant's step, each repeat from a fresh jit."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (case.batch, *case.shape), np.uint8)
    y = rng.integers(0, case.classes, case.batch).astype(np.int32)
    times = {"trace": [], "lower": [], "compile": []}
    for _ in range(repeats):
        bench = VARIANTS[variant](case, x, y)  # new functions: nothing is reused from the last repeat
        start = time.perf_counter()
        traced = bench.jitted.trace(bench.state, *bench.args)
        times["trace"].append(time.perf_counter() - start)
        start = time.perf_counter()
        lowered = traced.lower()
        times["lower"].append(time.perf_counter() - start)
        start = time.perf_counter()
        lowered.compile()
        times["compile"].append(time.perf_counter() - start)
    result = {k: float(np.median(v)) for k, v in times.items()}
    result.update(op_counts(lowered.as_text()))
    return result, bench


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", choices=list(CASES), default="cpu")
    parser.add_argument("--models", nargs="+", help="only the cases of these models")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--export", metavar="PLATFORM", help="also count the ops of the step exported for PLATFORM")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    args = parser.parse_args()
    cases = [c for c in CASES[args.cases] if not args.models or c.model in args.models]
    device = jax.devices()[0]
    print(f"# {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}\n")
    columns = ["trace", "lower", "compile", "lines", *(op.split(".")[1] for op in OPS)]
    print("| case | variant | " + " | ".join(columns) + " |")
    print("|---|---|" + "---:|" * len(columns))
    rows = []
    for case in cases:
        for variant in VARIANTS:
            result, bench = phases(variant, case, args.repeats)
            if args.export:
                exported = jax.export.export(bench.jitted, platforms=[args.export])(bench.state, *bench.args)
                result["export"] = op_counts(exported.mlir_module())
            rows.append({"case": dataclasses.asdict(case), "variant": variant, **result})
            cells = [f"{result[c]:.2f}" if c in ("trace", "lower", "compile") else str(result[c]) for c in columns]
            label = f"{case.model} {case.dtype} {case.batch}"
            print(f"| {label} | {variant} | " + " | ".join(cells) + " |", flush=True)
            if args.export:
                exported = result["export"]
                print(f"| {label} | {variant}, exported for {args.export} | | | | "
                      + " | ".join(str(exported[c]) for c in columns[3:]) + " |", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
