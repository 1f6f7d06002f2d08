"""Segmentation metrics as sums (psum-able), reduced to numbers on the host.

The eval step returns only additive quantities (a confusion matrix, counts and
sums); under `jit` with a batch-sharded input XLA adds them across devices,
and across evaluation batches the host adds them again. Ratios are formed once
at the end, so the result does not depend on how data was split.

Image-level quantities, the ones a quality engineer reads (their terms are
defined in images.py):
  false_alarm_rate   fraction of defect-free images with an alarm (at least
                     min_defect_area pixels predicted as any defect class);
  defect_image_dice  mean image Dice over the defect images.
Either is NaN (undefined; null in JSON, "not measurable" when printed) when
the split has no image of its kind: a data set where every image has a
defect has no false-alarm rate, not a rate of 0.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from chameleon_jax.data.labels import IGNORE_INDEX
from chameleon_jax.metrics import images
from chameleon_jax.metrics.confusion import iou_dice


def segmentation_sums(logits: jax.Array, labels: jax.Array, weight: jax.Array,
                      min_defect_area: int = 1) -> tuple[dict, dict]:
  """Additive metric sums of a batch, and per-image values for ranking.

  Args:
    logits: (B, H, W, K) logits.
    labels: (B, H, W) int labels, IGNORE_INDEX where unlabelled.
    weight: (B,) 1 for real examples, 0 for padding examples.
    min_defect_area: predicted defect pixels needed to call an image defective.
  """
  num_classes = logits.shape[-1]
  pred = jnp.argmax(logits, axis=-1)
  valid = (labels != IGNORE_INDEX) & (weight[:, None, None] > 0)
  target = jnp.where(valid, labels, 0)
  t = jax.nn.one_hot(target, num_classes, dtype=jnp.int32) * valid[..., None]
  p = jax.nn.one_hot(pred, num_classes, dtype=jnp.int32)
  confusion = jnp.einsum("bhwk,bhwl->kl", t, p)
  gt_fg = valid & (target > 0)
  pred_fg = valid & (pred > 0)
  gt_area = gt_fg.sum((1, 2))
  pred_area = pred_fg.sum((1, 2))
  inter = (gt_fg & pred_fg).sum((1, 2))
  real = weight > 0
  defect_image = real & images.is_defect_image(gt_area)
  clean_image = real & ~images.is_defect_image(gt_area)
  alarm = images.is_alarm(pred_area, min_defect_area)
  image_dice = images.image_dice(inter, gt_area, pred_area)
  sums = {
      "confusion": confusion,
      "num_images": real.sum(),
      "num_defect_images": defect_image.sum(),
      "defect_image_dice_sum": jnp.where(defect_image, image_dice, 0.0).sum(),
      "num_defect_free_images": clean_image.sum(),
      "num_false_alarms": (clean_image & alarm).sum(),
  }
  per_image = {"dice": image_dice, "false_alarm": clean_image & alarm,
               "defect": defect_image, "pred_area": pred_area,
               "gt_area": gt_area}
  return sums, per_image


def add_sums(a: dict | None, b: dict) -> dict:
  """a + b key by key in float64 (a None: the first batch)."""
  b = {k: np.asarray(v, np.float64) for k, v in b.items()}
  return b if a is None else {k: a[k] + b[k] for k in a}


def summarize(sums: dict, class_names: Sequence[str]) -> dict[str, float]:
  """Turns accumulated sums into named metrics (JSON-ready floats)."""
  conf = np.asarray(sums["confusion"], np.float64)
  tp = np.diag(conf)
  iou, dice = iou_dice(conf)
  out: dict[str, float] = {}
  for k, name in enumerate(class_names):
    out[f"iou/{name}"] = float(iou[k])
    out[f"dice/{name}"] = float(dice[k])
  defect = slice(1, None)
  out["mean_defect_iou"] = _nanmean(iou[defect])
  out["mean_defect_dice"] = _nanmean(dice[defect])
  out["pixel_accuracy"] = float(tp.sum() / max(conf.sum(), 1))
  out["defect_image_dice"] = _rate(sums["defect_image_dice_sum"],
                                   sums["num_defect_images"])
  out["false_alarm_rate"] = _rate(sums["num_false_alarms"],
                                  sums["num_defect_free_images"])
  out["num_images"] = float(sums["num_images"])
  out["num_defect_images"] = float(sums["num_defect_images"])
  out["num_defect_free_images"] = float(sums["num_defect_free_images"])
  return out


def _rate(numerator, count) -> float:
  """numerator / count; NaN (undefined, JSON null) when count is 0."""
  count = float(count)
  return float(numerator) / count if count else float("nan")


def _nanmean(x: np.ndarray) -> float:
  x = x[~np.isnan(x)]
  return float(x.mean()) if x.size else float("nan")
