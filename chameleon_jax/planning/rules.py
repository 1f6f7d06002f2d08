"""The planner's rules about the data: each sets config keys from `Facts`.

Every rule states what it does in its docstring and records, per key, the
value, the rule in one sentence and the fingerprint evidence it read
(`Planner.choose`). The thresholds are named constants here, each with the
measurement or argument behind it; none is fitted to one dataset. The rules
about the model, memory and time are in `schedule.py`.
"""

from __future__ import annotations

import math

from chameleon_jax.planning.facts import Facts, largest_defect, side, smallest_defect
from chameleon_jax.planning.planner_state import Planner

# After scaling, a quarter of the smallest class's components keep at least
# this many pixels: a 4 x 4 patch, which the first 2x pooling still sees as
# 2 x 2. Resolution beyond that costs passes over the data within a budget.
MIN_DEFECT_PIXELS = 16.0
SCALES = (1.0, 0.5, 0.25, 0.125)  # Candidate working scales, largest first.
# The model's coarsest level keeps at least this many pixels per side.
MIN_BOTTLENECK = 2
MAX_LEVELS, MIN_LEVELS = 6, 3
# Images whose working canvas has a longer side up to this train whole
# (context for large defects, nothing to choose); larger ones train on crops.
WHOLE_IMAGE_SIDE = 256
MIN_CROP_SIDE = 128
# Half of every batch from defect images when they are a minority
# (rare_defects, RESULTS "Why each choice"); two thirds of crops on a defect.
DEFECT_SHARE = 0.5
FOREGROUND_CROPS = 0.67
# Dice per image with defect-free images excluded from the Dice term: the
# best defect-image Dice of the loss evidence table on real data (0.120
# against 0.062 for the batch-pooled default; RESULTS, "Which loss").
# Tversky won on synthetic tiny defects but marked ~12,800 pixels of every
# defect-free real image: never chosen for inspection data.
# Class weights only when the rarest defect class has this share of the
# commonest one's images (on magnetic tile, 3.6x apart, weights cost val
# Dice: RESULTS, "class weights").
CLASS_WEIGHT_RATIO = 0.1
# Images "have an axis" when this share of them share one orientation, or
# one texture direction: 90-degree turns would show poses never met.
ORIENTED_SHARE = 0.9
# A texture direction: squared neighbour differences along one axis this
# many times those along the other (fingerprint images.texture). Brushed,
# ground and rolled surfaces, weaves and grain; white noise gives ~1.
TEXTURE_AXIS_RATIO = 1.5
# Passes over the training defect images a schedule aims at (schedule.py
# sizes the model by it; fewer fitting means a model still fitting).
PASSES_WANTED = 50
# A false-alarm rate can be calibrated on val with this many defect-free
# images (one image moves the rate by 1/20 = 5 %).
MIN_CALIBRATION_IMAGES = 20
MAX_FALSE_ALARM = 0.15  # defect_alarm: room under a 20 % target.


def task(p: Planner) -> None:
  """Segmentation where the items carry masks, classification otherwise."""
  f = p.facts
  p.choose("task", f.task, "masks present -> segmentation; image labels "
           "only -> classification",
           f"fingerprint images.with_mask = {f.with_mask} of {f.images}")


def scale(p: Planner) -> None:
  """The smallest working scale at which a quarter of the smallest defect
  class's components keep MIN_DEFECT_PIXELS (classification: native)."""
  f = p.facts
  small = smallest_defect(f)
  if small is None:
    p.choose("data.scale", 1.0, "no defect components measured: native "
             "resolution", "fingerprint classes.*.components absent")
    return
  chosen = next((s for s in reversed(SCALES)
                 if s * s * small.area_p25 >= MIN_DEFECT_PIXELS), 1.0)
  p.choose(
      "data.scale", chosen,
      f"the smallest of {list(SCALES)} at which the smallest class's 25th-"
      f"percentile component keeps >= {MIN_DEFECT_PIXELS:g} px",
      f"{small.name}: component area p25 {small.area_p25:g} px², p5 "
      f"{small.area_p5:g} px², median {small.area_p50:g} px² at native size"
      f" -> {chosen * chosen * small.area_p25:.1f} px² at scale {chosen:g}")


