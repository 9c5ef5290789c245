"""Speed and memory of cnn_jax.ops against the natural alternatives, as ratios measured in one run.

    python benchmarks/ops.py                 # everything (~5 min on 2 CPU cores)
    python benchmarks/ops.py --only tiled    # one section: tiled, local, conv, table, blur, norm
    python benchmarks/ops.py --only tiled --tiled_shape gpu   # tiled_conv at N=256 32x32 64->64

Timings are medians over repeated calls of jitted functions after compilation.
fwd+bwd is value_and_grad of sum(y**2) with respect to input and kernel. Peak memory
is the peak RSS of a fresh process that runs the variant, minus that of a fresh
process that imports the same libraries and makes the same inputs.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import numpy as np


def median_ms(fn, *args, repeats: int | None = None) -> float:
    """Median wall time of fn(*args) in ms; by default enough repeats for ~0.5 s (10 to 200)."""
    import jax

    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    repeats = repeats or min(200, max(10, int(0.5 / (time.perf_counter() - start))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def fwd_bwd(f):
    import jax
    import jax.numpy as jnp

    return jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(f(x, w) ** 2), argnums=(0, 1)))


# --- the alternatives -------------------------------------------------------------------------


def per_phase_tiled(x, w, tile, padding):
    """The plain decomposition: one strided convolution per tile phase, then interleave."""
    import jax.numpy as jnp

    from cnn_jax.ops.conv import conv
    from cnn_jax.ops.shapes import conv_geometry

    geo = conv_geometry(x.shape[1:3], w.shape[2:4], 1, padding)
    (lo_h, hi_h), (lo_w, hi_w) = geo.padding
    q = [-(-o // tile) for o in geo.out_sizes]
    extra = [qi * tile - o for qi, o in zip(q, geo.out_sizes)]
    xp = jnp.pad(x, ((0, 0), (lo_h, hi_h + extra[0]), (lo_w, hi_w + extra[1]), (0, 0)))
    rows = [
        jnp.stack([conv(xp[:, r:, s:], w[r, s], stride=tile)[:, : q[0], : q[1]] for s in range(tile)], 3)
        for r in range(tile)
    ]
    y = jnp.stack(rows, 2).reshape(x.shape[0], q[0] * tile, q[1] * tile, w.shape[-1])
    return y[:, : geo.out_sizes[0], : geo.out_sizes[1]]


def masked_tiled(x, w, tile, padding):
    """The naive form: t*t full convolutions, each output position selecting its phase."""
    import jax.numpy as jnp

    from cnn_jax.ops.conv import conv

    kh, kw, cin, cout = w.shape[2:]
    full = conv(x, w.transpose(2, 3, 4, 0, 1, 5).reshape(kh, kw, cin, -1), padding=padding)
    n, oh, ow, _ = full.shape
    full = full.reshape(n, oh, ow, tile, tile, cout)
    rows = jnp.arange(oh) % tile
    cols = jnp.arange(ow) % tile
    return full[:, jnp.arange(oh)[:, None], jnp.arange(ow)[None, :], rows[:, None], cols[None, :]]


# --- sections ---------------------------------------------------------------------------------


# tiled_conv's shapes (N, H=W, C_in=C_out): one that suits 2 CPU cores, one that fills a GPU.
TILED_SHAPES = {"cpu": (64, 28, 32), "gpu": (256, 32, 64)}


def tiled_section(rows, shape: str):
    import jax

    from cnn_jax import ops

    (n, size, c), k = TILED_SHAPES[shape], 3
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (n, size, size, c))
    w = jax.random.normal(key, (k, k, c, c)) * 0.1
    base = median_ms(fwd_bwd(lambda x, w: ops.conv(x, w, padding="SAME")), x, w)
    base_fwd = median_ms(jax.jit(lambda x, w: ops.conv(x, w, padding="SAME")), x, w)
    rows.append(("tiled", f"conv (reference) N={n} {size}x{size} {c}->{c} 3x3 SAME", base, 1.0))
    rows.append(("tiled", "conv (reference) forward only", base_fwd, 1.0))
    for tile in (2, 4, 8):
        wt = jax.random.normal(key, (tile, tile, k, k, c, c)) * 0.1
        fwd = median_ms(jax.jit(lambda x, w: ops.tiled_conv(x, w, tile=tile, padding="SAME")), x, wt)
        rows.append(("tiled", f"t={tile} cnn_jax.tiled_conv forward only", fwd, fwd / base_fwd))
        for name, f in [
            ("cnn_jax.tiled_conv", lambda x, w: ops.tiled_conv(x, w, tile=tile, padding="SAME")),
            ("per-phase strided convs", lambda x, w: per_phase_tiled(x, w, tile, "SAME")),
            ("t*t full convs + select", lambda x, w: masked_tiled(x, w, tile, "SAME")),
        ]:
            ms = median_ms(fwd_bwd(f), x, wt)
            rows.append(("tiled", f"t={tile} {name}", ms, ms / base))


def local_section(rows, with_memory: bool):
    for n, size, c in [(64, 28, 32), (64, 32, 64)]:
        timings = {v: json.loads(_run_child("local", v, n, size, c, time_it=True))["ms"] for v in ("ours", "flax")}
        for variant, ms in timings.items():
            label = f"N={n} {size}x{size} {c}->{c} 3x3 VALID " + (
                "cnn_jax.local_conv" if variant == "ours" else "flax.linen.ConvLocal"
            )
            rows.append(("local", label, ms, ms / timings["flax"]))
        if with_memory:
            empty = json.loads(_run_child("local", "none", n, size, c))["peak_mb"]
            for variant in ("ours", "flax"):
                result = json.loads(_run_child("local", variant, n, size, c))
                name = "cnn_jax" if variant == "ours" else "flax"
                rows.append(
                    (
                        "local-mem",
                        f"N={n} {size}x{size} {c}->{c} {name}: peak RSS above an empty process (MB)",
                        result["peak_mb"] - empty,
                        float("nan"),
                    )
                )
                rows.append(
                    (
                        "local-mem",
                        f"N={n} {size}x{size} {c}->{c} {name}: XLA temporary buffers (MB)",
                        result["temp_mb"],
                        float("nan"),
                    )
                )


def conv_section(rows):
    import flax.linen as flax_nn
    import jax

    from cnn_jax import ops

    try:
        import torch

        torch.set_num_threads(max(1, len(__import__("os").sched_getaffinity(0))))
    except ImportError:
        torch = None
    key = jax.random.PRNGKey(0)
    shapes = [
        (64, 28, 32, 32, 3, "SAME"),
        (64, 28, 32, 32, 3, "VALID"),
        (128, 32, 16, 16, 3, "VALID"),
        (128, 14, 6, 16, 5, "VALID"),
        (128, 32, 16, 32, 3, "SAME"),
    ]
    for n, size, cin, cout, k, padding in shapes:
        x = jax.random.normal(key, (n, size, size, cin))
        w = jax.random.normal(key, (k, k, cin, cout)) * 0.1
        layer = flax_nn.Conv(cout, (k, k), padding=padding, use_bias=False)
        ours = lambda x, w: ops.conv(x, w, padding=padding)
        theirs = lambda x, w: layer.apply({"params": {"kernel": w}}, x)
        y = ours(x, w)
        g = jax.random.normal(key, y.shape)
        shape = f"N={n} {size}x{size} {cin}->{cout} {k}x{k} {padding}"
        for part in ("fwd", "dx", "dw"):
            ms = {name: median_ms(_part(f, part), x, w, g) for name, f in (("cnn_jax", ours), ("flax", theirs))}
            if torch is not None:
                ms["torch"] = _torch_ms(torch, x, w, g, padding, part)
            for name, value in ms.items():
                rows.append(("conv", f"{shape} {part} {name}", value, value / ms["flax"]))


def table_section(rows):
    """LeNet-5's C3 connection table (16 maps, each reading 3, 4 or 6 of 6 input maps), fwd+bwd at batch 100,
    four ways: one convolution with the table as a kernel mask, one convolution of the 1,500 connected weights
    gathered into the kernel (the model's form: `nn.connected_kernel`), one convolution per map on its
    gathered inputs, and one grouped convolution per fan-in."""
    import jax
    import jax.numpy as jnp

    from cnn_jax import ops
    from cnn_jax.models.lenet import C3_CONNECTIONS, C3_TABLE
    from cnn_jax.nn import connected_kernel

    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (100, 14, 14, 6))
    dense = jax.random.normal(key, (5, 5, 6, 16)) * 0.1
    mask = jnp.asarray(C3_CONNECTIONS, jnp.float32)
    connected = dense.reshape(5, 5, -1)[..., C3_CONNECTIONS.ravel()]  # the 1,500 weights LeNet-5 holds
    fan_ins = {k: [j for j, t in enumerate(C3_TABLE) if len(t) == k] for k in sorted({len(t) for t in C3_TABLE})}

    def per_map(x, w):
        return jnp.concatenate(
            [ops.conv(x[..., list(t)], w[:, :, list(t), j : j + 1]) for j, t in enumerate(C3_TABLE)], -1
        )

    def grouped(x, w):
        outs = []
        for maps in fan_ins.values():
            inputs = [i for j in maps for i in C3_TABLE[j]]
            kernel = jnp.concatenate([w[:, :, list(C3_TABLE[j]), j : j + 1] for j in maps], -1)
            outs.append(ops.conv(x[..., inputs], kernel, groups=len(maps)))
        return jnp.concatenate(outs, -1)

    variants = {
        "masked": (lambda x, w: ops.conv(x, w * mask), dense),
        "gathered": (lambda x, w: ops.conv(x, connected_kernel(w, C3_CONNECTIONS)), connected),
        "per map": (per_map, dense),
        "grouped by fan-in": (grouped, dense),
    }
    ms = {name: median_ms(fwd_bwd(f), x, w) for name, (f, w) in variants.items()}
    for name, value in ms.items():
        rows.append(("table", f"LeNet-5 C3, N=100 14x14 6->16 5x5, fwd+bwd, {name}", value, value / ms["masked"]))


def blur_section(rows):
    """ops.blur_pool (a weighted sum of strided slices per axis) against the same blur as one depthwise
    convolution, and max_pool as the cost of a plain pooling, fwd+bwd at LeNet-5's first pooling shape."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    from cnn_jax import ops

    x = jax.random.normal(jax.random.PRNGKey(0), (128, 28, 28, 6))

    def depthwise(x, size):
        taps = ops.binomial_filter(size)
        kernel = np.broadcast_to(np.outer(taps, taps)[..., None, None], (size, size, 1, x.shape[-1]))
        lo, hi = (size - 1) // 2, size // 2
        x = jnp.pad(x, [(0, 0), (lo, hi), (lo, hi), (0, 0)], mode="reflect")
        return lax.conv_general_dilated(
            x,
            jnp.asarray(kernel, x.dtype),
            (2, 2),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=x.shape[-1],
        )

    def grad_ms(f):
        return median_ms(jax.jit(jax.value_and_grad(lambda x: jnp.sum(f(x) ** 2))), x)

    base = grad_ms(lambda x: ops.max_pool(x, 2))
    rows.append(("blur", "max_pool 2x2 stride 2, N=128 28x28x6 (reference)", base, 1.0))
    for size in (3, 5):
        for name, f in [
            ("cnn_jax.blur_pool", lambda x: ops.blur_pool(x, size)),
            ("depthwise conv", lambda x: depthwise(x, size)),
        ]:
            value = grad_ms(f)
            rows.append(("blur", f"blur {size} stride 2, {name}", value, value / base))


def norm_section(rows):
    """Training-mode BatchNorm fwd+bwd: ops.batch_norm_train (one read for the statistics, shifted by a strided
    subsample's mean) against the same normalisation with two-pass statistics (a second read, for the squared
    deviations) and flax's nn.BatchNorm (E[x^2] - E[x]^2), at ResNet-20's first stage (N=128 32x32x16)."""
    import flax.linen as fnn
    import jax
    import jax.numpy as jnp

    from cnn_jax import ops

    x = jax.random.normal(jax.random.PRNGKey(0), (128, 32, 32, 16)) + 3.0
    scale, bias, state = jnp.ones(16), jnp.zeros(16), (jnp.zeros(16), jnp.ones(16))

    def two_pass(x, scale, bias):
        mean = x.mean((0, 1, 2))
        return ops.batch_norm(x, mean, jnp.square(x - mean).mean((0, 1, 2)), scale, bias)

    flax_norm = fnn.BatchNorm(use_running_average=False)
    flax_vars = flax_norm.init(jax.random.PRNGKey(0), x)

    def flax_bn(x, scale, bias):
        variables = {"params": {"scale": scale, "bias": bias}, "batch_stats": flax_vars["batch_stats"]}
        return flax_norm.apply(variables, x, mutable=["batch_stats"])[0]

    def grad_ms(f):
        return median_ms(jax.jit(jax.value_and_grad(lambda *a: jnp.sum(f(*a) ** 2), argnums=(0, 1, 2))), x, scale, bias)

    base = grad_ms(lambda x, scale, bias: ops.batch_norm_train(x, scale, bias, *state)[0])
    rows.append(("norm", "cnn_jax batch_norm_train, N=128 32x32x16", base, 1.0))
    for name, f in [("two-pass statistics", two_pass), ("flax nn.BatchNorm", flax_bn)]:
        value = grad_ms(f)
        rows.append(("norm", name, value, value / base))


def _part(f, part):
    import jax

    if part == "fwd":
        return jax.jit(lambda x, w, g: f(x, w))
    index = 0 if part == "dx" else 1
    return jax.jit(lambda x, w, g: jax.vjp(f, x, w)[1](g)[index])


def _torch_ms(torch, x, w, g, padding, part):
    xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy(), requires_grad=part == "dx")
    wt = torch.tensor(np.asarray(w).transpose(3, 2, 0, 1).copy(), requires_grad=part == "dw")
    gt = torch.tensor(np.asarray(g).transpose(0, 3, 1, 2).copy())
    pad = padding.lower()

    def run():
        if part == "fwd":
            with torch.no_grad():
                return torch.nn.functional.conv2d(xt, wt, padding=pad)
        y = torch.nn.functional.conv2d(xt, wt, padding=pad)
        return torch.autograd.grad(y, xt if part == "dx" else wt, gt)[0]

    run()
    times = []
    for _ in range(10):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


