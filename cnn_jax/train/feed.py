"""Feeding the compiled steps: which steps each dispatch runs, and where their examples come from.

A dispatch runs K consecutive steps in one program (`train.steps_per_dispatch`). Its examples come
from one of two places, chosen once per split (`train.data_placement`):
- resident: the split is placed on every device once, and each dispatch sends only the (K, batch)
  row indices, gathered on the device: nothing per step on the host;
- streamed: each dispatch's examples are gathered on the host and sent, prepared `depth` dispatches
  ahead in a background thread, for splits too large for device memory; a record-backed split
  (`cnn_jax.data.RecordSplit`, larger than host memory) is always streamed, its examples read and
  transformed on the host as a function of (run seed, epoch, row).
Either way the rows are those of `cnn_jax.data.train_batch_indices`, so batches, augmentation and
results do not depend on the placement or on K.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
from collections.abc import Callable, Generator, Iterable, Sequence

import jax
import numpy as np

from cnn_jax.data import RecordSplit, Split, epoch_order, eval_batches, process_rows, steps_per_epoch

PLACEMENTS = ("auto", "device", "host")
# Without a reported device memory size (XLA:CPU reports none), splits up to this size are resident.
_RESIDENT_BYTES_WITHOUT_LIMIT = 4 << 30


def dispatch_plan(start: int, total: int, steps_per_dispatch: int, boundaries: Iterable[int]) -> list[tuple[int, int]]:
    """(first step, step count) of each dispatch from `start` to `total`: at most `steps_per_dispatch` steps,
    never across a multiple of any of `boundaries` (where the loop evaluates, checkpoints or starts an epoch)."""
    periods = [b for b in boundaries if b > 0]
    plan, step = [], start
    while step < total:
        end = min([total, step + steps_per_dispatch] + [(step // b + 1) * b for b in periods])
        plan.append((step, end - step))
        step = end
    return plan


def pad_steps(arrays: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, ...]:
    """Each array (count, ...) padded with zeros to (length, ...): a dispatch's per-step arrays (row indices,
    masks) at the dispatch length the compiled program takes. Padded steps are never run (train) or are
    all masked out (evaluation), and row 0 is a valid index either way."""
    return tuple(np.concatenate([a, np.zeros((length - len(a), *a.shape[1:]), a.dtype)]) for a in arrays)


class TrainRows:
    """Row indices of the training examples per dispatch, this process's slice of each global batch;
    one permutation per epoch, computed once."""

    def __init__(self, num_examples: int, global_batch: int, seed: int):
        self._n, self._batch, self._seed = num_examples, global_batch, seed
        self._per_epoch = steps_per_epoch(num_examples, global_batch)
        self._epoch, self._order = None, None

    def __call__(self, start: int, count: int) -> np.ndarray:
        """(count, local batch) int32 rows of steps start .. start + count - 1, all in one epoch."""
        epoch, within = divmod(start, self._per_epoch)
        if within + count > self._per_epoch:
            raise ValueError(f"steps {start}..{start + count - 1} cross the end of epoch {epoch}")
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(self._n, self._seed, epoch)
        rows = self._order[within * self._batch : (within + count) * self._batch].reshape(count, self._batch)
        return process_rows(rows, jax.process_index(), jax.process_count()).astype(np.int32)


def eval_rows(num_examples: int, global_batch: int, batches_per_dispatch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, mask) per eval dispatch, each (batches, local batch): every example once, the padding masked."""
    batches = eval_batches(num_examples, global_batch)
    chunks = []
    for i in range(0, len(batches), batches_per_dispatch):
        rows, mask = (np.stack(a) for a in zip(*batches[i : i + batches_per_dispatch]))
        local = [process_rows(a, jax.process_index(), jax.process_count()) for a in (rows, mask)]
        chunks.append((local[0].astype(np.int32), local[1]))
    return chunks


