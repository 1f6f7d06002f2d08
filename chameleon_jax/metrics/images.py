"""Image-level meanings, defined once.

  defect image   an image with at least one valid ground-truth defect pixel
                 (class > 0, not IGNORE_INDEX); the others are defect-free
  alarm          an image with at least `min_area` predicted defect pixels
  false alarm    an alarm on a defect-free image
  image Dice     the binary (defect vs background) Dice of one image, 0 when
                 neither the truth nor the prediction has a defect pixel
  found defect   a ground-truth defect component (8-connected, one class)
                 with at least one predicted defect pixel on it

The functions take NumPy or JAX arrays (the jitted eval step and the host
code count with the same lines).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from chameleon_jax.data.labels import (EIGHT_CONNECTED, IGNORE_INDEX,
                                       defect_pixels)
from chameleon_jax.metrics.confusion import iou_dice

__all__ = ["defect_components", "defect_pixels", "image_dice",
           "image_result", "is_alarm", "is_defect_image", "summarize_images"]



def is_defect_image(gt_area: Any) -> Any:
  """True where the ground truth has a valid defect pixel.

  Args:
    gt_area: valid ground-truth defect pixels per image (int or array).
  """
  return gt_area > 0


def is_alarm(pred_area: Any, min_area: int = 1) -> Any:
  """True where at least `min_area` pixels are predicted as a defect.

  Args:
    pred_area: predicted defect pixels per image (int or array).
    min_area: pixels an image needs to raise an alarm (default 1).
  """
  return pred_area >= min_area


def image_dice(intersection: Any, gt_area: Any, pred_area: Any) -> Any:
  """Binary Dice 2|G∩P| / (|G| + |P|) per image; 0 where both are empty."""
  total = gt_area + pred_area
  return 2 * intersection / (max(total, 1) if np.isscalar(total)
                             else total.clip(min=1))


def defect_components(pred: np.ndarray, labels: np.ndarray
                      ) -> list[tuple[int, int, bool]]:
  """(class, area in pixels, found) of every ground-truth defect component
  of `labels` (8-connected, per class), in order of class then position;
  found: a predicted defect pixel (`pred` > 0) lies on it."""
  out = []
  fg = pred > 0
  for k in np.unique(labels[defect_pixels(labels)]):
    components, n = ndimage.label(labels == k, structure=EIGHT_CONNECTED)
    if not n:
      continue
    flat = components.ravel()
    area = np.bincount(flat, minlength=n + 1)[1:]
    hit = np.bincount(flat, weights=fg.ravel(), minlength=n + 1)[1:] > 0
    out += [(int(k), int(a), bool(h)) for a, h in zip(area, hit)]
  return out


def image_result(pred: np.ndarray, labels: np.ndarray) -> dict:
  """Per-image result of a class map `pred` against `labels` (H, W).

  Returns:
    {"dice", "defect", "alarm", "pred_area", "gt_area", "true_class"
    (the dominant ground-truth defect class, 0 if none), "pred_class" (the
    dominant predicted class, 0 if no alarm), "components"
    (`defect_components`)}; an alarm is any predicted defect pixel (a
    decision rule has already removed small components).
  """
  valid = labels != IGNORE_INDEX
  gt = defect_pixels(labels)
  fg = valid & (pred > 0)
  inter = int((gt & fg).sum())
  gt_area, pred_area = int(gt.sum()), int(fg.sum())
  gt_classes = np.bincount(labels[gt], minlength=1)
  pred_classes = np.bincount(pred[fg], minlength=1)
  return {"dice": float(image_dice(inter, gt_area, pred_area)),
          "defect": bool(is_defect_image(gt_area)),
          "alarm": bool(is_alarm(pred_area)),
          "pred_area": pred_area, "gt_area": gt_area,
          "true_class": int(gt_classes.argmax()) if gt_area else 0,
          "pred_class": int(pred_classes.argmax()) if pred_area else 0,
          "components": defect_components(pred, labels)}


def summarize_images(results: Sequence[dict], pixel_confusion: np.ndarray,
                     class_names: Sequence[str]) -> dict:
  """Image-level metrics, per-class pixel Dice and the image-level
  confusion between classes (rows: the image's true dominant class, 0 =
  defect-free; columns: the predicted one, 0 = no alarm)."""
  defect = [r for r in results if r["defect"]]
  clean = [r for r in results if not r["defect"]]
  k = len(class_names)
  images = np.zeros((k, k), np.int64)
  for r in results:
    images[r["true_class"], r["pred_class"]] += 1
  _, dice = iou_dice(pixel_confusion)
  out = {
      "defect_image_dice": float(np.mean([r["dice"] for r in defect]))
      if defect else float("nan"),
      "defect_image_dice_std": float(np.std([r["dice"] for r in defect]))
      if defect else float("nan"),
      # Undefined (NaN; JSON null) without the images they are rates of.
      "false_alarm_rate": len([r for r in clean if r["alarm"]]) / len(clean)
      if clean else float("nan"),
      "defect_recall": len([r for r in defect if r["alarm"]]) / len(defect)
      if defect else float("nan"),
      "num_defect_images": len(defect), "num_defect_free_images": len(clean),
      "image_confusion": images.tolist(),
  }
  for c, name in enumerate(class_names):
    out[f"dice/{name}"] = float(dice[c])
    per_class = [r["dice"] for r in defect if r["true_class"] == c]
    if c and per_class:
      out[f"defect_image_dice/{name}"] = float(np.mean(per_class))
  return out
