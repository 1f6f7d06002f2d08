"""What the labelling page draws, as masks: operations painted in order.

The page sends a label as a base layer (the saved mask, the model's
pre-label or an empty mask) and the operations drawn on top of it; the
server paints them here, so the mask on disk never depends on how a
browser antialiases its canvas. Coordinates are image pixels as annotation
tools store them (`data/formats/geometry.py`): pixel (i, j) covers
[j, j + 1) x [i, i + 1), its centre is (j + 0.5, i + 0.5).

Operations (JSON objects):
  {"tool": "brush", "class": k, "radius": r, "points": [[x, y], ...]}
      every pixel whose centre lies within r of the polyline through the
      points (one point: a disk) becomes class k;
  {"tool": "eraser", "radius": r, "points": [...]}   the same with class 0;
  {"tool": "polygon", "class": k, "points": [[x, y], ...]}   (>= 3 points)
  {"tool": "box", "class": k, "points": [[x0, y0], [x1, y1]]}
      filled by the labelme ingest path's rasteriser (`geometry.rasterise`),
      so a polygon drawn here and the same polygon in a labelme file give
      the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chameleon_jax.data.formats import geometry

TOOLS = ("brush", "eraser", "polygon", "box")
MAX_RADIUS = 256.0
MAX_POINTS = 20_000  # Per operation; a long brush stroke has a few hundred.
MAX_OPERATIONS = 2_000


class LabelError(ValueError):
  """A label the server refuses: the message names the operation and field."""


def _points(op: dict, where: str, height: int, width: int) -> np.ndarray:
  raw = op.get("points")
  if not isinstance(raw, list) or not raw:
    raise LabelError(f"{where}: 'points' must be a non-empty list of [x, y].")
  if len(raw) > MAX_POINTS:
    raise LabelError(f"{where}: {len(raw)} points; at most {MAX_POINTS}.")
  try:
    points = np.asarray(raw, dtype=np.float64)
  except (TypeError, ValueError):
    raise LabelError(f"{where}: 'points' must be numbers [x, y].") from None
  if points.ndim != 2 or points.shape[1] != 2:
    raise LabelError(f"{where}: 'points' must be [x, y] pairs, got shape "
                     f"{list(points.shape)}.")
  bad = geometry.outside(points, width, height)
  if bad:
    raise LabelError(f"{where}: points {bad}.")
  return points


def _class(op: dict, where: str, num_classes: int) -> int:
  value = op.get("class")
  if isinstance(value, bool) or not isinstance(value, int):
    raise LabelError(f"{where}: 'class' must be an integer class index, got "
                     f"{value!r}.")
  if not 0 <= value < num_classes:
    raise LabelError(f"{where}: class {value} is outside the palette "
                     f"0..{num_classes - 1}.")
  return value


def validate(operations: object, height: int, width: int,
             num_classes: int) -> list[tuple[str, int, float, np.ndarray]]:
  """Checks a list of operations -> [(tool, class, radius, points)].

  Raises:
    LabelError: not a list, too many operations, an unknown tool, a class
      outside 0..num_classes-1, a radius outside (0, MAX_RADIUS], points
      that are not [x, y] numbers or lie outside the image (beyond
      geometry.TOLERANCE), a polygon with fewer than 3 points or a box
      without exactly 2; the message names the operation's index.
  """
  if not isinstance(operations, list):
    raise LabelError("'operations' must be a list.")
  if len(operations) > MAX_OPERATIONS:
    raise LabelError(f"{len(operations)} operations; at most "
                     f"{MAX_OPERATIONS} per save.")
  checked = []
  for index, op in enumerate(operations):
    where = f"operation {index}"
    if not isinstance(op, dict):
      raise LabelError(f"{where}: must be an object.")
    tool = op.get("tool")
    if tool not in TOOLS:
      raise LabelError(f"{where}: tool {tool!r} is not one of {TOOLS}.")
    where = f"operation {index} ({tool})"
    points = _points(op, where, height, width)
    value = 0 if tool == "eraser" else _class(op, where, num_classes)
    radius = 0.0
    if tool in ("brush", "eraser"):
      radius = op.get("radius")
      if (isinstance(radius, bool) or not isinstance(radius, (int, float))
          or not 0 < radius <= MAX_RADIUS):
        raise LabelError(f"{where}: 'radius' must be a number in (0, "
                         f"{MAX_RADIUS:g}], got {radius!r}.")
    elif tool == "polygon" and len(points) < 3:
      raise LabelError(f"{where}: a polygon needs at least 3 points, got "
                       f"{len(points)}.")
    elif tool == "box" and len(points) != 2:
      raise LabelError(f"{where}: a box is 2 opposite corners, got "
                       f"{len(points)} points.")
    checked.append((tool, value, float(radius), points))
  return checked


def stroke(points: np.ndarray, radius: float, height: int,
           width: int) -> np.ndarray:
  """(H, W) bool: pixels whose centre is within `radius` of the polyline
  through `points` (N, 2) as x, y (one point: a disk)."""
  covered = np.zeros((height, width), bool)
  starts = points if len(points) == 1 else points[:-1]
  ends = points if len(points) == 1 else points[1:]
  for a, b in zip(starts, ends):
    lo = np.floor(np.minimum(a, b) - radius).astype(int)
    hi = np.ceil(np.maximum(a, b) + radius).astype(int)
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0] + 1, width), min(hi[1] + 1, height)
    if x0 >= x1 or y0 >= y1:
      continue
    cx = np.arange(x0, x1) + 0.5
    cy = (np.arange(y0, y1) + 0.5)[:, None]
    d = b - a
    length2 = float(d @ d)
    t = 0.0 if length2 == 0 else np.clip(
        ((cx - a[0]) * d[0] + (cy - a[1]) * d[1]) / length2, 0.0, 1.0)
    dist2 = (cx - a[0] - t * d[0]) ** 2 + (cy - a[1] - t * d[1]) ** 2
    covered[y0:y1, x0:x1] |= dist2 <= radius * radius
  return covered


def paint(base: np.ndarray, operations: Sequence[tuple[str, int, float,
                                                       np.ndarray]]
          ) -> np.ndarray:
  """The (H, W) uint8 class map: `base` with the validated operations
  (`validate`) painted in order, later ones on top."""
  mask = np.array(base, dtype=np.uint8, copy=True)
  height, width = mask.shape
  for tool, value, radius, points in operations:
    if tool in ("brush", "eraser"):
      covered = stroke(points, radius, height, width)
    else:
      kind = "polygon" if tool == "polygon" else "rectangle"
      covered = geometry.rasterise([(kind, points, 1)], height, width) > 0
    mask[covered] = value
  return mask
