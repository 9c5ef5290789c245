"""Training input pipelines on the host: ours (RecordSplit) against flax's tf.data and a torch DataLoader.

    python benchmarks/input_pipeline.py                      # generated JPEGs in a temp dir
    python benchmarks/input_pipeline.py --images=512 --memory_images=512   # quick check
    python benchmarks/input_pipeline.py --image_folder=DIR --json=out.json

Each pipeline decodes, random-resized-crops to 224, flips, and batches 256 images as uint8. One warm-up batch,
then images/s over --images images. Ratios are to tf.data at the same thread count, measured in the same run.
Peak RSS of ours is measured in a fresh subprocess (--memory_images images).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE, BATCH = 224, 256


def make_tree(root: Path, count: int, classes: int = 10, seed: int = 0) -> float:
    """Writes `count` ImageNet-like JPEGs (500x375, quality 90) into root/train/<class>/; returns mean KB."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = []
    for i in range(count):
        d = root / "train" / f"class{i % classes:02d}"
        d.mkdir(parents=True, exist_ok=True)
        coarse = rng.uniform(0, 255, (12, 16, 3)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((500, 375), Image.BICUBIC), np.float32)
        fine = rng.normal(0, 22, (375, 500, 3))
        pixels = np.clip(smooth + fine, 0, 255).astype(np.uint8)
        path = d / f"img{i:06d}.JPEG"
        Image.fromarray(pixels).save(path, quality=90)
        sizes.append(path.stat().st_size)
    return float(np.mean(sizes)) / 1e3


def ours(root: str, readers: int, images: int, seed: int = 0):
    from cnn_jax.data.image_sources import ImageFolder
    from cnn_jax.data.record_split import ImageTransform, RecordSplit

    split = RecordSplit(ImageFolder(root, "train"), ImageTransform(True, SIZE), readers=readers)
    order = np.random.default_rng(seed).permutation(len(split))

    def batches():
        b = 0
        while True:
            rows = np.take(order, np.arange(b * BATCH, (b + 1) * BATCH), mode="wrap")
            yield split.examples(rows, 0, seed)[0]
            b += 1

    return batches()


def flax_tf(root: str, threads: int):
    import tensorflow as tf

    files = sorted(str(p) for p in Path(root, "train").glob("*/*.JPEG"))

    def decode_and_random_crop(image_bytes):  # flax/examples/imagenet/input_pipeline.py
        bbox = tf.constant([0.0, 0.0, 1.0, 1.0], dtype=tf.float32, shape=[1, 1, 4])
        shape = tf.io.extract_jpeg_shape(image_bytes)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            shape,
            bounding_boxes=bbox,
            min_object_covered=0.1,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        offset_y, offset_x, _ = tf.unstack(begin)
        target_h, target_w, _ = tf.unstack(size)
        window = tf.stack([offset_y, offset_x, target_h, target_w])
        image = tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3)
        bad = tf.reduce_sum(tf.cast(tf.equal(tf.shape(image), shape), tf.int32)) >= 3
        return tf.cond(bad, lambda: center_crop(image_bytes), lambda: resize(image))

    def center_crop(image_bytes, padding=32):
        shape = tf.io.extract_jpeg_shape(image_bytes)
        h, w = shape[0], shape[1]
        crop = tf.cast((SIZE / (SIZE + padding)) * tf.cast(tf.minimum(h, w), tf.float32), tf.int32)
        window = tf.stack([(h - crop + 1) // 2, (w - crop + 1) // 2, crop, crop])
        return resize(tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3))

    def resize(image):
        return tf.image.resize([image], [SIZE, SIZE], method=tf.image.ResizeMethod.BICUBIC)[0]

    def train(path):
        image = tf.image.random_flip_left_right(decode_and_random_crop(tf.io.read_file(path)))
        return tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)

    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=0).repeat()
    ds = ds.map(train, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH, drop_remainder=True)
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(options)
    return (b.numpy() for b in ds)


def torch_loader(root: str, workers: int):
    import torch
    from torchvision import datasets, transforms

    t = transforms.Compose(
        [transforms.RandomResizedCrop(SIZE), transforms.RandomHorizontalFlip(), transforms.PILToTensor()]
    )
    data = datasets.ImageFolder(os.path.join(root, "train"), transform=t)
    sampler = torch.utils.data.RandomSampler(data, replacement=True, num_samples=10**9)
    loader = torch.utils.data.DataLoader(
        data, batch_size=BATCH, sampler=sampler, num_workers=workers, persistent_workers=True
    )
    return (x.numpy() for x, _ in loader)


