"""One evaluation pass over a split: summed metrics and per-image results."""

from __future__ import annotations

from typing import Callable

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from chameleon_jax import components
from chameleon_jax.data import dataset as dataset_lib
from chameleon_jax.data import pipeline
from chameleon_jax.train import metrics as metrics_lib
from chameleon_jax.train import sharding
from chameleon_jax.train.classification_metrics import summarize_classification


def evaluate_split(eval_step: Callable, state, ds: dataset_lib.Dataset,
                   split: str, config: ml_collections.ConfigDict,
                   mesh) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Runs `eval_step` (jitted) over `split`.

  Returns the summarised metrics and, for every example of the split (in
  manifest order of the split), its per-image values (segmentation: "index",
  "dice", "false_alarm", "defect", "pred_area", "gt_area"; classification:
  "index", "pred", "label", "confidence"), gathered from every process.
  """
  size = components.image_size(config)
  if size is None:
    raise ValueError("Evaluation needs data.image_size (a fixed size per "
                     "batch); set it and data.size_policy.")
  local = sharding.local_batch_size(config.eval.batch_size, mesh)
  classify = components.task(config) == "classification"
  sums = None
  per_image: dict[str, list[np.ndarray]] = {}
  for batch in pipeline.eval_batches(
      ds, split=split, local_batch_size=local, size=size,
      size_policy=config.data.size_policy, scale=config.data.scale,
      process_index=jax.process_index(), process_count=jax.process_count()):
    index = batch.pop("index")
    batch.pop("mask" if classify else "label")
    batch_sums, images = eval_step(state, sharding.shard_batch(batch, mesh))
    sums = metrics_lib.add_sums(sums, jax.device_get(batch_sums))
    images = {k: multihost_utils.process_allgather(v, tiled=True)
              for k, v in images.items()}
    images["index"] = multihost_utils.process_allgather(index, tiled=True) \
        if jax.process_count() > 1 else index
    for k, v in images.items():
      per_image.setdefault(k, []).append(np.asarray(v))
  merged = {k: np.concatenate(v) for k, v in per_image.items()}
  keep = merged["index"] >= 0
  merged = {k: v[keep] for k, v in merged.items()}
  if classify:
    return summarize_classification(sums, ds.class_names), merged
  return metrics_lib.summarize(sums, ds.class_names), merged
