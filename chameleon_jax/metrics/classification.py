"""Image-classification metrics as sums (psum-able), reduced on the host.

Same contract as metrics.py: the eval step returns a confusion matrix and
counts that add across devices and batches; ratios are formed at the end.
Class 0 is the defect-free ("OK") class, as in segmentation (background),
which gives the two numbers a quality engineer reads:
  false_alarm_rate  share of class-0 images predicted as any other class;
  defect_recall     share of images of classes >= 1 predicted as any class
                    >= 1 (found, whatever the defect type).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def classification_sums(logits: jax.Array, labels: jax.Array,
                        weight: jax.Array) -> tuple[dict, dict]:
  """logits (B, K), labels (B,), weight (B,) (0 for padding examples)."""
  k = logits.shape[-1]
  pred = jnp.argmax(logits, axis=-1)
  real = weight > 0
  t = jax.nn.one_hot(labels, k, dtype=jnp.int32) * real[:, None]
  p = jax.nn.one_hot(pred, k, dtype=jnp.int32)
  sums = {"confusion": t.T @ p, "num_images": real.sum()}
  confidence = jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1)
  return sums, {"pred": pred, "label": labels, "confidence": confidence}


def summarize_classification(sums: dict, class_names: Sequence[str]
                             ) -> dict[str, float]:
  """Accumulated classification sums -> accuracy, balanced accuracy,
  per-class recall and precision, false-alarm rate (class 0 predicted as
  a defect), defect recall, image count and the confusion matrix.
  """
  conf = np.asarray(sums["confusion"], np.float64)
  support = conf.sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    recall = np.where(support > 0, np.diag(conf) / support, np.nan)
    predicted = conf.sum(0)
    precision = np.where(predicted > 0, np.diag(conf) / predicted, np.nan)
  out: dict[str, float] = {
      "accuracy": float(np.trace(conf) / max(conf.sum(), 1)),
      "balanced_accuracy": float(np.nanmean(recall)) if np.any(support)
                           else float("nan")}
  for name, r, p in zip(class_names, recall, precision):
    out[f"recall/{name}"] = float(r)
    out[f"precision/{name}"] = float(p)
  # Undefined (NaN) without the images they are rates of.
  out["false_alarm_rate"] = (float(conf[0, 1:].sum() / support[0])
                             if support[0] else float("nan"))
  out["defect_recall"] = (float(conf[1:, 1:].sum() / support[1:].sum())
                          if support[1:].sum() else float("nan"))
  out["num_images"] = float(sums["num_images"])
  out["confusion"] = conf.astype(int).tolist()
  return out
