"""The images a robustness sweep evaluates: a deterministic, balanced
subset of a split, in host memory, padded to whole batches."""

from __future__ import annotations

import dataclasses

import numpy as np

from chameleon_jax.data import pipeline
from chameleon_jax.metrics.images import defect_pixels


@dataclasses.dataclass
class EvalData:
  """The evaluated images in host memory, padded to whole batches."""
  image: np.ndarray   # (N, H, W, C) float32 in [0, 1]
  mask: np.ndarray    # (N, H, W) int32, IGNORE_INDEX where unlabelled
  index: np.ndarray   # (N,) position in the split; -1 for padding
  weight: np.ndarray  # (N,) 1 real, 0 padding

  def batches(self, size: int):
    """{image, mask, index, weight} slices of `size` rows, in order."""
    for start in range(0, len(self.index), size):
      yield {k: getattr(self, k)[start:start + size]
             for k in ("image", "mask", "index", "weight")}


def load_eval_data(ds, split: str, inp: pipeline.EvalInput,
                   max_images: int, batch_size: int) -> EvalData:
  """A deterministic, balanced subset of `split` (half defect images),
  brought to `inp`'s size and scale."""
  examples = pipeline.eval_examples(ds, split, inp.size, inp.size_policy,
                                    inp.scale)
  rows = [examples[i] for i in range(len(examples))]
  if not rows:
    raise ValueError(f"Split {split!r} of {ds.path} is empty.")
  defect = np.array([bool(defect_pixels(r["mask"]).any()) for r in rows])
  chosen = np.arange(len(rows))
  if max_images and len(rows) > max_images:
    pos, neg = np.flatnonzero(defect), np.flatnonzero(~defect)
    n_pos = min(len(pos), max(max_images // 2, max_images - len(neg)))
    n_neg = min(len(neg), max_images - n_pos)
    pick = lambda ids, n: ids[np.linspace(0, len(ids) - 1, n).round()
                              .astype(int)] if n else ids[:0]
    chosen = np.sort(np.concatenate([pick(pos, n_pos), pick(neg, n_neg)]))
  total = -(-len(chosen) // batch_size) * batch_size
  batch = pipeline.padded([rows[i] for i in chosen], total,
                          rows[0]["image"].shape)
  return EvalData(image=batch["image"], mask=batch["mask"],
                  index=batch["index"], weight=batch["weight"])
