"""Image-level decisions on segmentation output, chosen on validation only.

A quality engineer reads two numbers: does an image with a defect get it
found (defect-image Dice), and does a clean image raise an alarm (false-alarm
rate). Argmax masks answer the second badly on real surfaces: a few
uncertain pixels anywhere alarm the image. The decision rule here is

  defect pixel   p(defect) = 1 - p(background) >= threshold (valid pixels)
  component      8-connected defect pixels; those with area < min_area are
                 removed (specks, texture)
  alarm          at least one component is left
  class          each kept pixel's most probable defect class

`calibrate` picks (threshold, min_area) on the validation split: the highest
mean defect-image Dice among the rules whose false-alarm rate stays within
`max_false_alarm` (if none does, the rule with the fewest alarms). Component
areas are counted once per threshold, so the whole grid costs one labelling
per image and threshold. The test split is then evaluated once with the
chosen rule.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Iterator, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from scipy import ndimage

from chameleon_jax.data import pipeline
from chameleon_jax.data.transforms import IGNORE_INDEX
from chameleon_jax.train import sharding

THRESHOLDS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2).tolist()) + (
    0.97, 0.99)
MIN_AREAS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_EIGHT = np.ones((3, 3), bool)


@dataclasses.dataclass(frozen=True)
class DecisionRule:
  threshold: float = 0.5  # p(defect) a pixel needs.
  min_area: int = 1  # Pixels a component needs to be kept.

  def apply(self, probs: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H, W, K) probabilities -> (H, W) class map (0 = background)."""
    defect = ((1.0 - probs[..., 0]) >= self.threshold) & valid
    if self.min_area > 1 and defect.any():
      components, _ = ndimage.label(defect, structure=_EIGHT)
      areas = np.bincount(components.ravel())
      keep = areas >= self.min_area
      keep[0] = False
      defect = keep[components]
    classes = probs[..., 1:].argmax(-1) + 1
    return np.where(defect, classes, 0).astype(np.int32)


