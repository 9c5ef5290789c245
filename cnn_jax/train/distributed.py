"""Multi-host start-up: `jax.distributed.initialize` from explicit values or the cluster's environment."""

from __future__ import annotations

import ipaddress

import jax
from absl import logging


def _loopback(address: str | None) -> bool:
    """Whether host:port names this machine's loopback interface (127.0.0.0/8, ::1, localhost)."""
    if not address or ":" not in address:
        return False
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = 300,
    heartbeat_timeout_s: int = 100,
    coordinator_bind_address: str | None = None,
) -> None:
    """Join the job. Values left None are read by JAX from SLURM, Open MPI, Kubernetes or Cloud TPU metadata.

    timeout_s bounds the wait for every process to join; heartbeat_timeout_s bounds how long the others
    keep going after one process stops answering (it died or hangs): then the job fails on every process.
    coordinator_bind_address: where process 0's coordinator listens. By default JAX listens on every
    interface ($JAX_COORDINATOR_BIND_ADDRESS, else [::]:PORT); a coordinator on a loopback address (the
    processes of one machine) listens on that address only, unreachable from other machines.
    """
    if coordinator_bind_address is None and _loopback(coordinator_address):
        coordinator_bind_address = coordinator_address
    jax.distributed.initialize(
        coordinator_address=coordinator_address or None,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=timeout_s,
        heartbeat_timeout_seconds=heartbeat_timeout_s,
        coordinator_bind_address=coordinator_bind_address,
    )
    logging.info(
        "process %d of %d; %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
