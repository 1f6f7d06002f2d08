"""COCO instances JSON -> semantic masks, with instances and boxes kept.

Classes are the file's categories in order of category id (class 0 is the
background). Each annotation's segmentation is a list of polygons or an RLE
(compressed or not, as `iscrowd` regions are stored); pycocotools decodes
both. The semantic mask paints instances largest first, so a small defect
inside a large one stays visible. Every instance (class, box, RLE) is kept in
the record's annotations for later detection / instance-segmentation work.

Refused with a reason: an image entry whose file is missing or does not
decode, whose recorded size differs from the file, an annotation with an
unknown category, a malformed segmentation, polygon points or a box outside
the image, an RLE of the wrong size, and annotations that refer to an image id
the file does not list.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import numpy as np
from pycocotools import mask as mask_utils

from chameleon_jax.data import sources
from chameleon_jax.data.formats import geometry
from chameleon_jax.data.sources import Item, Rejected, SourceInfo
from chameleon_jax.registry import DATASETS


def compressed_counts(text: str | bytes) -> list[int] | None:
  """The run lengths of a COCO compressed RLE string, or None when it is
  malformed (a character outside '0'..'o', a value cut off at the end, a
  negative run). The format of pycocotools' rleFrString: 5 bits per
  character, 0x20 continues, 0x10 of the last one is the sign; from the
  third run on, a value is the difference to the run two before.

  Decoded here, before pycocotools sees it, because pycocotools trusts the
  string: runs that fall short of height x width leave the rest of its mask
  buffer uninitialised.
  """
  if isinstance(text, bytes):
    try:
      text = text.decode("ascii")
    except UnicodeDecodeError:
      return None
  counts, p = [], 0
  while p < len(text):
    value = shift = 0
    while True:
      if p >= len(text):
        return None
      c = ord(text[p]) - 48
      if not 0 <= c < 64:
        return None
      value |= (c & 0x1F) << shift
      p, shift = p + 1, shift + 5
      if not c & 0x20:
        if c & 0x10:
          value |= -1 << shift
        break
    if len(counts) > 2:
      value += counts[-2]
    if value < 0:
      return None
    counts.append(value)
  return counts


def is_id(value) -> bool:
  """COCO ids are integers (strings accepted); not booleans or floats."""
  return isinstance(value, (int, str)) and not isinstance(value, bool)


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rle(segmentation, height: int, width: int, where: str) -> dict | str:
  """A segmentation -> one compressed RLE, or the reason it is malformed."""
  if isinstance(segmentation, list):
    if not segmentation or not all(
        isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and
        all(_number(v) for v in p) for p in segmentation):
      return (f"{where}: polygons must be lists of >= 3 x, y pairs, got "
              f"{str(segmentation)[:80]}")
    for polygon in segmentation:
      problem = geometry.outside(np.asarray(polygon, np.float64), width, height)
      if problem:
        return f"{where}: polygon {problem}"
    return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
  if isinstance(segmentation, dict) and "counts" in segmentation:
    size = segmentation.get("size")
    if size != [height, width]:
      return (f"{where}: RLE size {size} differs from the image size "
              f"[{height}, {width}]")
    counts = segmentation["counts"]
    runs = (counts if isinstance(counts, list) else compressed_counts(counts)
            if isinstance(counts, (str, bytes)) else None)
    if runs is None or not all(isinstance(r, int) and not isinstance(r, bool)
                               and r >= 0 for r in runs):
      return f"{where}: RLE counts {str(counts)[:40]!r} are malformed"
    if sum(runs) != height * width:
      return (f"{where}: RLE counts sum to {sum(runs)}, expected "
              f"{height * width} pixels")
    try:
      if isinstance(counts, list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
      else:
        rle = {"size": size, "counts": counts.encode("ascii")
               if isinstance(counts, str) else counts}
        mask_utils.area(rle)
    except Exception as e:  # pycocotools raises bare Exceptions.
      return f"{where}: RLE does not decode ({e})"
    return rle
  return f"{where}: segmentation is neither polygons nor an RLE"


def _item(entry: dict, annotations: list[dict], images_dir: Path,
          classes: dict[int, int], channels: int, file: Path) -> Item | Rejected:
  where = f"{file}: image id {entry.get('id')!r}"
  name = entry.get("file_name")
  if not isinstance(name, str) or not name:
    return Rejected(where, f"file_name {name!r} is not a file name.")
  path = sources.resolve_under(images_dir, name, where, "file_name")
  if isinstance(path, Rejected):
    return path
  loaded = sources.read_image(path, channels)
  if isinstance(loaded, Rejected):
    return loaded
  image, image_bytes = loaded
  height, width = image.shape[:2]
  recorded = (entry.get("height"), entry.get("width"))
  if recorded != (height, width):
    return Rejected(str(path), f"{file.name} records height x width "
                    f"{recorded[0]}x{recorded[1]}, the file is "
                    f"{height}x{width}.")
  instances = []
  for ann in annotations:
    where = f"annotation {ann.get('id')}"
    if not is_id(ann.get("category_id")) or ann["category_id"] not in classes:
      return Rejected(str(path), f"{where}: category_id "
                      f"{ann.get('category_id')!r} is not among the "
                      f"categories {sorted(classes)}.")
    rle = _rle(ann.get("segmentation"), height, width, where)
    if isinstance(rle, str):
      return Rejected(str(path), rle + ".")
    bbox = ann.get("bbox")
    if bbox is not None:
      if not (isinstance(bbox, list) and len(bbox) == 4
              and all(_number(v) for v in bbox)):
        return Rejected(str(path), f"{where}: bbox {bbox!r} is not "
                        "[x, y, width, height].")
      x, y, w, h = map(float, bbox)
      problem = geometry.outside(np.array([[x, y], [x + w, y + h]]),
                                 width, height)
      if problem or w < 0 or h < 0:
        return Rejected(str(path), f"{where}: bbox {bbox} "
                        f"{problem or 'has a negative size'}.")
    if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd"),
                                                         float):
      return Rejected(str(path), f"{where}: iscrowd "
                      f"{ann.get('iscrowd')!r} is not 0 or 1.")
    instances.append({
        "id": ann.get("id"), "category": classes[ann["category_id"]],
        "bbox": [float(v) for v in (bbox or mask_utils.toBbox(rle))],
        "iscrowd": int(ann.get("iscrowd", 0)),
        "area": float(mask_utils.area(rle)),
        "rle": rle["counts"].decode("ascii")})
  mask = np.zeros((height, width), np.uint8)
  for inst in sorted(instances, key=lambda i: -i["area"]):
    rle = {"size": [height, width], "counts": inst["rle"].encode("ascii")}
    mask[mask_utils.decode(rle).astype(bool)] = inst["category"]
  record = json.dumps({"image": entry, "annotations": annotations},
                      sort_keys=True).encode()
  return Item(Path(name).with_suffix("").as_posix(), image, mask,
              sources.dominant_class(mask), str(path),
              sources.sha256(image_bytes, record, mask.tobytes()),
              annotations={"instances": instances})


@DATASETS.register("coco")
def coco(
    annotation_file: str,
    images_dir: str = "",
    channels: int = 3,
) -> tuple[SourceInfo, Iterator[Item | Rejected]]:
  """A COCO JSON; images under `images_dir` (default: beside the JSON file)."""
  file = Path(annotation_file)
  try:
    doc = json.loads(file.read_text())
  except (OSError, ValueError) as e:
    raise ValueError(f"{file}: cannot read the COCO annotation file "
                     f"({e}).") from e
  if not isinstance(doc, dict):
    raise ValueError(f"{file}: a COCO file is a JSON object, got "
                     f"{type(doc).__name__}.")
  for key in ("images", "annotations", "categories"):
    if not isinstance(doc.get(key), list):
      raise ValueError(f"{file}: missing the {key!r} list of a COCO file.")
  categories = doc["categories"]  # The classes: all or nothing.
  bad = [c for c in categories if not isinstance(c, dict)
         or not isinstance(c.get("id"), int) or isinstance(c.get("id"), bool)
         or not isinstance(c.get("name"), str)]
  if bad or len({c["id"] for c in categories}) != len(categories):
    raise ValueError(f"{file}: 'categories' must be objects with distinct "
                     f"integer 'id's and text 'name's; got "
                     f"{str(bad or categories)[:120]}.")
  categories = sorted(categories, key=lambda c: c["id"])
  classes = {c["id"]: i + 1 for i, c in enumerate(categories)}
  class_names = ("background", *(c["name"] for c in categories))
  by_image: dict = defaultdict(list)
  malformed = []
  for k, ann in enumerate(doc["annotations"]):
    if isinstance(ann, dict) and is_id(ann.get("image_id")):
      by_image[ann["image_id"]].append(ann)
    else:
      malformed.append(Rejected(
          f"{file}#annotations[{k}]", "an annotation must be an object with "
          f"an integer image_id; got {str(ann)[:80]}."))
  entries = []
  for k, entry in enumerate(doc["images"]):
    if isinstance(entry, dict) and is_id(entry.get("id")):
      entries.append(entry)
    else:
      malformed.append(Rejected(f"{file}#images[{k}]", "an image entry must "
                                f"be an object with an integer id; got "
                                f"{str(entry)[:80]}."))
  entries.sort(key=lambda e: str(e.get("file_name")))
  known = {e["id"] for e in entries}
  root = Path(images_dir) if images_dir else file.parent

  def items():
    yield from malformed
    for image_id in sorted(set(by_image) - known, key=str):
      ids = [a.get("id") for a in by_image[image_id]]
      yield Rejected(f"{file}#image_id={image_id}",
                     f"annotations {ids[:10]} refer to image_id {image_id!r}, "
                     "which is not in 'images'.")
    for entry in entries:
      yield sources.guarded(
          f"{file}: image id {entry['id']!r}", _item, entry,
          by_image.get(entry["id"], []), root, classes, channels, file)

  return SourceInfo(class_names, channels), items()
