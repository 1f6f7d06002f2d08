"""One evaluation pass over a split: summed metrics and per-image results."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from chameleon_jax.data import dataset as dataset_lib
from chameleon_jax.data import pipeline
from chameleon_jax.evaluation import batches
from chameleon_jax.metrics import segmentation as metrics_lib
from chameleon_jax.metrics.classification import summarize_classification


def evaluate_split(eval_step: Callable, state, ds: dataset_lib.Dataset,
                   split: str, inp: pipeline.EvalInput, mesh, task: str
                   ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Runs `eval_step` (jitted; `train.steps.make_eval_step`) over `split`.

  Args:
    eval_step: (state, batch) -> (psum-able sums, per-image values).
    state: the model's (replicated) state.
    ds, split: the dataset version and the split.
    inp: the evaluation input (sizes, global batch size).
    mesh: the device mesh.
    task: "segmentation" or "classification".

  Returns:
    The summarised metrics and, for every example of the split (in manifest
    order), its per-image values (segmentation: "index", "dice",
    "false_alarm", "defect", "pred_area", "gt_area"; classification:
    "index", "pred", "label", "confidence"), gathered from every process.
  """
  classify = task == "classification"
  inputs = ("image", "label" if classify else "mask", "weight")
  sums = None
  per_image: dict[str, list[np.ndarray]] = {}
  for (batch_sums, images), host in batches.over_split(
      eval_step, state, ds, split, inp, mesh, inputs=inputs):
    sums = metrics_lib.add_sums(sums, jax.device_get(batch_sums))
    images = {k: batches.gather(v) for k, v in images.items()}
    images["index"] = host["index"]
    for k, v in images.items():
      per_image.setdefault(k, []).append(np.asarray(v))
  merged = {k: np.concatenate(v) for k, v in per_image.items()}
  keep = merged["index"] >= 0
  merged = {k: v[keep] for k, v in merged.items()}
  if classify:
    return summarize_classification(sums, ds.class_names), merged
  return metrics_lib.summarize(sums, ds.class_names), merged
