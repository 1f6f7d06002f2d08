"""What the planner knows about a dataset: facts read from its fingerprint.

`facts_from(fingerprint, split_items)` turns a dataset version's
`fingerprint.json` (data/fingerprint.py) and the manifest entries of its
splits into `Facts`: plain numbers each rule reads, each with the fingerprint
field it came from, so a plan can quote its evidence. A dataset no plan can
serve is refused here, with the field named and what would be needed
(`PlanError`).
"""

from __future__ import annotations

import dataclasses
import math

# The fewest images a split needs for the plan's choices to mean anything:
# training sees defects of every kind, validation can rank checkpoints.
MIN_TRAIN_DEFECT_IMAGES = 8
MIN_VAL_DEFECT_IMAGES = 2


class PlanError(ValueError):
  """A dataset the planner cannot serve; the message names the fingerprint
  field, its value and what a plan would need."""


@dataclasses.dataclass(frozen=True)
class DefectClass:
  """One defect class (index >= 1) as the fingerprint measured it.

  Areas are connected components (8-connectivity) in pixels at native
  resolution; `share_median` is the class's median share of an image that
  contains it.
  """
  name: str
  index: int
  images: int
  pixel_frequency: float
  share_median: float
  area_p5: float
  area_p25: float
  area_p50: float


@dataclasses.dataclass(frozen=True)
class Split:
  """Counts of one split: images, images with a defect, defect-free ones."""
  images: int
  defect: int
  defect_free: int


@dataclasses.dataclass(frozen=True)
class Facts:
  """The dataset, as the rules read it (module docstring)."""
  task: str  # segmentation | classification
  class_names: tuple[str, ...]
  channels: int
  bit_depth: int
  images: int
  with_mask: int
  height: dict  # min / median / max, native pixels
  width: dict
  distinct_sizes: int
  landscape: float  # share of images wider than high
  portrait: float  # share of images higher than wide
  # Percentiles ("p10", ...) over images of ln(Ex / Ey) (fingerprint
  # images.texture); None for a fingerprint of schema version 1.
  texture: dict | None
  empty_fraction: float  # images whose mask has no defect pixel
  defect_classes: tuple[DefectClass, ...]
  splits: dict  # name -> Split
  mean: tuple[float, ...]  # per channel, in [0, 1] units
  std: tuple[float, ...]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def max_value(self) -> int:
    return 2 ** self.bit_depth - 1


def _split(items: list[dict]) -> Split:
  defect = sum(1 for i in items if i.get("classes_present") or
               (not i.get("has_mask", True) and i.get("label", 0)))
  return Split(images=len(items), defect=defect, defect_free=len(items) - defect)


def _single(counts: dict, field: str) -> int:
  """The one value of a fingerprint histogram ({"8": 1344}); several: refused."""
  if len(counts) != 1:
    raise PlanError(f"fingerprint images.{field} = {counts}: the images mix "
                    f"{field.replace('_', ' ')}s; a plan needs one. Convert "
                    "them at ingest (the source's `channels` option), or "
                    "ingest each kind as its own dataset.")
  return int(next(iter(counts)))


def facts_from(fingerprint: dict, split_items: dict[str, list[dict]]) -> Facts:
  """`Facts` of a dataset version.

  Args:
    fingerprint: the dataset's fingerprint.json (schema version 1 or 2).
    split_items: manifest entries per split name ("train", "val", "test").

  Raises:
    PlanError: no defect class, masks without a single defect pixel, mixed
      channel counts or bit depths, or too few defect images in train or val
      (the message names the field and what is needed).
  """
  images = fingerprint["images"]
  classes = fingerprint["classes"]
  names = tuple(sorted(classes, key=lambda n: classes[n]["index"]))
  if len(names) < 2:
    raise PlanError(f"fingerprint classes = {list(names)}: a single class. A "
                    "plan needs a defect-free class and at least one defect "
                    "class (masks with defect pixels, or class folders).")
  task = "segmentation" if images["with_mask"] else "classification"
  defect_names = names[1:]
  if task == "segmentation" and not any(classes[n]["pixels"]
                                        for n in defect_names):
    raise PlanError(
        "fingerprint classes.*.pixels = 0 for every defect class "
        f"{list(defect_names)}: the masks contain no defect pixel. Check the "
        "source's mask options (value_map, threshold, class_names) so that "
        "defect pixels map to classes 1..K.")
  channels = _single(images["channels"], "channels")
  bit_depth = _single(images["bit_depth"], "bit_depth")
  splits = {name: _split(items) for name, items in split_items.items()}
  for name, needed in (("train", MIN_TRAIN_DEFECT_IMAGES),
                       ("val", MIN_VAL_DEFECT_IMAGES)):
    have = splits[name].defect if name in splits else 0
    if have < needed:
      raise PlanError(
          f"split {name!r} has {have} images with a defect (manifest "
          f"splits.{name}); a plan needs at least {needed}. Add defect "
          "images, or give that split a larger share (data.splits).")
  defect_classes = []
  for name in defect_names:
    entry = classes[name]
    area = entry.get("components", {}).get("area", {})
    defect_classes.append(DefectClass(
        name=name, index=entry["index"],
        images=entry["images"] if task == "segmentation"
        else entry["image_labels"],
        pixel_frequency=entry["pixel_frequency"],
        share_median=entry["share_of_image"]["median"] or 0.0,
        area_p5=area.get("p5") or 0.0, area_p25=area.get("p25") or 0.0,
        area_p50=area.get("p50") or 0.0))
  sizes = [(i["height"], i["width"]) for items in split_items.values()
           for i in items]
  count = max(1, len(sizes))
  max_value = 2 ** bit_depth - 1
  intensity = [fingerprint["intensity"][f"channel_{c}"]["all"]
               for c in range(channels)]
  return Facts(
      task=task, class_names=names, channels=channels, bit_depth=bit_depth,
      images=images["count"], with_mask=images["with_mask"], height=images["height"], width=images["width"],
      distinct_sizes=images["distinct_sizes"],
      landscape=sum(w > h for h, w in sizes) / count,
      portrait=sum(h > w for h, w in sizes) / count,
      texture=(images["texture"] if images.get("texture", {}).get("measured")
               else None),
      empty_fraction=(fingerprint["masks"]["empty_fraction"]
                      if task == "segmentation" else
                      images["labels"].get(names[0], 0) / images["count"]),
      defect_classes=tuple(defect_classes), splits=splits,
      mean=tuple(round(s["mean"] / max_value, 4) for s in intensity),
      std=tuple(round(max(s["std"], 1e-3 * max_value) / max_value, 4)
                for s in intensity))


def smallest_defect(facts: Facts) -> DefectClass | None:
  """The defect class whose components are smallest (lowest p25 area): the
  one that limits how far images can be scaled down. None: no components
  (classification)."""
  measured = [d for d in facts.defect_classes if d.area_p25 > 0]
  return min(measured, key=lambda d: (d.area_p25, d.index)) if measured else None


def largest_defect(facts: Facts) -> DefectClass | None:
  """The defect class with the largest median component (what a crop must
  hold with context)."""
  measured = [d for d in facts.defect_classes if d.area_p50 > 0]
  return max(measured, key=lambda d: (d.area_p50, -d.index)) if measured else None


def side(area: float) -> float:
  """The side of a square of `area` pixels."""
  return math.sqrt(max(area, 0.0))