def levels(canvas: tuple[int, int]) -> int:
  """UNet levels for a canvas: as deep as MAX_LEVELS while the coarsest
  level keeps MIN_BOTTLENECK pixels per side."""
  short = min(canvas)
  fit = int(math.floor(math.log2(max(short, 1) / MIN_BOTTLENECK))) + 1
  return max(MIN_LEVELS, min(MAX_LEVELS, fit))


def _round_up(value: float, multiple: int) -> int:
  return int(math.ceil(value / multiple) * multiple)


def canvas(p: Planner) -> None:
  """Evaluation canvas: the largest scaled image, rounded up to the model's
  stride; smaller images are padded (padding is ignored), none resized."""
  f = p.facts
  s = p.value("data.scale")
  raw = (math.ceil(f.height["max"] * s), math.ceil(f.width["max"] * s))
  stride = 2 ** (levels(raw) - 1)
  size = (_round_up(raw[0], stride), _round_up(raw[1], stride))
  p.derived["stride"] = stride
  evidence = (f"fingerprint images.height max {f.height['max']}, width max "
              f"{f.width['max']} x scale {s:g} = {raw[0]}x{raw[1]}; "
              f"{f.distinct_sizes} distinct sizes; stride {stride}")
  if f.task == "classification":
    side_ = _round_up(min(224, max(f.height["median"], f.width["median"])), 32)
    p.choose("data.image_size", (side_, side_), "classification: whole images "
             "resized to the median image's longer side (<= 224), a multiple "
             "of 32", evidence)
    p.choose("data.size_policy", "resize", "a classifier sees the whole part",
             evidence)
    return
  p.choose("data.image_size", size, "the largest scaled image rounded up to "
           "the stride", evidence)
  p.choose("data.size_policy", "pad", "pad, never resize: defect sizes and "
           "shapes stay as measured", evidence)


