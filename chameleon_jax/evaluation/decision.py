"""Image-level decisions on segmentation output, chosen on validation only.

A quality engineer reads two numbers: does an image with a defect get it
found (defect-image Dice), and does a clean image raise an alarm (false-alarm
rate). Argmax masks answer the second badly on real surfaces: a few
uncertain pixels anywhere alarm the image. The decision rule here is

  defect pixel   p(defect) = 1 - p(background) >= threshold (valid pixels)
  component      8-connected defect pixels; those with area < min_area, or
                 whose peak p(defect) is below seed_threshold, are removed
                 (specks, texture, faint blobs)
  alarm          at least one component is left
  class          each kept pixel's most probable defect class

Per-class requirements (`class_seed_thresholds`, `class_min_areas`, one
value per defect class 1..K-1) replace the shared seed and minimum area by
those of the component's class: the defect class holding most of its
probability mass. Defect classes can differ in size by two orders of
magnitude (magnetic tile: blowholes of tens of pixels at the model's scale,
uneven bands of thousands), so one minimum area either removes the small
class or lets the large class's noise alarm.

The two thresholds are hysteresis: a component must reach the confident
`seed_threshold` somewhere to raise an alarm, and its mask then extends to
every connected pixel above `threshold`. A single high threshold, which the
false-alarm budget forces, keeps only the confident core of a defect and
loses its Dice; the seed keeps the alarm as strict while the mask follows
the defect's outline. Seeds equal to the thresholds are the single-threshold
rules, so the grid never does worse on val.

`calibrate` picks (threshold, seed_threshold, min_area) on the validation
split: the highest mean defect-image Dice among the rules whose false-alarm
rate stays within `max_false_alarm` (if none does, the rule with the fewest
alarms). Components are labelled once per threshold; each component's
(area, peak) falls in one cell of the (seed, area) grid, so a reversed 2-D
cumulative sum gives every rule's kept area, overlap and alarm count at
once. The test split is then evaluated once with the chosen rule.

With `per_class=True`, calibration continues from each threshold's best
shared (seed, area) by coordinate ascent over two sweeps of the classes:
for each class its (seed, area) pairs are tried in grid order, and a pair
is taken when, with the false alarms within the budget, it raises the
validation Dice by at least PER_CLASS_MIN_GAIN over the rule so far (so
the result is within that gain of the class's best pair, not always it).
The minimum gain is there because each move fits two more numbers to the
same images. Measurements: benchmarks/RESULTS.md, "Why each choice", "chameleon_jax/evaluation/decision.py".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from scipy import ndimage

from chameleon_jax import atomic
from chameleon_jax.data import pipeline
from chameleon_jax.evaluation import batches
from chameleon_jax.data.labels import EIGHT_CONNECTED, IGNORE_INDEX
from chameleon_jax.metrics.confusion import pixel_confusion
from chameleon_jax.metrics.images import (defect_pixels, image_result,
                                          is_defect_image, summarize_images)

THRESHOLDS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2).tolist()) + (
    0.97, 0.99)
MIN_AREAS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
PER_CLASS_MIN_GAIN = 0.005  # Val Dice a per-class move must add.


@dataclasses.dataclass(frozen=True)
class DecisionRule:
  """An image-level decision rule on (H, W, K) probabilities (module
  docstring): pixel threshold on p(defect), then connected components
  kept by area and peak, shared or per defect class. `apply` turns
  probabilities into a class map; an alarm is any kept component.
  """
  threshold: float = 0.5  # p(defect) a pixel needs.
  min_area: int = 1  # Pixels a component needs to be kept.
  seed_threshold: float | None = None  # Peak p(defect) a component needs
  # (None or <= threshold: no further condition).
  # Per defect class 1..K-1 (the component's class), in place of the two
  # above; None: the shared values.
  class_seed_thresholds: tuple[float, ...] | None = None
  class_min_areas: tuple[int, ...] | None = None

  def __post_init__(self):  # JSON gives lists; the rule stays hashable.
    for name in ("class_seed_thresholds", "class_min_areas"):
      value = getattr(self, name)
      if value is not None:
        object.__setattr__(self, name, tuple(value))

  def requirements(self, component_classes: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(peak p(defect), area) each component needs, by its class (1..K-1)."""
    seed = self.seed_threshold if self.seed_threshold is not None else 0.0
    seeds = np.full(component_classes.shape, seed, np.float32)
    areas = np.full(component_classes.shape, self.min_area)
    if self.class_seed_thresholds is not None:
      seeds = np.asarray(self.class_seed_thresholds,
                         np.float32)[component_classes - 1]
    if self.class_min_areas is not None:
      areas = np.asarray(self.class_min_areas)[component_classes - 1]
    return seeds, areas

  def apply(self, probs: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H, W, K) probabilities -> (H, W) class map (0 = background)."""
    p_defect = 1.0 - probs[..., 0]
    defect = (p_defect >= self.threshold) & valid
    filtered = (self.min_area > 1 or self.class_min_areas is not None or
                self.class_seed_thresholds is not None or
                (self.seed_threshold is not None and
                 self.seed_threshold > self.threshold))
    if filtered and defect.any():
      components, n = ndimage.label(defect, structure=EIGHT_CONNECTED)
      per_class = (self.class_min_areas is not None or
                   self.class_seed_thresholds is not None)
      seeds, areas = self.requirements(
          component_classes(probs, components, n) if per_class
          else np.ones(n, int))  # Shared values: the class is not read.
      keep = np.zeros(n + 1, bool)
      keep[1:] = ((np.bincount(components.ravel(), minlength=n + 1)[1:]
                   >= areas) & (_peaks(p_defect, components, n) >= seeds))
      defect = keep[components]
    classes = probs[..., 1:].argmax(-1) + 1
    return np.where(defect, classes, 0).astype(np.int32)


def alarm(class_map: np.ndarray, probs: np.ndarray) -> tuple[bool, float]:
  """An image's alarm and its score from its decided (H, W) class map and
  (H, W, K) probabilities: any kept defect pixel, and the largest
  p(defect) = 1 - p(background) among them (0 without alarm). What the
  served model returns as `alarm` and `alarm_score`."""
  kept = class_map > 0
  if not kept.any():
    return False, 0.0
  return True, float((1.0 - probs[..., 0])[kept].max())


def predictions(predict, state, ds, split: str, inp: pipeline.EvalInput,
                mesh, dtype=np.float16
                ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
  """(index, probabilities (H, W, K) in `dtype`, labels (H, W)) per image of
  `split`, in split order (every process computes, all get every image).

  Args:
    predict: jitted (state, images) -> probabilities (`steps.make_predict_fn`).
    state: the model's state; ds, split: where the images come from.
    inp: the evaluation input (sizes, global batch size); mesh: the devices.
    dtype: of the probabilities kept (float16 halves a split's memory).
  """
  for probs, host in batches.over_split(
      lambda st, b: predict(st, b["image"]), state, ds, split, inp, mesh,
      inputs=("image",), host_keys=("mask", "index")):
    probs = batches.gather(probs).astype(dtype)
    for p, m, i in zip(probs, host["mask"], host["index"]):
      if i >= 0:
        yield int(i), p, m


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
    confusion += pixel_confusion(pred, labels, valid, k)
    results.append({"index": index, **image_result(pred, labels)})
    maps[index] = pred
  return (summarize_images(results, confusion, class_names), results,
          maps)


def within_budget(false_alarm, budget: float):
  """False-alarm rate(s) within the budget, up to float rounding of a
  count / n ratio (the one test that calibrate, checkpoint scores and
  benchmarks share)."""
  return np.asarray(false_alarm) <= budget + 1e-12


def _peaks(p_defect: np.ndarray, components: np.ndarray, n: int
           ) -> np.ndarray:
  """Peak p(defect) of components 1..n (float32, as the pixels)."""
  inside = components > 0
  peak = np.zeros(n + 1, np.float32)
  np.maximum.at(peak, components[inside], p_defect[inside])
  return peak[1:]


def component_classes(probs: np.ndarray, components: np.ndarray, n: int
                      ) -> np.ndarray:
  """Class (1..K-1) of components 1..n: the defect class with the largest
  summed probability over the component's pixels."""
  flat = components.ravel()
  mass = np.stack([np.bincount(flat, weights=probs[..., c].ravel(),
                               minlength=n + 1)[1:]
                   for c in range(1, probs.shape[-1])], axis=1)
  return mass.argmax(1) + 1


def _at_least(levels: np.ndarray, values: np.ndarray) -> np.ndarray:
  """How many of the ascending `levels` each value reaches (>=)."""
  return np.searchsorted(levels, values, side="right")


def _grid_sums(s_bin, a_bin, weights, shape) -> np.ndarray:
  """(S, A) sums of `weights` over the components whose peak reaches seed
  level s and whose area reaches area level a. A component reaching s_bin
  seed levels and a_bin area levels counts for all s < s_bin, a < a_bin."""
  hist = np.zeros((shape[0] + 1, shape[1] + 1))
  np.add.at(hist, (s_bin, a_bin), weights)
  at_least = hist[::-1, ::-1].cumsum(0).cumsum(1)[::-1, ::-1]
  return at_least[1:, 1:]


def calibrate(items, max_false_alarm: float,
              thresholds: Sequence[float] = THRESHOLDS,
              min_areas: Sequence[int] = MIN_AREAS,
              seed_thresholds: Sequence[float] | None = None,
              per_class: bool = False
              ) -> tuple[DecisionRule, list[dict]]:
  """The rule with the best validation defect-image Dice within the
  false-alarm budget; returns it and the whole grid (one row per shared
  rule, then, with `per_class`, one row for the per-class rule if one is
  better; module docstring).

  Seeds default to the thresholds; a rule's seed is never below its
  threshold (such a seed would change nothing)."""
  seed_values = [float(v) for v in (thresholds if seed_thresholds is None
                                    else seed_thresholds)]
  seeds = np.asarray(seed_values, np.float32)  # Compared as the pixels are.
  if np.any(np.diff(seeds) <= 0):
    raise ValueError(f"seed thresholds {seed_values} must be increasing.")
  areas_needed = np.asarray(min_areas)
  shape = (len(seeds), len(areas_needed))
  dice_sum = np.zeros((len(thresholds),) + shape)
  alarms = np.zeros((len(thresholds),) + shape)
  n_defect = n_clean = 0
  tables = [_ComponentTable() for _ in thresholds] if per_class else None
  gt_list, num_classes = [], 0
  for image, (_, probs, labels) in enumerate(items):
    valid = labels != IGNORE_INDEX
    gt = defect_pixels(labels)
    gt_area = int(gt.sum())
    gt_list.append(gt_area)
    num_classes = probs.shape[-1]
    n_defect += is_defect_image(gt_area)
    n_clean += not is_defect_image(gt_area)
    p_defect = 1.0 - probs[..., 0].astype(np.float32)
    for ti, t in enumerate(thresholds):
      components, n = ndimage.label((p_defect >= t) & valid,
                                    structure=EIGHT_CONNECTED)
      if n == 0:
        continue  # Nothing kept: Dice 0 on a defect image, no alarm.
      area = np.bincount(components.ravel(), minlength=n + 1)[1:]
      peak = _peaks(p_defect, components, n)
      bins = (_at_least(seeds, peak), _at_least(areas_needed, area))
      if gt_area:
        inter = np.bincount(components[gt], minlength=n + 1)[1:]
        kept_inter = _grid_sums(*bins, inter, shape)
        kept_area = _grid_sums(*bins, area, shape)
        dice_sum[ti] += 2 * kept_inter / np.maximum(gt_area + kept_area, 1)
      else:
        alarms[ti] += _grid_sums(*bins, np.ones(n), shape) > 0
      if tables is not None:
        tables[ti].add(image, area, peak, component_classes(
            probs, components, n), inter if gt_area else np.zeros(n))
  if not n_clean:
    logging.warning("No defect-free image to calibrate on: the false-alarm "
                    "budget %.3f cannot be checked; the rule maximises the "
                    "defect-image Dice alone.", max_false_alarm)
  dice = dice_sum / max(n_defect, 1)
  false_alarm = alarms / max(n_clean, 1)
  usable = np.asarray(thresholds, np.float32)[:, None] <= seeds[None, :]
  # Reported as undefined (NaN) without a defect-free image; chosen as 0.
  reported = false_alarm if n_clean else np.full_like(false_alarm, np.nan)
  table = [{"threshold": float(t), "seed_threshold": seed_values[si],
            "min_area": int(a), "defect_image_dice": float(dice[ti, si, ai]),
            "false_alarm_rate": float(reported[ti, si, ai])}
           for ti, t in enumerate(thresholds)
           for si in range(len(seeds)) if usable[ti, si]
           for ai, a in enumerate(min_areas)]
  allowed = within_budget(false_alarm, max_false_alarm) & usable[..., None]
  if allowed.any():
    score = np.where(allowed, dice, -1.0)
  else:
    logging.warning("No decision rule keeps validation false alarms within "
                    "%.3f; choosing the one with the fewest.", max_false_alarm)
    score = np.where(usable[..., None], -false_alarm + 1e-6 * dice, -np.inf)
  ti, si, ai = np.unravel_index(np.argmax(score), score.shape)
  rule = DecisionRule(float(thresholds[ti]), int(min_areas[ai]),
                      seed_values[si])
  if tables is None or not allowed.any() or num_classes < 3:
    return rule, table  # One defect class: per class is the shared rule.
  gt_areas, clean = np.asarray(gt_list), np.asarray(gt_list) == 0
  shared_dice = float(dice[ti, si, ai])
  best, best_fa = (shared_dice, rule), None
  for tj, t in enumerate(thresholds):
    if not allowed[tj].any():
      continue
    sj, aj = np.unravel_index(np.argmax(score[tj]), score[tj].shape)
    levels = [v for v in seed_values if np.float32(v) >= np.float32(t)]
    found = _per_class_search(
        tables[tj].columns(), gt_areas, clean, (seed_values[sj], min_areas[aj]),
        levels, min_areas, max_false_alarm, num_classes - 1)
    if found[0] > best[0] and found[0] >= shared_dice + PER_CLASS_MIN_GAIN:
      best = (found[0], DecisionRule(
          float(t), int(min_areas[aj]), seed_values[sj],
          tuple(float(v) for v in found[1]), tuple(int(v) for v in found[2])))
      best_fa = found[3]
  logging.info("Per-class rule search: val Dice %.4f against %.4f shared; "
               "%s.", best[0], shared_dice,
               "shared rule kept" if best[1] is rule else best[1])
  if best[1] is rule:
    return rule, table
  table.append({**_rule_fields(best[1]), "defect_image_dice": best[0],
                "false_alarm_rate": best_fa if n_clean else float("nan")})
  return best[1], table


class _ComponentTable:
  """Components at one threshold over a split's images: columns (image,
  area, peak p(defect), class, pixels overlapping the true defect)."""

  def __init__(self):
    self.parts: list[tuple[np.ndarray, ...]] = []

  def add(self, image: int, area, peak, classes, inter) -> None:
    self.parts.append((np.full(len(area), image), area, peak, classes, inter))

  def columns(self) -> tuple[np.ndarray, ...]:
    if not self.parts:
      return (np.zeros(0, int), np.zeros(0, int), np.zeros(0, np.float32),
              np.zeros(0, int), np.zeros(0))
    return tuple(np.concatenate(c) for c in zip(*self.parts))


def _per_class_search(columns, gt_areas: np.ndarray, clean: np.ndarray,
                      start: tuple[float, int], seed_levels: Sequence[float],
                      min_areas: Sequence[int], budget: float,
                      num_defect_classes: int, sweeps: int = 2):
  """Coordinate ascent over (seed, area) per component class from the
  shared `start`: (val Dice, seeds, areas, false-alarm rate). A move (in
  grid order) is taken only if it keeps the false alarms within `budget`
  and raises the Dice by at least PER_CLASS_MIN_GAIN over the rule so far."""
  image, area, peak, classes, inter = columns
  n = len(gt_areas)
  defect = ~clean

  def figures(seeds, areas):
    keep = ((peak >= seeds.astype(np.float32)[classes - 1]) &
            (area >= areas[classes - 1]))
    kept_inter = np.bincount(image[keep], inter[keep], minlength=n)
    kept_area = np.bincount(image[keep], area[keep], minlength=n)
    alarmed = np.bincount(image[keep], minlength=n) > 0
    image_dice = 2 * kept_inter / np.maximum(gt_areas + kept_area, 1)
    return (float(image_dice[defect].sum() / max(defect.sum(), 1)),
            float(alarmed[clean].sum() / max(clean.sum(), 1)))

  seeds = np.full(num_defect_classes, start[0])  # Compared in float32.
  areas = np.full(num_defect_classes, start[1])
  best, best_fa = figures(seeds, areas)
  for _ in range(sweeps):
    for c in range(num_defect_classes):
      for seed in seed_levels:
        for min_area in min_areas:
          trial_seeds, trial_areas = seeds.copy(), areas.copy()
          trial_seeds[c], trial_areas[c] = seed, min_area
          d, fa = figures(trial_seeds, trial_areas)
          if within_budget(fa, budget) and d >= best + PER_CLASS_MIN_GAIN:
            best, best_fa, seeds, areas = d, fa, trial_seeds, trial_areas
  return best, seeds, areas, best_fa


def _rule_fields(rule: DecisionRule) -> dict:
  fields = {"threshold": rule.threshold, "seed_threshold": rule.seed_threshold,
            "min_area": rule.min_area}
  if rule.class_seed_thresholds is not None:
    fields["class_seed_thresholds"] = list(rule.class_seed_thresholds)
  if rule.class_min_areas is not None:
    fields["class_min_areas"] = list(rule.class_min_areas)
  return fields


def chosen_row(rule: DecisionRule, table: list[dict]) -> dict:
  """The grid row of `rule` (its validation Dice and false alarms)."""
  fields = _rule_fields(rule)
  return next(r for r in table
              if {k: r.get(k) for k in fields} == fields and
              set(r) - set(fields) == {"defect_image_dice",
                                       "false_alarm_rate"})


def validation_metrics(predict, state, ds, inp: pipeline.EvalInput, mesh,
                       max_false_alarm: float, per_class: bool
                       ) -> dict[str, float]:
  """The calibrated rule's figures on "val", for choosing checkpoints.

  `calibrated/score` is the rule's validation defect-image Dice when it keeps
  false alarms within `max_false_alarm`, else minus its
  false-alarm rate: any checkpoint that meets the budget beats any that
  cannot, which is what `train.best_metric = "calibrated/score"` needs. The
  argmax `defect_image_dice` is a poor stand-in: its masks alarm on nearly
  every clean image.

  Args:
    predict: jitted (state, images) -> probabilities.
    state, ds: the model's state and the dataset version ("val" is used).
    inp, mesh: the evaluation input and the device mesh.
    max_false_alarm: the false-alarm budget of the rule.
    per_class: calibrate a seed and area per defect class.
  """
  budget = max_false_alarm
  rule, table = calibrate(predictions(predict, state, ds, "val", inp, mesh),
                          budget, per_class=per_class)
  row = chosen_row(rule, table)
  # No defect-free image (NaN): no false alarm can break the budget.
  within = bool(math.isnan(row["false_alarm_rate"]) or
                within_budget(row["false_alarm_rate"], budget))
  return {"calibrated/defect_image_dice": row["defect_image_dice"],
          "calibrated/false_alarm_rate": row["false_alarm_rate"],
          "calibrated/threshold": rule.threshold,
          "calibrated/seed_threshold": rule.seed_threshold,
          "calibrated/min_area": float(rule.min_area),
          "calibrated/score": (row["defect_image_dice"] if within
                               else -row["false_alarm_rate"])}


def save_rule(path: Path, rule: DecisionRule, table: list[dict],
              max_false_alarm: float, split: str) -> None:
  """Writes the chosen rule, the split it was chosen on, the budget, its
  validation figures and the whole grid to `path` (eval/decision.json),
  atomically; `load_rule` reads it back.
  """
  payload = {"rule": dataclasses.asdict(rule), "chosen_on": split,
             "max_false_alarm": max_false_alarm,
             "validation": chosen_row(rule, table), "grid": table}
  atomic.write_json(path, atomic.json_ready(payload))


def load_rule(workdir: str | Path) -> DecisionRule:
  """The rule that --mode=eval chose for this workdir's model."""
  path = Path(workdir) / "eval" / "decision.json"
  if not path.is_file():
    raise FileNotFoundError(
        f"{path} is missing: eval.decision='calibrated' needs the rule that "
        "--mode=eval chooses on the validation split; run it first.")
  return DecisionRule(**json.loads(path.read_text())["rule"])
