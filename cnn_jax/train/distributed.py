"""Multi-host start-up: `jax.distributed.initialize` from explicit values or the cluster's environment."""

from __future__ import annotations

import jax
from absl import logging


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = 300,
    heartbeat_timeout_s: int = 100,
) -> None:
    """Join the job. Values left None are read by JAX from SLURM, Open MPI, Kubernetes or Cloud TPU metadata.

    timeout_s bounds the wait for every process to join; heartbeat_timeout_s bounds how long the others
    keep going after one process stops answering (it died or hangs): then the job fails on every process.
    """
    jax.distributed.initialize(
        coordinator_address=coordinator_address or None,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=timeout_s,
        heartbeat_timeout_seconds=heartbeat_timeout_s,
    )
    logging.info(
        "process %d of %d; %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