def crop(p: Planner) -> None:
  """Whole images when the canvas's longer side <= WHOLE_IMAGE_SIDE; else
  square crops holding the largest class's median component with its own
  width of context (>= MIN_CROP_SIDE, <= the canvas), most of them on a
  defect when defects are small."""
  f = p.facts
  size = p.value("data.image_size")
  if f.task == "classification" or max(size) <= WHOLE_IMAGE_SIDE:
    p.choose("data.crop_size", (), f"whole images: canvas {size[0]}x{size[1]}"
             f" has its longer side <= {WHOLE_IMAGE_SIDE}",
             f"data.image_size = {size}")
    return
  big = largest_defect(f)
  s = p.value("data.scale")
  stride = p.derived["stride"]
  wanted = 2 * side(big.area_p50) * s if big else MIN_CROP_SIDE
  crop_side = min(_round_up(max(MIN_CROP_SIDE, wanted), stride),
                  (min(size) // stride) * stride)
  p.choose("data.crop_size", (crop_side, crop_side),
           f"square crops of twice the largest class's median component "
           f"side, >= {MIN_CROP_SIDE}, a multiple of the stride {stride}",
           f"{big.name if big else '-'}: median component "
           f"{big.area_p50 if big else 0:g} px² (side "
           f"{side(big.area_p50 if big else 0) * s:.0f} px at scale {s:g}); "
           f"canvas {size[0]}x{size[1]}")
  median_share = _median([d.share_median for d in f.defect_classes])
  if median_share < 0.05:
    p.choose("data.augment.foreground_crop_fraction", FOREGROUND_CROPS,
             "defects cover < 5 % of an image: two thirds of the crops "
             "centred on a defect (rare_defects)",
             f"median share of a defect image per class: {median_share:.4f}")


def _median(values: list[float]) -> float:
  values = sorted(values)
  if not values:
    return 0.0
  mid = len(values) // 2
  return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def sampling(p: Planner) -> None:
  """Half of every batch from defect images when they are a minority in
  train; uniform sampling otherwise (with no defect-free image there is
  nothing to rebalance)."""
  train = p.facts.splits["train"]
  share = train.defect / max(train.images, 1)
  evidence = (f"train: {train.defect} of {train.images} images with a "
              f"defect ({share:.0%}), {train.defect_free} defect-free")
  if share < DEFECT_SHARE and train.defect_free:
    p.choose("data.defect_image_fraction", DEFECT_SHARE, "defect images are "
             f"a minority: {DEFECT_SHARE:.0%} of every batch from them", evidence)
  else:
    p.choose("data.defect_image_fraction", -1.0, "defect images are at least "
             "half of train: uniform sampling", evidence)


def loss(p: Planner) -> None:
  """Dice + CE; per image with defect-free images excluded from the Dice
  term where there are any; class weights from frequencies only where the
  defect classes' image counts differ by more than 1/CLASS_WEIGHT_RATIO."""
  f = p.facts
  if f.task == "classification":
    p.choose("loss.name", "cross_entropy", "classification: cross-entropy",
             f"{f.num_classes} image classes")
    p.choose("loss.kwargs", {"label_smoothing": 0.1}, "label smoothing 0.1 "
             "for few, partly ambiguous images", f"{f.images} images")
    return
  kwargs = {}
  evidence = f"fingerprint masks.empty_fraction = {f.empty_fraction:.3f}"
  if f.empty_fraction > 0:
    kwargs = {"reduce_over": "image", "empty_target": "exclude"}
  counts = [d.images for d in f.defect_classes]
  if len(counts) > 1 and min(counts) < CLASS_WEIGHT_RATIO * max(counts):
    kwargs["class_weights"] = _class_weights(f)
  evidence += (f"; defect images per class {dict(zip([d.name for d in f.defect_classes], counts))}")
  p.choose("loss.name", "dice_ce", "Dice + CE: the balanced loss of the "
           "evidence table (RESULTS, 'Which loss')", evidence)
  p.choose("loss.kwargs", kwargs,
           ("Dice per image, defect-free images out of the Dice term"
            if f.empty_fraction > 0 else "Dice pooled over the batch (every "
            "image has a defect)") +
           ("; class weights from pixel frequencies (rarest class under "
            f"{CLASS_WEIGHT_RATIO:.0%} of the commonest)"
            if "class_weights" in kwargs else "; no class weights"),
           evidence)


def _class_weights(f: Facts) -> tuple[float, ...]:
  """Inverse square-root pixel frequency, background 1, clipped to [1, 10]."""
  weights = [1.0]
  for d in f.defect_classes:
    freq = max(d.pixel_frequency, 1e-9)
    weights.append(round(min(10.0, max(1.0, (1e-2 / freq) ** 0.5)), 2))
  return tuple(weights)


def normalisation(p: Planner) -> None:
  """Per-channel mean and std of the data (in [0, 1] units of its bit
  depth), applied inside the model so that serving sees the same."""
  f = p.facts
  p.derived["input_mean"], p.derived["input_std"] = f.mean, f.std
  p.note("input", f"{f.channels} channel(s), {f.bit_depth}-bit: values / "
         f"{f.max_value}, then (x - {list(f.mean)}) / {list(f.std)}",
         "fingerprint intensity.channel_*.all mean / std, images.bit_depth")


def augmentation(p: Planner) -> None:
  """What the data can take, as much as the schedule can use.

  16-bit or multi-channel intensities are measurements: pose and shape only
  ("geometric"). 8-bit grey or colour parts: "industrial" (small rotations,
  lighting drift, focus, noise). Where the budget gives fewer than
  PASSES_WANTED passes over the training defect images (model_and_batch's
  estimate), the model is still fitting when training stops and harder
  examples slow it: the light variant ("default": flips, turns, mild jitter;
  "flips" for measurements). No 90-degree turns when ORIENTED_SHARE of the
  images share an orientation or a texture direction (`texture_axis`).
  """
  f = p.facts
  fits, wanted = p.derived["fits"], p.derived["wanted"]
  passes = PASSES_WANTED * min(1.0, fits / wanted)
  evidence = (f"{f.channels} channel(s), {f.bit_depth}-bit; ~{passes:.0f} "
              f"passes over the training defect images fit the budget "
              f"({fits:.0f} of {wanted:.0f} steps)")
  measurement = f.bit_depth > 8 or f.channels > 3
  short = passes < PASSES_WANTED
  preset = {(True, False): "geometric", (True, True): "flips",
            (False, False): "industrial", (False, True): "default"}
  why = ("16-bit or multi-channel intensities are measurements: pose and "
         "shape only" if measurement else "8-bit grey or colour images of "
         "parts: rotations, lighting, focus, noise")
  if short:
    why += (f"; fewer than {PASSES_WANTED} passes fit, so the light variant "
            "(a model still fitting learns slower from harder examples)")
  p.choose("data.augment_preset", preset[(measurement, short)], why, evidence)
  axis = texture_axis(f)
  orientation = (f"{f.landscape:.0%} landscape, {f.portrait:.0%} portrait; "
                 f"texture {axis[1]}")
  if max(f.landscape, f.portrait) >= ORIENTED_SHARE or axis[0]:
    p.choose("data.augment.rotate90", False, f">= {ORIENTED_SHARE:.0%} of the"
             " images share an orientation or a texture direction: no "
             "90-degree turns (they would show poses never met)", orientation)
  else:
    p.note("rotate90", "90-degree turns kept: the images share neither an "
           "orientation nor a texture direction", orientation)


def texture_axis(f: Facts) -> tuple[bool, str]:
  """(whether ORIENTED_SHARE of the images have differences along one axis
  TEXTURE_AXIS_RATIO times those along the other, the same axis in all;
  the evidence in words)."""
  if f.texture is None:
    return False, ("not measured (a fingerprint of schema version 1: "
                   "ingest again to measure it)")
  low = f.texture[f"p{100 * (1 - ORIENTED_SHARE):g}"]
  high = f.texture[f"p{100 * ORIENTED_SHARE:g}"]
  bound = math.log(TEXTURE_AXIS_RATIO)
  words = (f"ln(Ex/Ey) p{100 * (1 - ORIENTED_SHARE):g} {low:.2f}, median "
           f"{f.texture['p50']:.2f}, p{100 * ORIENTED_SHARE:g} {high:.2f} over "
           f"{f.texture['measured']} images (|ln {TEXTURE_AXIS_RATIO:g}| = "
           f"{bound:.2f})")
  return low >= bound or high <= -bound, words


def decision(p: Planner) -> None:
  """A calibrated image-level decision within MAX_FALSE_ALARM where val has
  MIN_CALIBRATION_IMAGES defect-free images; argmax otherwise (the alarm
  rate cannot be measured)."""
  f = p.facts
  val = f.splits["val"]
  evidence = f"val: {val.defect_free} defect-free of {val.images} images"
  if f.task == "classification":
    p.choose("eval.decision", "argmax", "classification: the top class",
             evidence)
    p.choose("train.best_metric", "balanced_accuracy", "balanced accuracy "
             "weighs rare classes as much as the defect-free one", evidence)
    return
  if val.defect_free >= MIN_CALIBRATION_IMAGES:
    p.choose("eval.decision", "calibrated", "threshold and minimum area "
             f"chosen on val within a {MAX_FALSE_ALARM:.0%} false-alarm "
             "budget (defect_alarm)", evidence)
    p.choose("eval.max_false_alarm", MAX_FALSE_ALARM, "room under a 20 % "
             "target for the step from val to test", evidence)
    p.choose("eval.flip_tta", True, "4-flip averaged probabilities", evidence)
    p.choose("eval.per_class_rule", len(f.defect_classes) > 1, "a rule per "
             "defect class where there are several (sizes differ)",
             f"{len(f.defect_classes)} defect class(es)")
    p.choose("train.best_metric", "calibrated/score", "the checkpoint whose "
             "calibrated rule scores best on val", evidence)
  else:
    p.choose("eval.decision", "argmax", f"fewer than {MIN_CALIBRATION_IMAGES}"
             " defect-free val images: no false-alarm rate to calibrate on",
             evidence)
    p.choose("train.best_metric", "mean_defect_iou", "mean defect-class IoU "
             "on val", evidence)
