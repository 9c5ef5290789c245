"""Where a run's numbers go: metrics.jsonl and TensorBoard events in the workdir (process 0 only), and progress."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import logging

METRICS_FILE = "metrics.jsonl"


def _summary_writer_class() -> type:
    """tensorboardX's SummaryWriter, imported without torch.

    tensorboardX imports torch whenever it is installed (for image and graph summaries, which scalars never
    use): 2.4 s of every run's start on 2 CPU cores. Unless torch is loaded already, it is hidden for the
    import (a None entry in sys.modules makes `import torch` raise ImportError) and visible again after.
    """
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class MetricWriter:
    """Append one JSON object per record to metrics.jsonl and the scalars to TensorBoard."""

    def __init__(self, workdir: str | Path, *, enabled: bool):
        self._enabled = enabled
        self._path = Path(workdir) / METRICS_FILE
        self._tb = None
        if enabled:
            self._tb = _summary_writer_class()(str(Path(workdir) / "tensorboard"), flush_secs=30)

    def truncate_after(self, step: int) -> None:
        """Drop records past `step`: a resumed run rewrites them, so none appears twice."""
        if not (self._enabled and self._path.exists()):
            return
        kept = [line for line in self._path.read_text().splitlines() if json.loads(line)["step"] <= step]
        self._path.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, **scalars: float) -> None:
        if not self._enabled:
            return
        record = {"step": step, **{k: float(v) for k, v in scalars.items()}}
        with self._path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in record.items():
            if name != "step":
                self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str | Path) -> list[dict]:
    """All records of a run directory's metrics.jsonl."""
    return [json.loads(line) for line in (Path(workdir) / METRICS_FILE).read_text().splitlines()]


class Progress:
    """A one-line progress bar on stderr with steps/s, images/s and ETA; drawn only on a terminal.

    Rates count from the first update on (the first update's, from the start), so compilation
    does not dilute the throughput that later records report.
    """

    def __init__(self, total_steps: int, first_step: int, global_batch: int, *, enabled: bool):
        self._total, self._first, self._batch = total_steps, first_step, global_batch
        self._enabled = enabled and sys.stderr.isatty()
        self._start = time.perf_counter()
        self._steady = False
        self._line = ""

    def rates(self, step: int) -> tuple[float, float, float]:
        """(steps/s, images/s, seconds left) since this run (re)started."""
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        steps_per_s = (step - self._first) / elapsed
        eta = (self._total - step) / steps_per_s if steps_per_s else float("inf")
        return steps_per_s, steps_per_s * self._batch, eta

    def update(self, step: int, *, input_images_per_s: float | None = None, **shown: float) -> None:
        """Draw or log the line; `input_images_per_s`, where the examples are read from files, is the rate the
        input pipeline delivers at, beside the step's, so a user sees which of the two bounds the run."""
        steps_per_s, images_per_s, eta = self.rates(step)
        reading = "" if input_images_per_s is None else f" (input pipeline {input_images_per_s:.0f} img/s)"
        line = (
            f"step {step}/{self._total} {100 * step / self._total:5.1f}% | {steps_per_s:.2f} steps/s "
            f"{images_per_s:.0f} img/s{reading} | ETA {eta:.0f}s | "
            + " ".join(f"{k} {v:.4f}" for k, v in shown.items())
        )
        if self._enabled:
            self._line = line[:160].ljust(160)
            sys.stderr.write("\r" + self._line)
            sys.stderr.flush()
        else:
            logging.info(line)
        if not self._steady:
            self._steady, self._first, self._start = True, step, time.perf_counter()

    def message(self, text: str) -> None:
        """A line for the user (an evaluation, the final result): on a terminal, printed above the bar,
        which is redrawn below it; else logged."""
        if self._enabled:
            sys.stderr.write("\r" + text.ljust(len(self._line)) + "\n" + self._line)
            sys.stderr.flush()
        else:
            logging.info(text)

    def close(self) -> None:
        if self._enabled and self._line:
            sys.stderr.write("\n")
            self._line = ""
