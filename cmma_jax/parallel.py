"""Devices, meshes and shardings: one train step on any number of devices and hosts.

The default is `jax.jit` over a one-axis `Mesh` named "data" that spans every device of every
process: the batch is sharded along "data", the train state is replicated, and XLA inserts the
gradient all-reduce. The step itself does not change with the number of devices.

`pmap` is offered as an option over the same step (`config.training.parallelism = "pmap"`): JAX
now calls it the older API and implements it on top of `shard_map`, so the mesh is the default.
Under pmap the models average their gradients with `lax.pmean` over `PMAP_AXIS`.

Several hosts: call `initialize_distributed()` before anything touches a device; each process then
feeds its own slice of the global batch (`shard_batch`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PyTree = Any
DATA_AXIS = "data"
PMAP_AXIS = "batch"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    initialization_timeout: int = 300,
    heartbeat_timeout_seconds: int = 100,
) -> None:
    """Starts JAX's multi-process runtime when there is more than one process.

    With no arguments, `jax.distributed.initialize()` detects SLURM, Open MPI and Cloud TPU on its
    own; the environment variables `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and
    `JAX_PROCESS_ID` are honoured too. With a single process (no arguments, no cluster) it does
    nothing. Must run before anything touches a device.

    Args:
      coordinator_address: "host:port" of process 0.
      num_processes: total number of processes.
      process_id: this process's index, 0 <= process_id < num_processes.
      initialization_timeout: seconds to wait for every process to join before failing, instead of
        hanging when one never arrives.
      heartbeat_timeout_seconds: a process that stops answering for this long is declared dead and
        the others fail with an error rather than hang in a collective.
    """
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    cluster = any(k in os.environ for k in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE",
                                            "TPU_WORKER_HOSTNAMES", "CLOUD_TPU_TASK_ID"))
    if coordinator_address is None and num_processes is None and not cluster:
        return
    if num_processes == 1 and coordinator_address is None:
        return
    logging.info("jax.distributed.initialize(coordinator=%s, num_processes=%s, process_id=%s)",
                 coordinator_address, num_processes, process_id)
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=initialization_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout_seconds,
    )


def make_mesh(devices=None) -> Mesh:
    """A one-axis mesh named "data" over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of the train state: a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of a batch: split along its first axis over the "data" axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch_size: int, num_devices: int | None = None,
                     num_processes: int | None = None) -> None:
    """Raises a ValueError unless the global batch splits evenly over devices and processes."""
    num_devices = jax.device_count() if num_devices is None else num_devices
    num_processes = jax.process_count() if num_processes is None else num_processes
    if global_batch_size % num_devices:
        raise ValueError(
            f"training.batch_size={global_batch_size} is not divisible by the {num_devices} "
            f"devices; choose a multiple of {num_devices} (--config.training.batch_size=...)."
        )
    if global_batch_size % num_processes:
        raise ValueError(f"training.batch_size={global_batch_size} is not divisible by the "
                         f"{num_processes} processes.")


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's slice of the batch into global arrays sharded over the mesh.

    Args:
      batch: this process's batch, `{name: [B_local, ...]}` numpy arrays, where
        B_local = global batch / process count.
      mesh: the mesh of `make_mesh`.

    Returns:
      `{name: [B_global, ...]}` jax Arrays with the batch sharding.
    """
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items()}


def host_copy(tree: PyTree) -> PyTree:
    """This process's copy of a replicated pytree, as numpy arrays.

    `jax.device_get` needs arrays whose every shard is on this process; a state replicated over
    the devices of several processes is not, but each process holds a whole copy of it.
    """
    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if not x.is_fully_replicated:
                raise ValueError(f"host_copy takes replicated arrays; got one sharded as "
                                 f"{x.sharding}.")
            return np.asarray(x.addressable_data(0))
        return np.asarray(x) if isinstance(x, jax.Array) else x
    return jax.tree_util.tree_map(fetch, tree)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Places a pytree (the train state) on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


# --- pmap ---------------------------------------------------------------------------------------


def pmap_replicate(tree: PyTree, devices=None) -> PyTree:
    """A copy of `tree` on each local device, stacked along a new leading axis (for pmap).

    (`jax.device_put_replicated` is gone from JAX; pmap distributes the stacked copies itself.)
    """
    n = jax.local_device_count() if devices is None else len(list(devices))
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x[None], (n,) + jnp.shape(x)), tree)


def pmap_unreplicate(tree: PyTree) -> PyTree:
    """The first device's copy of a pmap-replicated pytree."""
    return jax.tree_util.tree_map(lambda x: x[0], tree)


def pmap_split_batch(batch: Mapping[str, np.ndarray], num_devices: int) -> dict[str, np.ndarray]:
    """`[B, ...] -> [num_devices, B / num_devices, ...]` for each array of a batch."""
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)
        if v.shape[0] % num_devices:
            raise ValueError(f"Batch of {v.shape[0]} does not split over {num_devices} devices.")
        out[k] = v.reshape((num_devices, v.shape[0] // num_devices) + v.shape[1:])
    return out
