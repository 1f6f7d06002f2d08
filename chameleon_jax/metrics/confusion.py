"""Per-class IoU and Dice from a confusion matrix (rows: truth, columns:
prediction), formed once from summed counts so the result does not depend on
how the data was batched or sharded."""

from __future__ import annotations

import numpy as np


def pixel_confusion(pred: np.ndarray, labels: np.ndarray, valid: np.ndarray,
                    num_classes: int) -> np.ndarray:
  """(K, K) int64 counts of (true class, predicted class) over valid pixels."""
  k = num_classes
  return np.bincount(labels[valid].astype(np.int64) * k + pred[valid],
                     minlength=k * k).reshape(k, k)


def iou_dice(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(IoU, Dice) per class, float64; NaN for a class absent from both the
  truth and the prediction (it has no score, rather than a perfect one).

  Example:
    >>> iou_dice(np.array([[8, 2], [0, 2]]))[1]  # Dice of class 1: 4 / 6.
    array([0.88888889, 0.66666667])
  """
  conf = np.asarray(confusion, np.float64)
  tp = np.diag(conf)
  fp = conf.sum(0) - tp
  fn = conf.sum(1) - tp
  present = (tp + fp + fn) > 0
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = np.where(present, tp / (tp + fp + fn), np.nan)
    dice = np.where(present, 2 * tp / (2 * tp + fp + fn), np.nan)
  return iou, dice
