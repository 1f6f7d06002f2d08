"""Devices, mesh and data placement: data parallel through `jax.sharding`.

One `Mesh` over every device of every process with a single axis "data".
Batches are sharded along it, parameters and optimizer state are replicated;
`jit` inserts the cross-device reductions. The same code runs on one CPU, on
N forced host devices, on a GPU/TPU host, and across processes started with
`jax.distributed`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str | None,
                           num_processes: int | None,
                           process_id: int | None) -> None:
  """Calls `jax.distributed.initialize` for multi-process runs.

  Arguments left None are taken from the environment: JAX_COORDINATOR_ADDRESS,
  JAX_NUM_PROCESSES and JAX_PROCESS_ID, or, for the process id, the
  JOB_COMPLETION_INDEX that Kubernetes gives every pod of an Indexed Job (the
  JobSet rendered by infra/ sets only the first two). With no coordinator
  this is a single-process run and does nothing. On CPU the collectives go
  through gloo.
  """
  coordinator_address = coordinator_address or os.environ.get(
      "JAX_COORDINATOR_ADDRESS")
  if not coordinator_address:
    return
  num_processes = num_processes or int(os.environ.get("JAX_NUM_PROCESSES", 1))
  if process_id is None:
    for name in ("JAX_PROCESS_ID", "JOB_COMPLETION_INDEX"):
      if os.environ.get(name, "") != "":
        process_id = _index(name, os.environ[name], num_processes)
        break
  # Only affects the CPU backend (GPU/TPU collectives are unaffected).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes,
                             process_id=process_id)


def _index(name: str, value: str, num_processes: int) -> int:
  if not value.isdigit() or int(value) >= num_processes:
    raise ValueError(f"Environment variable {name}={value!r}: expected a "
                     f"process index in [0, {num_processes}) "
                     f"(JAX_NUM_PROCESSES={num_processes}).")
  return int(value)


def make_mesh() -> Mesh:
  """One Mesh over every device of every process, axis "data"."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over "data", the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (parameters, optimizer state)."""
  return NamedSharding(mesh, P())


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """This process's share of the global batch; refuses uneven splits."""
  devices = mesh.devices.size
  if global_batch_size % devices:
    raise ValueError(f"batch size {global_batch_size} is not divisible by the "
                     f"{devices} devices of the mesh.")
  return global_batch_size // jax.process_count()


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, Any]:
  """Host-local batch -> global arrays sharded along the data axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree (identical on every process) replicated on the mesh."""
  return jax.device_put(tree, replicated(mesh))