def predictions(predict, state, ds, split: str, config, mesh
                ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
  """(index, probabilities (H, W, K) float16, labels (H, W)) per image of
  `split`, in split order (every process computes, all get every image)."""
  size = tuple(config.data.image_size)
  local = sharding.local_batch_size(config.eval.batch_size, mesh)
  for batch in pipeline.eval_batches(
      ds, split=split, local_batch_size=local, size=size,
      size_policy=config.data.size_policy, scale=config.data.scale,
      process_index=jax.process_index(), process_count=jax.process_count()):
    probs = predict(state, sharding.shard_batch({"image": batch["image"]},
                                                mesh)["image"])
    probs = np.asarray(multihost_utils.process_allgather(probs, tiled=True)
                       .astype(np.float16))
    gathered = {k: (multihost_utils.process_allgather(batch[k], tiled=True)
                    if jax.process_count() > 1 else batch[k])
                for k in ("mask", "index")}
    for p, m, i in zip(probs, gathered["mask"], gathered["index"]):
      if i >= 0:
        yield int(i), p, m


def image_result(pred: np.ndarray, labels: np.ndarray) -> dict:
  valid = labels != IGNORE_INDEX
  gt = valid & (labels > 0)
  fg = valid & (pred > 0)
  inter = int((gt & fg).sum())
  gt_area, pred_area = int(gt.sum()), int(fg.sum())
  gt_classes = np.bincount(labels[gt], minlength=1)
  pred_classes = np.bincount(pred[fg], minlength=1)
  return {"dice": 2 * inter / max(gt_area + pred_area, 1),
          "defect": gt_area > 0, "alarm": pred_area > 0,
          "pred_area": pred_area,
          "true_class": int(gt_classes.argmax()) if gt_area else 0,
          "pred_class": int(pred_classes.argmax()) if pred_area else 0}


def summarize(results: Sequence[dict], pixel_confusion: np.ndarray,
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
  tp = np.diag(pixel_confusion).astype(np.float64)
  fp = pixel_confusion.sum(0) - tp
  fn = pixel_confusion.sum(1) - tp
  with np.errstate(invalid="ignore", divide="ignore"):
    dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
  out = {
      "defect_image_dice": float(np.mean([r["dice"] for r in defect]))
      if defect else float("nan"),
      "defect_image_dice_std": float(np.std([r["dice"] for r in defect]))
      if defect else float("nan"),
      "false_alarm_rate": len([r for r in clean if r["alarm"]]) /
      max(len(clean), 1),
      "defect_recall": len([r for r in defect if r["alarm"]]) /
      max(len(defect), 1),
      "num_defect_images": len(defect), "num_defect_free_images": len(clean),
      "image_confusion": images.tolist(),
  }
  for c, name in enumerate(class_names):
    out[f"dice/{name}"] = float(dice[c])
    per_class = [r["dice"] for r in defect if r["true_class"] == c]
    if c and per_class:
      out[f"defect_image_dice/{name}"] = float(np.mean(per_class))
  return out


def evaluate(rule: DecisionRule, items, class_names: Sequence[str]
             ) -> tuple[dict, list[dict], dict[int, np.ndarray]]:
  """Applies `rule` to (index, probs, labels) items: (metrics, per-image
  results in item order, {index: class map})."""
  k = len(class_names)
  confusion = np.zeros((k, k), np.int64)
  results, maps = [], {}
  for index, probs, labels in items:
    valid = labels != IGNORE_INDEX
    pred = rule.apply(probs.astype(np.float32), valid)
    confusion += np.bincount(labels[valid] * k + pred[valid],
                             minlength=k * k).reshape(k, k)
    results.append({"index": index, **image_result(pred, labels)})
    maps[index] = pred
  return summarize(results, confusion, class_names), results, maps


def calibrate(items, max_false_alarm: float,
              thresholds: Sequence[float] = THRESHOLDS,
              min_areas: Sequence[int] = MIN_AREAS
              ) -> tuple[DecisionRule, list[dict]]:
  """The rule with the best validation defect-image Dice within the
  false-alarm budget; returns it and the whole grid (one row per rule)."""
  t_count, a_count = len(thresholds), len(min_areas)
  dice_sum = np.zeros((t_count, a_count))
  alarms = np.zeros((t_count, a_count))
  n_defect = n_clean = 0
  areas_needed = np.asarray(min_areas)
  for _, probs, labels in items:
    valid = labels != IGNORE_INDEX
    gt = valid & (labels > 0)
    gt_area = int(gt.sum())
    n_defect += gt_area > 0
    n_clean += gt_area == 0
    p_defect = 1.0 - probs[..., 0].astype(np.float32)
    for ti, t in enumerate(thresholds):
      defect = (p_defect >= t) & valid
      components, n = ndimage.label(defect, structure=_EIGHT)
      if n == 0:
        area = inter = np.zeros(0)
      else:
        area = np.bincount(components.ravel(), minlength=n + 1)[1:]
        inter = np.bincount(components[gt], minlength=n + 1)[1:]
      kept = area[None, :] >= areas_needed[:, None]  # (A, n)
      if gt_area:
        dice_sum[ti] += 2 * (kept * inter).sum(1) / np.maximum(
            gt_area + (kept * area).sum(1), 1)
      else:
        alarms[ti] += kept.any(1)
  dice = dice_sum / max(n_defect, 1)
  false_alarm = alarms / max(n_clean, 1)
  table = [{"threshold": float(t), "min_area": int(a),
            "defect_image_dice": float(dice[i, j]),
            "false_alarm_rate": float(false_alarm[i, j])}
           for i, t in enumerate(thresholds) for j, a in enumerate(min_areas)]
  allowed = false_alarm <= max_false_alarm + 1e-12
  if allowed.any():
    score = np.where(allowed, dice, -1.0)
  else:
    logging.warning("No decision rule keeps validation false alarms within "
                    "%.3f; choosing the one with the fewest.", max_false_alarm)
    score = -false_alarm + 1e-6 * dice
  i, j = np.unravel_index(np.argmax(score), score.shape)
  return DecisionRule(float(thresholds[i]), int(min_areas[j])), table


def chosen_row(rule: DecisionRule, table: list[dict]) -> dict:
  """The grid row of `rule` (its validation Dice and false alarms)."""
  return next(r for r in table if r["threshold"] == rule.threshold and
              r["min_area"] == rule.min_area)


def validation_metrics(predict, state, ds, config, mesh) -> dict[str, float]:
  """The calibrated rule's figures on "val", for choosing checkpoints.

  `calibrated/score` is the rule's validation defect-image Dice when it keeps
  false alarms within `config.eval.max_false_alarm`, else minus its
  false-alarm rate: any checkpoint that meets the budget beats any that
  cannot, which is what `train.best_metric = "calibrated/score"` needs. The
  argmax `defect_image_dice` is a poor stand-in: its masks alarm on nearly
  every clean image, and on magnetic tile it chose steps whose calibrated
  figures were lower (benchmarks/RESULTS.md, issue 8).
  """
  budget = config.eval.max_false_alarm
  rule, table = calibrate(predictions(predict, state, ds, "val", config, mesh),
                          budget)
  row = chosen_row(rule, table)
  within = row["false_alarm_rate"] <= budget + 1e-12
  return {"calibrated/defect_image_dice": row["defect_image_dice"],
          "calibrated/false_alarm_rate": row["false_alarm_rate"],
          "calibrated/threshold": rule.threshold,
          "calibrated/min_area": float(rule.min_area),
          "calibrated/score": (row["defect_image_dice"] if within
                               else -row["false_alarm_rate"])}


def save_rule(path: Path, rule: DecisionRule, table: list[dict],
              max_false_alarm: float, split: str) -> None:
  payload = {"rule": dataclasses.asdict(rule), "chosen_on": split,
             "max_false_alarm": max_false_alarm,
             "validation": chosen_row(rule, table), "grid": table}
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(payload, indent=1) + "\n")
  tmp.replace(path)


def load_rule(workdir: str | Path) -> DecisionRule:
  """The rule that --mode=eval chose for this workdir's model."""
  path = Path(workdir) / "eval" / "decision.json"
  if not path.is_file():
    raise FileNotFoundError(
        f"{path} is missing: eval.decision='calibrated' needs the rule that "
        "--mode=eval chooses on the validation split; run it first.")
  return DecisionRule(**json.loads(path.read_text())["rule"])