def rate(batches, images: int) -> float:
    first = next(batches)
    assert first.shape == (BATCH, SIZE, SIZE, 3) or first.shape == (BATCH, 3, SIZE, SIZE), first.shape
    n = max(1, -(-images // BATCH))
    start = time.perf_counter()
    for _ in range(n):
        next(batches)
    return n * BATCH / (time.perf_counter() - start)


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def memory(root: str, readers: int, images: int) -> dict:
    """In this (fresh) process: RSS at the start, every batch, and at the end of reading `images` images."""
    start = rss_mb()
    it = ours(root, readers, images)
    samples = [rss_mb()]
    for _ in range(-(-images // BATCH)):
        next(it)
        samples.append(rss_mb())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "images": images,
        "readers": readers,
        "start_mb": start,
        "first_batch_mb": samples[1],
        "max_sampled_mb": max(samples),
        "end_mb": samples[-1],
        "ru_maxrss_mb": peak,
    }


def versions() -> dict:
    import grain
    import PIL
    import tensorflow as tf
    import torch

    try:
        import torchvision

        tv = torchvision.__version__
    except Exception as err:  # noqa: BLE001 - a broken install is reported, not fatal
        tv = f"unimportable ({err})"
    return {
        "python": platform.python_version(),
        "pillow": PIL.__version__,
        "tensorflow": tf.__version__,
        "torch": torch.__version__,
        "torchvision": tv,
        "grain": getattr(grain, "__version__", "?"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image_folder", default="", help="an existing ROOT with ROOT/train/<class>/*.JPEG")
    p.add_argument("--files", type=int, default=2560, help="JPEGs to generate when no --image_folder")
    p.add_argument("--images", type=int, default=2560, help="images timed per pipeline")
    p.add_argument("--readers", default="1,2", help="thread / worker counts")
    p.add_argument("--memory_images", type=int, default=5000)
    p.add_argument("--only", default="ours,tf,torch,memory")
    p.add_argument("--json", default="")
    p.add_argument("--_memory", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    counts = [int(c) for c in a.readers.split(",")]
    if a._memory:
        print(json.dumps(memory(a.image_folder, counts[-1], a.memory_images)))
        return
    tmp = None
    root = a.image_folder
    out: dict = {"versions": versions(), "date": time.strftime("%Y-%m-%d"), "images": a.images}
    if not root:
        tmp = tempfile.TemporaryDirectory()
        root = tmp.name
        out["generated"] = {"files": a.files, "mean_kb": make_tree(Path(root), a.files)}
        print(f"generated {a.files} JPEGs, mean {out['generated']['mean_kb']:.1f} KB", flush=True)
    rows = []
    makers = {"ours": ours, "tf": flax_tf, "torch": torch_loader}
    for name in [n for n in ("tf", "ours", "torch") if n in a.only.split(",")]:
        for c in counts:
            try:
                r = rate(makers[name](root, c, a.images) if name == "ours" else makers[name](root, c), a.images)
            except Exception as err:  # noqa: BLE001 - e.g. a torchvision that does not match torch
                print(f"{name} {c}: failed: {err}", flush=True)
                out.setdefault("failed", {})[f"{name} {c}"] = str(err)
                continue
            rows.append({"pipeline": name, "threads": c, "images_per_s": r, "per_core": r / min(c, os.cpu_count())})
            print(f"{name} {c}: {r:.0f} images/s", flush=True)
    tf_rate = {r["threads"]: r["images_per_s"] for r in rows if r["pipeline"] == "tf"}
    for r in rows:
        r["ratio_to_tf"] = r["images_per_s"] / tf_rate[r["threads"]] if r["threads"] in tf_rate else None
    print(
        "\n| pipeline | readers/threads/workers | images/s | images/s per core | / tf.data |\n|---|---:|---:|---:|---:|"
    )
    for r in rows:
        ratio = f"{r['ratio_to_tf']:.2f}" if r["ratio_to_tf"] else ""
        print(f"| {r['pipeline']} | {r['threads']} | {r['images_per_s']:.0f} | {r['per_core']:.0f} | {ratio} |")
    out["rows"] = rows
    ours_rates = [r["images_per_s"] for r in rows if r["pipeline"] == "ours"]
    out["images_per_s"] = max(ours_rates) if ours_rates else None
    if "memory" in a.only.split(","):
        cmd = [
            sys.executable,
            __file__,
            "--_memory",
            f"--image_folder={root}",
            f"--readers={counts[-1]}",
            f"--memory_images={a.memory_images}",
        ]
        out["memory"] = json.loads(
            subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        )
        print("memory (MB):", out["memory"])
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
