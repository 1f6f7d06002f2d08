"""Grain input pipelines over a dataset version's ArrayRecord shards.

Training: random-access source -> seeded shuffle (reshuffled every epoch) ->
repeat -> augment (seeded per global index) -> this process's rows of every
global batch -> batch -> worker processes. The global batch of step s is a
pure function of (seed, s), the same whatever the number of processes, and
the iterator's state is its position, so a restored iterator continues
exactly where the checkpoint left it.

Evaluation: one pass in order, padded with zero-weight examples so that every
process yields the same number of equally shaped batches.
"""

from __future__ import annotations

from typing import Iterator

import grain
import numpy as np

from chameleon_jax.data import dataset as dataset_lib
from chameleon_jax.data import transforms


def _source(ds: dataset_lib.Dataset, split: str) -> grain.MapDataset:
  source = grain.sources.ArrayRecordDataSource(ds.shard_paths(split))
  return grain.MapDataset.source(source).map(dataset_lib.decode_record)


def train_iterator(
    ds: dataset_lib.Dataset,
    *,
    split: str,
    local_batch_size: int,
    seed: int,
    size: tuple[int, int] | None,
    size_policy: str,
    augment: transforms.AugmentConfig,
    scale: float = 1.0,
    num_workers: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.DatasetIterator:
  """An endless iterator of training batches for this process."""
  if size_policy not in transforms.SIZE_POLICIES:
    raise ValueError(f"data.size_policy={size_policy!r}; expected one of "
                     f"{transforms.SIZE_POLICIES}.")
  if size is None and augment.crop_size is None:
    raise ValueError("Training batches need a fixed shape: set "
                     "data.image_size or data.crop_size.")
  source = _source(ds, split)
  global_batch_size = local_batch_size * process_count
  if len(source) < global_batch_size:
    raise ValueError(f"Split {split!r} has {len(source)} examples, fewer "
                     f"than the global batch size {global_batch_size}.")
  examples = (source.shuffle(seed=seed).repeat()
              .random_map(transforms.TrainTransform(size, size_policy, augment,
                                                   scale), seed=seed + 1))
  mds = (grain.MapDataset.range(len(examples) // process_count)
         .map(_ProcessRows(examples, local_batch_size, process_index,
                           process_count))
         .batch(local_batch_size, drop_remainder=True))
  ids = mds.to_iter_dataset(grain.ReadOptions(num_threads=0 if num_workers
                                              else 2, prefetch_buffer_size=2))
  if num_workers:
    ids = ids.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=2))
  return iter(ids)


class _ProcessRows(grain.transforms.Map):
  """k-th example of this process = its row of the global batch of step k // B.

  Process p reads rows [p * B, (p + 1) * B) of every global batch (B: local
  batch size), which is what `make_array_from_process_local_data` expects.
  """

  def __init__(self, examples: grain.MapDataset, local_batch_size: int,
               process_index: int, process_count: int):
    self.examples = examples
    self.local, self.index, self.count = (local_batch_size, process_index,
                                          process_count)

  def map(self, k: int):
    step, row = divmod(int(k), self.local)
    return self.examples[(step * self.count + self.index) * self.local + row]


def eval_examples(ds: dataset_lib.Dataset, split: str, size: tuple[int, int],
                  size_policy: str, scale: float = 1.0) -> grain.MapDataset:
  """Random access to the split's evaluation examples (with their "index")."""
  return (_source(ds, split)
          .map_with_index(lambda i, e: {**e, "index": np.int32(i)})
          .map(transforms.EvalTransform(size, size_policy, scale)))


def eval_batches(
    ds: dataset_lib.Dataset,
    *,
    split: str,
    local_batch_size: int,
    size: tuple[int, int],
    size_policy: str,
    scale: float = 1.0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """One ordered pass over `split`; adds `weight` (0 for padding) and `index`.

  `index` is the example's position in the split (see manifest order), so
  per-image results can be traced back to files.
  """
  examples = eval_examples(ds, split, size, size_policy, scale)
  n = len(examples)
  per_process = -(-n // process_count)
  num_batches = -(-per_process // local_batch_size)
  examples = examples[process_index::process_count]
  mine = range(len(examples))
  height, width = size
  for b in range(num_batches):
    chunk = [examples[i] for i in range(b * local_batch_size,
                                        min(len(mine), (b + 1) * local_batch_size))]
    channels = ds.channels
    batch = {
        "image": np.zeros((local_batch_size, height, width, channels), np.float32),
        "mask": np.full((local_batch_size, height, width),
                        transforms.IGNORE_INDEX, np.int32),
        "label": np.zeros((local_batch_size,), np.int32),
        "index": np.full((local_batch_size,), -1, np.int32),
        "weight": np.zeros((local_batch_size,), np.float32),
    }
    for j, example in enumerate(chunk):
      for key in ("image", "mask", "label", "index"):
        batch[key][j] = example[key]
      batch["weight"][j] = 1.0
    yield batch