# --- fresh-process measurements ---------------------------------------------------------------


def _run_child(section, variant, n, size, c, time_it=False):
    cmd = [sys.executable, __file__, "--child", json.dumps([section, variant, n, size, c, time_it])]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]


def _peak_rss_mb() -> float:
    # VmHWM belongs to this process image; getrusage's ru_maxrss would carry the parent's peak across exec.
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _child(spec):
    section, variant, n, size, c, time_it = json.loads(spec)
    import flax.linen as flax_nn
    import jax

    from cnn_jax import ops

    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (n, size, size, c))
    out = size - 2
    if variant == "ours":
        w = jax.random.normal(key, (out, out, 3, 3, c, c)) * 0.05
        step = fwd_bwd(ops.local_conv)
    elif variant == "flax":
        layer = flax_nn.ConvLocal(c, (3, 3), padding="VALID", use_bias=False)
        w = jax.random.normal(key, (out, out, 9 * c, c)) * 0.05
        step = fwd_bwd(lambda x, w: layer.apply({"params": {"kernel": w}}, x))
    ms = temp_mb = 0.0
    if variant != "none":
        ms = median_ms(step, x, w, repeats=5 if time_it else 1)
        temp_mb = step.lower(x, w).compile().memory_analysis().temp_size_in_bytes / 2**20
    peak_mb = _peak_rss_mb()
    print(json.dumps({"ms": ms, "peak_mb": peak_mb, "temp_mb": temp_mb}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["tiled", "local", "conv", "table", "blur", "norm"], action="append")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak-memory runs")
    parser.add_argument("--tiled_shape", choices=list(TILED_SHAPES), default="cpu", help="tiled_conv's input shape")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # a fresh process measuring peak memory: compiled as a first run would, without the cache
        return _child(args.child)
    import jax

    from cnn_jax.compile_cache import enable_compile_cache

    enable_compile_cache()

    sections = args.only or ["tiled", "local", "conv", "table", "blur", "norm"]
    rows = []
    if "tiled" in sections:
        tiled_section(rows, args.tiled_shape)
    if "local" in sections:
        local_section(rows, with_memory=not args.no_memory)
    if "conv" in sections:
        conv_section(rows)
    if "table" in sections:
        table_section(rows)
    if "blur" in sections:
        blur_section(rows)
    if "norm" in sections:
        norm_section(rows)
    print(
        f"# {platform.processor() or platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores, "
        f"jax {jax.__version__}, backend {jax.default_backend()}\n"
    )
    print("| section | case | ms (or MB) | ratio |\n|---|---|---:|---:|")
    for section, case, value, ratio in rows:
        print(f"| {section} | {case} | {value:.1f} | {'' if np.isnan(ratio) else f'{ratio:.2f}'} |")


if __name__ == "__main__":
    main()
