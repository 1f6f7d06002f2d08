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

import dataclasses
import logging
from typing import Iterator

import grain
import numpy as np

from chameleon_jax.data import dataset as dataset_lib
from chameleon_jax.data import transforms


@dataclasses.dataclass(frozen=True)
class EvalInput:
  """How evaluation sees a split (built from `data.*` and `eval.batch_size`).

  Attributes:
    size: (H, W) every evaluated image is brought to.
    size_policy: how: "resize", "pad" or "crop" (transforms.py).
    scale: resampling factor applied first (the pixel scale of training).
    batch_size: global evaluation batch (over every device and process).
    max_items: only the split's first `max_items` examples (None: all);
      the budget's cheap timing of a validation (train/budget.py).
  """
  size: tuple[int, int]
  size_policy: str
  scale: float
  batch_size: int
  max_items: int | None = None

  def __post_init__(self):
    if len(self.size) != 2:
      raise ValueError(f"Evaluation needs data.image_size (H, W), got "
                       f"{self.size!r}: set it and data.size_policy.")
    object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))


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
    defect_image_fraction: float | None = None,
    defect_class_balance: bool = False,
    num_workers: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.DatasetIterator:
  """An endless iterator of training batches for this process.

  `defect_image_fraction`: None samples images uniformly; a value f makes
  round(f * global batch) rows of every global batch come from images with a
  defect and the rest from defect-free images, each stream shuffled on its
  own (exact per-batch composition, as nnU-Net forces foreground per batch).
  `defect_class_balance` (with a fraction): the defect stream takes its
  images from each defect class in turn (`defect_class_groups`), so a class
  with few images is seen as often as a common one.
  """
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
  transform = transforms.TrainTransform(size, size_policy, augment, scale)
  if defect_image_fraction is None:
    if defect_class_balance:
      raise ValueError("data.defect_class_balance needs a defect stream: "
                       "set data.defect_image_fraction >= 0.")
    examples = source.shuffle(seed=seed).repeat()
  else:
    examples = _defect_mix(ds, split, source, global_batch_size,
                           defect_image_fraction, seed, defect_class_balance)
  examples = examples.random_map(transform, seed=seed + 1)
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


def defect_class_groups(items: list[dict]) -> dict[int, list[int]]:
  """Positions of the defect images, grouped by class.

  An image's class is the rarest (fewest images, then smallest id) of the
  classes its mask holds, so an image with a common and a rare defect serves
  the rare one. Defect-free images (no foreground) are in no group.
  """
  present = {i: a["classes_present"] for i, a in enumerate(items)
             if a["foreground_fraction"] > 0}
  counts: dict[int, int] = {}
  for classes in present.values():
    for c in classes:
      counts[c] = counts.get(c, 0) + 1
  groups: dict[int, list[int]] = {}
  for i, classes in present.items():
    rarest = min(classes, key=lambda c: (counts[c], c))
    groups.setdefault(rarest, []).append(i)
  return dict(sorted(groups.items()))


def _defect_mix(ds: dataset_lib.Dataset, split: str, source: grain.MapDataset,
                global_batch_size: int, fraction: float,
                seed: int, class_balance: bool = False) -> grain.MapDataset:
  """Endless examples whose every global batch has a fixed defect share."""
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"defect_image_fraction={fraction} must be in [0, 1].")
  items = ds.items(split)
  defect = [i for i, a in enumerate(items) if a["foreground_fraction"] > 0]
  clean = [i for i, a in enumerate(items) if a["foreground_fraction"] == 0]
  per_batch = int(round(fraction * global_batch_size))
  if not defect and not clean:
    raise ValueError(f"split {split!r} has no image.")
  if per_batch < global_batch_size and not clean:
    # Data where every image has a defect (NEU-Seg, road cracks, ...): the
    # share cannot be honoured; every row is a defect image, which uniform
    # sampling would give too (the class balance, if asked, still holds).
    logging.warning(
        "data.defect_image_fraction=%g asks for %d of %d rows per batch from "
        "defect-free images, but split %r has no defect-free image: every "
        "row comes from a defect image (data.defect_image_fraction=-1 says "
        "so without this warning).", fraction,
        global_batch_size - per_batch, global_batch_size, split)
    per_batch = global_batch_size
  elif per_batch and not defect:
    logging.warning(
        "data.defect_image_fraction=%g asks for %d of %d rows per batch from "
        "defect images, but split %r has no defect image: every row comes "
        "from a defect-free image.", fraction, per_batch, global_batch_size,
        split)
    per_batch = 0
  streams = [_endless(source, p, seed + 2 + j) if p else None
             for j, p in enumerate((defect, clean))]
  if class_balance and defect:
    streams[0] = grain.MapDataset.range(len(streams[0])).map(_RoundRobin([
        _endless(source, p, seed + 4 + j)
        for j, p in enumerate(defect_class_groups(items).values())]))
  return grain.MapDataset.range(len(streams[0] or streams[1])).map(
      _Interleave(streams, per_batch, global_batch_size))


