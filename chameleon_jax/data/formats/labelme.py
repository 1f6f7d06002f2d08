"""labelme JSON: one file per image with polygons, rectangles and circles.

A labelme file holds `shapes` (each with `label`, `points` as [x, y] and
`shape_type`), `imagePath` (relative to the JSON file) and optionally the
image itself as base64 `imageData`. Shapes are painted in file order, later
shapes on top, so an annotator's order of overlap is kept. Line, point and
other open shapes have no area and are refused, as are labels outside the
declared classes, points outside the image and a recorded image size that
differs from the decoded image.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from chameleon_jax.data import sources
from chameleon_jax.data.formats import geometry
from chameleon_jax.data.sources import Item, Rejected, SourceInfo
from chameleon_jax.registry import DATASETS

AREA_SHAPES = {"polygon": 3, "rectangle": 2, "circle": 2}  # min. points


def _shapes(doc: dict, where: str, classes: dict[str, int], width: int,
            height: int) -> list[tuple[str, np.ndarray, int]] | Rejected:
  shapes = doc.get("shapes")
  if not isinstance(shapes, list):
    return Rejected(where, "no 'shapes' list.")
  out = []
  for k, shape in enumerate(shapes):
    name = f"shape {k} ({shape.get('label')!r})" if isinstance(shape, dict) \
        else f"shape {k}"
    if not isinstance(shape, dict):
      return Rejected(where, f"{name} is not an object.")
    kind = shape.get("shape_type") or "polygon"
    if kind not in AREA_SHAPES:
      return Rejected(where, f"{name} has shape_type {kind!r}; expected one of "
                      f"{sorted(AREA_SHAPES)} (shapes with an area).")
    if shape.get("label") not in classes:
      return Rejected(where, f"{name}: label is not one of the declared "
                      f"classes {sorted(classes)}.")
    try:
      points = np.asarray(shape.get("points"), dtype=np.float64)
    except (TypeError, ValueError):
      return Rejected(where, f"{name}: points are not [x, y] numbers.")
    if points.ndim != 2 or points.shape[1] != 2 or \
        len(points) < AREA_SHAPES[kind]:
      return Rejected(where, f"{name}: a {kind} needs at least "
                      f"{AREA_SHAPES[kind]} [x, y] points, got "
                      f"{points.tolist()[:4]}.")
    problem = geometry.outside(points, width, height)
    if problem:
      return Rejected(where, f"{name} {problem}.")
    out.append((kind, points, classes[shape["label"]]))
  return out


def _item(path: Path, root: Path, classes: dict[str, int],
          channels: int | None) -> Item | Rejected:
  inside = sources.resolve_under(root, path.relative_to(root), str(path),
                                 "the annotation file")
  if isinstance(inside, Rejected):
    return inside
  try:
    json_bytes = path.read_bytes()
    doc = json.loads(json_bytes)
  except (OSError, ValueError) as e:
    return Rejected(str(path), f"not a readable JSON file ({e}).")
  if not isinstance(doc, dict):
    return Rejected(str(path), "top level is not a JSON object.")
  data = None
  image_path = path.parent / str(doc.get("imagePath") or "")
  if doc.get("imagePath"):
    image_path = sources.resolve_under(
        root, path.parent.relative_to(root) / str(doc["imagePath"]),
        str(path), "imagePath")
    if isinstance(image_path, Rejected):
      return image_path
  if not image_path.is_file() or not doc.get("imagePath"):
    if not doc.get("imageData"):
      return Rejected(str(path), f"image {image_path} does not exist and the "
                      "file has no embedded imageData.")
    try:
      data = base64.b64decode(doc["imageData"], validate=True)
    except (binascii.Error, ValueError, TypeError) as e:
      return Rejected(str(path), f"imageData is not valid base64 ({e}).")
    image_path = path
  loaded = sources.read_image(image_path, channels, data)
  if isinstance(loaded, Rejected):
    return loaded
  image, image_bytes = loaded
  height, width = image.shape[:2]
  recorded = (doc.get("imageHeight"), doc.get("imageWidth"))
  if all(v is not None for v in recorded) and recorded != (height, width):
    return Rejected(str(path), f"imageHeight x imageWidth {recorded[0]}x"
                    f"{recorded[1]} differs from the decoded image "
                    f"{height}x{width}.")
  shapes = _shapes(doc, str(path), classes, width, height)
  if isinstance(shapes, Rejected):
    return shapes
  mask = geometry.rasterise(shapes, height, width)
  item_id = path.relative_to(root).with_suffix("").as_posix()
  return Item(item_id, image, mask, sources.dominant_class(mask),
              str(image_path), sources.sha256(image_bytes, json_bytes))


@DATASETS.register("labelme")
def labelme(
    root: str,
    class_names: Sequence[str] = ("background", "defect"),
    channels: int | None = None,
) -> tuple[SourceInfo, Iterator[Item | Rejected]]:
  """Every `*.json` under `root` (recursively) as one labelme annotation.

  `class_names[0]` is the background (pixels no shape covers); a shape's
  label must be one of the others.
  """
  root_path = Path(root)
  if not root_path.is_dir():
    raise FileNotFoundError(f"labelme folder {root_path} does not exist.")
  files = sorted(root_path.rglob("*.json"))
  if not files:
    raise ValueError(f"No labelme .json files under {root_path}.")
  classes = {name: i for i, name in enumerate(class_names) if i}

  def items():
    for path in files:
      yield sources.guarded(str(path), _item, path, root_path, classes,
                            channels)

  return SourceInfo(tuple(class_names), channels), items()
