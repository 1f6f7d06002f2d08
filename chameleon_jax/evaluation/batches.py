"""The one evaluation-batch loop: a split in order, sharded over the mesh,
every process's results gathered on every process."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from chameleon_jax import sharding
from chameleon_jax.data import dataset as dataset_lib
from chameleon_jax.data import pipeline


def gather(x: Any) -> np.ndarray:
  """A device array's rows from every process, in process order."""
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def gather_host(x: np.ndarray) -> np.ndarray:
  """A host array's rows from every process (itself in one process)."""
  return gather(x) if jax.process_count() > 1 else np.asarray(x)


def over_split(fn: Callable[[Any, dict], Any], state: Any,
               ds: dataset_lib.Dataset, split: str,
               inp: pipeline.EvalInput, mesh, *, inputs: Sequence[str],
               host_keys: Sequence[str] = ("index",)
               ) -> Iterator[tuple[Any, dict[str, np.ndarray]]]:
  """Runs `fn(state, sharded batch)` on every batch of `split`.

  Args:
    fn: a jitted function of (state, {key: global array}).
    state: its first argument (replicated).
    ds, split: the dataset version and split, in manifest order.
    inp: sizes and the global batch size.
    mesh: the device mesh the batch is sharded over.
    inputs: batch keys `fn` receives.
    host_keys: batch keys returned gathered from every process (padding
      rows have "index" -1 and "weight" 0).

  Yields:
    (fn's output as returned, {host key: gathered rows}).
  """
  local = sharding.local_batch_size(inp.batch_size, mesh)
  for batch in pipeline.eval_batches(
      ds, split=split, local_batch_size=local, size=inp.size,
      size_policy=inp.size_policy, scale=inp.scale,
      process_index=jax.process_index(), process_count=jax.process_count(),
      max_items=inp.max_items):
    out = fn(state, sharding.shard_batch({k: batch[k] for k in inputs},
                                         mesh))
    yield out, {k: gather_host(batch[k]) for k in host_keys}