def resident(placement: str, splits: Sequence[Split | RecordSplit], devices: Sequence[jax.Device]) -> bool:
    """Whether `splits` go on the devices: always for "device", never for "host", and for "auto" when
    they take at most a quarter of the smallest device memory (every device holds a whole copy).
    Record-backed splits are never resident: they are read from files as they are needed."""
    if any(isinstance(s, RecordSplit) for s in splits):
        if placement == "device":
            raise ValueError(
                "config.train.data_placement='device': a dataset read from files (dataset.source='files') is "
                "read as it is needed, never placed on the devices whole; use 'auto' or 'host'"
            )
        return False
    if placement != "auto":
        return placement == "device"
    size = sum(s.inputs.nbytes + s.labels.nbytes for s in splits)
    memory = device_memory(devices)
    return size <= (_RESIDENT_BYTES_WITHOUT_LIMIT if memory is None else memory // 4)


def device_memory(devices: Sequence[jax.Device]) -> int | None:
    """The smallest memory of this process's `devices` in bytes, or None where a device reports none (XLA:CPU)."""
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in devices if d.process_index == jax.process_index()]
    return None if any(limit is None for limit in limits) else min(limits)


class Feed:
    """One split feeding a runner's multi-step programs, resident or streamed (see the module docstring).

    A chunk's arrays are (K, local batch) for one run, or (R, K, local batch) for the R runs of a batch: placed
    as one stack with its run axis (`apart=False`, a vmapped program), or as R separate runs' arguments
    (`apart=True`, the runs taking turns on one program)."""

    def __init__(
        self,
        runner,
        split: Split | RecordSplit,
        *,
        resident: bool,
        apart: bool = False,
        depth: int = 2,
        seeds: Sequence[int] = (0,),
    ):
        """seeds: each run's seed, for splits that augment on the host (one per run of a stacked chunk)."""
        self.runner, self.split, self.resident, self._apart, self.depth = runner, split, resident, apart, depth
        self._seeds = tuple(seeds)
        self._placed = runner.put_split(split.inputs, split.labels) if resident else None

    def _examples(self, rows: np.ndarray, epoch: int, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        if len(seeds) == 1 or not isinstance(self.split, RecordSplit):  # in memory: the seed plays no part
            return self.split.examples(rows, epoch, seeds[0])
        inputs, labels = zip(*(self.split.examples(r, epoch, seed) for r, seed in zip(rows, seeds)))
        return np.stack(inputs), np.stack(labels)

    def _place_stack(self, chunk: tuple[np.ndarray, ...], epoch: int, seeds: Sequence[int]) -> tuple:
        rows, *rest = chunk
        batch_axis = rows.ndim - 1
        if self.resident:
            return (*self._placed, *self.runner.put_batch(rows, *rest, batch_axis=batch_axis))
        return self.runner.put_batch(*self._examples(rows, epoch, seeds), *rest, batch_axis=batch_axis)

    def _place(self, item: tuple[tuple[np.ndarray, ...], int]) -> tuple | list[tuple]:
        chunk, epoch = item
        if self._apart:
            return [self._place_stack(run, epoch, (seed,)) for run, seed in zip(zip(*chunk), self._seeds)]
        return self._place_stack(chunk, epoch, self._seeds)

    def __call__(
        self, chunks: Iterable[tuple[np.ndarray, ...]], epochs: Iterable[int] | None = None
    ) -> Generator[tuple | list[tuple], None, None]:
        """For each (rows, *per-example arrays) of a dispatch, the data arguments of the runner's
        `train_steps[resident]` / `eval_steps[resident]` (a list of them, one per run, when `apart`).
        epochs: each dispatch's epoch, for splits that augment on the host (evaluation: none needed)."""
        items = zip(chunks, itertools.repeat(0) if epochs is None else epochs)
        if self.resident:
            return (self._place(item) for item in items)
        return prefetched(self._place, items, self.depth)


def prefetched(fn: Callable, items: Iterable, depth: int) -> Generator:
    """fn(item) for each item, computed in a background thread up to `depth` items ahead of the consumer."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