def _endless(source: grain.MapDataset, positions: list[int],
             seed: int) -> grain.MapDataset:
  """source[positions], reshuffled every epoch, repeated without end."""
  return (grain.MapDataset.range(len(positions)).map(_Pick(source, positions))
          .shuffle(seed=seed).repeat())


class _Pick(grain.transforms.Map):
  """Element i -> source[positions[i]]."""

  def __init__(self, source: grain.MapDataset, positions: list[int]):
    self.source, self.positions = source, positions

  def map(self, i: int):
    return self.source[self.positions[int(i)]]


class _RoundRobin(grain.transforms.Map):
  """Element k -> element k // n of stream k % n (n streams, endless)."""

  def __init__(self, streams: list[grain.MapDataset]):
    self.streams = streams

  def map(self, k: int):
    n = len(self.streams)
    return self.streams[int(k) % n][int(k) // n]


class _Interleave(grain.transforms.Map):
  """Row r < per_batch of global batch s: defect stream, else clean stream."""

  def __init__(self, streams, per_batch: int, batch: int):
    self.streams, self.per_batch, self.batch = streams, per_batch, batch

  def map(self, k: int):
    step, row = divmod(int(k), self.batch)
    if row < self.per_batch:
      return self.streams[0][step * self.per_batch + row]
    clean = self.batch - self.per_batch
    return self.streams[1][step * clean + row - self.per_batch]


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
    max_items: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """One ordered pass over `split` (its first `max_items` examples, when
  given); adds `weight` (0 for padding) and `index`.

  `index` is the example's position in the split (see manifest order), so
  per-image results can be traced back to files.
  """
  examples = eval_examples(ds, split, size, size_policy, scale)
  if max_items is not None:
    examples = examples[:max_items]
  n = len(examples)
  per_process = -(-n // process_count)
  num_batches = -(-per_process // local_batch_size)
  examples = examples[process_index::process_count]
  for b in range(num_batches):
    chunk = [examples[i] for i in range(b * local_batch_size,
                                        min(len(examples), (b + 1) * local_batch_size))]
    yield padded(chunk, local_batch_size, (*size, ds.channels))


def padded(examples, rows: int, shape: tuple[int, int, int]
           ) -> dict[str, np.ndarray]:
  """Evaluation examples stacked into `rows` rows of images of `shape`
  (H, W, C); the rows after them are padding: zero image, IGNORE_INDEX
  mask, label 0, index -1 and weight 0 (real rows: weight 1), which every
  metric skips. The one padding of evaluation (batches, robustness)."""
  batch = {
      "image": np.zeros((rows, *shape), np.float32),
      "mask": np.full((rows, *shape[:2]), transforms.IGNORE_INDEX, np.int32),
      "label": np.zeros((rows,), np.int32),
      "index": np.full((rows,), -1, np.int32),
      "weight": np.zeros((rows,), np.float32),
  }
  for j, example in enumerate(examples):
    for key in ("image", "mask", "label", "index"):
      batch[key][j] = example[key]
    batch["weight"][j] = 1.0
  return batch
